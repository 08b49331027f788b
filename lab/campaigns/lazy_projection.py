"""Project nGPT's matrices back to the sphere only every N-th step, for Muon and AdamW, each (optimizer, N) at its
own lr. On the selection seeds: `select` (exploratory: every N at the tuned lr of each optimizer, where a lazier
projection also lets the row norms drift further, i.e. changes the step size) and `tune` (each (optimizer, N) on
its own √2 lr grid, extended past a winning edge); then `confirm` on the confirmation seeds: Muon every 1, 3, 7 and
AdamW every 1, 7 at their own lrs, where lab/family.py's entries (Muon every N vs every step, and the laziness
interaction (Muon@7 − Muon@1) − (AdamW@7 − AdamW@1)) hold the verdicts."""
from lab import family
from lab.arms import adamw, muon, peak_lr, steps
from lab.campaigns._sphere import tune
from lab.campaigns.lr_sweep import tuned
from lab.params import Param

NAME, ORDER = "lazy_projection", 60
TITLE = "Lazy sphere projection with Muon and AdamW"
QUESTION = ("How often must nGPT's weights be projected back to the sphere with Muon, and does Muon tolerate lazier "
            "projection than AdamW (each at its own lr)?")
HYPOTHESES = [(c.key, c.hypothesis) for c in family.of_campaign(NAME)]
REPORT = "LAZY_PROJECTION_REPORT.md"
OPTIMIZERS = ("muon", "adamw")
PLAN_ADAM = "the plan's earlier finding: \"Adam with lazy projection: optimal freq = 7\""


def _has_every_step(value, values) -> None:
    if 1 not in value:
        raise ValueError("must include 1 (projecting every step: the baseline)")


PARAMS = {
    "seeds": Param(list[int], [0, 1], "selection seeds: they pick the settings", field="seed"),
    "confirm_seeds": Param(list[int], list(family.CONFIRM_SEEDS), "fresh seeds that judge the confirm arms (the "
                           "family's comparisons)", field="seed"),
    "frequencies": Param(list[int], [1, 3, 7, 10, 20], "exploratory: project_every values at each optimizer's tuned "
                         "lr (7: the plan)", field="project_every", check=_has_every_step),
    "muon_every": Param(list[int], [1, *family.LAZY_EVERY], "Muon's project_every values, each at its own lr",
                        field="project_every", check=_has_every_step),
    "adamw_every": Param(list[int], [1, max(family.LAZY_EVERY)], "AdamW's project_every values, each at its own lr",
                         field="project_every", check=_has_every_step),
    "muon_lrs": Param(list[float], [0.0163, 0.023, 0.0325], "Muon's lr grid per N (√2 steps; extended past a "
                      "winning edge)", field="lr"),
    "adamw_lrs": Param(list[float], [0.0057, 0.008, 0.0113], "AdamW's lr grid per N (√2 steps; extended past a "
                       "winning edge)", field="adamw_lr"),
    "lr": Param(float, 0.0, "Muon peak lr of the exploratory stage; 0: the one lr_sweep chose at this preset (else "
                "the preset default)", field="lr", zero_default=True),
    "aux_lr": Param(float, 0.0, "lr of the hybrid's AdamW groups (embedding, head, scalars); 0: lr_sweep's choice",
                    field="scalar_lr", zero_default=True),
    "adamw_lr": Param(float, 0.0, "AdamW lr of the exploratory stage; 0: the one lr_sweep chose at this preset",
                      field="adamw_lr", zero_default=True),
    "steps": Param(int, 0, "training steps per run; 0 means the preset default", field="steps", zero_default=True),
}


def arm_tags(o: dict) -> dict:
    return {"optimizer": o["optimizer"], "every": int(o.get("project_every", 1)), "lr": peak_lr(o)}


def lr_key(opt: str, k: int) -> str:
    """The choice key of (optimizer, N)'s lr."""
    return f"lr[{opt}@{k}]"


def label(opt: str, k: int, x: float | None = None) -> str:
    return f"{opt} every={k}" + (f" lr={x:g}" if x is not None else "")


