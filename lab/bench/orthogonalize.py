"""1. Orthogonalization: accuracy of newton_schulz / polar_express at 3..8 steps against the exact polar factor,
and their cost as a ratio to an AdamW step on the same matrix."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lab.bench.common import (
    Ctx,
    _bf16_matmul_slowdown,
    _clock,
    _inner,
    _md,
    _median,
    _plt,
    muon_shapes,
)
from lab.optim.orthogonalize import (
    NEWTON_SCHULZ_COEFFS,
    POLAR_EXPRESS_COEFFS,
    _gram_applies,
    exact_polar,
    gram_newton_schulz,
    newton_schulz,
    orthogonalize_flops,
    polar_express,
)

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

{_stacked_and_gram(ctx)}
"""
    print(_md(head), flush=True)
    return body


# -----------------------------------------------------------------------------------------------------------------
# stacked and Gram Newton-Schulz on the real sets of matrices

SET_METHODS = ("standard per-matrix", "stacked", "Gram + stacked")


def _run_set(method: str, mats: dict) -> list:
    """Orthogonalize a set {shape: (B, m, n) stack} the way `method` does: one newton_schulz call per matrix, one per
    stack, or one gram_newton_schulz call per stack. Returns one output per matrix, in the stacks' order."""
    if method == "standard per-matrix":
        return [newton_schulz(x) for X in mats.values() for x in X]
    orth = gram_newton_schulz if method == "Gram + stacked" else newton_schulz
    return [x for X in mats.values() for x in orth(X)]


def _set_accuracy(shapes: list, kappa: float, gen: torch.Generator, dev: torch.device, dtype) -> pd.DataFrame:
    """Per distinct shape: distance of newton_schulz and gram_newton_schulz to the exact polar factor on a Gaussian
    and an ill-conditioned input, and the Gram result's distance to the standard one."""
    rows = []
    for shape in dict.fromkeys(shapes):
        Gg = torch.randn(shape, generator=gen, dtype=torch.float64)
        Gi, Pi = _ill_conditioned(shape, kappa, gen)
        row = {"shape": f"{shape[0]}x{shape[1]}", "dtype": str(dtype).removeprefix("torch."),
               "Gram iteration": _gram_applies(shape)}
        for kind, (G, P) in {"gauss": (Gg, exact_polar(Gg)), "ill": (Gi, Pi)}.items():
            X = G.to(dev, dtype)
            ns, gram = newton_schulz(X).cpu(), gram_newton_schulz(X).cpu()
            row[f"NS dist {kind}"] = _accuracy(ns, P)["dist"]
            row[f"Gram dist {kind}"] = _accuracy(gram, P)["dist"]
            row[f"Gram/NS {kind}"] = row[f"Gram dist {kind}"] / row[f"NS dist {kind}"]
            if kind == "gauss":
                row["|Gram - NS| / |NS|"] = ((gram.double() - ns.double()).norm() / ns.double().norm()).item()
        rows.append(row)
    return pd.DataFrame(rows)


def _set_distance(acc: pd.DataFrame, shapes: list, col: str) -> float:
    """The mean of column `col` over a set's matrices (a shape counts as often as it occurs); nan if not measured."""
    by_shape = dict(zip(acc["shape"], acc[col]))
    vals = [by_shape.get(f"{m}x{n}", math.nan) for m, n in shapes]
    return sum(vals) / len(vals)


