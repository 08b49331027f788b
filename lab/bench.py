"""Benchmarks: `python -m lab bench [NAME ...] [--size full|tiny]` (or `make bench`) -> reports/BENCHMARKS.md + plots.

    orthogonalization   accuracy vs cost of newton_schulz / polar_express at 3..8 steps against the exact polar factor
    optimizer           optimizer step time and state memory on the real parameter set, as a ratio to AdamW
    loop                tokens/s of lab.train.train against a bare training loop written here (same work)
    sample_efficiency   steps Muon needs to reach the AdamW baseline's final val loss, as a fraction of its steps
    cuda                Triton kernels vs torch, Polar Express with/without kernels, MFU of the h100 preset (CUDA only)

Each benchmark prints its tables and returns a markdown section; run_benchmarks writes them into one report with a
header (date, commit, device, versions, threads, per-section wall time). Running a subset replaces only those
sections of an existing report. Timings are medians over interleaved repeats, and every time that matters is
given as a ratio measured side by side in the same run (absolute times on a shared CPU drift, ratios much less).
Nothing here asserts on a time: tests run every benchmark at `--size tiny` only to keep the code alive.

Paths: LAB_REPORTS_DIR (default reports/) and LAB_RUNS_DIR (default runs/), as for campaigns. A tiny run never
writes into the default reports/ or runs/: without those variables it uses a temporary directory.
LAB_BENCH_THREADS sets torch's CPU thread count (default: torch's own, or 1 when the machine is busy at start).
"""
from __future__ import annotations

import datetime
import functools
import json
import math
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import torch

from lab import records
from lab.config import get_config
from lab.optim.orthogonalize import (
    NEWTON_SCHULZ_COEFFS,
    POLAR_EXPRESS_COEFFS,
    exact_polar,
    newton_schulz,
    polar_express,
)

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("orthogonalization", "optimizer", "loop", "sample_efficiency", "cuda")
TITLES = {
    "orthogonalization": "Orthogonalization: accuracy vs cost",
    "optimizer": "Optimizer step overhead",
    "loop": "Training loop overhead: lab.train vs a bare loop",
    "sample_efficiency": "Sample efficiency: Muon steps to reach the AdamW baseline",
    "cuda": "CUDA: Triton kernels and MFU",
}
H100_MATRICES = ((768, 768), (6144, 768), (768, 3072))  # the hidden-matrix shapes of the h100 preset model

# What each size runs. full: `make bench` on a 2-core CPU in under 15 minutes; tiny: seconds, for tests.
SIZES = {
    "full": dict(
        ortho_shapes=(("cpu", (128, 128)), ("cpu", (1024, 128)), ("cpu", (128, 512)),
                      *(("h100", s) for s in H100_MATRICES)),
        ortho_steps=(3, 4, 5, 6, 7, 8), ortho_repeats={"cpu": 5, "h100": 1}, kappa=1e3,
        opt_preset="cpu", opt_repeats=7, opt_h100=dict(preset="h100", n_layer=1), opt_h100_repeats=2,
        loop_preset="cpu", loop_steps=30, loop_skip=5, loop_pairs=4,
        se_preset="cpu", se_seeds=(0, 1), se_val_every=25, se_overrides={},
        cuda_shapes=H100_MATRICES, cuda_repeats=20, mfu_preset="h100", mfu_overrides={}, mfu_steps=(3, 6),
    ),
    "tiny": dict(
        ortho_shapes=(("cpu", (32, 32)), ("cpu", (64, 16)), ("h100", (16, 48))),
        ortho_steps=(3, 5), ortho_repeats={"cpu": 1, "h100": 1}, kappa=1e3,
        opt_preset="smoke", opt_repeats=2, opt_h100=dict(preset="smoke", n_layer=1), opt_h100_repeats=1,
        loop_preset="smoke", loop_steps=6, loop_skip=2, loop_pairs=1,
        se_preset="smoke", se_seeds=(0,), se_val_every=3, se_overrides={},
        cuda_shapes=((64, 64), (128, 64), (64, 192)), cuda_repeats=2, mfu_preset="smoke",
        mfu_overrides=dict(data="fineweb", vocab_size=50304), mfu_steps=(1, 2),
    ),
}


# -----------------------------------------------------------------------------------------------------------------
# small helpers: paths, clocks, formatting

def _reports_dir() -> Path:
    return Path(os.environ.get("LAB_REPORTS_DIR") or ROOT / "reports")


def _runs_dir() -> Path:
    return Path(os.environ.get("LAB_RUNS_DIR") or ROOT / "runs")


def _rel(path: Path) -> str:
    """`path` relative to the repository when inside it (reports should not carry one machine's absolute paths)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


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


@dataclass
class Ctx:
    """What every benchmark gets: its size parameters, where figures go, the device."""
    size: str
    p: dict
    figs: Path
    runs: Path
    dev: torch.device

    def fig(self, name: str) -> tuple[Path, str]:
        """(absolute path, path relative to the report) of figure bench_<name>.png."""
        return self.figs / f"bench_{name}.png", f"figs/bench_{name}.png"


# -----------------------------------------------------------------------------------------------------------------
# 1. orthogonalization

ORTHS = {"newton_schulz": newton_schulz, "polar_express": polar_express}
SHORT = {"newton_schulz": "NS", "polar_express": "PE"}


def _svals(O: torch.Tensor) -> torch.Tensor:
    """Singular values of O (m, n) in float64 from the eigenvalues of the small Gram matrix (cheaper than an SVD)."""
    O = O.double()
    A = O.mT @ O if O.size(0) >= O.size(1) else O @ O.mT
    return torch.linalg.eigvalsh(A).clamp_min(0).sqrt()


def _ill_conditioned(shape, kappa: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, polar) with G = U diag(logspace(0, -log10 kappa)) V^T: condition number kappa, polar factor U V^T."""
    m, n = shape
    k = min(m, n)
    U = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64)).Q
    s = torch.logspace(0, -math.log10(kappa), k, dtype=torch.float64)
    return (U * s) @ V.T, U @ V.T