def stages(g, p) -> None:
    t, s, seeds = tuned(g, p["lr"], p["aux_lr"], p["adamw_lr"]), steps(p["steps"]), p["seeds"]
    lazy = lambda k: {"project_every": int(k)} if k != 1 else {}
    make = {"muon": lambda k, x: muon(x, t["aux_lr"], **lazy(k), **s), "adamw": lambda k, x: adamw(x, **lazy(k), **s)}
    at = {"muon": t["muon_lr"], "adamw": t["adamw_lr"]}
    ks = [1, *[k for k in p["frequencies"] if k != 1]]
    g.run("select", {label(o, k): make[o](k, at[o]) for o in OPTIMIZERS for k in ks}, seeds)  # exploratory
    every = {"muon": p["muon_every"], "adamw": p["adamw_every"]}
    grids = {(o, k): p[f"{o}_lrs"] for o in OPTIMIZERS for k in every[o]}
    df, grids = tune(g, "tune", grids, lambda ok, x: make[ok[0]](ok[1], x), lambda ok, x: label(*ok, x), seeds)
    best = {ok: g.pick(df, lr_key(*ok), "tune", seeds, gr, f"lr of {label(*ok)}") for ok, gr in grids.items()}
    g.run("confirm", {label(*ok, x): make[ok[0]](ok[1], x) for ok, x in best.items()}, p["confirm_seeds"])


def interaction(r, df, k: int, stage: str, pins: dict | None = None):
    """Per seed: (Muon@k − Muon@1) − (AdamW@k − AdamW@1) from the arms of `df` (pins: {"muon@7": {"lr": x}, ...},
    more tags that single out each arm)."""
    from lab.campaigns._sphere import arm_or_none
    from lab.stats import interaction as inter
    f = lambda opt, n: r.finals(arm_or_none(r, df, optimizer=opt, every=n, **(pins or {}).get(f"{opt}@{n}", {})),
                                    stage)
    return inter(f("muon", k), f("muon", 1), f("adamw", k), f("adamw", 1))


def _drift_lines(r) -> list[str]:
    """max |‖w‖ − 1| of the sphere vectors just before a projection, per (optimizer, N), at the fixed lr and at each
    one's own lr."""
    import pandas as pd
    rows = []
    for stage, what in (("select", "selection, fixed lr"), ("confirm", "confirmation, own lr")):
        d = r.stage(stage)
        d = d[d.status == "finished"] if len(d) else d
        for (opt, k), g in (d.groupby([d.tags.map(lambda t: t["optimizer"]), d.tags.map(lambda t: t["every"])])
                            if len(d) else []):
            x = pd.to_numeric(g.max_sphere_drift, errors="coerce").dropna()
            if len(x):
                rows.append({"optimizer": opt, "every": int(k), "stage": what,
                             "lr": "/".join(f"{v:g}" for v in sorted({t["lr"] for t in g.tags if t.get("lr")})) or
                             f"{r.choice('muon_lr' if opt == 'muon' else 'adamw_lr')}",
                             "seeds": len(x), "max |‖w‖ − 1| before projection (max over seeds)": f"{x.max():.3f}",
                             "(mean over seeds)": f"{x.mean():.3f}"})
    if not rows:
        return []
    t = pd.DataFrame(rows).sort_values(["optimizer", "stage", "every"], kind="stable")
    return ["## Row-norm drift before projection", "",
            "Between projections the sphere vectors leave the sphere: the largest | ‖w‖ − 1 | just before a "
            "projection over the run (`max_sphere_drift` of each run's summary). A lazier projection lets the norms "
            "drift further, which changes the relative step size (a step of lr on a row of norm 1 + ε is a step of "
            "lr / (1 + ε) in angle): that confound of the fixed-lr stage is why every (optimizer, N) is also tuned "
            "on its own lr grid and confirmed there.", "", t.to_markdown(index=False), ""]