def _time_sets(sets: dict, acc: dict, dev: torch.device, rounds: int, gen: torch.Generator) -> pd.DataFrame:
    """One row per (set, method): ms per orthogonalization of the set (fp32 Gaussian stacks, every method once per
    round in a rotated order after a warm-up round), the ratio to the per-matrix call in the same round, the output
    against the per-matrix one, the FLOPs, and the set's mean distances to the polar factor."""
    rows = []
    for name, shapes in sets.items():
        stacks = {}
        for shape in shapes:
            stacks.setdefault(shape, []).append(torch.randn(shape, generator=gen))
        mats = {k: torch.stack(v).to(dev) for k, v in stacks.items()}  # {shape: (B, m, n)}: SimpleMuon's stacks
        outs = {m: _run_set(m, mats) for m in SET_METHODS}  # the warm-up round
        ref = outs["standard per-matrix"]
        times = {m: [] for m in SET_METHODS}
        for r in range(rounds):
            for m in SET_METHODS[r % 3:] + SET_METHODS[:r % 3]:
                times[m].append(_clock(functools.partial(_run_set, m, mats), dev))
        for m in SET_METHODS:
            if m == "standard per-matrix":
                vs = "(reference)"
            elif m == "stacked":
                vs = "identical (torch.equal)" if all(map(torch.equal, outs[m], ref)) else "DIFFERENT"
            else:
                vs = f"{max(((a - b).norm() / b.norm()).item() for a, b in zip(outs[m], ref)):.1e} rel."
            col = "Gram" if m.startswith("Gram") else "NS"
            row = {"set": name, "method": m, "calls": len(shapes) if m == "standard per-matrix" else len(mats),
                   "GFLOP": sum(orthogonalize_flops(s, "gram_newton_schulz" if col == "Gram" else "newton_schulz")
                                for s in shapes) / 1e9,
                   "ms": 1e3 * _median(times[m]),
                   "x per-matrix": _median([t / b for t, b in zip(times[m], times["standard per-matrix"])]),
                   "output vs per-matrix": vs}
            for dtype, table in acc.items():
                for kind in ("gauss", "ill"):
                    row[f"{dtype} dist {kind}"] = _set_distance(table, shapes, f"{col} dist {kind}")
            rows.append(row)
    return pd.DataFrame(rows)


def _stacked_and_gram(ctx: Ctx) -> str:
    p, dev = ctx.p, ctx.dev
    gen = torch.Generator().manual_seed(1)
    sets = {name: muon_shapes(preset, **kw) for name, (preset, kw) in p["ortho_sets"].items()}
    shapes = [s for v in sets.values() for s in v]
    slow_bf16 = dev.type != "cuda" and _bf16_matmul_slowdown(dev) > 3
    small = [s for s in shapes if not slow_bf16 or s[0] * s[1] <= p["ortho_bf16_max_numel"]]
    acc = {"fp32": _set_accuracy(shapes, p["kappa"], gen, dev, torch.float32),
           "bf16": _set_accuracy(small, p["kappa"], gen, dev, torch.bfloat16)}
    timing = _time_sets(sets, acc, dev, p["ortho_set_rounds"], gen)
    per_shape = pd.concat(acc.values(), ignore_index=True)
    rect = per_shape[per_shape["Gram iteration"]]
    first = next(iter(sets))
    t = timing[timing["set"] == first].set_index("method")["x per-matrix"]
    bf16_note = "" if not slow_bf16 else (
        f"bf16 distances only for matrices of at most {p['ortho_bf16_max_numel']} entries (nan: not run): bf16 "
        "matmuls are emulated on this CPU, tens of times slower than fp32. ")
    names = ", ".join(f"`{k}` ({len(v)} matrices)" for k, v in sets.items())
    print(_md(timing), flush=True)
    return f"""### Stacked and Gram Newton-Schulz on the real sets of matrices

**What:** the Muon matrices of one optimizer step orthogonalized by 5 Newton-Schulz steps three ways: one
`newton_schulz` call per matrix (the path before stacking), one call per stack of same-shape matrices (what
SimpleMuon does now), and `gram_newton_schulz` per stack (`orthogonalizer=gram_newton_schulz`: the Gram iteration
for aspect ratio >= 2, restarting after the third step; square matrices stay on the standard loop). Sets:
{names}. ms: fp32 on {dev.type}, median over {p['ortho_set_rounds']} interleaved rounds after a warm-up round;
x per-matrix: median over rounds of the ratio in the same round; output vs per-matrix: torch.equal, or the largest
relative Frobenius difference over the set.
Distances: to the exact polar factor (float64 SVD), on a Gaussian and an ill-conditioned (kappa {p['kappa']:g})
input per shape, averaged over the set's matrices. GFLOP: of the matrix products (`orthogonalize_flops`). {bf16_note}

**Headline:** on `{first}`, stacked = **{t['stacked']:.3f}x** and Gram + stacked = **{t['Gram + stacked']:.3f}x** the
per-matrix time (the whole-step share is in section 3); where the Gram iteration runs, its distance to the polar
factor is at most **{rect['Gram/NS gauss'].max():.3f}x** (Gaussian) and **{rect['Gram/NS ill'].max():.3f}x**
(ill-conditioned) standard Newton-Schulz's over fp32 and bf16 (goal: <= 1.1x); in fp32 it is
{rect[rect['dtype'] == 'float32']['|Gram - NS| / |NS|'].max():.1e} from the standard result.

{_md(timing)}

Per shape (fp32 and bf16):

{_md(per_shape)}
"""
