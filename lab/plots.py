"""Figures for the reports (matplotlib, Agg): one line style per optimizer (solid Muon, dashed AdamW), a sequential
colormap along a swept value, seed bands (min-max over seeds), a y-range over the last two-thirds of training, and
a panel of Δ against the baseline. PNGs are byte-deterministic (no Software metadata) and written atomically."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

LINESTYLE = {"muon": "-", "adamw": "--"}
CMAP = {"muon": "viridis", "adamw": "plasma"}


def _legend(ax, **kw) -> None:
    """A legend when something is labelled (a campaign with no finished run yet has nothing to label)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def styles(arms: pd.DataFrame, swept: str | None) -> dict[str, dict]:
    """{arm: matplotlib kwargs}: linestyle by optimizer; colour from a sequential colormap along `swept` (per
    optimizer, log-spaced for lrs), or the categorical cycle when nothing is swept. `arms` has one row per arm
    with columns arm, optimizer and `swept`."""
    out = {}
    for opt, g in arms.groupby("optimizer", sort=False):
        vals = sorted(g[swept].unique()) if swept else []
        cmap = plt.get_cmap(CMAP.get(opt, "viridis"))
        pos = {v: (0.15 + 0.7 * i / max(1, len(vals) - 1)) for i, v in enumerate(vals)}
        for _, r in g.iterrows():
            out[r.arm] = {"linestyle": LINESTYLE.get(opt, "-"), "color": cmap(pos[r[swept]]) if swept else None}
    cycle = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    for st in out.values():
        if st["color"] is None:
            st["color"] = next(cycle)
    return out


def _band(ax, x, g: pd.DataFrame, style: dict, label: str) -> None:
    ax.plot(x, g["mean"], label=label, **style)
    if (g["max"] > g["min"]).any():
        ax.fill_between(x, g["min"], g["max"], color=style["color"], alpha=0.15, linewidth=0)


def _last_two_thirds_ylim(ax, curves: pd.DataFrame, max_step: int) -> None:
    late = curves[curves.step >= max_step / 3]
    if late.empty:
        return
    lo, hi = late["min"].min(), late["max"].max()
    pad = 0.05 * (hi - lo or abs(hi) or 1.0)
    ax.set_ylim(lo - pad, hi + pad)


def offscale(final: dict[str, float]) -> list[str]:
    """Arms whose final |Δ| is over 4x the median arm's (and over 0.05 nats): drawn, but left off the Δ panel's
    y-range so that one far-off arm (a badly tuned lr) does not flatten the differences that matter."""
    if len(final) < 3:
        return []
    med = float(np.median([abs(v) for v in final.values()]))
    return [a for a, v in final.items() if abs(v) > max(4 * med, 0.05)]


def _delta_ylim(ax, deltas: dict[str, pd.DataFrame]) -> None:
    """y-range of the Δ panel over the plotted steps, without the off-scale arms (named in the panel)."""
    deltas = {a: d for a, d in deltas.items() if len(d)}
    final = {a: float(d["mean"].iloc[-1]) for a, d in deltas.items()}
    off = offscale(final)
    keep = [d for a, d in deltas.items() if a not in off]
    if not keep:
        return
    lo = min(0.0, min(d["min"].min() for d in keep))
    hi = max(0.0, max(d["max"].max() for d in keep))
    pad = 0.08 * (hi - lo or 1.0)
    ax.set_ylim(lo - pad, hi + pad)
    if off:
        ax.text(0.02, 0.98, "off-scale: " + ", ".join(f"{a} ({final[a]:+.2f})" for a in off), transform=ax.transAxes,
                va="top", fontsize=7)


def curves_figure(curves: pd.DataFrame, arms: pd.DataFrame, baseline: str | None, swept: str | None, title: str,
                  path) -> None:
    """Validation loss vs step per arm (mean over seeds, min-max band) and, when a baseline is given, the mean
    paired Δ (arm - baseline, same seed, same step) vs step. `curves`: stage-free long table arm, seed, step,
    val_loss."""
    st = styles(arms, swept)
    panels = 2 if baseline is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 4.4), squeeze=False)
    ax = axes[0, 0]
    agg = curves.groupby(["arm", "step"]).val_loss.agg(["mean", "min", "max"]).reset_index()
    for arm in arms.arm:
        g = agg[agg.arm == arm]
        if len(g):
            _band(ax, g.step, g, st[arm], arm)
    _last_two_thirds_ylim(ax, agg, curves.step.max() if len(curves) else 1)
    ax.set(xlabel="step", ylabel="val loss (mean over seeds, band: min-max)", title="validation loss")
    _legend(ax, fontsize=7, ncol=2)
    if baseline is not None:
        ax = axes[0, 1]
        base = curves[curves.arm == baseline].set_index(["seed", "step"]).val_loss
        late = curves.step.max() / 3 if len(curves) else 0
        deltas = {}
        for arm in arms.arm:
            if arm == baseline:
                continue
            mine = curves[curves.arm == arm].set_index(["seed", "step"]).val_loss
            d = (mine - base).dropna().groupby("step").agg(["mean", "min", "max"]).reset_index()
            if len(d):
                _band(ax, d.step, d, st[arm], arm)
                deltas[arm] = d[d.step >= late]
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlim(left=late)
        _delta_ylim(ax, deltas)
        ax.set(xlabel="step", ylabel=f"Δ val loss vs {baseline} (paired by seed)",
               title=f"Δ vs baseline (< 0: better), from step {late:.0f}")
    fig.suptitle(title)
    save(fig, path)


