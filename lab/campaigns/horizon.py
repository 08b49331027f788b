"""At each budget, each optimizer's lr is chosen on [x/2, x, 2x] around its tuned value from lr_sweep (selection
seeds; extended by a factor of 2 past an edge that wins, at most twice); the chosen arms then run on the
confirmation seeds. The report gives final val loss vs tokens, Δ per budget, where the curves cross, and Muon's
steps (and wall clock) to reach AdamW's final loss."""
import math

from lab.arms import adamw, around, grid_edge, muon, peak_lr
from lab.campaigns.lr_sweep import tuned
from lab.config import get_config
from lab.params import Param

NAME, ORDER = "horizon", 30
TITLE = "Muon vs AdamW across training budgets"
QUESTION = ("Does Muon's advantage over tuned AdamW on nGPT depend on the training budget, and how many steps does "
            "Muon need to reach AdamW's final loss?")
HYPOTHESES = []
REPORT = "HORIZON_REPORT.md"

PARAMS = {
    "seeds": Param(list[int], [0, 1], "selection seeds: they pick the settings", field="seed"),
    "confirm_seeds": Param(list[int], [100, 101, 102], "fresh seeds that judge the picked arm against its baseline",
                           field="seed"),
    "budgets": Param(list[int], [100, 200, 400, 800], "training steps per run (x 2048 tokens at cpu)",
                     field="steps"),
    "lr": Param(float, 0.0, "Muon peak lr; 0: the one lr_sweep chose at this preset (else the preset default)",
                field="lr", zero_default=True),
    "aux_lr": Param(float, 0.0, "lr of the hybrid's AdamW groups (embedding, head, scalars); 0: lr_sweep's choice",
                    field="scalar_lr", zero_default=True),
    "adamw_lr": Param(float, 0.0, "AdamW baseline lr; 0: the one lr_sweep chose at this preset", field="adamw_lr",
                      zero_default=True),
}
OPTIMIZERS = {"muon": "Muon", "adamw": "AdamW"}


def arm_tags(o: dict) -> dict:
    return {"optimizer": o["optimizer"], "budget": o["steps"], "lr": peak_lr(o)}


def lr_key(opt: str, budget: int) -> str:
    """The choice key of an optimizer's lr at a budget."""
    return f"{opt}_lr@{budget}"


def stages(g, p) -> None:
    t, seeds = tuned(g, p["lr"], p["aux_lr"], p["adamw_lr"]), p["seeds"]
    preset_steps = get_config(p["preset"]).steps
    order = sorted(p["budgets"], key=lambda b: (b != preset_steps, b))  # the preset's own budget first (reused)
    tuned_lr = {"muon": t["muon_lr"], "adamw": t["adamw_lr"]}
    arm = lambda opt, lr, b: muon(lr, t["aux_lr"], steps=b) if opt == "muon" else adamw(lr, steps=b)
    df, grids = g.run_grids("select", {(b, opt): around(tuned_lr[opt]) for b in order for opt in OPTIMIZERS},
                            lambda k, x: arm(k[1], x, k[0]), lambda k, x: f"{k[1]} steps={k[0]} lr={x:g}", seeds)
    chosen = {(b, opt): g.pick(df, lr_key(opt, b), "select", seeds, grids[(b, opt)], f"{name} lr at {b} steps")
              for b in order for opt, name in OPTIMIZERS.items()}
    g.run("confirm", {f"{opt} steps={b}": arm(opt, chosen[(b, opt)], b) for b in order for opt in OPTIMIZERS},
          p["confirm_seeds"])


