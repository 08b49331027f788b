"""Benchmarks: `python -m lab bench [NAME ...] [--size full|tiny]` (or `make bench`) -> reports/BENCHMARKS.md + plots.

One module per benchmark (lab/bench/<name>.py, a function Ctx -> markdown section), shared helpers in common.py:

    orthogonalization   accuracy vs cost of newton_schulz / polar_express at 3..8 steps against the exact polar factor;
                        per-matrix vs stacked vs Gram Newton-Schulz on the real sets of matrices
    optimizer           optimizer step time and state memory on the real parameter set, as a ratio to AdamW
    step                the whole training step, Muon vs AdamW, and the orthogonalization's share, before and after
    traffic             bytes per parameter per step on N ranks (the byte accounting; no GPU needed)
    loop                tokens/s of lab.train.train against a bare training loop written here (same work)
    cuda                Triton kernels vs torch, Polar Express with/without kernels, MFU of the h100 preset (CUDA only)

Each benchmark prints its tables and returns a markdown section; run_benchmarks writes them into one report with a
header (date, commit, device, versions, threads, per-section wall time). Running a subset replaces only those
sections of an existing report. Timings are medians over interleaved repeats, and every time that matters is
given as a ratio measured side by side in the same run (absolute times on a shared CPU drift, ratios much less).
Nothing here asserts on a time: tests run every benchmark at `--size tiny` only to keep the code alive.

Paths: LAB_REPORTS_DIR (default reports/), as for campaigns. A tiny run never writes into the default reports/:
without that variable it uses a temporary directory.
LAB_BENCH_THREADS sets torch's CPU thread count (default: torch's own, or 1 when the machine is busy at start).
Steps-to-target (Muon's sample efficiency against AdamW) lives in the horizon campaign's report, not here.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from lab import records
from lab.bench.common import BENCHMARKS, ROOT, SIZES, TITLES, Ctx, _device, _load, _reports_dir
from lab.bench.cuda import bench_cuda
from lab.bench.loop import bench_loop
from lab.bench.optimizer import bench_optimizer
from lab.bench.orthogonalize import bench_orthogonalization
from lab.bench.step import bench_step
from lab.bench.traffic import bench_traffic

__all__ = ["BENCHMARKS", "ROOT", "SIZES", "Ctx", "RUNNERS", "run_benchmarks"]


# -----------------------------------------------------------------------------------------------------------------
# the report

RUNNERS = {"orthogonalization": bench_orthogonalization, "optimizer": bench_optimizer, "step": bench_step,
           "traffic": bench_traffic, "loop": bench_loop, "cuda": bench_cuda}
_BLOCK = re.compile(r"<!-- bench:(\w+) (\{.*?\}) -->\n(.*?)<!-- /bench:\1 -->", re.S)


def _read_sections(path: Path) -> dict:
    """{name: (meta, markdown)} of the sections already in a report (to keep them when running a subset)."""
    if not path.exists():
        return {}
    out = {}
    for m in _BLOCK.finditer(path.read_text()):
        try:
            out[m.group(1)] = (json.loads(m.group(2)), m.group(3))
        except json.JSONDecodeError:
            continue
    return out


def _header(dev: torch.device, size: str, threads_why: str) -> str:
    v = records.versions()
    commit = records._git("rev-parse", "--short=12", "HEAD") or "unknown"
    # tracked code only: reports/ and runs/ are what the lab writes itself (this report included)
    dirty = records._git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)reports",
                         ":(exclude)runs")
    cap = torch.backends.cpu.get_cpu_capability()
    info = pd.DataFrame([
        {"": "date", "value": datetime.datetime.now().astimezone().isoformat(timespec="seconds")},
        {"": "git commit", "value": commit + (" (uncommitted changes)" if dirty else "")},
        {"": "device", "value": records.device_name(dev)},
        {"": "cpu capability", "value": cap},
        {"": "torch / triton", "value": f"{v['torch']} / {v.get('triton')}"},
        {"": "python", "value": v["python"]},
        {"": "torch threads", "value": f"{torch.get_num_threads()} ({threads_why})"},
        {"": "size", "value": size},
    ])
    return info.to_markdown(index=False)


def run_benchmarks(names=None, size: str = "full", out_dir=None) -> Path:
    """Run the named benchmarks (default: all) and write <out_dir>/BENCHMARKS.md plus figs/bench_*.png.

    out_dir defaults to LAB_REPORTS_DIR or reports/; at size tiny it is never the default reports/ (a temporary
    directory instead). Sections not run now are kept from the existing report. Returns the report's path.
    """
    names = list(names or BENCHMARKS)
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; valid: {', '.join(BENCHMARKS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; valid: {', '.join(SIZES)}")
    threads_before = torch.get_num_threads()
    threads, why = _pick_threads()
    torch.set_num_threads(threads)
    try:
        return _run(names, size, out_dir, why)
    finally:
        torch.set_num_threads(threads_before)


def _pick_threads() -> tuple[int, str]:
    """LAB_BENCH_THREADS if set; else 1 thread when the machine is already busy (2 OpenMP threads fighting other
    processes for 2 cores run up to ~100x slower and make every timing noise), else torch's default."""
    env = os.environ.get("LAB_BENCH_THREADS")
    if env:
        return int(env), "LAB_BENCH_THREADS"
    n = torch.get_num_threads()
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return n, "torch default"
    if _device().type == "cpu" and n > 1 and load > cores - 0.5:
        return 1, f"auto: load average {load:.1f} on {cores} cores at start (busy); LAB_BENCH_THREADS overrides"
    return n, f"torch default (load average {load:.1f} on {cores} cores at start)"


