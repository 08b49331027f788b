"""Does Muon suit nGPT in particular? Three architectures (gpt_swiglu: nGPT's matched control, same SwiGLU widths,
attention and RoPE, pre-norm RMSNorm, no sphere; ngpt; gated_ngpt) x two optimizers (hybrid Muon, AdamW). Each of
the six arms is tuned on its own grid with the same number of trials per optimizer (Muon: matrix lr x aux lr;
AdamW: lr x beta2 x warmup), extended by √2 steps past a winning lr edge, on the selection seeds; Muon gets extra lr
points at its picked aux lr so its optimal lr can be fitted. The research plan's own configuration (gated nGPT,
alpha 0.15, projection every 7 steps, Muon at the pick of the plan's lr grid, AdamW at the plan's 5e-4) is a
seventh and eighth arm. The picked arms run on the confirmation seeds of the lab-wide family: Muon − AdamW per
architecture, the two interactions (is Muon's advantage larger on the sphere?) and the plan's configuration."""
import itertools
import math

from lab.arms import EXTEND_EDGES, adamw, grid_edge, muon
from lab.config import MODELS, get_config
from lab.family import CONFIRM_SEEDS
from lab.params import Param

NAME, ORDER = "architecture", 70
TITLE = "Architecture x optimizer: does Muon suit nGPT in particular?"
QUESTION = ("Is Muon's advantage over AdamW larger on nGPT (and the plan's gated nGPT) than on a matched GPT, is "
            "Muon's optimal lr higher there, and what would the research plan's own configuration have concluded?")
HYPOTHESES = []  # verdicts: the family entries sphere_interaction_ngpt, sphere_interaction_gated_ngpt, plan_config
REPORT = "ARCHITECTURE_REPORT.md"

OPTIMIZERS = {"muon": "Muon", "adamw": "AdamW"}
BETA1 = 0.8  # AdamW's beta1 (the presets'); beta2 is tuned
CONTROL = "gpt_swiglu"  # THE control of every interaction and lr ratio (the ReLU² `gpt` is not run)
PLAN = "plan"  # the group of the plan's configuration
PLAN_LR_QUOTE = "\"Optimal Muon LR: likely higher than standard GPT (due to unit norm constraint)\""
LR_HYPOTHESIS = "Muon's optimal lr is higher on nGPT than on GPT (the matched gpt_swiglu)"


def _models(value, values) -> None:
    bad = [m for m in value if m not in MODELS]
    if bad:
        raise ValueError(f"has unknown model(s) {bad}; valid: {', '.join(MODELS)}")


def _beta2(value, values) -> None:
    bad = [b for b in value if not 0 <= b < 1]
    if bad:
        raise ValueError(f"has beta2 value(s) {bad} outside [0, 1)")


PARAMS = {
    "seeds": Param(list[int], [0, 1], "selection seeds: they pick every arm's settings", field="seed"),
    "confirm_seeds": Param(list[int], list(CONFIRM_SEEDS), "fresh seeds: the lab-wide family's (lab/family.py)",
                           field="seed"),
    "models": Param(list[str], ["gpt_swiglu", "ngpt", "gated_ngpt"],
                    "architectures, in run order (gpt_swiglu: nGPT's matched control)", check=_models),
    "muon_lrs": Param(list[float], [0.0115, 0.0163, 0.023, 0.0325], "hybrid Muon: matrix lr grid (√2 steps)",
                      field="lr"),
    "aux_lrs": Param(list[float], [0.0057, 0.008, 0.0113], "hybrid Muon: aux lr grid (embedding, head, scalars)",
                     field="scalar_lr"),
    "fit_lrs": Param(list[float], [0.046], "Muon lrs added at the picked aux lr for the lr fit (not trials)",
                     field="lr", empty_ok=True),
    "adamw_lrs": Param(list[float], [0.004, 0.0057, 0.008], "AdamW: lr grid (√2 steps)", field="adamw_lr"),
    "adamw_beta2s": Param(list[float], [0.95, 0.99], "AdamW: beta2 grid (beta1 0.8)", check=_beta2),
    "warmup_fracs": Param(list[float], [0.0, 0.05], "AdamW: warmup fraction grid", field="warmup_frac"),
    "plan_muon_lrs": Param(list[float], [0.001, 0.003, 0.01, 0.023, 0.05, 0.1],
                           "the plan's Muon lr grid: its configuration's Muon lr is picked from it", field="lr"),
    "plan_adamw_lr": Param(float, 5e-4, "the plan's Adam lr (not tuned)", field="adamw_lr"),
    "plan_alpha": Param(float, 0.15, "the plan's alpha_init of gated nGPT", field="alpha_init"),
    "plan_every": Param(int, 7, "the plan's projection interval (project_every)", field="project_every"),
}


