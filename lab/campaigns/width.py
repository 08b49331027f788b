"""Does Muon's learning rate transfer across width on nGPT? nGPT at several widths (heads of 32 dims, the preset's
depth, the same tokens) with hybrid Muon and with AdamW, each on an lr grid of √2 steps extended past a winning
edge, on the selection seeds. The optimal lr per width comes from a quadratic in ln lr with a bootstrap interval,
and the slope of ln lr* on ln width with its interval says whether the lr transfers (slope 0). The widest runs go
last (they cost most). With `gpt`, the matched GPT (gpt_swiglu) runs at the same widths, so transfer on the sphere
can be set beside transfer without it."""
from lab.arms import adamw, muon
from lab.campaigns.architecture import BETA1, lr_figure, lr_fit, lr_grid, run_rects
from lab.params import Param

NAME, ORDER = "width", 80
TITLE = "Learning-rate transfer across width on nGPT"
QUESTION = ("Does the optimal learning rate of Muon (and of AdamW) on nGPT stay put as the width grows, and does "
            "the sphere change that?")
HYPOTHESES = []  # a bootstrap hypothesis (no t-test): its INDEX row comes from index_rows
REPORT = "WIDTH_REPORT.md"

OPTIMIZERS = {"muon": "Muon", "adamw": "AdamW"}
HEAD_DIM = 32
TRANSFER_HYPOTHESIS = "Muon's lr transfers across width on nGPT (slope of ln lr* on ln width is 0)"
TRANSFER_EXPECTED = "transfers (Muon's shape scaling claims so; the plan does not vary width)"


def _widths(value, values) -> None:
    bad = [w for w in value if w % HEAD_DIM]
    if bad:
        raise ValueError(f"has width(s) {bad} that are not multiples of the {HEAD_DIM}-dim heads")
    if len(value) < 2:
        raise ValueError("needs at least two widths for a slope")


def _beta2(value, values) -> None:
    if not 0 <= value < 1:
        raise ValueError("is outside [0, 1)")


PARAMS = {
    "seeds": Param(list[int], [0, 1], "selection seeds (no confirmation stage: lr* and the slope are estimates)",
                   field="seed"),
    "widths": Param(list[int], [64, 128, 256], "n_embd values (n_head: width // 32); the widest run last",
                    field="n_embd", check=_widths),
    "muon_lrs": Param(list[float], [0.0115, 0.0163, 0.023, 0.0325, 0.046], "Muon matrix lr grid (√2 steps)",
                      field="lr"),
    "aux_lr": Param(float, 0.008, "hybrid Muon: aux lr (embedding, head, scalars), the same at every width",
                    field="scalar_lr"),
    "adamw_lrs": Param(list[float], [0.004, 0.0057, 0.008, 0.0113, 0.016], "AdamW lr grid (√2 steps)",
                       field="adamw_lr"),
    "adamw_beta2": Param(float, 0.95, "AdamW beta2 (beta1 0.8)", check=_beta2),
    "warmup_frac": Param(float, 0.0, "AdamW warmup fraction", field="warmup_frac"),
    "gpt": Param(bool, False, "also the matched GPT (gpt_swiglu) at the same widths"),
}


def _models(p: dict) -> list[str]:
    return ["ngpt", *(["gpt_swiglu"] if p.get("gpt") else [])]


def _label(k, c: dict) -> str:
    m, opt, w = k
    return f"{m} d={w} {opt} lr={c['lr']:g}"