def sweep_figure(points: pd.DataFrame, x: str, xlabel: str, log: bool, title: str, path,
                 reference: dict[str, float] | None = None) -> None:
    """Final val loss vs a swept value per optimizer: mean over seeds with a min-max band and the seeds as dots.
    `points`: one row per run with columns optimizer, `x`, final_val_loss."""
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    for opt, g in points.groupby("optimizer", sort=False):
        agg = g.groupby(x).final_val_loss.agg(["mean", "min", "max"]).reset_index()
        style = {"linestyle": LINESTYLE.get(opt, "-"), "color": plt.get_cmap(CMAP.get(opt, "viridis"))(0.45),
                 "marker": "o"}
        _band(ax, agg[x], agg, style, opt)
        ax.scatter(g[x], g.final_val_loss, s=8, color=style["color"], alpha=0.6)
    for label, y in (reference or {}).items():
        ax.axhline(y, color="grey", linewidth=0.8, linestyle=":", label=label)
    finite = points.final_val_loss[np.isfinite(points.final_val_loss)]
    if len(finite):  # the interesting range: from the best run up to a bit above the median
        lo, mid = finite.min(), finite.median()
        ax.set_ylim(lo - 0.05 * (mid - lo + 1e-3), mid + 1.5 * (mid - lo) + 1e-3)
    ax.set(xlabel=xlabel, ylabel="final val loss (mean, band: min-max, dots: seeds)", title=title,
           xscale="log" if log else "linear")
    _legend(ax, fontsize=8)
    save(fig, path)


def budget_figure(table: pd.DataFrame, path, title: str, delta_label: str, delta_title: str) -> None:
    """Final val loss vs tokens (log x) per optimizer with seed bands, and a Δ ± 95% CI per budget. `table`: one
    row per (optimizer, budget) with tokens, mean, min, max, and per budget delta/lo/hi."""
    fig, (ax, ad) = plt.subplots(1, 2, figsize=(12.4, 4.4))
    for opt, g in table.groupby("optimizer", sort=False):
        g = g.sort_values("tokens")
        style = {"linestyle": LINESTYLE.get(opt, "-"), "color": plt.get_cmap(CMAP.get(opt, "viridis"))(0.45),
                 "marker": "o"}
        _band(ax, g.tokens, g, style, opt)
    ax.set(xscale="log", xlabel="training tokens", ylabel="final val loss (confirmation seeds, band: min-max)",
           title="final val loss vs budget")
    _legend(ax)
    d = table.drop_duplicates("tokens").sort_values("tokens")
    d = d[np.isfinite(d.delta)]
    yerr = np.array([d.delta - d.lo, d.hi - d.delta])
    ad.errorbar(d.tokens, d.delta, yerr=np.nan_to_num(yerr), marker="o", capsize=3, color="black")
    ad.axhline(0, color="grey", linewidth=0.8)
    ad.set(xscale="log", xlabel="training tokens", ylabel=delta_label, title=delta_title)
    fig.suptitle(title)
    save(fig, path)


def forest_figure(rows: list[tuple], delta: float, title: str, path) -> None:
    """Forest plot: one row per comparison (key, Δ, lo, hi, level, verdict, seeds) with the ±delta band."""
    fig, ax = plt.subplots(figsize=(7.6, 0.5 * len(rows) + 1.4))
    ax.axvspan(-delta, delta, color="0.88", zorder=0, label=f"±δ = ±{delta:g} nats")
    ax.axvline(0, color="grey", linewidth=0.8)
    colour = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue", "inconclusive": "black"}
    for i, (_, d, lo, hi, level, verdict, n) in enumerate(rows):
        y = len(rows) - 1 - i
        ax.errorbar([d], [y], xerr=[[d - lo], [hi - d]], fmt="o", capsize=3, color=colour.get(verdict, "black"))
        ax.annotate(f"{verdict} ({level:.0%}, {n} seeds)", (hi, y), xytext=(6, -3), textcoords="offset points",
                    fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)])
    ax.set(xlabel="Δ final val loss, treatment − control (nats; < 0: treatment better)", title=title)
    ax.margins(x=0.35)
    _legend(ax, fontsize=8, loc="lower left")
    save(fig, path)


def save(fig, path) -> None:
    """Write the PNG atomically (temp file + rename, like every record): a full disk never leaves a truncated
    figure behind a report that points at it."""
    from lab.records import atomic_write
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    atomic_write(path, buf.getvalue())


def fmt_tokens(n: float) -> str:
    """819200 -> '0.8M', 1638400 -> '1.6M', 1536 -> '1.5K'."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div / 10:
            return f"{n / div:.1f}".removesuffix(".0") + unit
    return f"{n:.0f}"