# --- rectangular grids extended by √2 steps (also used by the width campaign) ---

def sig3(x: float) -> float:
    """x rounded to 3 significant digits: the literal a grid value is written (and its run hashed) as."""
    return float(f"{x:.3g}")


def step_past(values: list[float], best) -> float | None:
    """The next √2 step past the edge of `values` that `best` sits on (3 significant digits); None inside."""
    side = grid_edge(values, best)
    return sig3(min(values) / math.sqrt(2)) if side == "lowest" else \
        sig3(max(values) * math.sqrt(2)) if side == "highest" else None


def cells(axes: dict) -> list[dict]:
    """Every point of a rectangular grid {axis: [values]}, in axis order."""
    return [dict(zip(axes, xs)) for xs in itertools.product(*axes.values())]


def run_rects(g, stage: str, rects: dict, arm, label, seeds, extend: dict):
    """Run a rectangular grid per group ({group: {axis: [values]}}; arm(group, cell) -> (overrides, tags),
    label(group, cell) -> str). While a group's best cell sits on an edge of an axis in extend[group], that axis
    gains the next √2 step past the edge (crossed with the other axes, so the grid stays a rectangle), at most
    EXTEND_EDGES times per axis. A group with a cell that has no final record yet (another process is training it)
    is not extended now: its edge is not known. Returns this stage's rows and the final grids ({group: {label:
    cell}})."""
    from lab.results import best_arm
    rects = {k: {a: sorted(v) for a, v in axes.items()} for k, axes in rects.items()}
    grids = lambda k: {label(k, c): c for c in cells(rects[k])}
    df = g.run(stage, {lab: arm(k, c) for k in rects for lab, c in grids(k).items()}, seeds)
    added = {(k, a): 0 for k in rects for a in extend.get(k, ())}
    for _ in range(EXTEND_EDGES * max(1, max((len(v) for v in extend.values()), default=1))):
        new = {}
        for k in rects:
            have = grids(k)
            rows = df[df.arm.isin(list(have))] if len(df) else df
            if rows.empty or rows.status.isin(["missing", "running"]).any():
                continue
            best = best_arm(rows)
            for a in extend.get(k, ()) if best else ():
                x = step_past(rects[k][a], have[best][a])
                if x is not None and added[(k, a)] < EXTEND_EDGES:
                    rects[k][a], added[(k, a)] = sorted([*rects[k][a], x]), added[(k, a)] + 1
            new |= {lab: arm(k, c) for lab, c in grids(k).items() if lab not in have}
        if not new:
            break
        df = g.run(stage, new, seeds)
    return df, {k: grids(k) for k in rects}


def lr_grid(rows) -> dict[float, dict[int, float]]:
    """{lr tag: {seed: final val loss}} of runs with a final record (a diverged run counts as inf, so lr_opt leaves
    its lr out and says so)."""
    out: dict[float, dict[int, float]] = {}
    for x in rows.itertuples() if len(rows) else []:
        if x.status in ("finished", "diverged"):
            v = float(x.final_val_loss) if x.status == "finished" else math.inf
            out.setdefault(float(x.tags["lr"]), {})[int(x.seed)] = v
    return out