def _arm(k, c: dict, p: dict) -> tuple[dict, dict]:
    m, opt, w = k
    shape = {"model": m, "n_embd": int(w), "n_head": int(w) // HEAD_DIM}
    o = muon(c["lr"], p["aux_lr"], **shape) if opt == "muon" else \
        adamw(c["lr"], adam_betas=(BETA1, float(p["adamw_beta2"])), warmup_frac=float(p["warmup_frac"]), **shape)
    return o, {"model": m, "width": int(w), "optimizer": opt, "lr": float(c["lr"])}


def choice_key(m: str, opt: str, w: int) -> str:
    return f"{opt}_lr@{m}/{w}"


def stages(g, p) -> None:
    """select, one width at a time from the narrowest (the widest cost ~3.5x a cpu-preset run, so they go last):
    each (model, optimizer) lr grid, extended by √2 steps past a winning edge; then the best grid lr of each is
    recorded as a choice."""
    df, grids = None, {}
    for w in sorted(p["widths"]):
        rects = {(m, opt, w): {"lr": p[f"{opt}_lrs"]} for m in _models(p) for opt in OPTIMIZERS}
        df, got = run_rects(g, "select", rects, lambda k, c: _arm(k, c, p), _label, p["seeds"],
                            {k: ("lr",) for k in rects})
        grids.update(got)
    for k, cells in grids.items():
        g.pick(df, choice_key(*k), "select", p["seeds"], {lab: c["lr"] for lab, c in cells.items()},
               f"{OPTIMIZERS[k[1]]} lr of {k[0]} at width {k[2]}")


def _exponent(grids: dict):
    """lab.stats.lr_exponent over the widths whose grid has >= 3 lrs with final losses (None below 2 widths)."""
    from lab.stats import lr_exponent
    ok = {w: g for w, g in grids.items() if lr_fit(g) is not None}
    if len(ok) < 2:
        return None
    return lr_exponent(ok)


def _slope_text(e) -> str:
    from lab.stats import fmt_exponent
    return "n/a (fewer than 2 widths with a fitted lr*)" if e is None else fmt_exponent(e)


def slopes(r) -> dict:
    """{(model, optimizer): (Exponent or None, {width: lr grid})} from the selection records."""
    sel = r.stage("select")
    out = {}
    for m in _models(r.params):
        for opt in OPTIMIZERS:
            grids = {int(w): lr_grid(r.select(sel, model=m, optimizer=opt, width=int(w)))
                     for w in sorted(r.params.get("widths", []))}
            grids = {w: g for w, g in grids.items() if g}
            out[(m, opt)] = (_exponent(grids), grids)
    return out


def analyse(r) -> None:
    import math

    import numpy as np
    import pandas as pd

    from lab.stats import fmt_level, fmt_lr, fmt_paired, paired
    sel, p = r.stage("select"), r.params
    widths, models = sorted(int(w) for w in p.get("widths", [])), _models(p)
    sl = slopes(r)
    counts = _param_counts(r.preset, models, widths)

    def best_cell(m, opt, w):
        """(label, {seed: loss}) of the grid's best lr (the recorded choice, else the leader so far)."""
        from lab.results import best_arm
        rows = r.select(sel, model=m, optimizer=opt, width=w)
        lr = r.choice(choice_key(m, opt, w))
        lab = r.arm_of(rows, lr=lr) if lr is not None else best_arm(rows)
        return lab, r.finals(lab, "select") if lab else {}

    def verdict(e):
        if e is None:
            return None
        return e.verdict(ref=0.0)

    def answer():
        e = sl.get(("ngpt", "muon"), (None, {}))[0]
        if e is None:
            done = int((sel.status == "finished").sum()) if len(sel) else 0
            return (f"Not measured yet: Muon's lr* is fitted at fewer than two widths ({done} of {len(sel)} "
                    "selection runs finished).")
        v = verdict(e)
        say = {"equivalent": "yes, within one √2 grid step across the widths measured",
               "higher": "no: it grows with width", "lower": "no: it shrinks with width"}.get(v.verdict,
                                                                                          "undecided")
        out = [f"Does Muon's lr transfer across width on nGPT? {say[:1].upper() + say[1:]} (slope of ln lr* on ln "
               f"width {_slope_text(e)}; verdict {v.verdict} against 0 within ±{e.transfer_bound:.2f})."]
        ea = sl.get(("ngpt", "adamw"), (None, {}))[0]
        if ea is not None:
            out.append(f"AdamW's slope on nGPT: {_slope_text(ea)} (verdict {verdict(ea).verdict}).")
        for m in models[1:]:
            eg = sl.get((m, "muon"), (None, {}))[0]
            if eg is not None:
                out.append(f"Without the sphere ({m}) Muon's slope is {_slope_text(eg)} (verdict "
                           f"{verdict(eg).verdict}).")
        return " ".join(out)
    r.answer.append(answer)

    def lr_table():
        rows = []
        for (m, opt), (_e, grids) in sl.items():
            for w in widths:
                grid = grids.get(w, {})
                f = lr_fit(grid)
                lab, fin = best_cell(m, opt, w)
                rows.append({"model": m, "optimizer": OPTIMIZERS[opt], "width": w,
                             "params": f"{counts[(m, w)]:,}" if (m, w) in counts else "-",
                             "lrs (seeds)": ", ".join(f"{lr:g} ({len(v)})" for lr, v in sorted(grid.items()))
                             or "-", "best grid lr": "-" if not lab else f"{r.tags_of(lab)['lr']:g}",
                             "final val at it (mean ± sd)": _ms(list(fin.values())),
                             "lr* [95%]": fmt_lr(f) if f else "n/a"})
        return ["## Optimal lr per width (selection seeds)", "",
                "lr*: the vertex of a parabola in ln lr fitted to the mean final val loss over the selection seeds "
                "(lab.stats.lr_opt), with an expanded percentile bootstrap interval over seeds. Best grid lr: the "
                "grid point with the lowest mean (the recorded choice). Heads of 32 dims at every width; the "
                "preset's depth and tokens.", "", pd.DataFrame(rows).to_markdown(index=False), ""]
    r.sections.append(lr_table)

    def slope_table():
        rows = []
        for (m, opt), (e, _grids) in sl.items():
            v = verdict(e)
            rows.append({"model": m, "optimizer": OPTIMIZERS[opt], "widths fitted": ", ".join(
                str(int(x)) for x in e.xs) if e else "-", "slope k [95%]": _slope_text(e),
                "verdict vs 0": "-" if v is None else f"{v.verdict} ([{v.lo:+.2f}, {v.hi:+.2f}] "
                f"({fmt_level(v.level)}))", "bound ±": "-" if e is None else f"{e.transfer_bound:.2f}",
                "bootstrap replicates valid": "-" if e is None else f"{e.boot_valid:.0%}"})
        return ["## Slope of ln lr* on ln width", "",
                "k in lr* ∝ width^k (lab.stats.lr_exponent: least squares over the widths, each replicate "
                "resamples seeds within every width's grid and refits each lr*). k = 0: the lr transfers; k = -1: "
                "it scales like 1/width (the usual AdamW rule for hidden matrices). Verdict against 0: higher / "
                "lower when the 95% interval excludes 0, equivalent when the 90% interval lies inside ±bound (the "
                "slope that moves lr* by one √2 grid step across the widths measured), else inconclusive.", "",
                pd.DataFrame(rows).to_markdown(index=False), ""]
    r.sections.append(slope_table)

    def loss_table():
        rows = []
        for m in models:
            for w in widths:
                lm, fm = best_cell(m, "muon", w)
                la, fa = best_cell(m, "adamw", w)
                c = paired(fm, fa)
                rows.append({"model": m, "width": w, "Muon (best grid lr)": _ms(list(fm.values())),
                             "AdamW (best grid lr)": _ms(list(fa.values())),
                             "Δ Muon − AdamW [95% CI]": fmt_paired(c)})
        return ["## Final loss vs width (selection seeds)", "",
                "Each optimizer at its best grid lr per width; Δ per seed, mean with its 95% t-interval. "
                "Exploratory and optimistic for both (the seeds that picked the lr also score it).", "",
                pd.DataFrame(rows).to_markdown(index=False), ""]
    r.sections.append(loss_table)
    for m in models:
        for w in widths:
            r.grid_table(r.select(sel, model=m, width=w), "select", f"Selection grid: {m} at width {w}")
    panels = {f"{m} {OPTIMIZERS[opt]}": {f"width {w}": g for w, g in grids.items()}
              for (m, opt), (_, grids) in sl.items()}
    if any(g for lines in panels.values() for g in lines.values()):
        fn = r.figname("lr")
        lr_figure(panels, r.figdir() / fn, f"final val loss vs lr per width at {r.tokens()} tokens")
        r.figures.append((fn, "final val loss vs peak lr at each width (selection seeds; band: min–max)"))
    xs = [(m, opt, e) for (m, opt), (e, _) in sl.items() if e is not None and all(math.isfinite(f.lr) for f in e.fits)]
    if xs:
        fn = r.figname("slope")
        _slope_figure(xs, r.figdir() / fn, np)
        r.figures.append((fn, "lr* per width with its 95% bootstrap interval (log-log; an unbounded interval is "
                                  "drawn without its bar) and the fitted slope"))


def _ms(vals: list[float]) -> str:
    import numpy as np
    if not vals:
        return "n/a"
    return f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f}" if len(vals) > 1 else f"{vals[0]:.4f} (1 seed)"