def analyse(r) -> None:
    import pandas as pd

    from lab.results import val_curves
    conf = r.stage("confirm")
    budgets = sorted(int(b) for b in r.params.get("budgets", []))
    arm = {(opt, b): r.arm_of(conf, optimizer=opt, budget=b) for b in budgets for opt in OPTIMIZERS}
    rows, cmps = [], {}
    for b in budgets:
        if arm[("muon", b)] and arm[("adamw", b)]:
            cmps[b] = r.compare(arm[("muon", b)], arm[("adamw", b)], "confirm",
                                f"Muon vs AdamW at {r.tokens(b)} tokens ({b} steps)", f"budget{b}")
    curves = val_curves(conf, r.preset)
    for b in budgets:
        for opt in OPTIMIZERS:
            vals = list(r.finals(arm[(opt, b)], "confirm").values()) if arm[(opt, b)] else []
            c = cmps.get(b)
            rows.append({"optimizer": opt, "budget": b, "tokens": b * get_config(r.preset).tokens_per_step,
                         "lr": r.choice(lr_key(opt, b)), "n": len(vals),
                         "mean": pd.Series(vals).mean() if vals else math.nan,
                         "std": pd.Series(vals).std(ddof=1) if len(vals) > 1 else math.nan,
                         "min": min(vals) if vals else math.nan, "max": max(vals) if vals else math.nan,
                         "delta": c.c.delta if c else math.nan, "lo": c.c.lo if c else math.nan,
                         "hi": c.c.hi if c else math.nan})
    table = pd.DataFrame(rows)
    target = {b: to_target(curves, arm[("muon", b)], arm[("adamw", b)], b) for b in budgets}

    def answer():
        done = [b for b in budgets if b in cmps and cmps[b].c.n]
        if not done:
            return "Not measured yet."
        kinds = {"wins": [], "loses": [], "no significant difference": [], "not enough seeds": []}
        for b in done:
            kinds[cmps[b].verdict()].append(r.tokens(b))
        parts = []
        if kinds["wins"]:
            parts.append(f"Muon beats tuned AdamW at {', '.join(kinds['wins'])} tokens")
        if kinds["loses"]:
            parts.append(f"Muon loses to tuned AdamW at {', '.join(kinds['loses'])} tokens")
        if kinds["no significant difference"] or kinds["not enough seeds"]:
            parts.append("there is no significant difference at "
                         f"{', '.join(kinds['no significant difference'] + kinds['not enough seeds'])} tokens")
        first = "; ".join(parts)
        out = [first[:1].upper() + first[1:] + " (confirmation seeds; "
               + "; ".join(f"{r.tokens(b)}: Δ = {cmps[b].c.fmt()}" for b in done) + ")."]
        out.append(crossing(done, cmps, r))
        keys = [(lr_key(opt, b), f"{name} at {b} steps") for b in budgets for opt, name in OPTIMIZERS.items()]
        edges = [f"{what} ({r.choice(k):g})" for k, what in keys if grid_edge(r.grid_of(k), r.choice(k))]
        if edges:
            out.append("**Grid-edge warning:** still on an edge of its lr grid after extending it: "
                       f"{', '.join(edges)}; the optimum may lie beyond.")
        tt = [f"{r.tokens(b)}: {t['steps']:.0f} of {b} steps ({t['frac']:.0%}, wall clock {t['wall']:.0%})"
              for b, t in target.items() if t and t.get("steps") is not None]
        if tt:
            out.append("Muon reaches AdamW's final val loss of the same budget after " + "; ".join(tt) + ".")
        return " ".join(out)
    r.answer.append(answer)

    def section():
        t = []
        for b in budgets:
            m = table[(table.budget == b) & (table.optimizer == "muon")].iloc[0]
            a = table[(table.budget == b) & (table.optimizer == "adamw")].iloc[0]
            c, tg = cmps.get(b), target.get(b) or {}
            edge = lambda opt, lr, b=b: " (grid edge)" if grid_edge(r.grid_of(lr_key(opt, b)), lr) else ""
            t.append({"budget": f"{b} steps ({r.tokens(b)} tokens)",
                      "Muon lr": f"{m.lr:g}{edge('muon', m.lr)}" if m.lr else "-",
                      "AdamW lr": f"{a.lr:g}{edge('adamw', a.lr)}" if a.lr else "-",
                      "Muon final val": r.ms(m), "AdamW final val": r.ms(a),
                      "Δ Muon − AdamW ± 95% CI": c.c.fmt() if c else "n/a",
                      "p": r.p(c.c.p) if c else "", "Holm p": r.p(c.p_adj) if c else "",
                      "Muon steps to AdamW's final": target_text(tg),
                      "wall clock to target (Muon / AdamW run)": f"{tg['wall']:.2f}" if tg.get("wall") else "-"})
        return ["## Per budget (confirmation seeds)", "",
                "Each optimizer's lr is chosen at each budget on [x/2, x, 2x] around its tuned 400-step value, "
                "extended by a factor of 2 past an edge that wins (at most twice) "
                "(selection seeds; see the choices above); the chosen arms then run on the confirmation seeds. "
                "Steps to target: the first evaluation (linearly interpolated between evaluations) at which Muon's "
                "mean val curve at that budget reaches AdamW's mean final val loss at the same budget. Wall clock "
                "to target: Muon's elapsed time at that point over AdamW's elapsed time for its whole run, both "
                "measured in this campaign on the same machine (a shared 2-core CPU: indicative).", "",
                pd.DataFrame(t).to_markdown(index=False), ""]
    r.sections.append(section)
    r.grid_table(r.stage("select"), "select", "Selection grid: lr at each budget")
    done = table.dropna(subset=["mean"])
    if len(done):
        from lab import plots
        fn = r.figname("budgets")
        plots.budget_figure(done, r.figdir() / fn, "Muon vs AdamW across budgets (confirmation seeds)",
                            "Δ = Muon - AdamW (95% CI)", "Δ per budget (< 0: Muon better)")
        r.figures.append((fn, "final val loss vs training tokens (log x) with seed bands, and Δ per budget"))
    r.curves(conf, baseline=None, swept="budget")