def lr_fit(grid: dict):
    """lab.stats.lr_opt of a grid, or None below 3 lrs with finite losses."""
    from lab.stats import lr_opt
    try:
        return lr_opt(grid)
    except ValueError:
        return None


def lr_figure(panels: dict, path, title: str) -> None:
    """Small multiples of final val loss vs lr (log x): one panel per entry of `panels` ({panel title: {line
    label: {lr: {seed: loss}}}}), one line per grid (mean over seeds, band min-max when there are two or more)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from lab import plots
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.2), squeeze=False)
    for ax, (panel, lines) in zip(axes[0], panels.items()):
        ys = []
        for name, grid in lines.items():
            pts = sorted((lr, [v for v in ls.values() if math.isfinite(v)]) for lr, ls in grid.items())
            pts = [(lr, v) for lr, v in pts if v]
            if not pts:
                continue
            x, m = [p[0] for p in pts], [float(np.mean(p[1])) for p in pts]
            line, = ax.plot(x, m, marker="o", label=name)
            if any(len(p[1]) > 1 for p in pts):
                ax.fill_between(x, [min(p[1]) for p in pts], [max(p[1]) for p in pts], color=line.get_color(),
                                alpha=0.15, linewidth=0)
            ys += [v for p in pts for v in p[1]]
        if ys:  # the interesting range: from the best run up to a bit above the median
            lo, mid = min(ys), float(np.median(ys))
            ax.set_ylim(lo - 0.05 * (mid - lo + 1e-3), mid + 1.5 * (mid - lo) + 1e-3)
        ax.set(xscale="log", xlabel="peak lr", title=panel,
               ylabel="final val loss (selection seeds: mean, band min-max)")
        ticks = sorted({lr for grid in lines.values() for lr in grid})
        if ticks:  # the grid's own lrs, written as the literals they are
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks], rotation=45, fontsize=7)
            ax.xaxis.set_minor_locator(plt.NullLocator())
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    plots.save(fig, path)


# --- the campaign ---

def _plan(p: dict) -> dict:
    return {"model": "gated_ngpt", "alpha_init": float(p["plan_alpha"]), "project_every": int(p["plan_every"])}


def _label(k, c: dict) -> str:
    m, opt = k
    if m == PLAN:
        return f"plan muon lr={c['lr']:g}"
    if opt == "muon":
        return f"{m} muon lr={c['lr']:g} aux={c['aux']:g}"
    return f"{m} adamw lr={c['lr']:g} b2={c['b2']:g} warmup={c['warmup']:g}"


def _overrides(k, c: dict, p: dict) -> dict:
    m, opt = k
    if m == PLAN:  # aux at the preset's: the plan names none
        return muon(c["lr"], get_config(p["preset"]).scalar_lr, **_plan(p))
    if opt == "muon":
        return muon(c["lr"], c["aux"], model=m)
    return adamw(c["lr"], adam_betas=(BETA1, float(c["b2"])), warmup_frac=float(c["warmup"]), model=m)


def _select_arm(k, c: dict, p: dict) -> tuple[dict, dict]:
    m, opt = k
    tags = {"arm": "plan_muon"} if m == PLAN else {"model": m, "optimizer": opt}
    return _overrides(k, c, p), {**tags, **c}


def choice_key(m: str, opt: str) -> str:
    return f"{opt}@{m}"


def stages(g, p) -> None:
    """select: the six arms' grids (and the plan's Muon lr grid), extended past a winning lr or aux edge, then each
    arm's best cell, then Muon's fit lrs at its picked aux lr; confirm: the picked arms and the plan's two arms on
    the confirmation seeds, tagged as lab/family.py selects them."""
    seeds, models = p["seeds"], p["models"]
    rects, extend = {}, {}
    for m in models:  # in run order: the decisive pair (gpt_swiglu, ngpt) first by default
        rects[(m, "muon")] = {"lr": p["muon_lrs"], "aux": p["aux_lrs"]}
        rects[(m, "adamw")] = {"lr": p["adamw_lrs"], "b2": p["adamw_beta2s"], "warmup": p["warmup_fracs"]}
        extend[(m, "muon")], extend[(m, "adamw")] = ("lr", "aux"), ("lr",)
    rects[(PLAN, "muon")] = {"lr": p["plan_muon_lrs"]}  # the plan's own grid, as the plan would have picked
    df, grids = run_rects(g, "select", rects, lambda k, c: _select_arm(k, c, p), _label, seeds, extend)
    best = {k: g.pick(df, choice_key(*k), "select", seeds, grids[k],
                      "plan's Muon lr" if k[0] == PLAN else f"{OPTIMIZERS[k[1]]} setting of {k[0]}")
            for k in rects}
    fit = {}
    for m in models:
        for lr in p["fit_lrs"]:
            c = {"lr": float(lr), "aux": best[(m, "muon")]["aux"]}
            if _label((m, "muon"), c) not in grids[(m, "muon")]:
                fit[_label((m, "muon"), c)] = _select_arm((m, "muon"), c, p)
    if fit:
        g.run("select", fit, seeds)
    conf = {}
    for m in models:
        for opt in OPTIMIZERS:
            c = best[(m, opt)]
            conf[_label((m, opt), c)] = (_overrides((m, opt), c, p), {"model": m, "optimizer": opt})
    pl = best[(PLAN, "muon")]
    conf[_label((PLAN, "muon"), pl)] = (_overrides((PLAN, "muon"), pl, p), {"arm": "plan_muon"})
    conf[f"plan adamw lr={p['plan_adamw_lr']:g}"] = (adamw(p["plan_adamw_lr"], **_plan(p)), {"arm": "plan_adamw"})
    g.run("confirm", conf, p["confirm_seeds"])


# --- the report ---

def _muon_grid(r, sel, m: str) -> tuple[dict, float | None, bool]:
    """Muon's lr grid of model m at its picked aux lr (the leading cell's while nothing is picked): (grid, aux,
    provisional)."""
    from lab.results import best_arm
    c = r.choice(choice_key(m, "muon"))
    rows = r.select(sel, model=m, optimizer="muon")
    if c is None:
        lead = best_arm(rows)
        if lead is None:
            return {}, None, True
        aux, prov = r.tags_of(lead)["aux"], True
    else:
        aux, prov = c["aux"], False
    return lr_grid(r.select(rows, aux=aux)), aux, prov


def _adamw_grid(r, sel, m: str) -> dict:
    c = r.choice(choice_key(m, "adamw"))
    rows = r.select(sel, model=m, optimizer="adamw")
    return lr_grid(r.select(rows, b2=c["b2"], warmup=c["warmup"])) if c else {}


def _lr_ratio(a: dict, b: dict):
    from lab.stats import lr_ratio
    try:
        return lr_ratio(a, b)
    except ValueError:
        return None


def _ratio_text(rt) -> str:
    """'1.41x [1.02, 1.96] (95%): higher' from an LrRatio and its verdict (interval at the verdict's level)."""
    from lab.stats import fmt_level
    if rt is None:
        return "n/a (a grid has fewer than 3 lrs with a final loss)"
    v = rt.verdict()
    if not math.isfinite(rt.ratio):
        return f"n/a (a grid's parabola has no interior minimum): {v.verdict}"
    num = lambda x: "n/a" if math.isnan(x) else "∞" if x == math.inf else f"{math.exp(x):.2f}"
    return f"{rt.ratio:.2f}x [{num(v.lo)}, {num(v.hi)}] ({fmt_level(v.level)}): {v.verdict}"


def _setting(c: dict | None, opt: str) -> str:
    if not c:
        return "not chosen yet"
    if opt == "muon":
        return f"lr {c['lr']:g}, aux {c['aux']:g}"
    return f"lr {c['lr']:g}, β2 {c['b2']:g}, warmup {c['warmup']:g}"


def _mean_sd(vals: list[float]) -> str:
    import numpy as np
    if not vals:
        return "n/a"
    return f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f}" if len(vals) > 1 else f"{vals[0]:.4f} (1 seed)"


