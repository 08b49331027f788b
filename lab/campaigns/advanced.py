"""Polar Express, NorMuon and cautious weight decay at the tuned hybrid Muon. On the selection seeds: `select`
(exploratory: feature combinations at the tuned Muon lr), `decay` (plain and cautious decay at each strength),
`normuon_lr` (NorMuon on its own √2 lr grid, extended past a winning edge); then `confirm` on the confirmation
seeds: plain Muon (the control), Polar Express (at the tuned Muon lr), NorMuon at its own lr, and plain and cautious
decay at each strength. Those arms carry the tags of lab/family.py's entries, which hold the verdicts."""
from lab import family
from lab.arms import muon, steps
from lab.campaigns._sphere import tune
from lab.campaigns.lr_sweep import tuned
from lab.params import Param

NAME, ORDER = "advanced", 50
TITLE = "Advanced Muon features on nGPT"
QUESTION = ("Which modded-nanogpt Muon features (Polar Express, NorMuon, cautious weight decay) help on nGPT?")
HYPOTHESES = [(c.key, c.hypothesis) for c in family.of_campaign(NAME)]
REPORT = "ADVANCED_MUON_REPORT.md"
FEATURES = ("newton_schulz", "polar_express", "normuon", "weight_decay", "cautious_wd")
BASELINE = "newton_schulz"  # alone: plain Muon
DECAYS = ("weight_decay", "cautious_wd")


def overrides(arm: str, weight_decay: float) -> dict:
    """'polar_express+normuon+cautious_wd' -> config overrides (only what differs from plain Muon). newton_schulz
    alone is plain Muon (the baseline)."""
    parts = arm.split("+")
    bad = [p for p in parts if p not in FEATURES]
    if bad:
        raise ValueError(f"has unknown feature(s) {bad} in arm {arm!r}; valid: {', '.join(FEATURES)} joined with +")
    o = {}
    if "polar_express" in parts:
        o["orthogonalizer"] = "polar_express"
    if "normuon" in parts:
        o["normuon"] = True
    if "cautious_wd" in parts:
        o["cautious_wd"] = True
    if "weight_decay" in parts or "cautious_wd" in parts:
        o["weight_decay"] = float(weight_decay)
    return o


def arm_tags(o: dict) -> dict:
    """{"feature": the features of an arm joined with + in FEATURES order ("newton_schulz" alone: plain Muon),
    "lr": its Muon lr, "wd": its decay strength (decay arms only)}."""
    on = {"polar_express": o.get("orthogonalizer") == "polar_express", "normuon": bool(o.get("normuon")),
          "weight_decay": bool(o.get("weight_decay")) and not o.get("cautious_wd"),
          "cautious_wd": bool(o.get("cautious_wd"))}
    return {"feature": "+".join(f for f in FEATURES if on.get(f)) or BASELINE, "lr": o.get("lr"),
            **({"wd": float(o["weight_decay"])} if o.get("weight_decay") else {})}


def _positive(value, values) -> None:
    if any(not wd > 0 for wd in value):
        raise ValueError("must all be > 0 (strength 0 is plain Muon, the control)")


PARAMS = {
    "seeds": Param(list[int], [0, 1], "selection seeds: they pick the settings", field="seed"),
    "confirm_seeds": Param(list[int], list(family.CONFIRM_SEEDS), "fresh seeds that judge the confirm arms (the "
                           "family's comparisons)", field="seed"),
    "arms": Param(list[str], ["newton_schulz", "polar_express", "normuon", "weight_decay", "cautious_wd",
                              "polar_express+normuon", "polar_express+normuon+cautious_wd"],
                  "exploratory feature combinations joined with +; newton_schulz alone is plain Muon",
                  check=lambda arms, values: [overrides(a, 0.0) for a in arms] and None),
    "weight_decay": Param(float, 0.1, "decay strength of the exploratory combinations with a decay",
                          field="weight_decay"),
    "weight_decays": Param(list[float], list(family.WEIGHT_DECAYS), "strengths at which plain and cautious decay "
                           "are compared (selection, then confirmation)", field="weight_decay", check=_positive),
    "normuon_lrs": Param(list[float], [0.0163, 0.023, 0.0325], "NorMuon's own lr grid (√2 steps; extended past a "
                         "winning edge)", field="lr"),
    "lr": Param(float, 0.0, "Muon peak lr; 0: the one lr_sweep chose at this preset (else the preset default)",
                field="lr", zero_default=True),
    "aux_lr": Param(float, 0.0, "lr of the hybrid's AdamW groups (embedding, head, scalars); 0: lr_sweep's choice",
                    field="scalar_lr", zero_default=True),
    "steps": Param(int, 0, "training steps per run; 0 means the preset default", field="steps", zero_default=True),
}