def analyse(r) -> None:
    from lab.campaigns import _sphere as S
    sel, tun, conf = r.stage("select"), r.stage("tune"), r.stage("confirm")
    r.confirmatory()  # the family's entries: four-way verdicts, table, forest plot
    ks = sorted({int(t["every"]) for t in sel.tags}) if len(sel) else []
    fixed = {}
    for k in ks[1:]:  # exploratory, at the fixed (tuned every-step) lr
        for opt in OPTIMIZERS:
            a, b = S.arm_or_none(r, sel, optimizer=opt, every=k), S.arm_or_none(r, sel, optimizer=opt, every=1)
            fixed[(opt, k)] = S.explore(r, a, b, "select", f"`{a}` vs `{b}` (fixed lr)")
        r.add(f"laziness interaction at every={k}, fixed lr: (Muon@{k} − Muon@1) − (AdamW@{k} − AdamW@1)", "select",
              interaction(r, sel, k, "select"))
    own = {(o, k): x for o in OPTIMIZERS for k in S.param(r, f"{o}_every") if (x := r.choice(lr_key(o, k)))}
    pin = {f"{o}@{k}": {"lr": x} for (o, k), x in own.items()}
    for (o, k) in own:  # exploratory, each at its own lr, on the selection seeds that picked it (optimistic)
        if k != 1 and (o, 1) in own:
            S.explore(r, S.arm_or_none(r, tun, optimizer=o, every=k, lr=own[(o, k)]),
                      S.arm_or_none(r, tun, optimizer=o, every=1, lr=own[(o, 1)]), "tune",
                      f"{o} every={k} vs every=1, each at its own lr (selection seeds that picked them)")
    cm = {(o, k): S.arm_or_none(r, conf, optimizer=o, every=k) for o in OPTIMIZERS for k in (1, *family.LAZY_EVERY)}
    adam7 = S.explore(r, cm[("adamw", 7)], cm[("adamw", 1)], "confirm",
                      "AdamW every=7 vs every=1, each at its own lr (not in the family)")
    sel7 = interaction(r, tun, 7, "tune", pin) if pin else None

    def answer():
        lrs = "; ".join(f"{label(o, k)} {x:g}" for (o, k), x in own.items()) or "not chosen yet"
        edges = "".join(r.edge(x, r.grid_of(lr_key(o, k)), f"lr of {label(o, k)}") for (o, k), x in own.items())
        out = [f"At {r.tokens()} tokens, on the confirmation seeds, each (optimizer, N) at its own tuned lr "
               f"({lrs}):"]
        out += [S.judged(r, f"lazy_every_{k}", f"Muon projecting every {k} steps vs every step")
                for k in family.LAZY_EVERY]
        out.append(S.judged(r, "lazy_interaction_7", "The laziness interaction at every 7, (Muon@7 − Muon@1) − "
                                                      "(AdamW@7 − AdamW@1) (negative: Muon loses less, or gains "
                                                      "more, from projecting lazily)"))
        if adam7:
            out.append(f"AdamW every 7 vs every step (exploratory; {PLAN_ADAM}): {S.interval(adam7)}.")
        if sel7 is not None and sel7.n:
            from lab.stats import fmt_paired
            out.append(f"On the selection seeds, at the picked lrs, the interaction was {fmt_paired(sel7)} nats "
                       "(exploratory).")
        muon_fixed = [f"every {k}: {S.interval(c)}" for (o, k), c in fixed.items() if o == "muon" and c]
        if muon_fixed:
            out.append("At the fixed lr (exploratory, where the step size also changes with N), Muon vs every "
                       "step: " + "; ".join(muon_fixed) + ".")
        return " ".join(out) + edges
    r.answer.append(answer)
    r.sections.append(lambda: _drift_lines(r))
    r.sections.append(lambda: S.trials_lines(r, [
        (f"{o} every={k}", "its own lr (√2 grid)", r.select(tun, optimizer=o, every=k))
        for o in OPTIMIZERS for k in S.param(r, f"{o}_every")]
        + [("fixed lr, every N (exploratory)", "nothing: one setting per (optimizer, N)", sel)],
        f"The every-step arms are the tuned optimizers of lr_sweep (Muon: {S.upstream_trials(r, 'muon') or 'n/a'} "
        f"settings there, AdamW: {S.upstream_trials(r, 'adamw') or 'n/a'}); AdamW runs at the preset's betas and "
        "no warmup here."))
    r.grid_table(sel, "select", "Selection (exploratory): every N at each optimizer's tuned every-step lr")
    r.grid_table(tun, "select", "Selection: each (optimizer, N) on its own lr grid")
    r.grid_table(conf, "confirm", "Confirmation: each (optimizer, N) at its own lr on fresh seeds")
    for opt, title in (("muon", "Muon"), ("adamw", "AdamW")):
        d = r.select(conf, optimizer=opt)
        S.curves(r, d, S.arm_or_none(r, d, every=1), f"{opt}",
                 f"{title}'s every-N arms against {title}'s own every-step arm, each at its own lr")
    if len(sel) and (sel.status == "finished").any():
        r.sweep(sel, "every", "project every N steps", False,
                f"final val loss vs projection interval at {r.tokens()} tokens (fixed lr, selection seeds)",
                f"final val loss vs projection interval per optimizer at the fixed lr (exploratory), selection "
                f"seeds {S.seeds_of(sel)} (mean, band: min–max over seeds, dots: seeds)")