def _param_counts(preset: str, models: list[str]) -> dict[str, dict]:
    """lab.models.param_counts of each model (and the ReLU² gpt, for scale) at the preset, built on the meta device
    (shapes only: no memory, no init)."""
    import torch

    from lab.models import MODELS as BUILD
    from lab.models import param_counts
    out = {}
    for m in dict.fromkeys([*models, "gpt"]):
        with torch.device("meta"):
            out[m] = param_counts(BUILD[m](get_config(preset, model=m)))
    return out


def analyse(r) -> None:
    import numpy as np
    import pandas as pd

    from lab.stats import fmt_judgement, fmt_lr, fmt_paired, paired
    sel, conf, p = r.stage("select"), r.stage("confirm"), r.params
    models = list(p.get("models", []))
    r.confirmatory()
    arm = {(m, o): r.arm_of(conf, model=m, optimizer=o) for m in models for o in OPTIMIZERS}
    plan = {o: r.arm_of(conf, arm=f"plan_{o}") for o in OPTIMIZERS}
    fin = {k: r.finals(a, "confirm") for k, a in arm.items()}
    delta = {m: r.compare(arm[(m, "muon")], arm[(m, "adamw")], "confirm",
                          f"{m}: Muon `{arm[(m, 'muon')]}` − AdamW `{arm[(m, 'adamw')]}`", f"muon_vs_adamw@{m}")
             for m in models if arm[(m, "muon")] and arm[(m, "adamw")]}
    grids = {m: _muon_grid(r, sel, m) for m in models}
    fits = {m: lr_fit(grids[m][0]) for m in models}
    afits = {m: lr_fit(_adamw_grid(r, sel, m)) for m in models}
    ratios = {m: _lr_ratio(grids[m][0], grids[CONTROL][0]) for m in models if m != CONTROL and CONTROL in models}
    best_opt = {}  # model -> (optimizer, mean confirmation loss) of its better optimizer
    for m in models:
        means = {o: float(np.mean(list(fin[(m, o)].values()))) for o in OPTIMIZERS if fin[(m, o)]}
        if means:
            o = min(means, key=means.get)
            best_opt[m] = (o, means[o])
    order = sorted(best_opt, key=lambda m: best_opt[m][1])
    top = None
    if len(order) >= 2:
        (a, oa), (b, ob) = [(m, best_opt[m][0]) for m in order[:2]]
        top = r.compare(arm[(a, oa)], arm[(b, ob)], "confirm", f"best architecture {a} ({OPTIMIZERS[oa]}) − "
                        f"runner-up {b} ({OPTIMIZERS[ob]})", "best_architecture")
    pf = {o: r.finals(plan[o], "confirm") for o in OPTIMIZERS}
    counts = _param_counts(r.preset, models)
    trials = {(m, o): _trials(r, sel, m, o) for m in models for o in OPTIMIZERS}

    def word(key: str, yes: str, no: str, same: str) -> str:
        j = r.judgements.get(key)
        if j is None or j.n < 2:
            return "not tested yet"
        return ({"better": yes, "worse": no, "equivalent": same}.get(j.verdict, "inconclusive")
                + f" (Δ = {fmt_judgement(j)} nats, Holm p {r.p(j.p_holm)}, {j.n} confirmation seeds)")

    def answer():
        if not any(fin.values()):
            done = int((sel.status == "finished").sum()) if len(sel) else 0
            return (f"Not measured yet on the confirmation seeds ({done} of {len(sel)} selection runs finished; "
                    "the arms are picked when their grids have finished).")
        out = ["Is Muon's advantage over AdamW larger on the sphere? On nGPT vs the matched GPT: "
               + word("sphere_interaction_ngpt", "yes, larger", "no, smaller", "the same within ±δ")
               + "; on gated nGPT vs GPT: "
               + word("sphere_interaction_gated_ngpt", "yes, larger", "no, smaller", "the same within ±δ") + "."]
        if delta:
            out.append(f"At {r.tokens()} tokens Muon − AdamW (confirmation seeds, 95% t-intervals) is "
                       + "; ".join(f"{fmt_paired(c.c)} on {m}" for m, c in delta.items()) + ".")
        rt = ratios.get("ngpt")
        if rt is not None:
            out.append(f"Muon's optimal lr on nGPT over GPT's: {_ratio_text(rt)} (the plan predicts higher).")
        if order:
            o, mean = best_opt[order[0]]
            out.append(f"The lowest loss with its better optimizer: {order[0]} with {OPTIMIZERS[o]} ({mean:.4f}"
                       + (f"; Δ to the runner-up {fmt_paired(top.c)}" if top else "") + ").")
        out.append("The plan's configuration against its Adam baseline: " + word(
            "plan_config", "Muon better", "Muon worse", "equivalent within ±δ") + ".")
        return " ".join(out)
    r.answer.append(answer)

    def table():
        rows = []
        for m in models:
            f, (_grid, _aux, prov) = fits[m], grids[m]
            c = delta.get(m)
            rows.append({"model": m + (" (control)" if m == CONTROL else ""),
                         "params (total / Muon matrices)": f"{counts[m]['total']:,} / {counts[m]['matrix']:,}",
                         "Muon setting": _setting(r.choice(choice_key(m, "muon")), "muon"),
                         "AdamW setting": _setting(r.choice(choice_key(m, "adamw")), "adamw"),
                         "Muon final val": _mean_sd(list(fin[(m, "muon")].values())),
                         "AdamW final val": _mean_sd(list(fin[(m, "adamw")].values())),
                         "Δ Muon − AdamW [95% CI]": fmt_paired(c.c) if c else "not measured",
                         "Muon lr* [95%]": (fmt_lr(f) if f else "n/a") + (" (provisional)" if prov and f else ""),
                         "trials Muon / AdamW": f"{trials[(m, 'muon')][0]} / {trials[(m, 'adamw')][0]}"})
        return ["## Architecture x optimizer (confirmation seeds)", "",
                "Final val loss mean ± sd over confirmation seeds; Δ = Muon − AdamW per seed, mean with its 95% "
                "t-interval (exploratory here; the interactions' verdicts are in the confirmatory table). "
                "`gpt_swiglu` is THE control of every interaction and lr ratio: the same SwiGLU widths, attention "
                "and RoPE as nGPT, pre-norm RMSNorm, no sphere (the ReLU² `gpt` is not run). Muon lr*: the vertex "
                "of a parabola in ln lr fitted to the mean final loss on the selection seeds at the picked aux lr, "
                "bootstrap interval over seeds (lab.stats.lr_opt). Trials: grid cells tuned on the selection "
                "seeds, extensions past an edge included, Muon's fit points not.", "",
                pd.DataFrame(rows).to_markdown(index=False), ""]
    r.sections.append(table)

    def lr_section():
        rows = []
        for m in models:
            grid, aux, prov = grids[m]
            rt = ratios.get(m)
            rows.append({"model": m, "aux lr of the fit": "-" if aux is None else f"{aux:g}" + (
                " (leader; not picked yet)" if prov else ""), "lrs (seeds)": ", ".join(
                f"{lr:g} ({len(v)})" for lr, v in sorted(grid.items())) or "-",
                "Muon lr* [95%]": fmt_lr(fits[m]) if fits[m] else "n/a",
                f"lr* / {CONTROL}'s [interval]: verdict": "(the control)" if m == CONTROL else _ratio_text(rt),
                "AdamW lr* [95%] (picked β2, warmup)": fmt_lr(afits[m]) if afits[m] else "n/a"})
        return ["## Muon's optimal lr per architecture (selection seeds)", "",
                f"Is Muon's optimal lr higher on the sphere? The plan predicts so: {PLAN_LR_QUOTE}. lr* per model "
                "from lab.stats.lr_opt; the ratio lr*_model / lr*_gpt_swiglu from lab.stats.lr_ratio (seeds "
                "resampled independently in each grid; expanded percentile interval of ln ratio). Verdict: higher "
                "/ lower when the 95% interval excludes 1, equivalent when the 90% interval lies within one √2 "
                "grid step of 1, else inconclusive. With two selection seeds a bootstrap interval is coarse: read "
                "it as such.", "", pd.DataFrame(rows).to_markdown(index=False), ""]
    r.sections.append(lr_section)

    def plan_section():
        gated = "gated_ngpt"
        lab_m = fin.get((gated, "muon"), {})
        lab_a = fin.get((gated, "adamw"), {})
        cp, cl = paired(pf["muon"], pf["adamw"]), paired(lab_m, lab_a)
        pc = r.choice(choice_key(PLAN, "muon"))
        rows = [{"configuration": f"the plan's: gated nGPT, alpha {p.get('plan_alpha'):g}, projection every "
                 f"{p.get('plan_every')}", "Muon": f"lr {pc['lr']:g} (the plan's grid), aux at the preset's "
                 f"({get_config(r.preset).scalar_lr:g})" if pc else "not chosen yet",
                 "AdamW": f"lr {p.get('plan_adamw_lr'):g} (the plan's; β2 {get_config(r.preset).adam_betas[1]:g} "
                          f"and warmup {get_config(r.preset).warmup_frac:g}: the preset's)",
                 "Muon final val": _mean_sd(list(pf["muon"].values())),
                 "AdamW final val": _mean_sd(list(pf["adamw"].values())),
                 "Δ Muon − AdamW [95% CI]": fmt_paired(cp)}]
        if gated in models:
            rows.append({"configuration": "the lab's tuned: gated nGPT at the preset's alpha "
                         f"{get_config(r.preset).alpha_init:g}, projection every "
                         f"{get_config(r.preset).project_every}",
                         "Muon": _setting(r.choice(choice_key(gated, "muon")), "muon"),
                         "AdamW": _setting(r.choice(choice_key(gated, "adamw")), "adamw"),
                         "Muon final val": _mean_sd(list(lab_m.values())),
                         "AdamW final val": _mean_sd(list(lab_a.values())), "Δ Muon − AdamW [95% CI]": fmt_paired(cl)})
        return ["## The plan's configuration beside the lab's tuned one (confirmation seeds)", "",
                "What the plan's own setup would have concluded: its gated nGPT, its Muon lr grid (picked on the "
                "selection seeds) and its Adam lr, against the lab's tuned gated nGPT arms on the same seeds. "
                f"The verdict on the plan's row is the family entry `plan_config`: {r.verdict_text('plan_config')}.",
                "", pd.DataFrame(rows).to_markdown(index=False), "",
                "**Token multiplier per architecture: not measured: one budget.** The multiplier (AdamW tokens to "
                "reach Muon's final loss over Muon's tokens, lab.stats.token_multiplier) needs each architecture's "
                "tuned AdamW at two or more budgets; this campaign runs one budget "
                f"({r.tokens()} tokens), and reading it off one run's val curve mid-warmdown is not an honest "
                "substitute.", ""]
    r.sections.append(plan_section)

    def counts_section():
        rows = [{"model": m, "role": "THE control (run)" if m == CONTROL else "not run (ReLU², 4d MLP)" if
                 m == "gpt" and m not in models else "run", **{k: f"{v:,}" for k, v in counts[m].items()}}
                for m in counts]
        tr = [{"model": m, "optimizer": OPTIMIZERS[o], "trials (grid cells)": trials[(m, o)][0],
               "selection runs (with fit points)": trials[(m, o)][1], "edge": trials[(m, o)][2] or "-"}
              for m in models for o in OPTIMIZERS]
        return ["## Parameters and tuning effort", "",
                f"Parameters at preset `{r.preset}` by routing group (lab.models.param_counts: embed and head run on "
                "AdamW in the hybrid, matrix on Muon, scalar on AdamW). gpt_swiglu is the control every number "
                "here uses; the ReLU² `gpt` is listed for scale only.", "", pd.DataFrame(rows).to_markdown(
                    index=False), "",
                "Trials per optimizer: the same base grid size for Muon (matrix lr x aux lr) and AdamW (lr x β2 x "
                "warmup); a grid grows by √2 steps past a winning lr (or aux) edge, at most "
                f"{EXTEND_EDGES} steps per axis. 'edge': a pick still on a grid edge after that (the optimum may "
                "lie beyond).", "", pd.DataFrame(tr).to_markdown(index=False), ""]
    r.sections.append(counts_section)
    for m in models:
        r.grid_table(r.select(sel, model=m), "select", f"Selection grid: {m}")
    r.grid_table(r.select(sel, arm="plan_muon"), "select", "Selection grid: the plan's Muon lr grid (its "
                 "configuration)")
    r.grid_table(conf, "confirm", "Confirmation: the picked arms and the plan's configuration")
    panels = {f"{OPTIMIZERS[o]}" + (" (picked aux lr)" if o == "muon" else " (picked β2, warmup)"):
              {m: (grids[m][0] if o == "muon" else _adamw_grid(r, sel, m)) for m in models} for o in OPTIMIZERS}
    if any(g for lines in panels.values() for g in lines.values()):
        fn = r.figname("lr")
        lr_figure(panels, r.figdir() / fn, f"final val loss vs lr per architecture at {r.tokens()} tokens")
        r.figures.append((fn, "final val loss vs peak lr per architecture on the selection seeds: Muon at each "
                              "model's picked aux lr, AdamW at its picked β2 and warmup (the points lr* is fitted "
                              "to)"))


