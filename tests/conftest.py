"""Shared pytest setup: without CUDA, Triton kernels run under the interpreter, which must be switched on before any
kernel module is imported (its @triton.jit reads the variable when decorating)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# One thread: the test tensors are small, and on the shared 2-core CI box two spinning OpenMP threads per process
# made SVDs and smoke runs 20-50x slower (the notebook kernels and torchrun workers get OMP_NUM_THREADS=1 too).
torch.set_num_threads(1)


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """runs/ and reports/ in a tmp dir (lab.campaign reads LAB_RUNS_DIR / LAB_REPORTS_DIR), headless matplotlib."""
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LAB_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path