def decay_label(feature: str, wd: float) -> str:
    return f"{feature} wd={wd:g}"


def stages(g, p) -> None:
    t, s, seeds = tuned(g, p["lr"], p["aux_lr"]), steps(p["steps"]), p["seeds"]
    lr, aux = t["muon_lr"], t["aux_lr"]
    arm = lambda a, wd=0.0, x=lr: muon(x, aux, **overrides(a, wd), **s)
    tagged = lambda a, wd=0.0, x=lr, **more: (arm(a, wd, x), {**arm_tags(arm(a, wd, x)), **more})
    # independent grids first, picks after (lab.plan lists what a campaign needs in this order)
    g.run("select", {a: tagged(a, p["weight_decay"]) for a in [BASELINE, *[a for a in p["arms"] if a != BASELINE]]},
          seeds)
    dec = g.run("decay", {decay_label(f, wd): tagged(f, wd) for wd in p["weight_decays"] for f in DECAYS}, seeds)
    ndf, grids = tune(g, "normuon_lr", {"normuon": p["normuon_lrs"]}, lambda _, x: tagged("normuon", x=x),
                      lambda _, x: f"normuon lr={x:g}", seeds)
    n_lr = g.pick(ndf, "normuon_lr", "normuon_lr", seeds, grids["normuon"], "NorMuon lr")
    best_wd = g.pick(dec, "cautious_wd", "decay", seeds,
                     {decay_label("cautious_wd", wd): wd for wd in p["weight_decays"]}, "cautious decay strength")
    conf = {BASELINE: tagged(BASELINE), "polar_express": tagged("polar_express"),
            f"normuon lr={n_lr:g}": tagged("normuon", x=n_lr)}
    for wd in p["weight_decays"]:
        conf[decay_label("weight_decay", wd)] = tagged("weight_decay", wd)
        conf[decay_label("cautious_wd", wd)] = tagged("cautious_wd", wd, best=wd == best_wd)
    g.run("confirm", conf, p["confirm_seeds"])


def _decay_section(r) -> list[str]:
    lr = r.choice("muon_lr")
    from lab.campaigns._sphere import param
    rows = [f"| {wd:g} | {lr * wd:.4f} | {1 / (1 - lr * wd):.4f} |" for wd in param(r, "weight_decays")
            if lr and lr * wd < 1]
    return ["## What weight decay does on the sphere", "",
            "nGPT re-projects every hidden matrix onto the sphere (unit rows or columns) after each step. Decoupled "
            "decay first shrinks W by the factor (1 − lr·wd), and the projection after the step undoes that "
            "shrink: W ← normalize((1 − lr·wd)·W − lr·U) = normalize(W − lr/(1 − lr·wd)·U). So plain decay is a "
            "first-order no-op on the sphere (HyperP, arXiv 2603.28743; /work/shared/reference/RESEARCH.md): all "
            "that remains is the step rescaled by 1/(1 − lr·wd), which at these strengths is at most the numbers "
            "below at step 0 (both the lr and the decay fall to 0 over the run). Cautious decay masks the decay "
            "per entry (only where the update and the weight share a sign), so the decay no longer points along W: "
            "its masked part has a tangent component, and it turns the rows. That is the only way decay can matter "
            "here, so cautious decay is judged against plain decay at the same strength (the no-op), at two "
            "strengths, and at its better strength against no decay.", "",
            "| wd | lr·wd at step 0 | step rescale 1/(1 − lr·wd) at step 0 |", "|---|---|---|", *rows, ""]


