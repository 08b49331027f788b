"""Tunes both optimizers with equal effort, then compares them. On the selection seeds: Muon's matrix lr on a √2 grid
at one aux lr, then the hybrid's aux lr (its AdamW groups) at the picked Muon lr; AdamW's lr on the same √2 spacing
crossed with beta2 in {0.95, 0.99} and warmup in {0, 5%} (the better-tuned AdamW). A grid whose best value sits on an
edge is extended past it (by √2 for the lr grids, by 2 for the aux grid), so every pick is interior. The research
plan's coarse grid (Muon lr 0.001 to 0.1, the plan's Adam lr 5e-4) stays as an exploratory stage. The tuned Muon and
the better-tuned AdamW then run on the six fresh confirmation seeds: the same runs as horizon's 400-step arms,
judged once, as the lab-wide family's entry muon_vs_adamw@400. Later campaigns read the chosen settings from these
records (`tuned`, `tuned_adamw`)."""
import math

from lab import family
from lab.arms import adamw, muon, peak_lr
from lab.config import get_config
from lab.params import Param

NAME, ORDER = "lr_sweep", 20
TITLE = "Muon learning-rate sweep on nGPT"
QUESTION = ("Which peak learning rate should Muon use on nGPT, and does tuned Muon beat an equally tuned AdamW "
            "baseline?")
HYPOTHESES = []  # its headline is the lab-wide family's muon_vs_adamw@400 (lab/family.py), judged once
REPORT = "MUON_LR_SWEEP_REPORT.md"
HEAD = "muon_vs_adamw@400"  # the family entry this campaign's confirmation runs are (horizon's 400-step arms)
OLD_GAP = -0.089  # Muon - AdamW at 400 steps before issue 20: AdamW at lr 0.008, beta2 0.95, no warmup, 3 seeds
PLAN_ADAM_LR = 5e-4  # the research plan's Adam lr


def _beta2s(value, values) -> None:
    if any(not 0 <= b < 1 for b in value):
        raise ValueError("has a beta2 outside [0, 1)")


PARAMS = {
    "seeds": Param(list[int], [0, 1], "selection seeds: they pick the settings", field="seed"),
    "confirm_seeds": Param(list[int], list(family.CONFIRM_SEEDS), "fresh seeds that judge tuned Muon against the "
                           "better-tuned AdamW", field="seed"),
    "muon_lrs": Param(list[float], [0.0115, 0.0163, 0.023, 0.0325, 0.046], "Muon matrix lr: a √2 grid at aux_lr "
                      "(extended by √2 past a winning edge)", field="lr"),
    "aux_lr": Param(float, 0.008, "aux lr of the hybrid's AdamW groups while Muon's lr is tuned", field="scalar_lr"),
    "aux_lrs": Param(list[float], [0.004, 0.008, 0.016], "aux lrs tried at the picked Muon lr (x2 past a winning "
                     "edge)", field="scalar_lr"),
    "adamw_lrs": Param(list[float], [0.004, 0.0057, 0.008, 0.0113, 0.016], "AdamW lr: a √2 grid for each (beta2, "
                       "warmup), extended by √2 past a winning edge", field="adamw_lr"),
    "adamw_beta2s": Param(list[float], [0.95, 0.99], "AdamW beta2 values (beta1 stays the preset's 0.8)",
                          check=_beta2s),
    "warmup_fracs": Param(list[float], [0.0, 0.05], "AdamW warmup, as a fraction of the run", field="warmup_frac"),
    "plan_muon_lrs": Param(list[float], [0.001, 0.003, 0.01, 0.023, 0.05, 0.1], "the research plan's coarse Muon "
                           "grid (exploratory; aux lr at the preset default; [] skips it)", field="lr", empty_ok=True),
    "plan_adamw_lrs": Param(list[float], [0.0005, 0.002, 0.004, 0.008, 0.016], "exploratory coarse AdamW grid with "
                            "the plan's Adam lr 5e-4 ([] skips it)", field="adamw_lr", empty_ok=True),
    "steps": Param(int, 0, "training steps per run; 0 means the preset default", field="steps", zero_default=True),
}