def _run(names: list, size: str, out_dir, threads_why: str) -> Path:
    out = Path(out_dir) if out_dir else _reports_dir()
    if size == "tiny" and out.resolve() == (ROOT / "reports").resolve():
        out = Path(tempfile.mkdtemp(prefix="lab-bench-tiny-"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "figs").mkdir(exist_ok=True)
    dev = _device()
    ctx = Ctx(size=size, p=SIZES[size], figs=out / "figs", dev=dev)
    path = out / "BENCHMARKS.md"
    sections = _read_sections(path)
    commit = records._git("rev-parse", "--short=12", "HEAD") or "unknown"
    for name in [n for n in BENCHMARKS if n in names]:
        print(f"[bench] {name} ({size}) ...", flush=True)
        load0 = _load()
        t0 = time.perf_counter()
        body = RUNNERS[name](ctx)
        wall = time.perf_counter() - t0
        meta = {"wall_s": round(wall, 1), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "commit": commit, "size": size, "device": records.device_name(dev),
                "load": f"{load0} to {_load()}"}
        sections[name] = (meta, body)
        print(f"[bench] {name}: {wall:.1f} s", flush=True)
        _write(path, sections, dev, size, threads_why)  # after every section: an interrupted run keeps what it measured
    print(f"[bench] wrote {path}", flush=True)
    return path


def _write(path: Path, sections: dict, dev: torch.device, size: str, threads_why: str) -> None:
    walls = pd.DataFrame([{"section": f"{i}. {n}", "wall s": sections[n][0]["wall_s"], "size": sections[n][0]["size"],
                           "measured": sections[n][0]["date"], "commit": sections[n][0]["commit"],
                           "load avg 1/5/15 min (start to end)": sections[n][0].get("load", "")}
                          for i, n in enumerate(BENCHMARKS, 1) if n in sections])
    total = walls["wall s"].sum() if len(walls) else 0.0
    parts = [f"""# Benchmarks

Written by `python -m lab bench` (lab/bench/); every number below comes from running it, nothing is edited by hand.
**How to rerun:** `make bench` (all sections, ~15 min on a 2-core CPU) or `python -m lab bench NAME ...` (only those
sections are replaced). `--size tiny` runs everything at toy sizes in seconds (what the tests do; never written here).

{_header(dev, size, threads_why)}

Wall time per section (total {total:.0f} s). Timings on a shared CPU are noisy: every time that matters is reported
as a ratio to a baseline timed in the same interleaved rounds; the load average shows how busy the machine was.

{walls.to_markdown(index=False)}
"""]
    for i, n in enumerate(BENCHMARKS, 1):
        if n not in sections:
            continue
        meta, body = sections[n]
        parts.append(f"## {i}. {TITLES[n]}\n\n"
                     f"*{meta['date']}, commit {meta['commit']}, {meta['device']}, {meta['wall_s']} s*\n\n"
                     f"<!-- bench:{n} {json.dumps(meta)} -->\n{body.strip()}\n<!-- /bench:{n} -->\n")
    records.atomic_write(path, "\n".join(parts))