def to_target(curves, muon_arm: str | None, adamw_arm: str | None, budget: int) -> dict | None:
    """Steps (and wall-clock fraction) Muon's mean val curve needs to reach AdamW's mean final val loss."""
    mc, ac = curves[curves.arm == muon_arm], curves[curves.arm == adamw_arm]
    if mc.empty or ac.empty:
        return None
    target = ac[ac.step == ac.step.max()].val_loss.mean()
    mean = mc.groupby("step")[["val_loss", "elapsed_s"]].mean().reset_index()
    a_wall = ac[ac.step == ac.step.max()].elapsed_s.mean()
    out = {"target": target, "steps": None, "frac": None, "wall": None}
    prev = None
    for row in mean.itertuples():
        if row.val_loss <= target:
            if prev is None:
                s, w = row.step, row.elapsed_s
            else:  # linear interpolation between the two evaluations that straddle the target
                f = (prev.val_loss - target) / (prev.val_loss - row.val_loss)
                s = prev.step + f * (row.step - prev.step)
                w = prev.elapsed_s + f * (row.elapsed_s - prev.elapsed_s)
            out.update(steps=s, frac=s / budget, wall=w / a_wall if a_wall else None)
            break
        prev = row
    return out


def target_text(t: dict) -> str:
    if not t:
        return "n/a"
    if t["steps"] is None:
        return "not reached"
    return f"{t['steps']:.0f} ({t['frac']:.0%})"


def crossing(done: list[int], cmps: dict, r) -> str:
    """Where the mean Δ changes sign between budgets (log-linear interpolation in tokens), or that it does not."""
    d = [(b, cmps[b].c.delta) for b in done]
    for (b0, d0), (b1, d1) in zip(d, d[1:]):
        if d0 * d1 < 0:
            x = math.exp(math.log(b0) + (0 - d0) / (d1 - d0) * (math.log(b1) - math.log(b0)))
            return (f"The curves cross between {r.tokens(b0)} and {r.tokens(b1)} tokens (mean Δ changes sign; "
                    f"log-linear interpolation: about {r.tokens(x)} tokens, {x:.0f} steps).")
    lead = "Muon" if all(v < 0 for _, v in d) else "AdamW" if all(v > 0 for _, v in d) else None
    trend = _trend(d, r) if len(d) > 1 else ""
    return (f"The curves do not cross between {r.tokens(d[0][0])} and {r.tokens(d[-1][0])} tokens: {lead} is ahead "
            f"at every budget measured{'; ' + trend if trend else ''}." if lead else "")


def _trend(d: list[tuple[int, float]], r) -> str:
    """How |mean Δ| moves with the budget: monotone, or where it is largest and smallest (means, not a test)."""
    mags = [abs(v) for _, v in d]
    steps = list(zip(mags, mags[1:]))
    if all(a < b for a, b in steps):
        return "the mean gap grows with every larger budget"
    if all(a > b for a, b in steps):
        return "the mean gap shrinks with every larger budget"
    big, small = max(d, key=lambda t: abs(t[1])), min(d, key=lambda t: abs(t[1]))
    return (f"the mean gap is largest at {r.tokens(big[0])} tokens (Δ = {big[1]:+.4f}) and smallest at "
            f"{r.tokens(small[0])} (Δ = {small[1]:+.4f})")