# ----------------------------------------------------------------------------------------------------------------
# √2 grids (shared with horizon): the midpoints written as the queue wrote them (0.065, 0.0163, 0.0057, ...)

def nice(x: float) -> float:
    """x with the fewest significant digits (1, 2 or 3) that stay within 1.2% of it: 0.06505 -> 0.065,
    0.016263 -> 0.0163, 0.005657 -> 0.0057, 0.032527 -> 0.0325."""
    for digits in (1, 2):
        y = float(f"{x:.{digits}g}")
        if abs(y - x) <= 0.012 * x:
            return y
    return float(f"{x:.3g}")


def ladder(center: float, k: int) -> float:
    """The k-th point of the √2 ladder through `center`: center·2^(k/2), exact for even k (doubling is exact in
    binary), `nice` for odd k. Grids centred on values a power of 2 apart share their points."""
    anchor = center * 2.0 ** (k // 2)
    return anchor if k % 2 == 0 else nice(anchor * math.sqrt(2))


def sqrt2_grid(center: float, n: int = 5) -> list[float]:
    """n points spaced √2 around center: sqrt2_grid(0.023) = [0.0115, 0.0163, 0.023, 0.0325, 0.046]."""
    return [ladder(center, k) for k in range(-(n // 2), n - n // 2)]


def sqrt2_beyond(center: float):
    """For Grid.run_grids: the next ladder point past the edge of a grid that its best value sits on (else None)."""
    from lab.arms import grid_edge

    def beyond(group, grid: list[float], best: float | None) -> float | None:
        side = grid_edge(grid, best)
        if side is None:
            return None
        k = round(2 * math.log2((min(grid) if side == "lowest" else max(grid)) / center))
        return ladder(center, k - 1 if side == "lowest" else k + 1)
    return beyond


# ----------------------------------------------------------------------------------------------------------------
# arms (shared with horizon): overrides exactly as research-design.md queues them, tags the family selects on

def steps_kw(budget: int, preset: str) -> dict:
    """{"steps": B} only where B is not the preset's (so the 400-step cpu arms are lr_sweep's runs and labels)."""
    return {} if budget == get_config(preset).steps else {"steps": int(budget)}


def muon_arm(lr: float, aux: float, budget: int, preset: str, prefix: str = "") -> tuple[str, tuple[dict, dict]]:
    """(label, (overrides, tags)) of a hybrid Muon arm: Muon lr for hidden matrices, one aux lr for its AdamW groups."""
    tags = {"optimizer": "muon", "budget": int(budget), "lr": float(lr), "aux": float(aux)}
    return f"muon {prefix}lr={lr:g} aux={aux:g}", (muon(lr, aux, **steps_kw(budget, preset)), tags)


def adamw_arm(lr: float, beta2: float, warmup: float, budget: int, preset: str,
              prefix: str = "") -> tuple[str, tuple[dict, dict]]:
    """(label, (overrides, tags)) of an AdamW arm; adam_betas and warmup_frac appear only where they differ from the
    preset's (beta1 stays the preset's)."""
    d = get_config(preset)
    o = adamw(lr, **({"adam_betas": (d.adam_betas[0], float(beta2))} if beta2 != d.adam_betas[1] else {}),
              **({"warmup_frac": float(warmup)} if warmup != d.warmup_frac else {}), **steps_kw(budget, preset))
    tags = {"optimizer": "adamw", "budget": int(budget), "lr": float(lr), "beta2": float(beta2),
            "warmup": float(warmup)}
    return f"adamw {prefix}lr={lr:g} beta2={beta2:g} warmup={warmup:g}", (o, tags)


def arm_tags(o: dict) -> dict:
    """Tags from overrides (rows written before arms carried tags)."""
    t = {"optimizer": o["optimizer"], "lr": peak_lr(o)}
    if o["optimizer"] == "muon":
        return {**t, **({"aux": o["scalar_lr"]} if "scalar_lr" in o else {})}
    return {**t, "beta2": float((o.get("adam_betas") or (0.8, 0.95))[1]), "warmup": float(o.get("warmup_frac", 0.0))}


def pick_arm(g, df, stage: str, seeds, arms: dict[str, dict], grids: dict[str, list], what: str) -> dict:
    """Grid.pick over arms ({label: {key: value}}): each key's value of the one best arm (the lowest mean final val
    loss), recorded as a choice with the grid it was picked from (grids[key]). Returns {key: value}."""
    out = {}
    for key, grid in grids.items():
        v = g.pick(df, key, stage, seeds, {a: vals[key] for a, vals in arms.items()}, what)
        out[key] = g.choose(key, v, stage, seeds, sorted(set(grid)),
                            f"the {key.split('@')[0].replace('_', ' ')} of the {what} with the lowest mean final val "
                            f"loss on seeds {list(seeds)}")
    return out


def stages(g, p) -> None:
    """plan (exploratory): the plan's coarse grids; select: Muon lr at aux_lr, and AdamW lr per (beta2, warmup);
    aux: the hybrid's aux lr at the picked Muon lr; confirm: tuned Muon vs the better-tuned AdamW."""
    seeds, preset = p["seeds"], p["preset"]
    b = p["steps"] or get_config(preset).steps
    d = get_config(preset)
    plan = dict([muon_arm(x, d.scalar_lr, b, preset) for x in p["plan_muon_lrs"]]
                + [adamw_arm(x, d.adam_betas[1], d.warmup_frac, b, preset) for x in p["plan_adamw_lrs"]])
    if plan:
        g.run("plan", plan, seeds)
    groups = {("muon",): p["muon_lrs"]} | {("adamw", b2, w): p["adamw_lrs"] for b2 in p["adamw_beta2s"]
                                           for w in p["warmup_fracs"]}
    center = {k: sorted(v)[len(v) // 2] for k, v in groups.items()}
    arm = lambda k, x: (muon_arm(x, p["aux_lr"], b, preset) if k[0] == "muon" else adamw_arm(x, *k[1:], b, preset))
    df, grids = g.run_grids("select", groups, lambda k, x: arm(k, x)[1], lambda k, x: arm(k, x)[0], seeds,
                            beyond=lambda k, xs, best: sqrt2_beyond(center[k])(k, xs, best))
    lr = g.pick(df, "muon_lr", "select", seeds, grids[("muon",)], "Muon lr")
    a_arms = {label: {"adamw_lr": x, "adamw_beta2": k[1], "adamw_warmup": k[2]}
              for k, gr in grids.items() if k[0] == "adamw" for label, x in gr.items()}
    a = pick_arm(g, df, "select", seeds, a_arms, {"adamw_lr": [v["adamw_lr"] for v in a_arms.values()],
                                                  "adamw_beta2": p["adamw_beta2s"],
                                                  "adamw_warmup": p["warmup_fracs"]}, "AdamW arm (lr x beta2 x warmup)")
    df, x_grids = g.run_grids("aux", {"aux": p["aux_lrs"]}, lambda k, x: muon_arm(lr, x, b, preset)[1],
                              lambda k, x: muon_arm(lr, x, b, preset)[0], seeds)
    aux = g.pick(df, "aux_lr", "aux", seeds, x_grids["aux"], "aux lr")
    g.run("confirm", dict([muon_arm(lr, aux, b, preset),
                           adamw_arm(a["adamw_lr"], a["adamw_beta2"], a["adamw_warmup"], b, preset)]),
          p["confirm_seeds"])


def _upstream(g, keys: list[tuple[str, object, str, object]]) -> dict:
    """[(key, given, unset, default)] -> {key: value}: a given (non-`unset`) value wins, else this campaign's choice at
    the preset (its default-parameter manifest; a variant never defines it), else `default`. Each source is recorded
    as a choice of `g` (stage "upstream"), so the report says where every setting came from."""
    up, out = g.upstream(NAME), {}
    for key, given, unset, default in keys:
        c = next((c for c in (up or {}).get("choices", []) if c["key"] == key), None)
        if given != unset:
            value, why = float(given), "given as a parameter"
        elif c is not None:
            value = c["value"]
            why = f"{NAME}'s choice at preset {g.preset} ({c['why']}; stage {c['stage']}, grid {c['grid']})"
        else:
            value = default
            why = (f"the {g.preset} preset default: {NAME} has not chosen it at this preset yet (run {NAME} first for "
                   "a tuned value)")
        out[key] = g.choose(key, value, "upstream", [], [], why)
    return out


def tuned(g, lr: float = 0.0, aux_lr: float = 0.0, adamw_lr: float = 0.0) -> dict:
    """The tuned hybrid Muon (lr, aux lr) and AdamW (lr) for a later campaign: a given (non-zero) value wins, else
    this campaign's choice at the preset, else the preset default; each recorded as an "upstream" choice of `g`."""
    d = get_config(g.preset)
    return _upstream(g, [("muon_lr", lr, 0.0, d.lr), ("aux_lr", aux_lr, 0.0, d.scalar_lr),
                         ("adamw_lr", adamw_lr, 0.0, d.adamw_lr)])


def tuned_adamw(g, beta2: float = 0.0, warmup: float = -1.0) -> dict:
    """The better-tuned AdamW's beta2 (0: this campaign's choice) and warmup fraction (-1: its choice), as `tuned`."""
    d = get_config(g.preset)
    return _upstream(g, [("adamw_beta2", beta2, 0.0, d.adam_betas[1]),
                         ("adamw_warmup", warmup, -1.0, d.warmup_frac)])


# ----------------------------------------------------------------------------------------------------------------
# analysis helpers (shared with horizon)

def lr_grid(df, stage: str, **tags) -> dict[float, dict[int, float]]:
    """{lr: {seed: final val loss}} of the arms of `stage` with these tags (a diverged seed: nan, so lr_opt drops
    that lr instead of averaging the seeds that survived; a run without a final record is left out)."""
    from lab.results import select
    out: dict[float, dict[int, float]] = {}
    rows = select(df[df.stage == stage], **tags) if len(df) else df
    for row in rows.itertuples() if len(rows) else []:
        if row.status in ("finished", "diverged"):
            v = float(row.final_val_loss) if row.status == "finished" else math.nan
            out.setdefault(float(row.tags["lr"]), {})[int(row.seed)] = v
    return out


def lr_fit(grid: dict, best: float | None, half: int = 2):
    """stats.lr_opt on the (up to) 2·half + 1 grid lrs nearest the best one (a quadratic is a local model of the
    optimum); None with fewer than 3 usable lrs."""
    from lab.stats import lr_opt
    lrs = sorted(x for x, ls in grid.items() if ls)
    if best is None or len(lrs) < 3:
        return None
    i = min(range(len(lrs)), key=lambda j: abs(math.log(lrs[j] / best)))
    lo = max(0, min(i - half, len(lrs) - (2 * half + 1)))
    window = {x: grid[x] for x in lrs[lo:lo + 2 * half + 1]}
    try:
        return lr_opt(window)
    except ValueError:
        return None


def trials(df, *stages: str) -> dict[str, int]:
    """Distinct configurations tried per optimizer in these stages (a config tried in two stages counts once)."""
    out = {"muon": 0, "adamw": 0}
    if not len(df):
        return out
    rows = df[df.stage.isin(stages)]
    for opt, g in rows.groupby(rows.tags.map(lambda t: t.get("optimizer"))):
        out[opt] = len({tuple(sorted((k, str(v)) for k, v in t.items() if k != "budget")) for t in g.tags})
    return out


def seeds_state(r, df, arms: list[str | None], want) -> str:
    """'6 of 6 confirmation seeds finished', '2 of 6 ..., 4 pending' over the given arms (the fewest finished)."""
    want = list(want)
    if not arms or any(a is None for a in arms):
        return f"0 of {len(want)} confirmation seeds finished, {len(want)} pending"
    n = min(len([s for s in r.finals(a, "confirm") if s in want]) for a in arms)
    return f"{n} of {len(want)} confirmation seeds finished" + (f", {len(want) - n} pending" if n < len(want) else "")


def edge_note(value, grid: list, what: str) -> str:
    """'' when the pick is interior, else a flag naming the edge and the grid."""
    from lab.arms import grid_edge
    side = grid_edge(sorted(grid), value)
    return (f" **Grid edge:** the {what} {value:g} is the {side} value of its grid "
            f"{[float(f'{x:g}') for x in sorted(grid)]} even after extending it: the optimum may lie beyond."
            if side else "")


def fmt_seeds(seeds) -> str:
    from lab.tables import seeds_text
    return seeds_text(seeds) if len(seeds) else "none"


def headline(r):
    """The family entry muon_vs_adamw@400 (lab.stats.Judgement, Holm over the whole family): horizon's 400-step
    arms, which at the default parameters are this campaign's confirmation runs; here they are read from this
    campaign's own confirmation arms, so the verdict is the same wherever it is printed."""
    import pandas as pd

    from lab.results import results
    own = r.stage("confirm")
    if len(own):  # rows recorded before arms carried a budget ran at the report's steps
        own = own.assign(tags=own.tags.map(lambda t: {"budget": r.steps, **t}))

    def read(name):
        df = r.df if name == r.name else results(name, r.preset)
        if name == family.entry(HEAD).campaign:
            if len(df):
                df = df[~((df.stage == "confirm") & df.tags.map(lambda t: t.get("budget") == 400))]
            df = pd.concat([df, own], ignore_index=True) if len(own) else df
        return df
    return family.judge_all(r.preset, read)[HEAD]


def confirmatory(r) -> dict:
    """r.confirmatory() renders the family entries a campaign owns; lr_sweep owns none, yet its headline is the
    entry muon_vs_adamw@400 (horizon's 400-step arms: the same runs), so that entry is added here, judged with this
    campaign's own confirmation arms (`headline`), and rendered by the same table and forest plot."""
    from lab import plots, tables
    from lab.stats import DELTA
    judged = dict(r.confirmatory())
    if r.steps != family.entry(HEAD).treatment["budget"]:  # another budget (a variant): no family entry
        return judged
    if HEAD not in judged:
        j = judged[HEAD] = r.judgements[HEAD] = headline(r)
        r.sections.append(lambda: tables.confirmatory_lines(r, [family.entry(HEAD)], len(family.FAMILY)))
        if j.n >= 2:
            fn = r.figname("forest")
            plots.forest_figure([(HEAD, j.delta, j.lo_v, j.hi_v, j.level, j.verdict, j.n)], DELTA,
                                f"{r.module.TITLE}: confirmatory Δ ({r.budget()} tokens)", r.figdir() / fn)
            r.figures.append((fn, f"the confirmatory comparison on confirmation seeds {fmt_seeds(j.c.seeds)}: Δ = "
                                  "tuned Muon − better-tuned AdamW with the interval at the level its verdict uses; "
                                  f"shaded: ±δ = ±{DELTA:g} nats, the smallest effect of interest"))
    return judged


def _plain_log(ax, axis: str = "x", ticks=None, fmt=None) -> None:
    """A log axis with plain tick labels (fmt(value); default '%g') at `ticks` (default: matplotlib's)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
    a = ax.xaxis if axis == "x" else ax.yaxis
    if ticks is not None:
        a.set_major_locator(FixedLocator(list(ticks)))
    a.set_major_formatter(FuncFormatter(lambda v, _: (fmt or (lambda x: f"{x:g}"))(v)))
    a.set_minor_formatter(NullFormatter())


def lr_sweep_figure(r, points, path, title: str) -> None:
    """Final val loss vs peak lr, one line per (optimizer, setting) (mean over seeds, dots: seeds, no band)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from lab import plots
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for i, (label, g) in enumerate(points.groupby("line", sort=False)):
        opt = g.optimizer.iloc[0]
        mean = g.groupby("lr").final_val_loss.mean()
        style = {"linestyle": ":" if "plan" in label else plots.LINESTYLE.get(opt, "-"), "marker": "o",
                 "color": f"C{i}"}
        ax.plot(mean.index, mean.values, label=label, **style)
        ax.scatter(g.lr, g.final_val_loss, s=9, color=style["color"], alpha=0.5)
    finite = points.final_val_loss[np.isfinite(points.final_val_loss)]
    if len(finite):
        lo, mid = finite.min(), finite.median()
        ax.set_ylim(lo - 0.05 * (mid - lo + 1e-3), mid + 1.5 * (mid - lo) + 1e-3)
    ax.set(xscale="log", xlabel="peak lr (Muon: hidden matrices; AdamW: every parameter)",
           ylabel="final val loss (line: mean over seeds, dots: seeds)", title=title)
    _plain_log(ax, "x")
    plots._legend(ax, fontsize=7)
    plots.save(fig, path)


def curves_figure(r, df, arms: dict[str, str], seeds, path, title: str, target: str | None = None) -> None:
    """Validation curves of a few arms ({arm: legend label}, <= 6): mean over seeds, a min-max band only with two
    or more seeds; `target`: a horizontal line at that arm's mean final val loss."""
    import matplotlib.pyplot as plt

    from lab import plots
    from lab.results import val_curves
    curves = val_curves(df[df.arm.isin(list(arms))], r.preset)
    fig, ax = plt.subplots(figsize=(6.6, 4.4))
    agg = curves.groupby(["arm", "step"]).val_loss.agg(["mean", "min", "max", "count"]).reset_index()
    for i, (arm, label) in enumerate(arms.items()):
        g = agg[agg.arm == arm]
        if len(g):
            opt = df[df.arm == arm].tags.iloc[0].get("optimizer")
            style = {"linestyle": plots.LINESTYLE.get(opt, "-"), "color": f"C{i}"}
            ax.plot(g.step, g["mean"], label=label, **style)
            if g["count"].max() > 1:
                ax.fill_between(g.step, g["min"], g["max"], color=style["color"], alpha=0.15, linewidth=0)
            if arm == target:
                ax.axhline(g["mean"].iloc[-1], color=style["color"], linewidth=0.8, linestyle=":",
                           label=f"target: {label} final")
    plots._last_two_thirds_ylim(ax, agg, curves.step.max() if len(curves) else 1)
    ax.set(xlabel="step", ylabel=f"val loss (mean over seeds {fmt_seeds(seeds)})", title=title)
    plots._legend(ax, fontsize=7)
    plots.save(fig, path)


# ----------------------------------------------------------------------------------------------------------------
# the report

def analyse(r) -> None:
    import pandas as pd

    from lab.results import ranked
    from lab.stats import fmt_lr, fmt_paired, paired
    plan, sel, aux, conf = r.stage("plan"), r.stage("select"), r.stage("aux"), r.stage("confirm")
    p, want = r.params, r.params.get("confirm_seeds", [])
    judged = confirmatory(r)
    j = judged.get(HEAD)
    mu, ad = r.select(sel, optimizer="muon"), r.select(sel, optimizer="adamw")
    best_m, _ = r.best_vs_runner_up(mu, "select", "Muon lr", "muon_lr")
    best_a, _ = r.best_vs_runner_up(ad, "select", "AdamW arm", "adamw")
    r.best_vs_runner_up(aux, "aux", "aux lr", "aux_lr")
    a_lr, b2, w = r.choice("adamw_lr"), r.choice("adamw_beta2"), r.choice("adamw_warmup")
    base_a = r.arm_of(ad, lr=a_lr, beta2=0.95, warmup=0.0) if a_lr is not None and b2 is not None else None
    if base_a and best_a and base_a != best_a:
        r.compare(best_a, base_a, "select", f"better-tuned AdamW `{best_a}` vs the same lr at beta2 0.95, no warmup "
                                            f"`{base_a}`", "adamw_tuning")
    plan_a = r.arm_of(plan, optimizer="adamw", lr=PLAN_ADAM_LR) if len(plan) else None
    if plan_a and best_a:
        r.add(f"the plan's Adam lr `{plan_a}` (plan stage) vs the better-tuned AdamW `{best_a}`", "select",
              paired(r.finals(plan_a, "plan"), r.finals(best_a, "select")), "plan_adam")
    plan_m = next(iter(ranked(r.select(plan, optimizer="muon"))), None) if len(plan) else None
    t_sel, t_lr, t_aux = trials(r.df, "select", "aux"), trials(r.df, "select"), trials(r.df, "aux")
    tm, ta = r.arm_of(conf, optimizer="muon"), r.arm_of(conf, optimizer="adamw")
    other = r.compare(tm, ta, "confirm", f"tuned Muon `{tm}` vs the better-tuned AdamW `{ta}` (not a family "
                      "entry at this budget)", "headline") if j is None and tm and ta else None

    def answer():
        state = seeds_state(r, conf, [tm, ta], want)
        if j is None:  # a budget outside the family: an exploratory row, no verdict
            head = (f"Δ = {fmt_paired(other.c)} nats on {other.c.n} confirmation seeds (exploratory: the family "
                    f"judges {HEAD} only)" if other is not None and other.c.n else "not measured yet")
            out = [f"At {r.tokens()} tokens ({r.steps} steps), tuned Muon against the better-tuned AdamW: {head}; "
                   f"{state}."]
        else:
            head = r.verdict_text(HEAD) + (f"; it moved by {j.delta - OLD_GAP:+.4f} from the {OLD_GAP:+.3f} "
                                           "measured before the AdamW baseline was retuned" if j.n else "")
            out = [f"At {r.tokens()} tokens ({r.steps} steps), tuned Muon against the better-tuned AdamW: {head}; "
                   f"{state} (the verdict is the lab-wide family's {HEAD}: the same runs as horizon's 400-step "
                   "arms)."]
        out.append(f"Tuning effort on selection seeds {fmt_seeds(p.get('seeds', []))}: Muon {t_sel['muon']} "
                   f"configurations ({t_lr['muon']} lrs, then {t_aux['muon']} aux lrs; a configuration in both "
                   f"counts once), AdamW {t_sel['adamw']} (lr x beta2 x warmup).")
        m_lr, x_lr = r.choice("muon_lr"), r.choice("aux_lr")
        if m_lr is None:
            out.append("The Muon lr is not chosen yet (selection unfinished)"
                       + (f"; on the finished runs the leader is `{best_m}`." if best_m else "."))
        else:
            m_grid = sorted(lr_grid(r.df, "select", optimizer="muon")) or r.grid_of("muon_lr")
            out.append(f"Muon: lr {m_lr:g}{edge_note(m_lr, m_grid, 'Muon lr')}"
                       + (f"; aux lr {x_lr:g}{edge_note(x_lr, r.grid_of('aux_lr'), 'aux lr')}" if x_lr is not None
                          else "") + ".")
        if a_lr is None:
            out.append("The AdamW setting is not chosen yet (selection unfinished)"
                       + (f"; on the finished runs the leader is `{best_a}`." if best_a else "."))
        else:
            tags = {"beta2": b2, "warmup": w} if b2 is not None else {}
            a_grid = sorted(lr_grid(r.df, "select", optimizer="adamw", **tags)) or r.grid_of("adamw_lr")
            setting = f", beta2 {b2:g}, warmup {w:.0%}" if b2 is not None else ""
            out.append(f"The better-tuned AdamW: lr {a_lr:g}{setting}{edge_note(a_lr, a_grid, 'AdamW lr')}.")
        if plan_m:
            out.append(f"On the research plan's coarse grid (exploratory, aux lr at the preset default) the best "
                       f"Muon arm is `{plan_m}`.")
        return " ".join(out)
    r.answer.append(answer)

    def lr_star():
        rows = []
        groups = [("Muon" + (f", aux {p['aux_lr']:g}" if p.get("aux_lr") else ""), "muon",
                   {"aux": p["aux_lr"]} if p.get("aux_lr") else {})]
        groups += [(f"AdamW, beta2 {b:g}, warmup {x:.0%}", "adamw", {"beta2": b, "warmup": x})
                   for b in p.get("adamw_beta2s", []) for x in p.get("warmup_fracs", [])]
        for what, opt, tags in groups:
            grid = lr_grid(r.df, "select", optimizer=opt, **tags)
            means = {x: sum(v.values()) / len(v) for x, v in grid.items() if v}
            if not means:
                continue
            fit = lr_fit(grid, min(means, key=means.get))
            rows.append({"arm": what, "lrs tried": ", ".join(f"{x:g}" for x in sorted(grid)),
                         "seeds per lr": min(len(v) for v in grid.values()),
                         "lr* [interval]": fmt_lr(fit) if fit else "n/a (fewer than 3 lrs)"})
        if not rows:
            return []
        return ["## Optimal lr from the selection grids (exploratory)", "",
                "lr* is the vertex of a parabola fitted to the mean final val loss in log lr over the (up to) five "
                "grid lrs nearest the best one; its interval comes from refits on seeds resampled with replacement "
                "(selection seeds only: with two seeds there are three distinct resamples, so the interval "
                "understates the uncertainty). It informs the picks above, which are the grid points with the lowest "
                "mean loss.", "", pd.DataFrame(rows).to_markdown(index=False), ""]
    r.sections.append(lr_star)

    def adamw_table():
        fin = ad[ad.status == "finished"] if len(ad) else ad
        if not len(fin) or not all("beta2" in t for t in fin.tags):
            return []
        fin = fin.assign(lr=fin.tags.map(lambda t: t["lr"]),
                         setting=fin.tags.map(lambda t: f"beta2 {t['beta2']:g}, warmup {t['warmup']:.0%}"))
        t = fin.pivot_table(index="lr", columns="setting", values="final_val_loss", aggfunc="mean")
        return ["## AdamW's tuning grid (selection seeds, mean final val loss)", "", t.to_markdown(floatfmt=".4f"),
                ""]
    r.sections.append(adamw_table)
    if len(plan):
        r.grid_table(plan, "select", "The research plan's coarse grid (exploratory; Muon at the preset's aux lr)")
    r.grid_table(sel, "select", "Selection grid: Muon lr (at one aux lr) and AdamW lr x beta2 x warmup")
    r.grid_table(aux, "aux", "Aux lr of the hybrid's AdamW groups at the picked Muon lr")
    r.grid_table(conf, "confirm", "Confirmation: tuned Muon and the better-tuned AdamW on fresh seeds")
    pts = []
    for stage, d in (("plan", plan), ("select", sel)):
        for row in d[d.status == "finished"].itertuples() if len(d) else []:
            t = row.tags
            line = (f"Muon, aux {t.get('aux', 0):g}" + (" (plan grid)" if stage == "plan" else "")
                    if t["optimizer"] == "muon" else
                    f"AdamW, beta2 {t.get('beta2', 0.95):g}, warmup {t.get('warmup', 0.0):.0%}")
            pts.append({"line": line, "optimizer": t["optimizer"], "lr": float(t["lr"]),
                        "final_val_loss": float(row.final_val_loss), "run_id": row.run_id})
    if pts:
        fn = r.figname("sweep")
        points = pd.DataFrame(pts).drop_duplicates(["line", "run_id"])
        lr_sweep_figure(r, points, r.figdir() / fn, f"final val loss vs peak lr at {r.tokens()} tokens")
        r.figures.append((fn, f"final val loss vs peak lr, one line per optimizer setting (selection seeds "
                              f"{fmt_seeds(p.get('seeds', []))}; dots: single seeds)"))
    done = conf[conf.status == "finished"] if len(conf) else conf
    if tm and ta and len(done):
        fn = r.figname("curves")
        seeds = sorted(set(done.seed))
        curves_figure(r, conf, {tm: f"tuned Muon ({tm})", ta: f"better-tuned AdamW ({ta})"}, seeds,
                      r.figdir() / fn, f"tuned Muon vs the better-tuned AdamW ({r.tokens()} tokens)", target=ta)
        r.figures.append((fn, f"validation loss of the two confirmation arms, mean over confirmation seeds "
                              f"{fmt_seeds(seeds)} (band: min-max, only with two or more seeds); dotted: AdamW's "
                              "final loss, the target"))
