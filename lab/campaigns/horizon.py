"""Both optimizers retuned with equal effort at every budget, then compared. At each budget, on the selection seeds:
Muon's lr on a 5-point √2 grid around its earlier pick (at one aux lr), then its aux lr at that lr; AdamW's lr on a
5-point √2 grid around its earlier pick at lr_sweep's beta2 and warmup, then the other (beta2, warmup) combinations
at that lr. A grid whose best value sits on an edge is extended past it. The tuned arms then run on the six fresh
confirmation seeds, where the lab-wide family's muon_vs_adamw@<budget> entries judge them. The report also gives
the speedup as the field reports it (AdamW tokens needed to reach Muon's final loss, read off AdamW's tuned
final-loss-vs-budget curve) and the lr law (lr* per budget from a quadratic in log lr; the exponent k of
lr* ∝ T^k). The 400-step arms are lr_sweep's runs."""
import math

from lab import family
from lab.campaigns.lr_sweep import (
    OLD_GAP,
    _beta2s,
    _plain_log,
    adamw_arm,
    edge_note,
    fmt_seeds,
    lr_grid,
    muon_arm,
    pick_arm,
    seeds_state,
    sqrt2_beyond,
    sqrt2_grid,
    trials,
    tuned_adamw,
)
from lab.config import get_config
from lab.params import Param

NAME, ORDER = "horizon", 30
TITLE = "Muon vs AdamW across training budgets"
QUESTION = ("Does Muon's advantage over an equally tuned AdamW on nGPT depend on the training budget, how many "
            "tokens does AdamW need to reach Muon's loss, and how does the optimal lr move with the budget?")
HYPOTHESES = []  # its verdicts are the lab-wide family's muon_vs_adamw@<budget> entries (lab/family.py)
REPORT = "HORIZON_REPORT.md"
OPTIMIZERS = {"muon": "Muon", "adamw": "AdamW"}