def _accuracy(O: torch.Tensor, P: torch.Tensor) -> dict:
    """Smallest / largest singular value of O and its relative Frobenius distance to the polar factor P."""
    s = _svals(O)
    dist = ((O.double() - P.double()).norm() / P.double().norm()).item()
    return {"smin": s.min().item(), "smax": s.max().item(), "dist": dist}


def _adamw_stepper(shape, dev: torch.device):
    p = torch.nn.Parameter(torch.randn(shape, device=dev))
    p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW([p], lr=1e-3, fused=True)
    return opt.step


def scalar_map(coeffs, sigma: np.ndarray) -> np.ndarray:
    """sigma -> p_k(...p_1(sigma)) in float64 for a list of odd quintics (a, b, c); overflow gives inf, not an error."""
    y = np.array(sigma, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for a, b, c in coeffs:
            y = a * y + b * y**3 + c * y**5
    return y


def _coeffs(method: str, k: int) -> list:
    if method == "newton_schulz":
        return [NEWTON_SCHULZ_COEFFS] * k
    return [POLAR_EXPRESS_COEFFS[min(i, len(POLAR_EXPRESS_COEFFS) - 1)] for i in range(k)]


def _plot_scalar_maps(path: Path) -> None:
    plt = _plt()
    sigma = np.logspace(-4, math.log10(1.1), 3000)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, method in zip(axes, ORTHS):
        for k in (1, 3, 5, 8):
            y = scalar_map(_coeffs(method, k), sigma)
            ax.plot(sigma, np.where(np.isfinite(y) & (np.abs(y) < 10), y, np.nan), label=f"k={k}")
        ax.axhline(1.0, color="k", lw=0.6, ls="--")
        ax.axvspan(1e-3, 1.0, color="0.9", zorder=0)
        ax.set(xscale="log", ylim=(0, 1.6), xlabel="sigma (after the Frobenius normalization)",
               title=f"{method}: p after k steps")
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("p(sigma)")
    fig.suptitle("Scalar maps (grey: [1e-3, 1], the interval Polar Express is designed for)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_tradeoff(df: pd.DataFrame, path: Path) -> None:
    plt = _plt()
    shapes = list(dict.fromkeys(df["shape"]))
    cols = min(3, len(shapes))
    rows = math.ceil(len(shapes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, shape in zip(axes.flat, shapes):
        sub = df[df["shape"] == shape]
        for method in ORTHS:
            m = sub[sub.method == method]
            ax.plot(m["x AdamW"], m["gauss dist"], "o-", label=method)
            for _, r in m.iterrows():
                ax.annotate(str(r.steps), (r["x AdamW"], r["gauss dist"]), fontsize=7, xytext=(2, 2),
                            textcoords="offset points")
        ax.set(yscale="log", title=shape, xlabel="time / one fused AdamW step", ylabel="||O - UV^T||_F / ||UV^T||_F")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shapes):]:
        ax.axis("off")
    fig.suptitle("Gaussian matrices: distance to the polar factor vs cost (labels: steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_orthogonalization(ctx: Ctx) -> str:
    p, dev = ctx.p, ctx.dev
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32  # what SimpleMuon runs by default
    gen = torch.Generator().manual_seed(0)
    rows = []
    for preset, shape in p["ortho_shapes"]:
        Gg = torch.randn(shape, generator=gen, dtype=torch.float64)
        Pg = exact_polar(Gg)  # one float64 SVD per matrix
        Gi, Pi = _ill_conditioned(shape, p["kappa"], gen)
        inputs = {"gauss": Gg.to(dev, dtype), "ill": Gi.to(dev, dtype)}
        adam = _adamw_stepper(shape, dev)
        adam_inner = _inner(_clock(adam, dev))
        cases = [(m, k) for m in ORTHS for k in p["ortho_steps"]]
        acc, times = {}, {c: [] for c in cases}
        ratios = {c: [] for c in cases}
        # round 0: accuracy on the Gaussian matrix (a warm-up: time not kept); round 1: accuracy on the
        # ill-conditioned one; then repeats on the Gaussian. Same FLOPs for both inputs.
        for r in range(2 + p["ortho_repeats"][preset]):
            t_adam = _clock(adam, dev, adam_inner)
            kind = "ill" if r == 1 else "gauss"
            for method, k in cases:
                out = []
                fn = functools.partial(ORTHS[method], inputs[kind], steps=k)
                t = _clock(lambda fn=fn, out=out: out.append(fn()), dev)
                if r == 0:
                    acc[(method, k, "gauss")] = _accuracy(out[0].cpu(), Pg)
                elif r == 1:
                    acc[(method, k, "ill")] = _accuracy(out[0].cpu(), Pi)
                if r > 0:
                    times[(method, k)].append(t)
                    ratios[(method, k)].append(t / t_adam)
        for method, k in cases:
            g, i = acc[(method, k, "gauss")], acc[(method, k, "ill")]
            rows.append({"preset": preset, "shape": f"{shape[0]}x{shape[1]}", "method": method, "steps": k,
                         "gauss smin": g["smin"], "gauss smax": g["smax"], "gauss dist": g["dist"],
                         "ill smin": i["smin"], "ill smax": i["smax"], "ill dist": i["dist"],
                         "ms": 1e3 * _median(times[(method, k)]), "x AdamW": _median(ratios[(method, k)]),
                         "timed": len(times[(method, k)])})
        print(f"[bench] orthogonalization {shape}: done", flush=True)
    df = pd.DataFrame(rows)

    # headline: PE5 vs NS5 per shape
    head = []
    for shape, sub in df.groupby("shape", sort=False):
        ns = sub[(sub.method == "newton_schulz") & (sub.steps == 5)]
        pe = sub[(sub.method == "polar_express") & (sub.steps == 5)]
        if ns.empty or pe.empty:
            continue
        ns, pe = ns.iloc[0], pe.iloc[0]
        head.append({"shape": shape, "NS5 dist gauss": ns["gauss dist"], "PE5 dist gauss": pe["gauss dist"],
                     "dist ratio PE5/NS5 gauss": pe["gauss dist"] / ns["gauss dist"],
                     "NS5 dist ill": ns["ill dist"], "PE5 dist ill": pe["ill dist"],
                     "dist ratio PE5/NS5 ill": pe["ill dist"] / ns["ill dist"],
                     "time ratio PE5/NS5": pe["ms"] / ns["ms"], "NS5 x AdamW": ns["x AdamW"],
                     "PE5 x AdamW": pe["x AdamW"]})
    head = pd.DataFrame(head)

    # the scalar maps on the interval Polar Express is designed for
    grid = np.logspace(-3, 0, 4001)
    maps = []
    for method in ORTHS:
        for k in p["ortho_steps"]:
            y = scalar_map(_coeffs(method, k), grid)
            maps.append({"method": method, "steps": k, "min p on [1e-3,1]": y.min(), "max p on [1e-3,1]": y.max(),
                         "p(1e-4)": scalar_map(_coeffs(method, k), np.array([1e-4]))[0],
                         "p(1.0)": scalar_map(_coeffs(method, k), np.array([1.0]))[0]})
    maps = pd.DataFrame(maps)

    f1, r1 = ctx.fig("scalar_maps")
    _plot_scalar_maps(f1)
    f2, r2 = ctx.fig("ortho_tradeoff")
    _plot_tradeoff(df, f2)

    if head.empty:
        headline = "(no shape ran both PE5 and NS5)"
    else:
        headline = (f"PE5 / NS5 distance to the polar factor (Gaussian): median "
                    f"**{head['dist ratio PE5/NS5 gauss'].median():.3f}** over {len(head)} shapes (range "
                    f"{head['dist ratio PE5/NS5 gauss'].min():.3f}-{head['dist ratio PE5/NS5 gauss'].max():.3f}); "
                    f"ill-conditioned: **{head['dist ratio PE5/NS5 ill'].median():.3f}**; cost ratio PE5/NS5 "
                    f"**{head['time ratio PE5/NS5'].median():.3f}** (same matmuls, different coefficients); "
                    f"NS5 costs {head['NS5 x AdamW'].min():.3g}-{head['NS5 x AdamW'].max():.3g} fused AdamW steps "
                    f"on the same tensor.")
    kappa = p["kappa"]
    body = f"""\
**What:** `newton_schulz` and `polar_express` (lab.optim.orthogonalize) at {', '.join(map(str, p['ortho_steps']))}
steps on {dtype} inputs on {dev.type} (what SimpleMuon runs there), against `exact_polar` (float64 SVD, computed once
per matrix). Two inputs per shape: a Gaussian matrix, and an ill-conditioned one U diag(logspace(0, -log10 kappa)) V^T
with kappa = {kappa:g} (its polar factor U V^T is known exactly). smin/smax: extreme singular values of the output;
dist: ||O - UV^T||_F / ||UV^T||_F. ms: median over the timed calls (column `timed`: the ill-conditioned call plus
{p['ortho_repeats']['cpu']} (cpu shapes) / {p['ortho_repeats']['h100']} (h100 shapes) repeats, every case once per
round, after a warm-up round); x AdamW: median over rounds of time / one `torch.optim.AdamW(fused=True)` step on a
parameter of the same shape, timed in the same round.
Shapes: the hidden matrices of the `cpu` preset model (128x128 attention, 1024x128 w_fc, 128x512 w_proj) and of
the `h100` preset (768x768, 6144x768, 768x3072).

**Headline:** {headline}

Note: after the Frobenius normalization the ill-conditioned matrix's smallest singular value is about
1/(kappa ||s||_2) of its largest (~1e-4 here), below the 1e-3 Polar Express is designed for, so no method reaches
it in 5 steps; the Gaussian matrices sit inside the design interval.

### PE5 vs NS5 per shape

{_md(head)}

### All steps

{_md(df)}

### Scalar maps p_k(sigma) (exact, float64)

{_md(maps)}

![scalar maps]({r1})

![accuracy vs cost]({r2})
"""
    print(_md(head), flush=True)
    return body


# -----------------------------------------------------------------------------------------------------------------
# 2. optimizer step overhead

def _state_bytes(opts) -> int:
    seen, total = set(), 0
    for opt in opts:
        for st in opt.state.values():
            for v in st.values():
                if torch.is_tensor(v) and id(v) not in seen:
                    seen.add(id(v))
                    total += v.numel() * v.element_size()
    return total


def _optimizer_arms(model, preset: str, overrides: dict, torch_muon: bool) -> tuple[dict, list]:
    """{arm label: [optimizers]} over the model's real routing; the hybrid arms share one AdamW for the rest."""
    from lab.optim.setup import build_optimizers, routing_table

    def cfg(**kw):
        return get_config(preset, **overrides, **kw)

    arms = {"AdamW (baseline, all params)": build_optimizers(model, cfg(optimizer="adamw"))[0]}
    hybrid = {"Muon NS5 + AdamW": dict(orthogonalizer="newton_schulz"),
              "Muon PE5 + AdamW": dict(orthogonalizer="polar_express"),
              "NorMuon NS5 + AdamW": dict(orthogonalizer="newton_schulz", normuon=True)}
    rest = None
    for label, kw in hybrid.items():
        opts = build_optimizers(model, cfg(optimizer="muon", **kw))[0]
        rest = opts[1] if rest is None else rest  # one AdamW for the rest, shared: its cost is the same in every arm
        arms[label] = [opts[0], rest]
    c = cfg(optimizer="muon")
    names = {r["name"] for r in routing_table(model, c) if r["optimizer"] == "muon"}
    matrices = [p for n, p in model.named_parameters() if n in names]
    if torch_muon:
        arms["torch.optim.Muon + AdamW"] = [
            torch.optim.Muon(matrices, lr=c.lr, weight_decay=0.0, momentum=c.momentum, nesterov=True,
                             adjust_lr_fn="original"), rest]
    arms["AdamW (Muon's matrices only)"] = [torch.optim.AdamW(matrices, lr=c.adamw_lr, fused=True)]
    return arms, matrices


def _time_arms(arms: dict, dev: torch.device, repeats: int) -> dict:
    """{arm: {"total": [s...], "parts": [[s per optimizer]...], "ratio": [...]}} over interleaved rounds.

    Round 0 is a warm-up (allocates state, picks how many back-to-back steps make one sample); each later round
    times every arm once, in an order rotated by one per round; ratios are to the baseline in the same round.
    """
    labels = list(arms)
    out = {a: {"total": [], "parts": [], "ratio": []} for a in labels}
    inner = {}
    for a in labels:
        t = sum(_clock(o.step, dev) for o in arms[a])
        inner[a] = _inner(t, target=0.02, cap=20)
    for r in range(repeats):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        this = {}
        for a in order:
            parts = [_clock(o.step, dev, inner[a]) for o in arms[a]]
            this[a] = parts
        for a in labels:
            out[a]["parts"].append(this[a])
            out[a]["total"].append(sum(this[a]))
            out[a]["ratio"].append(sum(this[a]) / sum(this[labels[0]]))
    return out


def _optimizer_table(model, preset: str, overrides: dict, repeats: int, dev: torch.device, torch_muon: bool,
                     extrapolate_layers: int = 0) -> pd.DataFrame:
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(dev)  # fake gradients
    arms, matrices = _optimizer_arms(model, preset, overrides, torch_muon)
    res = _time_arms(arms, dev, repeats)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    mat_bytes = sum(p.numel() * p.element_size() for p in matrices)
    base = "AdamW (baseline, all params)"
    rows = []
    for a, r in res.items():
        parts = [_median([pp[i] for pp in r["parts"]]) for i in range(len(arms[a]))]
        row = {"arm": a, "ms/step": 1e3 * _median(r["total"]), "x AdamW": _median(r["ratio"]),
               "matrix part ms": 1e3 * parts[0] if len(parts) == 2 else math.nan,
               "AdamW part ms": 1e3 * parts[-1] if len(parts) == 2 else math.nan,
               "state bytes / param byte": _state_bytes(arms[a]) / param_bytes}
        if extrapolate_layers:
            L = extrapolate_layers
            t_mat = _median(res["AdamW (Muon's matrices only)"]["total"])
            t_rest = _median([pp[-1] for pp in res["Muon NS5 + AdamW"]["parts"]])
            s_rest = _state_bytes([arms["Muon NS5 + AdamW"][1]])
            full_params = L * mat_bytes + (param_bytes - mat_bytes)
            if len(parts) == 2:
                row[f"x AdamW at {L} layers (est.)"] = (L * parts[0] + parts[1]) / (L * t_mat + t_rest)
                row[f"state/param at {L} layers (est.)"] = (L * _state_bytes([arms[a][0]]) + s_rest) / full_params
            elif a == base:
                row[f"x AdamW at {L} layers (est.)"] = 1.0
                row[f"state/param at {L} layers (est.)"] = row["state bytes / param byte"]
            else:
                row[f"x AdamW at {L} layers (est.)"] = math.nan
                row[f"state/param at {L} layers (est.)"] = math.nan
        rows.append(row)
    for p in model.parameters():
        p.grad = None
    return pd.DataFrame(rows)


def _plot_optimizer(tables: dict, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 3.6), squeeze=False)
    for ax, (name, df) in zip(axes[0], tables.items()):
        ax.barh(df["arm"], df["x AdamW"], color="tab:blue")
        ax.axvline(1, color="k", lw=0.6)
        ax.set(xscale="log", xlabel="step time / AdamW step", title=name)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_optimizer(ctx: Ctx) -> str:
    from lab.models import build_model
    p, dev = ctx.p, ctx.dev
    slow_bf16 = _bf16_matmul_slowdown(dev)
    preset = p["opt_preset"]
    torch.manual_seed(0)
    model = build_model(get_config(preset)).to(dev)
    n_params = sum(q.numel() for q in model.parameters())
    t1 = _optimizer_table(model, preset, {}, p["opt_repeats"], dev, torch_muon=True)
    del model
    print(_md(t1), flush=True)

    h = dict(p["opt_h100"])
    hpreset = h.pop("preset")
    full_layers = get_config(hpreset).n_layer
    torch.manual_seed(0)
    hmodel = build_model(get_config(hpreset, **h)).to(dev)
    hn = sum(q.numel() for q in hmodel.parameters())
    # torch.optim.Muon always runs Newton-Schulz in bf16: on a CPU without native bf16 that is ~30x slower
    h_torch_muon = dev.type == "cuda" or slow_bf16 < 3
    t2 = _optimizer_table(hmodel, hpreset, h, p["opt_h100_repeats"], dev, torch_muon=h_torch_muon,
                          extrapolate_layers=full_layers)
    del hmodel
    print(_md(t2), flush=True)

    f, rel = ctx.fig("optimizer")
    _plot_optimizer({f"{preset} preset model": t1, f"{hpreset} preset, {h.get('n_layer')} layer": t2}, f)

    def ratio(df, arm, col="x AdamW"):
        v = df.loc[df.arm == arm, col]
        return v.iloc[0] if len(v) else math.nan

    ext = f"x AdamW at {full_layers} layers (est.)"
    headline = (f"Muon NS5 + AdamW step = **{ratio(t1, 'Muon NS5 + AdamW'):.1f}x** an AdamW step on the `{preset}` "
                f"preset model ({n_params / 1e6:.2f}M params; PE5 {ratio(t1, 'Muon PE5 + AdamW'):.1f}x, NorMuon "
                f"{ratio(t1, 'NorMuon NS5 + AdamW'):.1f}x, torch.optim.Muon "
                f"{ratio(t1, 'torch.optim.Muon + AdamW'):.1f}x); "
                f"`{hpreset}` shapes, {full_layers} layers (estimated from one block): "
                f"**{ratio(t2, 'Muon NS5 + AdamW', ext):.1f}x**.")
    skipped = "" if h_torch_muon else (
        f"torch.optim.Muon is left out of the {hpreset} table on this device: it always orthogonalizes in bf16, and "
        f"a bf16 matmul here takes {slow_bf16:.0f}x the fp32 one (no native bf16 on this CPU), so one step would take "
        f"minutes. ")
    body = f"""\
**What:** one optimizer step (fake Gaussian gradients, no forward/backward) on the real parameter set, on
{dev.type}. Arms: AdamW over every parameter (`build_optimizers` with optimizer=adamw: fused where available; the
baseline), the hybrid SimpleMuon + AdamW from `build_optimizers` with each orthogonalizer and with NorMuon,
`torch.optim.Muon` (hidden 2-D matrices, adjust_lr_fn="original") + the same AdamW for the rest, and, for
reference, AdamW over only the matrices Muon takes. Hybrid step = Muon part + AdamW part (one shared AdamW,
timed within the same sample). Time: median over {p['opt_repeats']} interleaved rounds (arm order rotated each
round) after a warm-up round; x AdamW: median over rounds of arm / baseline in the same round. State bytes: every
tensor in the optimizers' state, over the bytes of all parameters. SimpleMuon orthogonalizes in
{'bf16' if dev.type == 'cuda' else 'fp32'} here (its default on {dev.type}); torch.optim.Muon always in bf16.

**Headline:** {headline}

### `{preset}` preset model: the whole model ({n_params / 1e6:.2f}M parameters)

{_md(t1)}

### `{hpreset}` preset shapes: a {h.get('n_layer')}-layer model ({hn / 1e6:.1f}M parameters)

Which subset: the `{hpreset}` model built with n_layer={h.get('n_layer')} (one block's hidden matrices
(4 x 768x768, 6144x768, 768x3072) plus the full {get_config(hpreset).vocab_size}-token embedding
and head, on AdamW in every arm); the full {full_layers}-layer model is estimated as {full_layers} x (matrix part)
+ (AdamW part), with the baseline {full_layers} x (AdamW on the matrices) + (AdamW part); the per-layer vectors of
the other layers are left out (< 0.1% of the parameters). {skipped}

{_md(t2)}

![optimizer step time]({rel})
"""
    return body


# -----------------------------------------------------------------------------------------------------------------
# 3. training loop overhead

def _lab_loop(cfg) -> dict:
    """Run lab.train.train; wall-clock stamps at the end of every training step (after its metrics line)."""
    from lab.train import Run, train
    stamps = {}
    original = Run.emit

    def emit(self, row):
        original(self, row)
        if "train_loss" in row:
            stamps[row["step"]] = time.perf_counter()

    with mock.patch.object(Run, "emit", emit):
        s = train(cfg, progress=False)
    rows = [r for r in records.read_metrics(Path(cfg.runs_dir) / cfg.run_id()) if "train_loss" in r]
    return {"stamps": stamps, "reported_dt": {r["step"]: cfg.tokens_per_step / r["tokens_per_s"] for r in rows},
            "final_loss": rows[-1]["train_loss"], "status": s["status"]}


def _bare_loop(cfg) -> dict:
    """The same work as lab.train with nothing else: model, data, optimizers, schedules, projection; no logging,
    evaluation, checkpoints, grad-norm or drift measurement."""
    from lab.data import load_data
    from lab.models import build_model
    from lab.optim.setup import build_optimizers
    from lab.optim.sphere import project_to_sphere
    from lab.train import autocast_ctx, resolve_device, set_schedules
    device = resolve_device(cfg)
    data = load_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    opts, _ = build_optimizers(model, cfg)
    ctx = autocast_ctx(cfg, device)
    sphere = hasattr(model, "sphere_params")
    stamps = {}
    for step in range(cfg.steps):
        set_schedules(opts, cfg, step)
        x, y = (t.to(device) for t in data.train_batch(step))
        with ctx:
            loss = model(x, y)[1]
        loss.backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        if sphere and (step + 1) % cfg.project_every == 0:
            project_to_sphere(model)
        final = loss.item()
        stamps[step] = time.perf_counter()
    return {"stamps": stamps, "final_loss": final}


def _steady_tps(stamps: dict, skip: int, steps: int, tokens: int) -> float:
    """Tokens/s of the median step among steps skip..steps-1 (a step: end of the previous one to end of this one);
    the median, not the mean, so a burst of another process on a shared CPU does not decide the ratio."""
    return tokens / statistics.median(stamps[s] - stamps[s - 1] for s in range(skip, steps))


def bench_loop(ctx: Ctx) -> str:
    p = ctx.p
    steps, skip = p["loop_steps"], p["loop_skip"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lab-bench-loop-") as tmp:
        for i in range(p["loop_pairs"]):
            order = ("lab", "bare") if i % 2 == 0 else ("bare", "lab")
            cfg = get_config(p["loop_preset"], steps=steps, val_every=10**9, ckpt_every=0,
                             runs_dir=str(Path(tmp) / f"pair{i}"), campaign="bench")
            res = {}
            for kind in order:
                res[kind] = _lab_loop(cfg) if kind == "lab" else _bare_loop(cfg)
            lab_tps = _steady_tps(res["lab"]["stamps"], skip, steps, cfg.tokens_per_step)
            bare_tps = _steady_tps(res["bare"]["stamps"], skip, steps, cfg.tokens_per_step)
            rep = cfg.tokens_per_step / statistics.median(res["lab"]["reported_dt"][s] for s in range(skip, steps))
            rows.append({"pair": i, "order": " then ".join(order), "lab tok/s (wall)": lab_tps,
                         "lab tok/s (reported)": rep, "bare tok/s": bare_tps, "lab / bare": lab_tps / bare_tps,
                         "reported / bare": rep / bare_tps,
                         "same final loss": res["lab"]["final_loss"] == res["bare"]["final_loss"],
                         "lab final loss": res["lab"]["final_loss"], "bare final loss": res["bare"]["final_loss"]})
    df = pd.DataFrame(rows)
    ratio = _median(df["lab / bare"])
    verdict = "within" if ratio >= 0.95 else "NOT within"
    cfg = get_config(p["loop_preset"])
    body = f"""\
**What:** tokens/s of `lab.train.train` (`{p['loop_preset']}` preset: {cfg.model}, optimizer={cfg.optimizer},
{steps} steps, val_every large, ckpt_every=0, a fresh temporary runs_dir) against a bare loop written in the
benchmark (same model, data, optimizers, lr/momentum schedules and sphere projection; no metrics file, evaluation,
checkpoint, grad norm or drift check), on {ctx.dev.type}, {p['loop_pairs']} interleaved pairs (order alternating).
Steady state: the median step time over steps {skip}..{steps - 1} (wall clock from the end of one step to the end
of the next; for lab the stamp is taken after the step's metrics line is written, so logging counts), per run; the
ratio is taken within each pair, then the median over pairs. "reported" is lab's own tokens_per_s (its in-loop
timer: training only, logging excluded). Same final loss = the two loops computed bit-identical training
(CPU fp32 is deterministic), i.e. the comparison is like for like.

**Headline:** lab / bare tokens/s = **{ratio:.3f}** (median of {len(df)}): {verdict} 5% of the bare loop.

{_md(df)}
"""
    print(_md(df), flush=True)
    return body


# -----------------------------------------------------------------------------------------------------------------
# 4. sample efficiency

def steps_to_target(curve, target: float) -> float:
    """First step at which the val-loss curve [(step, loss), ...] reaches `target`, linearly interpolated between
    evaluations; nan if it never does."""
    curve = sorted((s, v) for s, v in curve if v is not None and math.isfinite(v))
    for i, (s, v) in enumerate(curve):
        if v <= target:
            if i == 0:
                return float(s)
            s0, v0 = curve[i - 1]
            return s0 + (s - s0) * (v0 - target) / (v0 - v)
    return math.nan


def _val_curve(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["val_loss"]) for r in records.read_metrics(run_dir) if r.get("val_loss") is not None]


def _arm_of(overrides: dict, preset: str) -> str:
    return overrides.get("optimizer", get_config(preset).optimizer)


def _best_arm_label(runs: list[dict], preset: str, optimizer: str, runs_dir: Path) -> str | None:
    """Lowest mean final val loss over finished seeds among the manifest's arms of `optimizer` (no lab.campaign)."""
    by_arm = {}
    for r in runs:
        if _arm_of(r["overrides"], preset) != optimizer:
            continue
        s = records.read_summary(runs_dir / r["run_id"])
        if s and s["status"] == "finished" and s.get("final_val_loss") is not None:
            by_arm.setdefault(r["arm"], []).append(s["final_val_loss"])
    return min(by_arm, key=lambda a: statistics.mean(by_arm[a])) if by_arm else None


def _from_campaign(preset: str, runs_dir: Path) -> dict | str:
    """The best Muon arm and the best AdamW arm (the baseline) of the lr_sweep campaign at `preset`, paired by seed.

    Manifest format assumed (runs/campaigns/lr_sweep-<preset>.json, written by lab.campaign.run_arms):
        {"campaign": ..., "preset": ..., "base": {...}, "runs": [{"arm": label, "seed": int, "run_id": id,
                                                                  "overrides": {"optimizer": ..., "lr": ...}}, ...]}
    with each run's val_loss rows in runs/<run_id>/metrics.jsonl and its status in runs/<run_id>/summary.json.
    The best arms come from lab.campaign.best_setting when it exists, else from the lowest mean final val loss.
    Used only once every run of the manifest is final: the best arm of a sweep still running means nothing.
    Returns the pairs, or a string saying why the records cannot be used.
    """
    path = runs_dir / "campaigns" / f"lr_sweep-{preset}.json"
    if not path.exists():
        return f"no lr_sweep records at preset {preset} ({_rel(path)} does not exist)"
    runs = records.read_json(path).get("runs", [])
    final = sum(1 for r in runs if (records.read_summary(runs_dir / r["run_id"]) or {}).get("status") in records.FINAL)
    if not runs or final < len(runs):
        return (f"the lr_sweep campaign at preset {preset} is incomplete ({final} of {len(runs)} runs final) in "
                f"{_rel(path)}")
    labels, how = {}, "lowest mean final val loss (read from the manifest)"
    try:
        from lab import campaign
        best_setting = campaign.best_setting
    except (ImportError, AttributeError):
        best_setting = None
    for opt, key in (("muon", "lr"), ("adamw", "adamw_lr")):
        label = None
        if best_setting is not None:
            how = "lab.campaign.best_setting"
            value = best_setting("lr_sweep", preset, key, {"optimizer": opt})
            if value is not None:
                label = next((r["arm"] for r in runs if _arm_of(r["overrides"], preset) == opt
                              and math.isclose(float(r["overrides"].get(key, getattr(get_config(preset), key))),
                                               float(value))), None)
        else:
            label = _best_arm_label(runs, preset, opt, runs_dir)
        if label is None:
            return f"lr_sweep at preset {preset} has no finished {opt} arm ({_rel(path)})"
        labels[opt] = label
    pairs = {}
    for opt, label in labels.items():
        for r in runs:
            if r["arm"] == label:
                s = records.read_summary(runs_dir / r["run_id"])
                if s and s["status"] in records.FINAL:
                    pairs.setdefault(r["seed"], {})[opt] = r["run_id"]
    pairs = {s: v for s, v in pairs.items() if len(v) == 2}
    if not pairs:
        return f"lr_sweep at preset {preset}: no seed has both a final best-Muon and a final best-AdamW run"
    return {"source": f"campaign records {_rel(path)} (best arms by {how})", "labels": labels, "pairs": pairs}


def _own_grid(preset: str, seeds, val_every: int, overrides: dict, runs_dir: Path, why: str) -> dict:
    """Train (or reuse: runs are identified by their config hash) Muon vs AdamW at the preset's lrs per seed."""
    from lab.train import train
    base = get_config(preset, **overrides)
    lr = base.lr
    arms = {"muon": dict(optimizer="muon", lr=lr), "adamw": dict(optimizer="adamw", adamw_lr=base.adamw_lr)}
    labels = {"muon": f"muon lr={lr:g}", "adamw": f"adamw lr={base.adamw_lr:g}"}
    pairs, trained, reused = {}, 0, 0
    for seed in seeds:
        for opt, kw in arms.items():
            cfg = get_config(preset, **overrides, **kw, seed=int(seed), val_every=val_every, campaign="bench",
                             runs_dir=str(runs_dir))
            done = records.read_summary(runs_dir / cfg.run_id())
            if done and done["status"] in records.FINAL:
                reused += 1
            else:
                trained += 1
                print(f"[bench] sample_efficiency: training {labels[opt]} seed {seed} ({cfg.steps} steps)", flush=True)
                train(cfg, progress=False)
            pairs.setdefault(int(seed), {})[opt] = cfg.run_id()
    src = (f"own grid in {_rel(runs_dir)} ({trained} runs trained now, {reused} reused), val_every={val_every}, "
           f"because {why}; Muon at the preset's lr {lr:g} and AdamW at its adamw_lr {base.adamw_lr:g} (neither tuned "
           f"here: rerun this section after `python -m lab campaign lr_sweep` to compare the best of each)")
    return {"source": src, "labels": labels, "pairs": pairs}


def bench_sample_efficiency(ctx: Ctx) -> str:
    p = ctx.p
    preset = p["se_preset"]
    found = _from_campaign(preset, ctx.runs)
    if isinstance(found, str):
        found = _own_grid(preset, p["se_seeds"], p["se_val_every"], p["se_overrides"], ctx.runs, found)
    rows, curves = [], {}
    for seed, ids in sorted(found["pairs"].items()):
        a_dir, m_dir = ctx.runs / ids["adamw"], ctx.runs / ids["muon"]
        a_sum, m_sum = records.read_summary(a_dir) or {}, records.read_summary(m_dir) or {}
        a_curve, m_curve = _val_curve(a_dir), _val_curve(m_dir)
        curves[seed] = (a_curve, m_curve)
        target = a_sum.get("final_val_loss")
        a_steps = a_sum.get("steps") or (a_curve[-1][0] if a_curve else math.nan)
        hit = steps_to_target(m_curve, target) if target is not None else math.nan
        rows.append({"seed": seed, "adamw run": ids["adamw"], "muon run": ids["muon"], "AdamW final val": target,
                     "Muon final val": m_sum.get("final_val_loss"), "Muon status": m_sum.get("status"),
                     "AdamW steps": a_steps, "Muon steps to target": hit, "fraction": hit / a_steps})
    df = pd.DataFrame(rows)
    frac = df["fraction"].astype(float)
    mean = frac.mean() if frac.notna().any() else math.nan
    reached = int(frac.notna().sum())

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (seed, (a_curve, m_curve)) in enumerate(curves.items()):
        color = f"C{i}"
        if a_curve:
            ax.plot(*zip(*a_curve), "--", color=color, label=f"{found['labels']['adamw']} seed {seed}")
        if m_curve:
            ax.plot(*zip(*m_curve), "-", color=color, label=f"{found['labels']['muon']} seed {seed}")
        r = df[df.seed == seed].iloc[0]
        if r["AdamW final val"] is not None:
            ax.axhline(r["AdamW final val"], color=color, lw=0.5)
            if math.isfinite(r["Muon steps to target"]):
                ax.plot([r["Muon steps to target"]], [r["AdamW final val"]], "o", color=color)
    ax.set(xlabel="step", ylabel="val loss", title=f"{preset}: Muon vs the AdamW baseline (dot: target reached)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    f, rel = ctx.fig("sample_efficiency")
    fig.savefig(f, dpi=110)
    plt.close(fig)

    std = f" (std {frac.std(ddof=1):.3f})" if reached > 1 else ""
    headline = (f"Muon reaches the AdamW baseline's final val loss after **{mean:.3f}** of the baseline's steps{std} "
                f"(mean over the {reached} of {len(df)} seeds that reached it).")
    body = f"""\
**What:** at the `{preset}` preset, the step at which the Muon run's val-loss curve first reaches the final val loss
of the AdamW baseline run of the same seed (linear interpolation between evaluations), as a fraction of the
baseline's steps; mean over seeds. Runs: {found['source']}. Arms: Muon = `{found['labels']['muon']}`, AdamW =
`{found['labels']['adamw']}`. Resolution is the runs' val_every; a fraction below 1 means Muon needs fewer steps.

**Headline:** {headline}

{_md(df)}

![val loss curves]({rel})
"""
    print(_md(df), flush=True)
    return body


# -----------------------------------------------------------------------------------------------------------------
# 5. CUDA: kernels and MFU

def _cuda_ms(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        ts.append(start.elapsed_time(end))
    return statistics.median(ts)


def _mfu(ctx: Ctx) -> dict:
    from lab.models import build_model, flops_per_token
    from lab.optim.setup import build_optimizers
    from lab.optim.sphere import project_to_sphere
    from lab.train import autocast_ctx, peak_flops
    p, dev = ctx.p, ctx.dev
    cfg = get_config(p["mfu_preset"], **p["mfu_overrides"], device="cuda")
    torch.manual_seed(0)
    model = build_model(cfg).to(dev)
    opts, _ = build_optimizers(model, cfg)
    ac = autocast_ctx(cfg, dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    warm, timed = p["mfu_steps"]

    def step(i):
        tok = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len + 1), device=dev, generator=gen)
        for _ in range(cfg.grad_accum):
            with ac:
                loss = model(tok[:, :-1], tok[:, 1:])[1]
            loss.backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        if (i + 1) % cfg.project_every == 0:
            project_to_sphere(model)

    for i in range(warm):
        step(i)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(warm, warm + timed):
        step(i)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / timed
    tps = cfg.tokens_per_step / dt
    fpt = flops_per_token(model, cfg)
    peak = peak_flops(dev)
    return {"preset": p["mfu_preset"], "model": cfg.model, "params (M)": sum(q.numel() for q in model.parameters())
            / 1e6, "tokens/step": cfg.tokens_per_step, "ms/step": 1e3 * dt, "tokens/s": tps,
            "TFLOP/s": fpt * tps / 1e12, "peak TFLOP/s (bf16 dense)": peak / 1e12 if peak else math.nan,
            "MFU": fpt * tps / peak if peak else math.nan, "timed steps": timed}


def bench_cuda(ctx: Ctx) -> str:
    if ctx.dev.type != "cuda":
        line = "skipped: no CUDA (this device: " + records.device_name(ctx.dev) + ")"
        print(f"[bench] cuda: {line}", flush=True)
        return line + "\n"
    from lab.optim import kernels
    p, dev = ctx.p, ctx.dev
    if not kernels.available():
        line = f"skipped: Triton kernels unavailable (HAS_TRITON={kernels.HAS_TRITON}, ENABLED={kernels.ENABLED})"
        return line + "\n"
    gen = torch.Generator(device=dev).manual_seed(0)
    rows = []
    for m, n in p["cuda_shapes"]:
        X = torch.randn(m, n, device=dev, generator=gen, dtype=torch.bfloat16)
        A = X.mT if m > n else X  # the operand of the Gram matrix in the quintic loop: (k, K), k = min(m, n)
        S = (A @ A.mT) / A.size(1)
        P = functools.partial
        cases = {
            "xxt: A A^T": (P(torch.mm, A, A.mT), P(kernels.xxt, A)),
            "ba_plus_caa: bS + cSS": (P(torch.addmm, S, S, S, beta=-4.775, alpha=2.0315),
                                      P(kernels.ba_plus_caa, S, alpha=2.0315, beta=-4.775)),
            "polar_express 5 steps": (P(polar_express, X, 5, use_kernels=False),
                                      P(polar_express, X, 5, use_kernels=True)),
        }
        for op, (f_torch, f_triton) in cases.items():
            t_torch, t_tri = _cuda_ms(f_torch, p["cuda_repeats"]), _cuda_ms(f_triton, p["cuda_repeats"])
            err = ((f_triton().float() - f_torch().float()).norm() / f_torch().float().norm()).item()
            rows.append({"op": op, "matrix": f"{m}x{n}", "operand": f"{tuple(A.shape)}", "torch ms": t_torch,
                         "triton ms": t_tri, "speedup torch/triton": t_torch / t_tri, "rel diff": err})
    df = pd.DataFrame(rows)
    mfu = pd.DataFrame([_mfu(ctx)])
    pe = df[df.op == "polar_express 5 steps"]["speedup torch/triton"]
    headline = (f"Polar Express with kernels is **{_median(pe):.2f}x** faster than without (median over shapes); "
                f"MFU of the `{p['mfu_preset']}` preset: **{mfu['MFU'].iloc[0]:.3f}**.")
    body = f"""\
**What:** on {records.device_name(dev)}, bf16: the Triton symmetric kernels (`lab.optim.kernels.xxt`,
`ba_plus_caa`) against torch (`torch.mm(A, A.T)`, `torch.addmm`), and the whole Polar Express (5 steps) with and
without the kernels, on the Gram operands of the `h100` preset's matrices (tall matrices use A = X^T); CUDA-event
medians of {p['cuda_repeats']} calls. MFU: the `{p['mfu_preset']}` preset model trained for {p['mfu_steps'][1]}
steps after {p['mfu_steps'][0]} warm-up steps (eager, bf16 autocast, hybrid Muon+AdamW with kernels) on **synthetic
tokens** (uniform over the {get_config(p['mfu_preset'], **p['mfu_overrides']).vocab_size}-token vocabulary: FineWeb
may not be downloaded, and the cost does not depend on the tokens); FLOPs per token from `lab.models.flops_per_token`
(6N + attention).

**Headline:** {headline}

{_md(df)}

{_md(mfu)}
"""
    print(_md(df), flush=True)
    print(_md(mfu), flush=True)
    return body


# -----------------------------------------------------------------------------------------------------------------
# the report

RUNNERS = {"orthogonalization": bench_orthogonalization, "optimizer": bench_optimizer, "loop": bench_loop,
           "sample_efficiency": bench_sample_efficiency, "cuda": bench_cuda}
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
    dirty = records._git("status", "--porcelain", "--untracked-files=no")
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
    directory instead), and the runs of the sample-efficiency grid go to a temporary runs dir unless LAB_RUNS_DIR
    is set. Sections not run now are kept from the existing report. Returns the report's path.
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
    runs = _runs_dir()
    if size == "tiny" and not os.environ.get("LAB_RUNS_DIR"):
        runs = out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    (out / "figs").mkdir(exist_ok=True)
    dev = _device()
    ctx = Ctx(size=size, p=SIZES[size], figs=out / "figs", runs=runs, dev=dev)
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

Written by `python -m lab bench` (lab/bench.py); every number below comes from running it, nothing is edited by hand.
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