def _param_counts(preset: str, models: list[str], widths: list[int]) -> dict:
    """Total parameters of each model at each width (meta device: shapes only)."""
    import torch

    from lab.config import get_config
    from lab.models import MODELS, param_counts
    out = {}
    for m in models:
        for w in widths:
            with torch.device("meta"):
                out[(m, w)] = param_counts(MODELS[m](get_config(preset, model=m, n_embd=w,
                                                                n_head=w // HEAD_DIM)))["total"]
    return out


def _slope_figure(xs, path, np) -> None:
    import matplotlib.pyplot as plt

    from lab import plots
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    for m, opt, e in xs:
        w = np.array(e.xs)
        lr = np.array([f.lr for f in e.fits])
        err = np.array([[f.lr - f.lo for f in e.fits], [f.hi - f.lr for f in e.fits]])
        err = np.where(np.isfinite(err), err, 0)
        bar = ax.errorbar(w, lr, yerr=err, marker="o", capsize=3, linestyle="none", label=f"{m} {opt}: k = {e.k:+.2f}")
        c = np.exp(np.mean(np.log(lr)) - e.k * np.mean(np.log(w)))
        ax.plot(w, c * w ** e.k, color=bar[0].get_color(), linestyle=plots.LINESTYLE.get(opt, "-"))
    ax.set(xscale="log", yscale="log", xlabel="width (n_embd)", ylabel="lr* (selection seeds, 95% bootstrap)",
           title="optimal lr vs width")
    widths = sorted({x for _, _, e in xs for x in e.xs})
    ax.set_xticks(widths, [f"{w:g}" for w in widths])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.legend(fontsize=8)
    plots.save(fig, path)


def index_rows(r) -> list[dict]:
    """INDEX row of the bootstrap hypothesis "Muon's lr transfers across width on nGPT" (Exponent.verdict(ref=0))."""
    from lab.stats import fmt_level
    e = slopes(r).get(("ngpt", "muon"), (None, {}))[0]
    row = {"hypothesis": TRANSFER_HYPOTHESIS, "plan expected": TRANSFER_EXPECTED, "verdict": "not tested yet",
           "Δ [interval]": "-", "confirmation seeds": "-"}
    if e is None:
        return [row]
    v = e.verdict(ref=0.0)
    seeds = ", ".join(str(s) for s in r.params.get("seeds", []))
    gloss = {"equivalent": "transfers: within one √2 step across the widths", "higher": "lr* grows with width",
             "lower": "lr* falls with width"}.get(v.verdict, "neither shown")
    return [{**row, "verdict": f"{v.verdict} ({gloss})",
             "Δ [interval]": f"slope k {e.k:+.2f} [{v.lo:+.2f}, {v.hi:+.2f}] ({fmt_level(v.level)}), bound "
                             f"±{e.transfer_bound:.2f}",
             "confirmation seeds": f"none: selection seeds {seeds} (bootstrap over seeds)"}]