def _trials(r, sel, m: str, o: str) -> tuple[int, int, str]:
    """(grid cells tuned, selection runs incl. fit points, the axis a pick still sits on the edge of)."""
    rows = r.select(sel, model=m, optimizer=o)
    c, grid = r.choice(choice_key(m, o)), r.grid_of(choice_key(m, o))
    n_cells = len(grid) if c is not None else rows.arm.nunique() if len(rows) else 0
    edges = []
    for a in ("lr", "aux") if c is not None else ():
        values = sorted({x[a] for x in grid if a in x})
        if a in c and grid_edge(values, c[a]):
            edges.append(f"{a} {c[a]:g} ({grid_edge(values, c[a])})")
    return n_cells, len(rows), ", ".join(edges)


def index_rows(r) -> list[dict]:
    """INDEX row of the bootstrap hypothesis "Muon's optimal lr is higher on nGPT than on GPT" (lr_ratio verdict)."""
    from lab.stats import fmt_level
    sel, models = r.stage("select"), r.params.get("models", [])
    row = {"hypothesis": LR_HYPOTHESIS, "plan expected": PLAN_LR_QUOTE, "verdict": "not tested yet",
           "Δ [interval]": "-", "confirmation seeds": "-"}
    if "ngpt" not in models or CONTROL not in models:
        return [row]
    rt = _lr_ratio(_muon_grid(r, sel, "ngpt")[0], _muon_grid(r, sel, CONTROL)[0])
    if rt is None:
        return [row]
    v = rt.verdict()
    if not math.isfinite(rt.ratio):
        return [{**row, "verdict": f"{v.verdict} (a grid's parabola has no interior minimum)"}]
    num = lambda x: "n/a" if math.isnan(x) else "∞" if x == math.inf else f"{math.exp(x):.2f}"
    seeds = ", ".join(str(s) for s in r.params.get("seeds", []))
    gloss = {"higher": "nGPT's is higher, as the plan predicts", "lower": "nGPT's is lower",
             "equivalent": "the same within one √2 step"}.get(v.verdict, "neither shown")
    return [{**row, "verdict": f"{v.verdict} ({gloss})",
             "Δ [interval]": f"lr* ratio {rt.ratio:.2f}x [{num(v.lo)}, {num(v.hi)}] ({fmt_level(v.level)})",
             "confirmation seeds": f"none: selection seeds {seeds} (bootstrap over seeds; bound ±one √2 step)"}]
