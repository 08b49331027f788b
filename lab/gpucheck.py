"""`python -m lab.gpucheck` (`make gpu-check`): everything CUDA-only in one command on a GPU box, nothing downloaded.

On a CUDA GPU it runs, in one process on one GPU (pytest in a child process first):
    1. tests/test_gpu.py                 the CUDA tests (Triton kernels, bf16 autocast training, CUDA resume)
    2. synthetic FineWeb shards          GPT-2-id `.bin` shards in the FineWeb format, written here (no download)
    3. Triton kernels vs torch           xxt, ba_plus_caa, Newton-Schulz and Polar Express with/without kernels, on the
                                         h100 preset's matrix shapes: largest relative difference and time ratio
    4. h100-preset run                   the real h100 model (gated nGPT, 11 x 768, B=32, T=1024, vocab 50304) for a
                                         few steps: bf16 autocast, the compiled kernels (launches counted), MFU
    5. checkpoint + resume               the same run killed after a step and rerun: it resumes from its checkpoint
                                         and ends where the uninterrupted run ends
and prints one table (check, result, seconds, MFU, detail), also written to reports/GPU_CHECK.md (LAB_REPORTS_DIR
moves it). Exit status: 0 when every check passed, 1 when one failed.

Without a GPU it prints one line and exits 0 at once, before importing torch when no GPU device node exists: a
machine without a GPU (CI) has nothing to check, which is not a failure. Exit 1 instead when a GPU is there (a device
node) but torch cannot use it: on a GPU box that is the failure the check exists to find.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
# device nodes of an NVIDIA driver (Linux, containers with the NVIDIA runtime) and of WSL2's GPU paravirtualization
DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/dxg")
EXIT_NO_GPU = 0      # nothing to check on this machine: not a failure (CI has no GPU)
EXIT_FAILED = 1      # a check failed, or a GPU is present that torch cannot use
BUDGET_S = 480       # the whole check must fit in 8 minutes on one H100-class GPU
EOT = 50256          # GPT-2's <|endoftext|>: separates documents in FineWeb shards
STARTED = time.perf_counter()  # when this module was imported: `python -m lab.gpucheck` counts its time from here

# What each size runs. h100: the real preset, a few steps (one GPU, < 8 min); tiny: seconds on a CPU, for tests.
# kernel_shapes of h100: the preset model's hidden-matrix shapes (lab.bench.common.H100_MATRICES; not imported
# here: it imports torch)
SIZES = {
    "h100": dict(preset="h100", overrides=dict(steps=40, val_every=10, ckpt_every=20), stop_at=29,
                 shard_tokens=(4_000_000, 600_000), kernel_shapes=((768, 768), (6144, 768), (768, 3072)),
                 kernel_repeats=10, timed_from=3, min_val_drop=1.0, resume_tol=2e-2, pytest_timeout=300),
    "tiny": dict(preset="smoke", overrides=dict(vocab_size=50304, steps=8, val_every=4, ckpt_every=4),
                 stop_at=5, shard_tokens=(20_000, 4_000), kernel_shapes=((64, 64), (128, 64), (64, 192)),
                 kernel_repeats=2, timed_from=1, min_val_drop=0.1, resume_tol=0.0, pytest_timeout=120),
}


# -----------------------------------------------------------------------------------------------------------------
# is there a GPU? (no torch unless a device node says there may be one)

def gpu_status() -> tuple[str, str]:
    """("cuda", device name) | ("none", why: no GPU here) | ("unusable", why: a GPU torch cannot use)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return "none", f"CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU"
    nodes = [p for p in DEVICE_NODES if os.path.exists(p)]
    if not nodes:
        return "none", f"no GPU device node ({', '.join(DEVICE_NODES)})"
    import torch  # only now: importing torch alone takes seconds
    if not torch.cuda.is_available():  # no nvidia-smi needed: the driver API, as training uses it
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return "unusable", f"{nodes[0]} exists but torch {torch.__version__} ({build}) sees no CUDA device"
    return "cuda", torch.cuda.get_device_name(0)