def analyse(r) -> None:
    from lab.campaigns import _sphere as S
    sel, dec, nlr, conf = r.stage("select"), r.stage("decay"), r.stage("normuon_lr"), r.stage("confirm")
    wds = S.param(r, "weight_decays")
    r.confirmatory()  # the family's entries: four-way verdicts, table, forest plot
    # exploratory rows: intervals only, no verdict words
    base = S.arm_or_none(r, sel, feature=BASELINE)
    combos = {arm: S.explore(r, arm, base, "select", f"`{arm}` vs `{base}` (combinations)")
              for arm in dict.fromkeys(sel.arm) if base and arm != base}
    for wd in wds:
        cw, pw = (S.arm_or_none(r, dec, feature=f, wd=wd) for f in ("cautious_wd", "weight_decay"))
        S.explore(r, cw, pw, "decay", f"`{cw}` vs `{pw}` (same strength)")
    for arm in dict.fromkeys(nlr.arm) if base else []:
        S.explore(r, arm, base, "normuon_lr", f"`{arm}` vs plain Muon `{base}`", base_stage="select")
    cbase = S.arm_or_none(r, conf, feature=BASELINE)
    none_vs = {wd: S.explore(r, S.arm_or_none(r, conf, feature="weight_decay", wd=wd), cbase, "confirm",
                             f"plain decay wd={wd:g} vs no decay (not in the family)") for wd in wds}
    pe_nm = combos.get(S.arm_or_none(r, sel, feature="polar_express+normuon"))

    def answer():
        n_lr, wd = r.choice("normuon_lr"), r.choice("cautious_wd")
        at = f" at its own lr {n_lr:g}" + r.edge(n_lr, r.grid_of("normuon_lr"), "NorMuon lr") if n_lr else ""
        out = [f"At {r.tokens()} tokens, on the confirmation seeds, each feature at the tuned hybrid Muon (lr "
               f"{r.choice('muon_lr')}, aux lr {r.choice('aux_lr')}):",
               S.judged(r, "polar_express", "Polar Express vs Newton–Schulz"),
               S.judged(r, "normuon", f"NorMuon{at} vs Muon")]
        out += [S.judged(r, f"cautious_wd@{w:g}", f"Cautious vs plain decay at strength {w:g}") for w in wds]
        out.append(S.judged(r, "cautious_wd_vs_none", "Cautious decay" + (f" at its better strength {wd:g}" if wd
                                                                          else "") + " vs no decay"))
        if any(none_vs.values()):
            out.append("Plain decay vs no decay (exploratory; the sphere makes it a first-order no-op): " + "; ".join(
                f"wd {w:g}: {S.interval(c)}" for w, c in none_vs.items() if c) + ".")
        if pe_nm:
            out.append(f"The plan's pair, Polar Express and NorMuon together, ran on the selection seeds only "
                       f"(exploratory): {S.interval(pe_nm)}.")
        return " ".join(out)
    r.answer.append(answer)
    r.sections.append(lambda: _decay_section(r))
    r.sections.append(lambda: S.trials_lines(r, [
        ("Muon (plain, the control)", "matrix lr and aux lr, in lr_sweep", S.upstream_trials(r, "muon")),
        ("NorMuon", "its own lr", nlr),
        ("plain decay", "strength, at the tuned Muon lr", r.select(dec, feature="weight_decay")),
        ("cautious decay", "strength, at the tuned Muon lr", r.select(dec, feature="cautious_wd")),
        ("feature combinations (exploratory)", "nothing: one setting each", sel)],
        "Polar Express runs at the tuned Muon lr: it changes how exactly the update is orthogonalized, not its "
        "scale."))
    r.grid_table(sel, "select", "Selection (exploratory): feature combinations at the tuned hybrid Muon")
    r.grid_table(dec, "select", "Selection: plain and cautious decay at each strength")
    r.grid_table(nlr, "select", "Selection: NorMuon's own lr")
    r.grid_table(conf, "confirm", "Confirmation: the family's arms on fresh seeds")
    if (nlr.status == "finished").any():  # (a sweep of no finished run has nothing to draw)
        r.sweep(nlr, "lr", "NorMuon peak lr", True, f"NorMuon: final val loss vs lr at {r.tokens()} tokens",
                f"NorMuon's lr grid on the selection seeds {S.seeds_of(nlr)}: final val loss per lr (mean, band: "
                "min–max over seeds, dots: seeds)")
    feature = lambda a: conf[conf.arm == a].tags.iloc[0].get("feature")
    feats = [a for a in dict.fromkeys(conf.arm) if feature(a) in (BASELINE, "polar_express", "normuon")]
    S.curves(r, conf[conf.arm.isin(feats)], cbase, "features", "Polar Express and NorMuon against plain Muon")
    decs = [a for a in dict.fromkeys(conf.arm) if feature(a) in (BASELINE, *DECAYS)]
    S.curves(r, conf[conf.arm.isin(decs)], cbase, "decay", "plain and cautious decay against no decay")