def _centers(value, values) -> None:
    try:
        have = {int(k): float(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise ValueError('must map budgets to lrs, e.g. {"100": 0.092}') from None
    bad = [k for k, v in have.items() if not (0 < v < math.inf)]
    if bad:
        raise ValueError(f"has a non-positive or non-finite lr at budget(s) {bad}")
    missing = [b for b in values.get("budgets", []) if b not in have]
    if missing:
        raise ValueError(f"has no lr for budget(s) {missing}: give one per budget")


def _at_least_3(value, values) -> None:
    if value < 3:
        raise ValueError("must be >= 3 (a quadratic fit needs three lrs)")


def _optional(lo: float, hi: float, unset: float):
    def check(value, values) -> None:
        if value != unset and not lo <= value < hi:
            raise ValueError(f"must be in [{lo:g}, {hi:g}), or {unset:g} for lr_sweep's pick")
    return check


PARAMS = {
    "seeds": Param(list[int], [0, 1], "selection seeds: they pick the settings", field="seed"),
    "confirm_seeds": Param(list[int], list(family.CONFIRM_SEEDS), "fresh seeds that judge the tuned optimizers "
                           "against each other at every budget", field="seed"),
    "budgets": Param(list[int], list(family.BUDGETS), "training steps per run (x 2048 tokens at cpu)", field="steps"),
    "muon_centers": Param(dict, {"100": 0.092, "200": 0.046, "400": 0.023, "800": 0.0115}, "per budget: the centre "
                          "of Muon's √2 lr grid (the earlier picks)", check=_centers),
    "adamw_centers": Param(dict, {"100": 0.016, "200": 0.008, "400": 0.008, "800": 0.004}, "per budget: the centre "
                           "of AdamW's √2 lr grid (the earlier picks)", check=_centers),
    "grid_points": Param(int, 5, "points of each √2 lr grid (extended by √2 past a winning edge)",
                         check=_at_least_3),
    "aux_lr": Param(float, 0.008, "aux lr of the hybrid's AdamW groups while Muon's lr is tuned", field="scalar_lr"),
    "aux_lrs": Param(list[float], [0.004, 0.008, 0.016], "aux lrs tried at each budget's Muon lr (x2 past a "
                     "winning edge)", field="scalar_lr"),
    "adamw_beta2": Param(float, 0.0, "beta2 of AdamW's lr grids; 0: lr_sweep's pick", check=_optional(0, 1, 0.0)),
    "adamw_warmup": Param(float, -1.0, "warmup of AdamW's lr grids (fraction of the run); -1: lr_sweep's pick",
                          check=_optional(0, 1, -1.0)),
    "adamw_beta2s": Param(list[float], [0.95, 0.99], "beta2 values tried at each budget's AdamW lr",
                          check=_beta2s),
    "warmup_fracs": Param(list[float], [0.0, 0.05], "warmup fractions tried at each budget's AdamW lr",
                          field="warmup_frac"),
}


def arm_tags(o: dict) -> dict:
    from lab.campaigns.lr_sweep import arm_tags as tags
    return {**tags(o), **({"budget": o["steps"]} if "steps" in o else {})}


def lr_key(opt: str, budget: int) -> str:
    """The choice key of an optimizer's lr at a budget."""
    return f"{opt}_lr@{budget}"


def stages(g, p) -> None:
    """select: each optimizer's lr grid per budget; aux: Muon's aux lr and AdamW's (beta2, warmup) at that budget's
    lr; confirm: both tuned optimizers per budget on the confirmation seeds (tags optimizer, budget)."""
    seeds, preset = p["seeds"], p["preset"]
    up = tuned_adamw(g, p["adamw_beta2"], p["adamw_warmup"])
    b2, w = up["adamw_beta2"], up["adamw_warmup"]
    own = get_config(preset).steps
    order = sorted(p["budgets"], key=lambda b: (b != own, b))  # the preset's own budget first: lr_sweep's runs
    centre = {(opt, b): float(p[f"{opt}_centers"][str(b)]) for b in order for opt in OPTIMIZERS}
    pre = lambda b: f"steps={b} "
    arm = lambda k, x: (muon_arm(x, p["aux_lr"], k[1], preset, pre(k[1])) if k[0] == "muon"
                        else adamw_arm(x, b2, w, k[1], preset, pre(k[1])))
    df, grids = g.run_grids("select", {k: sqrt2_grid(c, p["grid_points"]) for k, c in centre.items()},
                            lambda k, x: arm(k, x)[1], lambda k, x: arm(k, x)[0], seeds,
                            beyond=lambda k, xs, best: sqrt2_beyond(centre[k])(k, xs, best))
    lr = {k: g.pick(df, lr_key(*k), "select", seeds, grids[k], f"{OPTIMIZERS[k[0]]} lr at {k[1]} steps")
          for k in centre}
    combos = [(x, y) for x in p["adamw_beta2s"] for y in p["warmup_fracs"]]
    a_arms = {b: dict(adamw_arm(lr[("adamw", b)], x, y, b, preset, pre(b)) for x, y in combos) for b in order}
    g.run("aux", {label: spec for b in order for label, spec in a_arms[b].items()}, seeds)
    df, x_grids = g.run_grids("aux", {b: p["aux_lrs"] for b in order},
                              lambda b, x: muon_arm(lr[("muon", b)], x, b, preset, pre(b))[1],
                              lambda b, x: muon_arm(lr[("muon", b)], x, b, preset, pre(b))[0], seeds)
    confirm = {}
    for b in order:
        aux = g.pick(df, f"aux_lr@{b}", "aux", seeds, x_grids[b], f"aux lr at {b} steps")
        a = pick_arm(g, df, "aux", seeds, {label: {f"adamw_beta2@{b}": o[1]["beta2"], f"adamw_warmup@{b}":
                                                   o[1]["warmup"]} for label, o in a_arms[b].items()},
                     {f"adamw_beta2@{b}": p["adamw_beta2s"], f"adamw_warmup@{b}": p["warmup_fracs"]},
                     f"AdamW (beta2, warmup) at {b} steps")
        confirm |= dict([muon_arm(lr[("muon", b)], aux, b, preset, pre(b)),
                         adamw_arm(lr[("adamw", b)], a[f"adamw_beta2@{b}"], a[f"adamw_warmup@{b}"], b, preset,
                                   pre(b))])
    g.run("confirm", confirm, p["confirm_seeds"])


# ----------------------------------------------------------------------------------------------------------------
# analyses (module-level, so reports/INDEX.md can call them: speedup_rows, lr_law, index_rows)

def _budgets(r) -> list[int]:
    return sorted(int(b) for b in r.params.get("budgets", [])) or r.budgets()


def _tokens_per_step(r) -> int:
    return get_config(r.preset).tokens_per_step


def judgements(r) -> dict:
    """{budget: lab.stats.Judgement} of the family entries muon_vs_adamw@<budget> (Holm over the whole family):
    the ones r.confirmatory() rendered, else judged here from this report's records (numbers only)."""
    got = dict(getattr(r, "judgements", {}) or {})
    keys = {b: f"muon_vs_adamw@{b}" for b in _budgets(r)}
    if any(k not in got for k in keys.values() if k in family.KEYS):
        from lab.results import results
        got |= family.judge_all(r.preset, lambda n: r.df if n == r.name else results(n, r.preset))
    return {b: got[k] for b, k in keys.items() if k in got}


def conf_arms(r) -> dict:
    """{(optimizer, budget): label of its confirmation arm, or None}."""
    conf = r.stage("confirm")
    return {(opt, b): r.arm_of(conf, optimizer=opt, budget=b) for b in _budgets(r) for opt in OPTIMIZERS}


def multipliers(r) -> tuple[list, str]:
    """(stats.token_multiplier per budget where Muon has a finished confirmation seed, '' or why there are none):
    AdamW tokens needed to reach Muon's mean final val loss on AdamW's tuned final-loss-vs-budget curve."""
    from lab.stats import token_multiplier
    arms, tps = conf_arms(r), _tokens_per_step(r)
    got = lambda opt: {b * tps: f for b in _budgets(r) if arms[(opt, b)]
                       and (f := r.finals(arms[(opt, b)], "confirm"))}
    mu, ad = got("muon"), got("adamw")
    if len(ad) < 2:
        return [], f"AdamW has finished confirmation seeds at {len(ad)} budget(s); the curve needs at least 2"
    if not mu:
        return [], "Muon has no finished confirmation seed yet"
    return token_multiplier(mu, ad), ""


def speedup_rows(r) -> list[dict]:
    """One row per budget: {budget, tokens, Muon final, AdamW tokens needed, multiplier} (text); budgets without a
    finished Muon confirmation seed say what is pending."""
    from lab.stats import fmt_multiplier, fmt_tokens
    ms, why = multipliers(r)
    by = {round(m.budget / _tokens_per_step(r)): m for m in ms}
    arms, want, rows = conf_arms(r), r.params.get("confirm_seeds", []), []
    for b in _budgets(r):
        m = by.get(b)
        state = seeds_state(r, r.stage("confirm"), [arms[("muon", b)], arms[("adamw", b)]], want)
        rows.append({"budget": f"{b} steps", "tokens": r.tokens(b),
                     "Muon final val (target)": f"{m.target:.4f}" if m else "-",
                     "AdamW tokens to reach it": ("-" if not m else f"{m.censored} {fmt_tokens(m.bound)}"
                                                  if m.censored else fmt_tokens(m.tokens)),
                     "token multiplier [interval]": fmt_multiplier(m) if m else f"pending: {why or state}",
                     "seeds": state})
    return rows


def lr_fits(r) -> dict:
    """{optimizer: {"fits": {budget: LrFit}, "exponent": Exponent | None, "why": str}} from the selection grids
    (the (up to) five grid lrs nearest each budget's best, quadratic in log lr, bootstrap over seeds)."""
    from lab.campaigns.lr_sweep import lr_fit
    from lab.stats import lr_exponent
    out = {}
    for opt in OPTIMIZERS:
        fits, windows = {}, {}
        for b in _budgets(r):
            grid = lr_grid(r.df, "select", optimizer=opt, budget=b)
            means = {x: sum(v.values()) / len(v) for x, v in grid.items() if v}
            best = r.choice(lr_key(opt, b))
            best = best if best in means else (min(means, key=means.get) if means else None)
            f = lr_fit(grid, best)
            if f is not None:
                fits[b], windows[b] = f, {x: grid[x] for x in f.grid}
        exp, why = None, ""
        if len(windows) >= 2:
            try:
                exp = lr_exponent(windows)
            except ValueError as e:
                why = str(e)
        else:
            why = f"lr* at {len(windows)} budget(s); the exponent needs at least 2"
        out[opt] = {"fits": fits, "exponent": exp, "why": why}
    return out


def _k_text(e) -> str:
    from lab.stats import K_HYPERP, K_LR_T, fmt_exponent
    if e is None or math.isnan(e.k):
        return "n/a (an lr* fit is not convex)" if e is not None else "n/a"
    where = lambda k: "inside" if e.lo <= k <= e.hi else "outside"
    return (f"k = {fmt_exponent(e)} over {len(e.xs)} budgets; k = {K_LR_T:g} (lr·T constant) lies {where(K_LR_T)} "
            f"the interval, the published {K_HYPERP:g} (HyperP) {where(K_HYPERP)}")


def lr_law(r) -> dict:
    """{optimizer: 'k = -0.48 [-0.61, -0.35] (95%) over 4 budgets; k = -1 ... lies outside the interval, ...'}:
    the exponent of lr* ∝ T^k (T: steps or tokens) with its bootstrap interval, beside -1 and -0.32."""
    fits = lr_fits(r)
    return {opt: _k_text(f["exponent"]) if f["exponent"] is not None else f"n/a ({f['why']})"
            for opt, f in fits.items()}


def index_rows(r) -> list[dict]:
    """Rows for reports/INDEX.md's hypotheses table: the token multiplier per budget and the lr law (estimates
    with intervals; no verdict words: neither is a test of the family)."""
    done = r.stage("confirm")
    conf = fmt_seeds(sorted({int(x) for x in done[done.status == "finished"].seed}) if len(done) else [])
    speed = "; ".join(f"{x['tokens']}: {x['token multiplier [interval]']}" for x in speedup_rows(r))
    law = lr_law(r)
    return [{"hypothesis": "speedup: AdamW tokens needed to reach Muon's final val loss, over Muon's tokens "
                           "(AdamW's tuned final-loss-vs-budget curve, log-log interpolation; bootstrap over seeds)",
             "plan expected": "-", "verdict": "estimate (not a test)", "Δ [interval]": speed,
             "confirmation seeds": conf},
            {"hypothesis": "lr law: lr* ∝ T^k per optimizer (quadratic in log lr per budget; selection seeds), "
                           "beside k = -1 and the published -0.32",
             "plan expected": "-", "verdict": "estimate (not a test)",
             "Δ [interval]": "; ".join(f"{OPTIMIZERS[o]} {t}" for o, t in law.items()),
             "confirmation seeds": "- (selection seeds " + fmt_seeds(r.params.get("seeds", [])) + ")"}]


def crossing(deltas: list[tuple[int, float]], r) -> str:
    """Where the mean Δ changes sign between budgets (log-linear interpolation in tokens), or that it does not."""
    for (b0, d0), (b1, d1) in zip(deltas, deltas[1:]):
        if d0 * d1 < 0:
            x = math.exp(math.log(b0) + (0 - d0) / (d1 - d0) * (math.log(b1) - math.log(b0)))
            return (f"The mean Δ changes sign between {r.tokens(b0)} and {r.tokens(b1)} tokens (log-linear "
                    f"interpolation: about {r.tokens(x)} tokens, {x:.0f} steps).")
    if len(deltas) < 2:
        return ""
    lead = "Muon" if all(v < 0 for _, v in deltas) else "AdamW" if all(v > 0 for _, v in deltas) else None
    return (f"The mean Δ keeps its sign from {r.tokens(deltas[0][0])} to {r.tokens(deltas[-1][0])} tokens: {lead} "
            f"is ahead on average at every budget measured; {_trend(deltas, r)}." if lead else "")


def _trend(d: list[tuple[int, float]], r) -> str:
    """How |mean Δ| moves with the budget: monotone, or where it is largest and smallest (means, not a test)."""
    mags = [abs(v) for _, v in d]
    pairs = list(zip(mags, mags[1:]))
    if all(a < b for a, b in pairs):
        return "the mean gap grows with every larger budget"
    if all(a > b for a, b in pairs):
        return "the mean gap shrinks with every larger budget"
    big, small = max(d, key=lambda t: abs(t[1])), min(d, key=lambda t: abs(t[1]))
    return (f"the mean gap is largest at {r.tokens(big[0])} tokens (Δ = {big[1]:+.4f}) and smallest at "
            f"{r.tokens(small[0])} (Δ = {small[1]:+.4f})")


# ----------------------------------------------------------------------------------------------------------------
# figures (<= 6 lines per axes, small multiples per budget, captions name the seeds, no band for one seed)

def fmt_tok(n: float) -> str:
    """An axis label of tokens: 150000 -> '150k' (lab.stats.fmt_tokens, imported only when a figure is drawn)."""
    from lab.stats import fmt_tokens
    return fmt_tokens(n) if n > 0 else "0"


def curves_figure(r, path) -> list[int]:
    """One panel per budget: Muon's and AdamW's mean val curves on the confirmation seeds (min-max band with two or
    more seeds), AdamW's final loss drawn as the target; one y-range for every panel, showing every budget from a
    third of its run to its end. Returns the confirmation seeds drawn."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    from lab import plots
    from lab.results import val_curves
    arms, conf = conf_arms(r), r.stage("confirm")
    curves = val_curves(conf, r.preset)
    budgets = [b for b in _budgets(r) if any(arms[(o, b)] in set(curves.arm) for o in OPTIMIZERS)]
    if not budgets:
        return []
    cols = min(2, len(budgets))
    rows = math.ceil(len(budgets) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.8 * rows), squeeze=False, sharey=True,
                             layout="constrained")
    agg = curves.groupby(["arm", "step"]).val_loss.agg(["mean", "min", "max", "count"]).reset_index()
    lo, hi = math.inf, -math.inf
    for i, b in enumerate(budgets):
        ax = axes[i // cols, i % cols]
        for j, opt in enumerate(OPTIMIZERS):
            g = agg[agg.arm == arms[(opt, b)]]
            if not len(g):
                continue
            style = {"linestyle": plots.LINESTYLE[opt], "color": f"C{j}"}
            n = int(g["count"].max())
            ax.plot(g.step * _tokens_per_step(r), g["mean"], label=f"{OPTIMIZERS[opt]} ({n} seed{'s' * (n > 1)})",
                    **style)
            if n > 1:
                ax.fill_between(g.step * _tokens_per_step(r), g["min"], g["max"], color=style["color"], alpha=0.15,
                                linewidth=0)
            late = g[g.step >= b / 3]
            lo, hi = min(lo, late["min"].min()), max(hi, late["max"].max())
            if opt == "adamw":
                ax.axhline(g["mean"].iloc[-1], color=style["color"], linewidth=0.9, linestyle=":",
                           label=f"target: AdamW final {g['mean'].iloc[-1]:.3f}")
        ax.set(title=f"{b} steps ({r.tokens(b)} tokens)", xlabel="tokens")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_tok(v)))
        plots._legend(ax, fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("val loss (mean over seeds)")
    for i in range(len(budgets), rows * cols):
        axes[i // cols, i % cols].axis("off")
    if math.isfinite(lo) and math.isfinite(hi):
        pad = 0.05 * (hi - lo or 1.0)
        axes[0, 0].set_ylim(lo - pad, hi + pad)
    fig.suptitle(f"{TITLE} ({r.preset}): validation curves per budget")
    plots.save(fig, path)
    return sorted(set(curves.seed))


def speedup_figure(r, ms, path) -> None:
    """Final val loss vs tokens per optimizer (confirmation seeds; band min-max with two or more seeds), with each
    Muon point's read-off on AdamW's curve; and the token multiplier per budget with its interval."""
    import matplotlib.pyplot as plt
    import numpy as np

    from lab import plots
    arms, tps = conf_arms(r), _tokens_per_step(r)
    fig, (ax, am) = plt.subplots(1, 2, figsize=(12.4, 4.4), layout="constrained")
    for j, opt in enumerate(OPTIMIZERS):
        pts = [(b * tps, list(f.values())) for b in _budgets(r) if arms[(opt, b)]
               and (f := r.finals(arms[(opt, b)], "confirm"))]
        if not pts:
            continue
        x = np.array([t for t, _ in pts])
        mean = np.array([np.mean(v) for _, v in pts])
        style = {"linestyle": plots.LINESTYLE[opt], "color": f"C{j}", "marker": "o"}
        ax.plot(x, mean, label=OPTIMIZERS[opt], **style)
        if any(len(v) > 1 for _, v in pts):
            ax.fill_between(x, [min(v) for _, v in pts], [max(v) for _, v in pts], color=style["color"], alpha=0.15,
                            linewidth=0)
    for m in ms:
        if not m.censored:
            ax.plot([m.budget, m.tokens], [m.target, m.target], color="grey", linewidth=0.8, linestyle=":")
    ticks = [b * tps for b in _budgets(r)]
    ax.set(xscale="log", xlabel="training tokens", ylabel="final val loss (mean over confirmation seeds)",
           title="final val loss vs budget (dotted: read-off)")
    _plain_log(ax, "x", ticks, fmt_tok)
    plots._legend(ax, fontsize=8)
    ok = [m for m in ms if not m.censored]
    if ok:
        x = np.array([m.budget for m in ok])
        y = np.array([m.ratio for m in ok])
        lo = np.array([m.lo if m.lo > 0 else np.nan for m in ok])
        hi = np.array([m.hi if np.isfinite(m.hi) else np.nan for m in ok])
        am.errorbar(x, y, yerr=np.clip(np.nan_to_num(np.array([y - lo, hi - y]), nan=0.0), 0, None), marker="o",
                    capsize=3, color="black")
    for m in ms:
        if m.censored:
            am.annotate(f"{m.censored} {m.bound / m.budget:.2f}x (past the budgets measured)",
                        (m.budget, 1.0), fontsize=7, rotation=90, va="bottom")
    am.axhline(1, color="grey", linewidth=0.8)
    am.set(xscale="log", xlabel="Muon's training tokens", ylabel="AdamW tokens / Muon tokens (interval)",
           title="token multiplier (> 1: AdamW needs more tokens)")
    _plain_log(am, "x", ticks, fmt_tok)
    plots.save(fig, path)


def lr_law_figure(r, fits, path) -> None:
    """Final val loss vs lr per budget (one panel per optimizer, <= 4 budgets each: points and the fitted
    parabola), and lr* vs steps (log-log) with its fitted slope and the reference slopes -1 and -0.32."""
    import matplotlib.pyplot as plt
    import numpy as np

    from lab import plots
    from lab.stats import K_HYPERP, K_LR_T
    fig, axes = plt.subplots(1, 3, figsize=(16.5, 4.4), layout="constrained")
    for ax, opt in zip(axes[:2], OPTIMIZERS):
        for j, b in enumerate(_budgets(r)):
            grid = lr_grid(r.df, "select", optimizer=opt, budget=b)
            pts = [(x, np.mean(list(v.values()))) for x, v in sorted(grid.items()) if v]
            if not pts:
                continue
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o", color=f"C{j}", label=f"{b} steps")
            f = fits[opt]["fits"].get(b)
            if f is not None:
                xs = np.exp(np.linspace(math.log(min(f.grid)), math.log(max(f.grid)), 50))
                ax.plot(xs, np.polyval(f.coef, np.log(xs)), "-", color=f"C{j}", linewidth=1)
        ax.set(xscale="log", xlabel="peak lr", ylabel="final val loss (mean over selection seeds)",
               title=f"{OPTIMIZERS[opt]}: loss vs lr per budget (line: quadratic fit)")
        _plain_log(ax, "x")
        plots._legend(ax, fontsize=7)
    ax = axes[2]
    for j, opt in enumerate(OPTIMIZERS):
        fs = {b: f for b, f in fits[opt]["fits"].items() if f.convex}
        if not fs:
            continue
        b = np.array(sorted(fs), dtype=float)
        y = np.array([fs[k].lr for k in sorted(fs)])
        err = np.array([[max(0.0, v - fs[k].lo) for k, v in zip(sorted(fs), y)],
                        [max(0.0, fs[k].hi - v) if math.isfinite(fs[k].hi) else 0.0 for k, v in zip(sorted(fs), y)]])
        ax.errorbar(b, y, yerr=err, marker="o", capsize=3, linestyle="none", color=f"C{j}",
                    label=f"{OPTIMIZERS[opt]} lr*")
        e = fits[opt]["exponent"]
        if e is not None and math.isfinite(e.k):
            c = np.exp(np.mean(np.log(y)) - e.k * np.mean(np.log(b)))
            ax.plot(b, c * b ** e.k, "-", color=f"C{j}", label=f"{OPTIMIZERS[opt]} fit k = {e.k:.2f}")
        if j == 0:
            mid = np.exp(np.mean(np.log(y))), np.exp(np.mean(np.log(b)))
            for k, ls in ((K_LR_T, "--"), (K_HYPERP, ":")):
                ax.plot(b, mid[0] * (b / mid[1]) ** k, ls, color="grey", linewidth=0.9,
                        label=f"slope {k:g} (through Muon's lr*)")
    ax.set(xscale="log", yscale="log", xlabel="training steps T", ylabel="lr* (bootstrap interval)",
           title="lr* ∝ T^k")
    _plain_log(ax, "x", _budgets(r))
    _plain_log(ax, "y")
    plots._legend(ax, fontsize=7)
    plots.save(fig, path)


# ----------------------------------------------------------------------------------------------------------------
# the report

def analyse(r) -> None:
    import pandas as pd

    from lab.stats import fmt_judgement, fmt_lr, fmt_paired
    budgets = _budgets(r)
    r.confirmatory()
    judged = judgements(r)
    arms, want, p = conf_arms(r), r.params.get("confirm_seeds", []), r.params
    for b in budgets:  # a budget outside the family (a variant): its Δ is an exploratory row, no verdict
        if b not in judged and arms[("muon", b)] and arms[("adamw", b)]:
            r.compare(arms[("muon", b)], arms[("adamw", b)], "confirm", f"Muon vs AdamW at {b} steps (not a "
                      "family entry)", f"budget{b}")
    paired_at = lambda b: judged[b].c if b in judged else (c.c if (c := r.get(f"budget{b}")) else None)
    sel, aux = r.stage("select"), r.stage("aux")
    for b in budgets:  # exploratory: each optimizer's best lr against its runner-up at each budget
        for opt, name in OPTIMIZERS.items():
            r.best_vs_runner_up(r.select(sel, optimizer=opt, budget=b), "select", f"{name} lr at {b} steps",
                                lr_key(opt, b))
    ms, why = multipliers(r)
    fits = lr_fits(r)
    law = lr_law(r)
    tps = _tokens_per_step(r)

    def edges() -> list[str]:
        out = []
        for b in budgets:
            for opt, name in OPTIMIZERS.items():
                v = r.choice(lr_key(opt, b))
                grid = sorted(lr_grid(r.df, "select", optimizer=opt, budget=b)) or r.grid_of(lr_key(opt, b))
                if v is not None and edge_note(v, grid, "lr"):
                    out.append(f"{name} lr at {b} steps ({v:g})")
            v = r.choice(f"aux_lr@{b}")
            if v is not None and edge_note(v, r.grid_of(f"aux_lr@{b}"), "aux lr"):
                out.append(f"Muon's aux lr at {b} steps ({v:g})")
        return out

    state = lambda b: seeds_state(r, r.stage("confirm"), [arms[("muon", b)], arms[("adamw", b)]], want)

    def answer():
        done = {b: j for b, j in judged.items() if j.n}
        extra = {b: c for b in budgets if b not in judged and (c := paired_at(b)) is not None and c.n}
        if not done and not extra:
            out = ["Not measured yet on the confirmation seeds (" + "; ".join(f"{b} steps: {state(b)}"
                                                                              for b in budgets) + ")."]
        else:
            text = lambda b: r.verdict_text(f"muon_vs_adamw@{b}") if f"muon_vs_adamw@{b}" in r.judgements else \
                f"Δ = {fmt_judgement(done[b])} nats, {done[b].n} seeds"
            out = []
            if done:
                out.append("Tuned Muon − tuned AdamW on the confirmation seeds (the family's muon_vs_adamw entries): "
                           + "; ".join(f"{r.tokens(b)} tokens: {text(b)}" for b in sorted(done)) + ".")
            if extra:
                out.append("Tuned Muon − tuned AdamW at budgets outside the family (exploratory, 95% t-interval): "
                           + "; ".join(f"{r.tokens(b)} tokens: Δ = {fmt_paired(c)} nats, {c.n} seeds"
                                       for b, c in sorted(extra.items())) + ".")
            if 400 in done:
                out.append(f"At 400 steps the gap moved by {done[400].delta - OLD_GAP:+.4f} from the "
                           f"{OLD_GAP:+.3f} measured before AdamW was retuned.")
            both = {**{b: j.c for b, j in done.items()}, **extra}
            out.append(crossing([(b, both[b].delta) for b in sorted(both)], r))
        pending = [f"{b} steps: {s}" for b in budgets if "pending" in (s := state(b))]
        if pending and done:
            out.append("Still pending: " + "; ".join(pending) + ".")
        if ms:
            from lab.stats import fmt_multiplier
            out.append("Speedup (AdamW tokens to reach Muon's final val loss, over Muon's tokens; read off AdamW's "
                       "tuned final-loss-vs-budget curve): " + "; ".join(
                           f"{r.tokens(round(m.budget / tps))}: {fmt_multiplier(m)}"
                           + (", past the largest budget measured" if m.censored == ">" else
                              ", already at the smallest budget measured" if m.censored else "") for m in ms) + ".")
        else:
            out.append(f"Speedup: not measurable yet ({why}).")
        out.append("lr law, lr* ∝ T^k: " + "; ".join(f"{OPTIMIZERS[o]} {t}" for o, t in law.items()) + ".")
        t = {b: trials(r.df[r.df.tags.map(lambda x, b=b: x.get("budget") == b)] if len(r.df) else r.df, "select",
                       "aux") for b in budgets}
        out.append("Tuning effort per budget (configurations on the selection seeds, Muon / AdamW): "
                   + ", ".join(f"{b}: {t[b]['muon']} / {t[b]['adamw']}" for b in budgets) + ".")
        e = edges()
        out.append(f"**Grid edge:** still on an edge of its grid after extending it: {', '.join(e)}; the optimum "
                   "may lie beyond." if e else "Every lr pick is interior to its grid.")
        return " ".join(x for x in out if x)
    r.answer.append(answer)

    def per_budget():
        rows = []
        for b in budgets:
            j = judged.get(b)
            fin = {opt: r.finals(arms[(opt, b)], "confirm") if arms[(opt, b)] else {} for opt in OPTIMIZERS}
            ms_ = lambda v: (f"{sum(v.values()) / len(v):.4f}" + (f" ± {pd.Series(list(v.values())).std():.4f}"
                                                                  if len(v) > 1 else "") + f" ({len(v)})") if v else "-"
            ch = lambda k: r.choice(k)
            a_set = ("" if ch(f"adamw_beta2@{b}") is None else
                     f", beta2 {ch(f'adamw_beta2@{b}'):g}, warmup {ch(f'adamw_warmup@{b}'):.0%}")
            rows.append({"budget": f"{b} steps ({r.tokens(b)} tokens)",
                         "Muon lr, aux": "-" if ch(lr_key("muon", b)) is None else
                         f"{ch(lr_key('muon', b)):g}" + (f", {ch(f'aux_lr@{b}'):g}" if ch(f"aux_lr@{b}") else ""),
                         "AdamW lr, beta2, warmup": "-" if ch(lr_key("adamw", b)) is None else
                         f"{ch(lr_key('adamw', b)):g}{a_set}",
                         "Muon final val (n)": ms_(fin["muon"]), "AdamW final val (n)": ms_(fin["adamw"]),
                         "Δ Muon − AdamW [interval at its verdict's level]":
                         fmt_judgement(j) if j is not None and j.n else
                         f"{fmt_paired(c)} (exploratory)" if (c := paired_at(b)) is not None and c.n else "-",
                         "confirmation seeds": state(b)})
        return ["## Per budget (confirmation seeds)", "",
                "Each optimizer is retuned at every budget on the selection seeds "
                f"{fmt_seeds(p.get('seeds', []))}: Muon's lr on a √2 grid around its earlier pick at aux lr "
                f"{p.get('aux_lr', '-')}, then its aux lr; AdamW's lr on a √2 grid at lr_sweep's beta2 and warmup, "
                "then the other (beta2, warmup) combinations at that lr. The tuned arms run on the confirmation "
                f"seeds {fmt_seeds(want)}; their verdicts are the confirmatory table's. Final val loss: mean ± sd "
                "(seeds).", "", pd.DataFrame(rows).to_markdown(index=False), ""]
    r.sections.append(per_budget)

    def speedup():
        return ["## Speedup: AdamW tokens to reach Muon's final loss", "",
                "Per budget T: Muon's mean final val loss at T (confirmation seeds) is the target; the AdamW tokens "
                "needed to reach it are read off AdamW's tuned final-loss-vs-budget curve (each budget's tuned "
                "AdamW, confirmation seeds), interpolated linearly in log loss vs log tokens between measured "
                f"budgets. Multiplier = those tokens / T; interval: {fmt_seeds(want)} resampled independently in "
                "every (optimizer, budget) cell (expanded percentile bootstrap). Past the largest AdamW budget the "
                "value is censored (\"> 1.6M tokens\"), never extrapolated. This replaces the earlier \"steps to "
                "AdamW's final loss\" read off Muon's curve mid-warmdown, which compares a decayed and an "
                "undecayed point of two schedules.", "", pd.DataFrame(speedup_rows(r)).to_markdown(index=False), ""]
    r.sections.append(speedup)

    def lr_section():
        rows = []
        for b in budgets:
            row = {"budget": f"{b} steps"}
            for opt, name in OPTIMIZERS.items():
                f = fits[opt]["fits"].get(b)
                row[f"{name} lr* [interval]"] = fmt_lr(f) if f else "n/a (fewer than 3 lrs)"
                row[f"{name} lrs fitted"] = ", ".join(f"{x:g}" for x in f.grid) if f else "-"
            rows.append(row)
        return ["## The lr law: lr* per budget and its exponent", "",
                "lr* is the vertex of a parabola fitted to the mean final val loss in log lr over the (up to) five "
                "√2-spaced grid lrs nearest each budget's best (selection seeds "
                f"{fmt_seeds(p.get('seeds', []))}; a diverged seed drops its lr); interval: seeds resampled with "
                "replacement (expanded percentile bootstrap; with two seeds a grid has only three distinct "
                "resamples, so these intervals understate the uncertainty). The exponent k of lr* ∝ T^k is the "
                "least-squares slope of log lr* on log T, with each budget's seeds resampled independently.", "",
                pd.DataFrame(rows).to_markdown(index=False), "",
                *[f"- {OPTIMIZERS[o]}: {t}" for o, t in law.items()], ""]
    r.sections.append(lr_section)
    r.grid_table(sel, "select", "Selection grid: lr at each budget")
    r.grid_table(aux, "aux", "Second round at each budget's lr: Muon's aux lr, AdamW's beta2 and warmup")
    r.grid_table(r.stage("confirm"), "confirm", "Confirmation: the tuned arms on fresh seeds")
    fn = r.figname("curves")
    seeds = curves_figure(r, r.figdir() / fn)
    if seeds:
        r.figures.append((fn, f"validation loss per budget, tuned Muon (solid) and tuned AdamW (dashed), mean over "
                              f"confirmation seeds {fmt_seeds(seeds)} (band: min-max, only with two or more seeds); "
                              "dotted: AdamW's final loss at that budget, the target; one y-range for all panels"))
    if ms:
        fn = r.figname("speedup")
        speedup_figure(r, ms, r.figdir() / fn)
        r.figures.append((fn, f"final val loss vs tokens per optimizer (confirmation seeds {fmt_seeds(want)}; "
                              "band: min-max, only with two or more seeds; dotted: where AdamW's curve reaches "
                              "Muon's loss) and the token multiplier per budget with its bootstrap interval"))
    if any(f["fits"] for f in fits.values()):
        fn = r.figname("lr_law")
        lr_law_figure(r, fits, r.figdir() / fn)
        r.figures.append((fn, f"final val loss vs lr per budget (selection seeds {fmt_seeds(p.get('seeds', []))}; "
                              "points: means, lines: the quadratic fits), and lr* vs steps with the fitted exponent "
                              "beside the slopes -1 (lr·T constant) and -0.32 (HyperP)"))
