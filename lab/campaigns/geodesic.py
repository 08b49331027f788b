"""Projection after an ambient step against exact geodesic steps with θ = lr or θ = lr·‖T‖, each at its own lr: every
rule gets its own lr grid [x/2, x, 2x] around the tuned Muon lr on the selection seeds (extended past a winning
edge); then projection and BOTH geodesic rules, each at its own best lr, run on the confirmation seeds, where
lab/family.py's entries (each geodesic rule vs projection) hold the verdicts."""
from lab import family
from lab.arms import around, beyond_edge, muon, steps
from lab.campaigns._sphere import tune
from lab.campaigns.lr_sweep import tuned
from lab.config import GEODESIC
from lab.params import Param

NAME, ORDER = "geodesic", 40
TITLE = "Geodesic Muon updates on nGPT"
QUESTION = ("Does an exact geodesic step on the sphere (θ = lr or θ = lr·‖T‖) beat Muon's ambient step followed by "
            "projection, each at its own tuned lr?")
HYPOTHESES = [(c.key, c.hypothesis) for c in family.of_campaign(NAME)]
REPORT = "GEODESIC_MUON_REPORT.md"
MODES = [m for m in GEODESIC if m != "none"]  # "none" (projection) is the baseline
THETA = {"none": "projection", "lr": "θ = lr", "lr_norm": "θ = lr·‖T‖"}


def _modes(value, values) -> None:
    if any(m not in MODES for m in value):
        raise ValueError(f"has an unknown geodesic mode; valid: {', '.join(MODES)} (projection is the baseline)")


PARAMS = {
    "seeds": Param(list[int], [0, 1], "selection seeds: they pick the settings", field="seed"),
    "confirm_seeds": Param(list[int], list(family.CONFIRM_SEEDS), "fresh seeds that judge every mode against "
                           "projection (the family's comparisons)", field="seed"),
    "modes": Param(list[str], ["lr", "lr_norm"], "geodesic modes; projection is always the baseline", check=_modes),
    "lr": Param(float, 0.0, "Muon peak lr; 0: the one lr_sweep chose at this preset (else the preset default)",
                field="lr", zero_default=True),
    "aux_lr": Param(float, 0.0, "lr of the hybrid's AdamW groups (embedding, head, scalars); 0: lr_sweep's choice",
                    field="scalar_lr", zero_default=True),
    "steps": Param(int, 0, "training steps per run; 0 means the preset default", field="steps", zero_default=True),
}


def arm_tags(o: dict) -> dict:
    return {"mode": o.get("geodesic", "none"), "lr": o["lr"]}


def name(mode: str) -> str:
    return "projection" if mode == "none" else f"geodesic {mode}"


def lr_key(mode: str) -> str:
    """The choice key of a mode's lr."""
    return f"lr[{mode}]"


def stages(g, p) -> None:
    t, s, seeds = tuned(g, p["lr"], p["aux_lr"]), steps(p["steps"]), p["seeds"]
    modes = ["none", *p["modes"]]
    arm = lambda m, x: muon(x, t["aux_lr"], **({"geodesic": m} if m != "none" else {}), **s)
    label = lambda m, x: f"{name(m)} lr={x:g}"
    df, grids = tune(g, "select", {m: around(t["muon_lr"]) for m in modes}, arm, label, seeds, beyond_edge)
    best = {m: g.pick(df, lr_key(m), "select", seeds, grids[m], f"lr of {name(m)}") for m in modes}
    g.run("confirm", {label(m, best[m]): arm(m, best[m]) for m in modes}, p["confirm_seeds"])


def analyse(r) -> None:
    import pandas as pd

    from lab.campaigns import _sphere as S
    sel, conf = r.stage("select"), r.stage("confirm")
    modes = S.param(r, "modes")
    r.confirmatory()  # the family's entries: four-way verdicts, table, forest plot
    lrs = sorted({t["lr"] for t in r.select(sel, mode="none").tags})
    for m in modes:  # exploratory: the same lr (a different turning angle), on the selection seeds
        for x in lrs:
            a, b = S.arm_or_none(r, sel, mode=m, lr=x), S.arm_or_none(r, sel, mode="none", lr=x)
            S.explore(r, a, b, "select", f"`{a}` vs `{b}` (same lr)")
    cmodes = {m: S.arm_or_none(r, conf, mode=m) for m in ["none", *modes]}
    both = S.explore(r, cmodes.get("lr_norm"), cmodes.get("lr"), "confirm",
                     "θ = lr·‖T‖ vs θ = lr, each at its own lr (not in the family)")

    def answer():
        best = {m: r.choice(lr_key(m)) for m in ["none", *modes]}
        lrs_ = "; ".join(f"{THETA.get(m, m)} {v:g}" for m, v in best.items() if v is not None) or "not chosen yet"
        edges = "".join(r.edge(v, r.grid_of(lr_key(m)), f"lr of {name(m)}") for m, v in best.items() if v is not None)
        out = [f"At {r.tokens()} tokens, on the confirmation seeds, each update rule at its own tuned lr ({lrs_}):"]
        out += [S.judged(r, f"geodesic_{m}", f"the geodesic step with {THETA.get(m, m)} vs projection")
                for m in modes if f"geodesic_{m}" in family.KEYS]
        base = S.mean(r, cmodes.get("none"), "confirm")
        if base:
            out.append(f"(A 1–3% improvement at projection's mean final loss {base:.4f} would be Δ between "
                       f"{-0.01 * base:+.3f} and {-0.03 * base:+.3f} nats.)")
        if both:
            out.append(f"The two geodesic rules against each other (exploratory): {S.interval(both)}.")
        return " ".join(out) + edges + drift()

    def drift():
        d = pd.to_numeric(r.df.get("max_geodesic_drift", pd.Series(dtype=float)), errors="coerce").dropna()
        return (f" The geodesic-updated matrices stayed on the sphere: max | ‖w‖ − 1 | after any step, over "
                f"{len(d)} geodesic run(s), {d.max():.1e}." if len(d) else "")
    r.answer.append(answer)
    r.sections.append(lambda: [
        "## Why each rule gets its own lr", "",
        "At the same lr the three rules do not turn a vector by the same angle. An ambient step followed by "
        "projection turns unit vector i by atan(lr·‖T_i‖), where T_i is the tangent part of its update (‖T_i‖ < 1 "
        "where the update has a radial part, and it differs between the rows of W_q and the columns of W_proj); "
        "`geodesic lr_norm` turns it by lr·‖T_i‖ (the same angle to O(lr³): close to projection by construction); "
        "`geodesic lr` turns every vector by exactly lr (a genuinely different rule). Comparing at equal lr "
        "therefore confounds the geometry with the step size, so each rule is tuned on its own grid [x/2, x, 2x] "
        "around the tuned Muon lr (extended past an edge that wins), and each geodesic rule is confirmed against "
        "projection with both at their own best lr. The same-lr rows on the selection seeds are exploratory.", ""])
    r.sections.append(lambda: S.trials_lines(r, [
        (f"{THETA[m]}", "its own lr (factor-2 grid)", r.select(sel, mode=m)) for m in ["none", *modes]]))
    r.grid_table(sel, "select", "Selection: each rule on its own lr grid")
    r.grid_table(conf, "confirm", "Confirmation: every rule at its own best lr on fresh seeds")
    S.curves(r, conf, cmodes.get("none"), "curves", "Projection and both geodesic rules, each at its own best lr")