# -----------------------------------------------------------------------------------------------------------------
# synthetic FineWeb shards

def synthetic_tokens(n: int, seed: int = 0, split: int = 0, vocab: int = 50257, n_words: int = 2048,
                     n_phrases: int = 4096, phrase_len: int = 8):
    """`n` GPT-2 token ids of a made-up language a model learns in a few steps: phrases of `phrase_len` words
    (2048 ids, Zipf-distributed) drawn with Zipf frequencies; 1 phrase in 32 opens a document with <|endoftext|>.
    The language is a function of `seed`, the stream of (seed, split): train and val speak the same language.
    Unigram entropy ~5 nats (uniform over the vocabulary: 10.8), less within a phrase."""
    import numpy as np
    lang = np.random.default_rng([seed, 0])
    words = lang.choice(vocab - 1, n_words, replace=False)  # ids in use (EOT apart)
    zipf_w = 1 / np.arange(1, n_words + 1)
    table = words[lang.choice(n_words, (n_phrases, phrase_len), p=zipf_w / zipf_w.sum())]  # (P, L)
    table[:n_phrases // 32, 0] = EOT
    zipf_p = 1 / np.arange(1, n_phrases + 1)
    ids = np.random.default_rng([seed, 1 + split]).choice(n_phrases, -(-n // phrase_len), p=zipf_p / zipf_p.sum())
    return table[ids].ravel()[:n]  # (n,)


def write_synthetic_fineweb(data_dir, train_tokens: int, val_tokens: int, seed: int = 0):
    """One train and one val shard named and laid out as download_fineweb leaves them in `<data_dir>/fineweb/`
    (a 256-int32 header, uint16 GPT-2 ids), filled with `synthetic_tokens`. Returns ([train path], [val path])."""
    from lab.data import FINEWEB_TRAIN, FINEWEB_VAL, write_shard
    out = Path(data_dir) / "fineweb"
    train = write_shard(out / (FINEWEB_TRAIN % 1), synthetic_tokens(train_tokens, seed, split=0))
    val = write_shard(out / (FINEWEB_VAL % 0), synthetic_tokens(val_tokens, seed, split=1))
    return [train], [val]


# -----------------------------------------------------------------------------------------------------------------
# instruments: what ran, counted in this process

@contextlib.contextmanager
def counting_kernel_launches():
    """Count Triton kernel launches (lab.optim.kernels._launch calls) inside the block: yields a one-item list."""
    from lab.optim import kernels
    launch, count = kernels._launch, [0]

    def counted(*a, **k):
        count[0] += 1
        return launch(*a, **k)
    kernels._launch = counted
    try:
        yield count
    finally:
        kernels._launch = launch


@contextlib.contextmanager
def recording_resumes():
    """The step each run resumed from (lab.train.Run.resume, called when a checkpoint exists): 0 = started again."""
    from lab.train import Run
    resume, starts = Run.resume, []

    def recorded(self):
        resume(self)
        starts.append(self.start)
    Run.resume = recorded
    try:
        yield starts
    finally:
        Run.resume = resume


# -----------------------------------------------------------------------------------------------------------------
# the checks

def _row(check: str, ok: bool | None, seconds: float, detail: str, mfu: float | None = None) -> dict:
    result = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    return {"check": check, "result": result, "time (s)": seconds, "MFU": mfu, "detail": detail}


def _sync(dev) -> None:
    import torch
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run_pytest(path, timeout: float, env: dict | None = None) -> dict:
    """Run pytest on `path` in a child process; PASS when every test ran and passed (a skip is not a pass)."""
    import subprocess
    import xml.etree.ElementTree as ET
    t0 = time.perf_counter()
    path = Path(path)
    name = f"pytest {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}"
    if not path.exists():
        return _row(name, False, 0.0, f"{path} not found (run from a checkout of the repository)")
    with tempfile.TemporaryDirectory(prefix="lab-gpucheck-pytest-") as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", str(path), "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        try:
            out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return _row(name, False, time.perf_counter() - t0, f"timed out after {timeout:.0f} s")
        dt = time.perf_counter() - t0
        if not xml.exists():
            tail = (out.stdout + out.stderr).strip().splitlines()[-1:] or ["no output"]
            return _row(name, False, dt, f"pytest exited {out.returncode} without results: {tail[0][:200]}")
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    detail = f"{passed} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped"
    if n["failures"] or n["errors"]:
        failed = [line for line in out.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        detail += ": " + "; ".join(failed[:3])[:300]
    ok = None if n["skipped"] == n["tests"] else out.returncode == 0 and passed == n["tests"] > 0
    return _row(name, ok, dt, detail)


def _time_ms(fn, dev, repeats: int) -> float:
    """Median milliseconds of one call (warmed up; device synchronized around each)."""
    import statistics
    fn()
    ts = []
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        ts.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(ts)


def kernel_checks(dev, shapes, repeats: int) -> list[dict]:
    """The Triton kernels against torch on `shapes` (bf16, and fp32 for xxt's IEEE mode), and both orthogonalizers
    with kernels against without. One row per operation: largest relative difference over the shapes, exact
    symmetry where the kernel promises it, and the median over shapes of torch time / Triton time."""
    import functools
    import statistics

    import torch

    from lab.optim import kernels, newton_schulz, polar_express
    P = functools.partial
    gen = torch.Generator(device=dev).manual_seed(0)

    def gram_operand(m, n, dtype=torch.bfloat16):  # what the quintic loop multiplies: (k, K), k = min(m, n)
        return torch.randn(min(m, n), max(m, n), device=dev, generator=gen).to(dtype)

    def gram(m, n):  # a symmetric S = A A^T / K, as ba_plus_caa meets it
        A = gram_operand(m, n, torch.float32)
        return (A @ A.mT / A.size(1)).bfloat16()

    def matrix(m, n):
        return torch.randn(m, n, device=dev, generator=gen).bfloat16()

    b, c = -4.775, 2.0315
    # name: (input of shape (m, n), torch, kernel, reference the kernel's result is compared with, tolerance,
    # the result is exactly symmetric)
    ops = {
        "xxt bf16: A A^T": (gram_operand, lambda A: A @ A.mT, kernels.xxt, lambda A: A.float() @ A.float().mT,
                            1e-2, True),
        "xxt fp32 (IEEE, not TF32)": (P(gram_operand, dtype=torch.float32), lambda A: A @ A.mT, kernels.xxt,
                                      lambda A: A.double() @ A.double().mT, 1e-5, True),
        "ba_plus_caa bf16: bS + cSS": (gram, lambda S: torch.addmm(S, S, S, beta=b, alpha=c),
                                       P(kernels.ba_plus_caa, alpha=c, beta=b),
                                       lambda S: b * S.float() + c * S.float() @ S.float(), 1e-2, True),
        **{f"{orth.__name__} 5 steps bf16: kernels vs torch": (
            matrix, P(orth, steps=5, use_kernels=False), P(orth, steps=5, use_kernels=True),
            P(orth, steps=5, use_kernels=False), 2e-2, False) for orth in (newton_schulz, polar_express)},
    }
    rows = []
    for name, (make, f_torch, f_kernel, f_ref, tol, symmetric) in ops.items():
        t0 = time.perf_counter()
        try:
            diffs, ratios, asym = [], [], []
            for m, n in shapes:
                X = make(m, n)
                C = f_kernel(X)
                ref = f_ref(X).double()
                diffs.append(((C.double() - ref).norm() / ref.norm()).item())
                if symmetric and not torch.equal(C, C.mT):
                    asym.append(f"{m}x{n}")
                ratios.append(_time_ms(P(f_torch, X), dev, repeats) / _time_ms(P(f_kernel, X), dev, repeats))
            ok = max(diffs) <= tol and not asym
            where = ", ".join(f"{m}x{n}" for m, n in shapes)
            detail = (f"max rel diff {max(diffs):.1e} (tol {tol:.0e}) over {where}"
                      + ("; NOT symmetric at " + ", ".join(asym) if asym else "; exactly symmetric" if symmetric
                         else "") + f"; torch/Triton time {statistics.median(ratios):.2f}x")
        except Exception as e:  # noqa: BLE001 - a failing check is a row, the others still run
            ok, detail = False, _error(e)
        _sync(dev)
        rows.append(_row(name, ok, time.perf_counter() - t0, detail))
    if dev.type == "cuda" and not (kernels.available() and not kernels.INTERPRET):
        rows.append(_row("Triton kernels compiled", False, 0.0, f"kernels unavailable (HAS_TRITON="
                         f"{kernels.HAS_TRITON}, ENABLED={kernels.ENABLED}, INTERPRET={kernels.INTERPRET}): "
                         "the rows above compared torch with torch"))
    return rows


def _error(e: BaseException) -> str:
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {first[:300]}"


def _losses(rows: list[dict], key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in rows if r.get(key) is not None}


def resume_check(config, stop_at: int, root, tol: float = 0.0) -> dict:
    """Train `config` uninterrupted (under root/uninterrupted), then again (under root/resumed) killed right after
    step `stop_at` and rerun: the rerun must resume from the last checkpoint and end where the uninterrupted run
    ends. The steps before that checkpoint ran the same code in both runs, so their largest train-loss difference
    is the device's run-to-run noise (0 where it is deterministic, as on CPU); the steps after it show the resume.

    Returns {uninterrupted, resumed: summaries; rows: the uninterrupted run's metrics; ckpt_step; resumed_from
    (the step the rerun started from, None if it found no checkpoint); noise, train_diff, val_diff (largest
    absolute loss differences); seconds (uninterrupted, killed, resumed); ok: resumed from the checkpoint, both
    finished, train_diff and val_diff <= tol + 3 x noise}."""
    import dataclasses

    from lab import records
    from lab.train import train
    ck = config.ckpt_every
    if not (ck and ck - 1 <= stop_at < config.steps - 1):
        raise ValueError(f"resume_check: stop_at={stop_at} must be in [ckpt_every - 1, steps - 2] = "
                         f"[{ck - 1}, {config.steps - 2}] so that a checkpoint exists before the kill and steps "
                         f"remain after it (ckpt_every={ck}, steps={config.steps}; ckpt_every=0 never checkpoints)")
    root = Path(root)
    a_cfg = dataclasses.replace(config, runs_dir=str(root / "uninterrupted"))
    b_cfg = dataclasses.replace(config, runs_dir=str(root / "resumed"))
    ckpt_step = (stop_at + 1) // ck * ck
    seconds = []
    with recording_resumes() as starts:
        t0 = time.perf_counter()
        a = train(a_cfg, progress=False)
        seconds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        try:
            train(b_cfg, progress=False, _stop_at=stop_at)
            raise RuntimeError(f"resume_check: the run was not killed after step {stop_at} (it had already finished?)")
        except KeyboardInterrupt:
            pass
        seconds.append(time.perf_counter() - t0)
        starts.clear()
        t0 = time.perf_counter()
        b = train(b_cfg, progress=False)
        seconds.append(time.perf_counter() - t0)
    run_id = config.run_id()
    rows_a = records.read_metrics(Path(a_cfg.runs_dir) / run_id)
    rows_b = records.read_metrics(Path(b_cfg.runs_dir) / run_id)
    la, lb = _losses(rows_a, "train_loss"), _losses(rows_b, "train_loss")
    va, vb = _losses(rows_a, "val_loss"), _losses(rows_b, "val_loss")
    nan = float("nan")
    diff = lambda x, y, steps: max((abs(x.get(s, nan) - y.get(s, nan)) for s in steps), default=0.0)  # noqa: E731
    noise = diff(la, lb, range(ckpt_step))
    train_diff = diff(la, lb, range(ckpt_step, config.steps))
    val_diff = diff(va, vb, [s for s in va if s >= ckpt_step] or [config.steps])
    resumed_from = starts[-1] if starts else None
    bound = tol + 3 * noise
    ok = (a["status"] == b["status"] == "finished" and b["steps"] == config.steps and resumed_from == ckpt_step
          and train_diff <= bound and val_diff <= bound)  # a NaN difference compares False: not ok
    return {"uninterrupted": a, "resumed": b, "rows": rows_a, "ckpt_step": ckpt_step, "resumed_from": resumed_from,
            "noise": noise, "train_diff": train_diff, "val_diff": val_diff, "bound": bound, "seconds": seconds,
            "ok": ok}


def training_checks(config, stop_at: int, root, tol: float, timed_from: int, min_val_drop: float,
                    label: str = "run") -> list[dict]:
    """Two rows: the uninterrupted run (finished, learned at least `min_val_drop` nats of val loss, bf16 and the
    compiled kernels where CUDA promises them; MFU and tokens/s: medians over steps >= timed_from) and the resume."""
    import statistics

    import torch

    from lab.optim import kernels
    dev = torch.device(config.device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with counting_kernel_launches() as launches:
        r = resume_check(config, stop_at, root, tol)
    a, rows = r["uninterrupted"], r["rows"]
    execution = config.execution()
    want_kernels = dev.type == "cuda" and config.use_kernels and config.optimizer == "muon"
    timed = [x for x in rows if x.get("tokens_per_s") and x["step"] >= timed_from]
    tps = statistics.median(x["tokens_per_s"] for x in timed) if timed else None
    mfus = [x["mfu"] for x in timed if x.get("mfu") is not None]
    mfu = statistics.median(mfus) if mfus else None
    vals = _losses(rows, "val_loss")
    first, final = vals.get(0), a["final_val_loss"]
    learned = first is not None and final is not None and final <= first - min_val_drop
    problems = [p for p, bad in [
        (f"status {a['status']}", a["status"] != "finished"),
        (f"val loss dropped less than {min_val_drop} nats", not learned),
        (f"precision {execution}, not cuda/bf16", dev.type == "cuda" and execution != "cuda/bf16"),
        ("no Triton kernel launched", want_kernels and launches[0] == 0),
        ("Triton in interpreter mode (TRITON_INTERPRET=1)", dev.type == "cuda" and kernels.INTERPRET)] if bad]
    mem = f", peak memory {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB" if dev.type == "cuda" else ""
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    run_detail = (f"{config.model} {config.n_layer}x{config.n_embd}, B={config.batch_size} T={config.seq_len} "
                  f"vocab {config.vocab_size}, {a['steps']} steps, {execution}, {launches[0]} Triton launches; "
                  f"val {fmt(first)} -> {fmt(final)}; {tps or 0:,.0f} tokens/s{mem}"
                  + (f"; MFU n/a: no bf16 peak known for {torch.cuda.get_device_name(dev)}" if mfu is None and
                     dev.type == "cuda" else "")
                  + (f" -- {'; '.join(problems)}" if problems else ""))
    b = r["resumed"]
    resume_detail = (f"killed after step {stop_at}, resumed from step {r['resumed_from']} (checkpoint at "
                     f"{r['ckpt_step']}), {b['status']} at step {b['steps']}; vs uninterrupted: train loss max "
                     f"|diff| {r['train_diff']:.2e} after the checkpoint (noise before it {r['noise']:.2e}), val "
                     f"|diff| {r['val_diff']:.2e}; bound {r['bound']:.1e}")
    return [_row(label, not problems, r["seconds"][0], run_detail, mfu),
            _row("checkpoint + resume = uninterrupted", r["ok"], sum(r["seconds"][1:]), resume_detail)]


# -----------------------------------------------------------------------------------------------------------------
# the whole check

def run_checks(size: str, device: str, work_dir, pytest_path=None) -> list[dict]:
    """Every check of `size` on `device` ("cuda" or "cpu"), in order, each a row; files go under `work_dir`.
    `pytest_path`: the test file pytest runs first (None: no pytest row)."""
    import torch

    from lab.config import get_config
    p = SIZES[size]
    work = Path(work_dir)
    rows = []
    if pytest_path is not None:
        print(f"[gpu-check] pytest {pytest_path} ...", flush=True)
        rows.append(run_pytest(pytest_path, p["pytest_timeout"]))
    print("[gpu-check] synthetic FineWeb shards ...", flush=True)
    t0 = time.perf_counter()
    train_p, val_p = write_synthetic_fineweb(work / "data", *p["shard_tokens"])
    mib = sum(f.stat().st_size for f in train_p + val_p) / 2**20
    rows.append(_row("synthetic FineWeb shards", True, time.perf_counter() - t0,
                     f"{p['shard_tokens'][0]:,} train + {p['shard_tokens'][1]:,} val tokens "
                     f"({mib:.1f} MiB) in {work / 'data' / 'fineweb'}"))
    dev = torch.device(device)
    print("[gpu-check] Triton kernels vs torch ...", flush=True)
    rows += kernel_checks(dev, p["kernel_shapes"], p["kernel_repeats"])
    config = get_config(p["preset"], **p["overrides"], device=device, data="fineweb", data_dir=str(work / "data"))
    label = f"{p['preset']}-preset run ({config.steps} steps)"
    print(f"[gpu-check] {label}, then again killed after step {p['stop_at']} and resumed ...", flush=True)
    try:
        rows += training_checks(config, p["stop_at"], work / "runs", p["resume_tol"], p["timed_from"],
                                p["min_val_drop"], label)
    except Exception as e:  # noqa: BLE001 - reported as a row like any failed check
        rows.append(_row(f"{label} + resume", False, 0.0, _error(e)))
    return rows


def format_table(rows: list[dict], total_s: float, budget_s: float | None = BUDGET_S) -> str:
    """The one table: a row per check and a total row (SLOW, not FAIL, when over the budget)."""
    import pandas as pd
    n_fail = sum(r["result"] == "FAIL" for r in rows)
    n_pass = sum(r["result"] == "PASS" for r in rows)
    over = budget_s is not None and total_s > budget_s
    total = {"check": "total", "result": "FAIL" if n_fail else "SLOW" if over else "PASS", "time (s)": total_s,
             "MFU": None, "detail": f"{n_pass} passed, {n_fail} failed, {len(rows) - n_pass - n_fail} skipped"
             + (f"; budget {budget_s:.0f} s" if budget_s else "")}
    df = pd.DataFrame(rows + [total], columns=["check", "result", "time (s)", "MFU", "detail"])
    df["time (s)"] = df["time (s)"].map(lambda v: f"{v:.1f}")
    df["MFU"] = df["MFU"].map(lambda v: "" if v is None or v != v else f"{v:.3f}")
    return df.to_markdown(index=False, disable_numparse=True, colalign=("left", "left", "right", "right", "left"))


def report(table: str, device: str, size: str) -> str:
    """reports/GPU_CHECK.md: when, on what, the table, and what its columns mean."""
    import datetime

    import torch

    from lab import records
    v = records.versions()
    commit = records._git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = " (uncommitted changes)" if records._git("status", "--porcelain", "--untracked-files=no") else ""
    dev = torch.device(device)
    p = SIZES[size]
    return f"""# GPU check

`make gpu-check` (`python -m lab.gpucheck`), {datetime.datetime.now().astimezone().isoformat(timespec="seconds")},
commit {commit}{dirty}, on {records.device_name(dev)}; torch {v['torch']} (CUDA {torch.version.cuda}), triton
{v.get('triton')}, python {v['python']}.

{table}

**What the rows are.** `pytest tests/test_gpu.py`: the CUDA tests (a skip counts against PASS). Kernel rows: the
Triton kernels of `lab.optim.kernels` (or the orthogonalizers with them) against torch on the h100 preset's matrix
shapes; *rel diff* is the largest relative Frobenius difference over the shapes, *torch/Triton time* the median time
ratio (above 1: the kernel is faster). The run row: the `{p['preset']}` preset with {p['overrides']} on synthetic
FineWeb-format shards (a made-up phrase language over 2048 GPT-2 ids, so the loss falls fast), bf16 autocast, the
Triton kernels counted as they launch. **MFU** = model FLOPs per token (6N + 12 L d T, forward and backward,
`lab.models.flops_per_token`) x tokens/s / the device's dense bf16 peak (`lab.train.PEAK_BF16_FLOPS`), median over
steps >= {p['timed_from']} (evaluation excluded; eager, no torch.compile). The resume row: the same run killed after
step {p['stop_at']} and rerun; it must restart from its checkpoint and match the uninterrupted run within the bound
({p['resume_tol']} nats + 3x the run-to-run noise seen before the checkpoint). `time (s)`: wall time of each check;
the total must stay under {BUDGET_S // 60} minutes on one H100-class GPU (SLOW otherwise).
"""


def check(size: str = "h100", device: str = "cuda", reports_dir=None, pytest_path=ROOT / "tests" / "test_gpu.py",
          work_dir=None, started: float | None = None) -> int:
    """Run every check, print the table, write it to `reports_dir`/GPU_CHECK.md (None: not written). Returns the
    exit status: 0 if nothing failed, else 1. The work directory (shards, runs) is removed unless a check failed.
    `started`: the perf_counter the total time counts from (default: now)."""
    t0 = time.perf_counter() if started is None else started
    work = Path(work_dir or tempfile.mkdtemp(prefix="lab-gpucheck-"))
    rows = run_checks(size, device, work, pytest_path)
    table = format_table(rows, time.perf_counter() - t0, BUDGET_S if size == "h100" else None)
    print(table, flush=True)
    failed = any(r["result"] == "FAIL" for r in rows)
    if reports_dir is not None:
        from lab.records import atomic_write
        path = Path(reports_dir) / "GPU_CHECK.md"
        atomic_write(path, report(table, device, size))
        print(f"[gpu-check] wrote {path}")
    if failed:
        print(f"[gpu-check] FAILED; shards and run records kept in {work}")
    elif work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return EXIT_FAILED if failed else 0


def main(argv: list[str] | None = None) -> int:
    import argparse
    argparse.ArgumentParser(prog="python -m lab.gpucheck", description=__doc__.split("\n\n")[0]).parse_args(argv)
    status, why = gpu_status()
    if status != "cuda":
        code = EXIT_NO_GPU if status == "none" else EXIT_FAILED
        print(f"gpu-check: skipped, no usable CUDA GPU here ({why}); exit {code}", flush=True)
        return code
    if os.environ.pop("TRITON_INTERPRET", None) == "1":  # before lab.optim.kernels is imported: compiled kernels
        print("[gpu-check] TRITON_INTERPRET=1 unset: the check is of the compiled kernels", flush=True)
    print(f"[gpu-check] {why}: every check, in this process (about 4 minutes on an H100)", flush=True)
    from lab.results import reports_root
    return check("h100", "cuda", reports_dir=reports_root(), started=STARTED)


if __name__ == "__main__":
    sys.exit(main())
