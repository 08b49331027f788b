"""What every benchmark shares: sizes, paths, clocks, formatting, the context each one gets."""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[2]  # the repository
BENCHMARKS = ("orthogonalization", "optimizer", "step", "traffic", "loop", "cuda")
TITLES = {
    "orthogonalization": "Orthogonalization: accuracy vs cost",
    "optimizer": "Optimizer step overhead",
    "step": "Whole training step: Muon vs AdamW",
    "traffic": "Multi-GPU traffic: bytes per parameter per step",
    "loop": "Training loop overhead: lab.train vs a bare loop",
    "cuda": "CUDA: Triton kernels and MFU",
}
H100_MATRICES = ((768, 768), (6144, 768), (768, 3072))  # the hidden-matrix shapes of the h100 preset model

# What each size runs. full: `make bench` on a 2-core CPU in under 15 minutes; tiny: seconds, for tests.
SIZES = {
    "full": dict(
        ortho_shapes=(("cpu", (128, 128)), ("cpu", (1024, 128)), ("cpu", (128, 512)),
                      *(("h100", s) for s in H100_MATRICES)),
        ortho_steps=(3, 4, 5, 6, 7, 8), ortho_repeats={"cpu": 5, "h100": 1}, kappa=1e3,
        ortho_sets={"cpu preset": ("cpu", {}), "h100 preset, 1 layer": ("h100", {"n_layer": 1})},
        ortho_set_rounds=5, ortho_bf16_max_numel=1024 * 128,
        opt_preset="cpu", opt_repeats=7, opt_h100=dict(preset="h100", n_layer=1), opt_h100_repeats=2,
        step_preset="cpu", step_rounds=40, traffic_preset="h100", traffic_worlds=(8, 2, 4),
        loop_preset="cpu", loop_steps=30, loop_skip=5, loop_pairs=4,
        cuda_shapes=H100_MATRICES, cuda_repeats=20, mfu_preset="h100", mfu_overrides={}, mfu_steps=(3, 6),
    ),
    "tiny": dict(
        ortho_shapes=(("cpu", (32, 32)), ("cpu", (64, 16)), ("h100", (16, 48))),
        ortho_steps=(3, 5), ortho_repeats={"cpu": 1, "h100": 1}, kappa=1e3,
        ortho_sets={"smoke preset": ("smoke", {})}, ortho_set_rounds=1, ortho_bf16_max_numel=4096,
        opt_preset="smoke", opt_repeats=2, opt_h100=dict(preset="smoke", n_layer=1), opt_h100_repeats=1,
        step_preset="smoke", step_rounds=2, traffic_preset="smoke", traffic_worlds=(2, 3),
        loop_preset="smoke", loop_steps=6, loop_skip=2, loop_pairs=1,
        cuda_shapes=((64, 64), (128, 64), (64, 192)), cuda_repeats=2, mfu_preset="smoke",
        mfu_overrides=dict(data="fineweb", vocab_size=50304), mfu_steps=(1, 2),
    ),
}


# -----------------------------------------------------------------------------------------------------------------
# small helpers: paths, clocks, formatting

def _reports_dir() -> Path:
    return Path(os.environ.get("LAB_REPORTS_DIR") or ROOT / "reports")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _clock(fn, dev: torch.device, inner: int = 1) -> float:
    """Seconds per call of fn, over `inner` back-to-back calls (device synchronized before and after)."""
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    _sync(dev)
    return (time.perf_counter() - t0) / inner


def _inner(t_one: float, target: float = 0.01, cap: int = 100) -> int:
    """How many back-to-back calls make one sample last ~target seconds (short calls are noisy one at a time)."""
    return max(1, min(cap, int(target / max(t_one, 1e-7))))


def _median(xs) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(xs) if xs else math.nan


def _md(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    return df.to_markdown(index=False, floatfmt=floatfmt)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _bf16_matmul_slowdown(dev: torch.device) -> float:
    """Time of a 256^3 bf16 matmul over the fp32 one: ~1 or below where bf16 is native, >> 1 where it is emulated."""
    A = torch.randn(256, 256, device=dev)
    B = A.bfloat16()
    ts = {}
    for name, X in (("fp32", A), ("bf16", B)):
        X @ X
        ts[name] = min(_clock(lambda X=X: X @ X, dev) for _ in range(3))
    return ts["bf16"] / ts["fp32"]


def muon_shapes(preset: str, **overrides) -> list[tuple[int, int]]:
    """The shapes of the matrices Muon takes in `preset`'s model, in parameter order (built on the meta device)."""
    from lab.config import get_config
    from lab.models import MODELS
    from lab.optim.setup import routing_table
    cfg = get_config(preset, optimizer="muon", **overrides)
    with torch.device("meta"):
        model = MODELS[cfg.model](cfg)
    return [tuple(r["shape"]) for r in routing_table(model, cfg) if r["optimizer"] == "muon"]


@dataclass
class Ctx:
    """What every benchmark gets: its size parameters, where figures go, the device."""
    size: str
    p: dict
    figs: Path
    dev: torch.device

    def fig(self, name: str) -> tuple[Path, str]:
        """(absolute path, path relative to the report) of figure bench_<name>.png."""
        return self.figs / f"bench_{name}.png", f"figs/bench_{name}.png"
