"""lab.gpucheck (`make gpu-check`) on the CPU: the one-line exit without a GPU, the synthetic FineWeb shards, the
pytest row, the kernel rows (Triton interpreter), the killed-and-resumed comparison and the whole pipeline at a tiny
size. What only a GPU runs (compiled kernels, bf16 autocast, the h100 shapes, MFU) is the check itself and
tests/test_gpu.py."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from lab import data, gpucheck
from lab.config import get_config

ROOT = gpucheck.ROOT


def _tiny(tmp_path, **kw):
    """The tiny size's config on synthetic FineWeb shards under tmp_path/data."""
    p = gpucheck.SIZES["tiny"]
    gpucheck.write_synthetic_fineweb(tmp_path / "data", *p["shard_tokens"])
    return get_config(p["preset"], **{**p["overrides"], **kw}, device="cpu", data="fineweb",
                      data_dir=str(tmp_path / "data"))


# --- no GPU: one line, at once ------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available() or any(os.path.exists(p) for p in gpucheck.DEVICE_NODES),
                    reason="checks a machine without a GPU")
def test_no_gpu_prints_one_line_and_exits_0():
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = subprocess.run([sys.executable, "-m", "lab.gpucheck"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stderr) == (gpucheck.EXIT_NO_GPU, "") and gpucheck.EXIT_NO_GPU == 0
    assert out.stdout.count("\n") == 1
    assert out.stdout.startswith("gpu-check: skipped, no usable CUDA GPU here (no GPU device node (/dev/nvidiactl")


def test_no_gpu_path_never_imports_torch():
    """The fast path decides from device nodes alone: torch (seconds to import) is never loaded."""
    code = ("import sys; from lab import gpucheck as g; g.DEVICE_NODES = ('/nonexistent/nvidia0',); "
            "rc = g.main([]); print('torch' in sys.modules, rc)")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == [
        "gpu-check: skipped, no usable CUDA GPU here (no GPU device node (/nonexistent/nvidia0)); exit 0",
        "False 0"]


def test_hidden_gpus_are_no_gpu(monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpucheck.main([]) == 0
    assert capsys.readouterr().out == ("gpu-check: skipped, no usable CUDA GPU here (CUDA_VISIBLE_DEVICES='' hides "
                                       "every GPU); exit 0\n")


def test_a_gpu_torch_cannot_use_is_a_failure(monkeypatch, tmp_path, capsys):
    """A device node but no CUDA in torch (a CPU-only wheel on a GPU box): the check cannot run, exit 1."""
    node = tmp_path / "nvidia0"
    node.touch()
    monkeypatch.setattr(gpucheck, "DEVICE_NODES", (str(node),))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpucheck.main([]) == gpucheck.EXIT_FAILED == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"{node} exists but torch {torch.__version__}" in out and "sees no CUDA" in out


def test_with_a_gpu_main_runs_the_h100_check_into_reports(monkeypatch, dirs, capsys):
    """With CUDA, main runs check('h100', 'cuda') into reports/ (LAB_REPORTS_DIR) with compiled kernels."""
    monkeypatch.setattr(gpucheck, "gpu_status", lambda: ("cuda", "NVIDIA H100 80GB HBM3"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    calls = []
    monkeypatch.setattr(gpucheck, "check", lambda *a, **k: calls.append((a, k, os.environ.get("TRITON_INTERPRET")))
                        or 0)
    assert gpucheck.main([]) == 0
    assert calls == [(("h100", "cuda"), {"reports_dir": dirs / "reports", "started": gpucheck.STARTED}, None)]
    assert "TRITON_INTERPRET=1 unset" in capsys.readouterr().out


# --- synthetic FineWeb shards -------------------------------------------------------------------------------------

def test_synthetic_fineweb_shards_are_what_the_loader_reads(tmp_path):
    train, val = gpucheck.write_synthetic_fineweb(tmp_path, 20_000, 5_000, seed=3)
    assert (train, val) == tuple(data.fineweb_shards(tmp_path))  # named and placed as download_fineweb leaves them
    t, v = data.load_shard(train[0]), data.load_shard(val[0])
    assert (len(t), len(v)) == (20_000, 5_000) and t.dtype == np.uint16
    assert train[0].stat().st_size == data.HEADER_BYTES + 2 * 20_000
    assert t.max() < data.FINEWEB_VOCAB and (t == gpucheck.EOT).any()  # GPT-2 ids, documents split by EOT
    assert not np.array_equal(t[:5_000], v)  # two streams of one language: 2048 words and EOT between them
    assert len(np.unique(np.concatenate([t, v]))) <= 2049
    again, _ = gpucheck.write_synthetic_fineweb(tmp_path / "again", 20_000, 5_000, seed=3)
    assert again[0].read_bytes() == train[0].read_bytes()  # a function of the seed
    d = data.load_data(get_config("smoke", data="fineweb", vocab_size=50304, data_dir=str(tmp_path)))
    assert d.train_tokens == 20_000 and d.train_batch(0)[0].shape == (4, 32)


def test_synthetic_tokens_are_far_from_uniform():
    t = gpucheck.synthetic_tokens(200_000)
    p = np.bincount(t) / len(t)
    entropy = -(p[p > 0] * np.log(p[p > 0])).sum()
    assert 4 < entropy < 6 < np.log(data.FINEWEB_VOCAB)  # unigram ~5 nats, uniform 10.8: the loss has room to fall


# --- the pytest row -----------------------------------------------------------------------------------------------

def test_run_pytest_counts_and_a_skip_is_not_a_pass(tmp_path):
    f = tmp_path / "test_mixed.py"
    f.write_text("import pytest\n\ndef test_ok():\n    pass\n\n@pytest.mark.skip(reason='x')\ndef test_skipped():\n"
                 "    pass\n\ndef test_bad():\n    assert 1 == 2\n")
    row = gpucheck.run_pytest(f, timeout=120)
    assert row["result"] == "FAIL" and row["check"] == "pytest test_mixed.py"
    assert row["detail"].startswith("1 passed, 1 failed, 0 errors, 1 skipped: FAILED")
    assert "test_bad" in row["detail"] and row["time (s)"] > 0
    f.write_text("def test_ok():\n    pass\n")
    assert gpucheck.run_pytest(f, timeout=120)["result"] == "PASS"
    assert gpucheck.run_pytest(tmp_path / "missing.py", timeout=1)["result"] == "FAIL"


# --- the kernel rows ----------------------------------------------------------------------------------------------

def test_kernel_rows_pass_under_the_interpreter():
    rows = gpucheck.kernel_checks(torch.device("cpu"), ((32, 32), (64, 32)), repeats=1)
    assert [r["check"] for r in rows] == [
        "xxt bf16: A A^T", "xxt fp32 (IEEE, not TF32)", "ba_plus_caa bf16: bS + cSS",
        "newton_schulz 5 steps bf16: kernels vs torch", "polar_express 5 steps bf16: kernels vs torch"]
    assert all(r["result"] == "PASS" for r in rows), rows
    assert "exactly symmetric" in rows[0]["detail"] and "over 32x32, 64x32" in rows[0]["detail"]


def test_a_wrong_kernel_fails_its_row(monkeypatch):
    from lab.optim import kernels
    monkeypatch.setattr(kernels, "xxt", lambda A, out=None: 1.1 * (A @ A.mT))
    rows = gpucheck.kernel_checks(torch.device("cpu"), ((32, 32),), repeats=1)
    assert [r["result"] for r in rows[:2]] == ["FAIL", "FAIL"] and "max rel diff 1.0e-01" in rows[0]["detail"]


def test_kernel_rows_use_the_h100_matrix_shapes():
    from lab.bench.common import H100_MATRICES
    assert gpucheck.SIZES["h100"]["kernel_shapes"] == H100_MATRICES


# --- killed and resumed vs uninterrupted --------------------------------------------------------------------------

def test_resume_check_is_bit_identical_on_cpu(tmp_path):
    r = gpucheck.resume_check(_tiny(tmp_path), stop_at=5, root=tmp_path / "runs")
    assert r["ok"] and r["ckpt_step"] == r["resumed_from"] == 4
    assert r["uninterrupted"]["status"] == r["resumed"]["status"] == "finished" and r["resumed"]["steps"] == 8
    assert r["noise"] == r["train_diff"] == r["val_diff"] == 0.0  # CPU fp32: every step bit for bit
    assert r["uninterrupted"]["final_val_loss"] == r["resumed"]["final_val_loss"]
    assert len(r["seconds"]) == 3 and all(s > 0 for s in r["seconds"])


def test_resume_check_catches_a_resume_that_loses_the_optimizer_state(tmp_path, monkeypatch):
    from lab.train import Run
    resume = Run.resume

    def forgetful(self):
        resume(self)
        for opt in self.optimizers:
            opt.state.clear()  # momentum and Adam moments lost: the run goes on, differently
    monkeypatch.setattr(Run, "resume", forgetful)
    r = gpucheck.resume_check(_tiny(tmp_path), stop_at=5, root=tmp_path / "runs")
    assert not r["ok"] and r["resumed_from"] == 4 and r["noise"] == 0 and r["train_diff"] > 0


def test_resume_check_catches_a_run_that_starts_again(tmp_path, monkeypatch):
    """A rerun that ignores its checkpoint ends with the same numbers on CPU: only the step it started from tells."""
    from lab import records

    def unreadable(path):
        raise records.CorruptRecord(f"{path}: unreadable checkpoint (test)")
    monkeypatch.setattr(records, "load_checkpoint", unreadable)
    r = gpucheck.resume_check(_tiny(tmp_path), stop_at=5, root=tmp_path / "runs")
    assert not r["ok"] and r["resumed_from"] == 0 and r["train_diff"] == 0


@pytest.mark.parametrize("stop_at", [2, 11, 20])
def test_resume_check_refuses_a_kill_without_checkpoint_or_steps_after_it(tmp_path, stop_at):
    with pytest.raises(ValueError, match=rf"stop_at={stop_at} must be in \[ckpt_every - 1, steps - 2\] = \[3, 10\]"):
        gpucheck.resume_check(get_config("smoke", steps=12, ckpt_every=4), stop_at, tmp_path)
    assert not list(tmp_path.iterdir())  # refused before any work
    with pytest.raises(ValueError, match="ckpt_every=0 never checkpoints"):
        gpucheck.resume_check(get_config("smoke", steps=12, ckpt_every=0), 5, tmp_path)


# --- the whole check, tiny, on CPU --------------------------------------------------------------------------------

def test_tiny_check_on_cpu_prints_one_table_and_writes_the_report(tmp_path, capsys):
    rc = gpucheck.check("tiny", "cpu", reports_dir=tmp_path / "reports", pytest_path=None, work_dir=tmp_path / "w")
    out = capsys.readouterr().out
    assert rc == 0, out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert out.count("| check ") == 1 and len(table) == 2 + 1 + 5 + 2 + 1  # header, rule, shards, kernels, run+resume,
    assert all("| PASS " in line for line in table[2:]), out                # total
    assert re.search(r"\| smoke-preset run \(8 steps\) +\| PASS", out), out
    assert re.search(r"\| checkpoint \+ resume = uninterrupted +\| PASS", out), out
    report = (tmp_path / "reports" / "GPU_CHECK.md").read_text()
    assert report.startswith("# GPU check") and "\n".join(table) in report and "**MFU**" in report


def test_a_failed_check_exits_1_and_keeps_its_files(tmp_path, monkeypatch, capsys):
    rows = [gpucheck._row("a", True, 1.0, "fine"), gpucheck._row("b", False, 2.0, "broken", mfu=0.41)]
    monkeypatch.setattr(gpucheck, "run_checks", lambda *a: rows)
    assert gpucheck.check("h100", "cpu", reports_dir=None) == gpucheck.EXIT_FAILED
    out = capsys.readouterr().out
    assert re.search(r"\| b +\| FAIL +\| +2\.0 \| +0\.410 \| broken", out) and re.search(r"\| total +\| FAIL", out)
    kept = out.split("kept in ")[1].strip()
    assert os.path.isdir(kept) and os.path.basename(kept).startswith("lab-gpucheck-")
    os.rmdir(kept)


def test_total_is_slow_not_failed_over_the_budget():
    rows = [gpucheck._row("a", True, 500.0, "fine")]
    assert re.search(r"\| total +\| SLOW", gpucheck.format_table(rows, 500.0, budget_s=480))
    assert re.search(r"\| total +\| PASS", gpucheck.format_table(rows, 500.0, budget_s=None))
