"""Tunes both arms before comparing them: Muon's peak lr and AdamW's lr each on its own grid, then the hybrid's AdamW
groups (one aux lr) at the best Muon lr, all on the selection seeds; the tuned Muon and the tuned AdamW then run on
fresh confirmation seeds. Later campaigns read the chosen lrs from these records (`tuned`)."""
from lab.arms import adamw, muon, peak_lr, steps
from lab.config import get_config
from lab.params import Param

NAME, ORDER = "lr_sweep", 20
TITLE = "Muon learning-rate sweep on nGPT"
QUESTION = ("Which peak learning rate should Muon use on nGPT, and does tuned Muon beat a tuned AdamW baseline?")
HYPOTHESES = [("headline", "Muon beats the (tuned) Adam baseline on nGPT")]
REPORT = "MUON_LR_SWEEP_REPORT.md"

PARAMS = {
    "seeds": Param(list[int], [0, 1, 2], "selection seeds: they pick the lrs", field="seed"),
    "confirm_seeds": Param(list[int], [100, 101, 102], "fresh seeds that judge the picked arm against its baseline",
                           field="seed"),
    "muon_lrs": Param(list[float], [0.001, 0.003, 0.01, 0.023, 0.05, 0.1], "the research plan's Muon grid",
                      field="lr"),
    "adamw_lrs": Param(list[float], [0.0005, 0.002, 0.004, 0.008, 0.016], "5e-4: the plan's Adam lr",
                       field="adamw_lr"),
    "aux_lrs": Param(list[float], [0.004, 0.008, 0.016], "aux lr of the hybrid's AdamW groups", field="scalar_lr"),
    "steps": Param(int, 0, "training steps per run; 0 means the preset default", field="steps", zero_default=True),
}
PLAN_ADAM_LR = 5e-4  # the research plan's Adam lr, compared against tuned AdamW


def arm_tags(o: dict) -> dict:
    return {"optimizer": o["optimizer"], "lr": peak_lr(o), **({"aux": o["scalar_lr"]} if "scalar_lr" in o else {})}


def stages(g, p) -> None:
    """select: Muon lr (aux at the preset's) and AdamW lr, each on its grid; aux: the hybrid's aux lr at the best
    Muon lr; confirm: tuned Muon vs tuned AdamW on the confirmation seeds (the headline)."""
    seeds, aux0, s = p["seeds"], get_config(p["preset"]).scalar_lr, steps(p["steps"])
    m_arms = {f"muon lr={lr:g}": lr for lr in p["muon_lrs"]}
    a_arms = {f"adamw lr={lr:g}": lr for lr in p["adamw_lrs"]}
    df = g.run("select", {**{k: muon(v, aux0, **s) for k, v in m_arms.items()},
                          **{k: adamw(v, **s) for k, v in a_arms.items()}}, seeds)
    lr = g.pick(df, "muon_lr", "select", seeds, m_arms, "Muon lr")
    adamw_lr = g.pick(df, "adamw_lr", "select", seeds, a_arms, "AdamW lr")
    x_arms = {f"muon lr={lr:g} aux={a:g}": a for a in p["aux_lrs"]}
    df = g.run("aux", {k: muon(lr, v, **s) for k, v in x_arms.items()}, seeds)
    aux = g.pick(df, "aux_lr", "aux", seeds, x_arms, "aux lr")
    g.run("confirm", {f"muon lr={lr:g} aux={aux:g}": muon(lr, aux, **s),
                      f"adamw lr={adamw_lr:g}": adamw(adamw_lr, **s)}, p["confirm_seeds"])


def tuned(g, lr: float = 0.0, aux_lr: float = 0.0, adamw_lr: float = 0.0) -> dict:
    """The tuned hybrid Muon (lr, aux lr) and AdamW (lr) for a later campaign: a given (non-zero) value wins, else
    this campaign's choice at the preset (from its default-parameter manifest; a variant never defines it), else the
    preset default. Each source is recorded as a choice of `g` (stage "upstream"), so its report says where every
    setting came from."""
    up, default, out = g.upstream(NAME), get_config(g.preset), {}
    for key, given, field in (("muon_lr", lr, "lr"), ("aux_lr", aux_lr, "scalar_lr"), ("adamw_lr", adamw_lr,
                                                                                        "adamw_lr")):
        c = next((c for c in (up or {}).get("choices", []) if c["key"] == key), None)
        if given:
            value, why = float(given), "given as a parameter"
        elif c is not None:
            value = c["value"]
            why = f"{NAME}'s choice at preset {g.preset} ({c['why']}; stage {c['stage']}, grid {c['grid']})"
        else:
            value = getattr(default, field)
            why = (f"the {g.preset} preset default: {NAME} has not chosen it at this preset yet (run {NAME} first for "
                   "a tuned value)")
        out[key] = g.choose(key, value, "upstream", [], [], why)
    return out


def analyse(r) -> None:
    sel, aux, conf = r.stage("select"), r.stage("aux"), r.stage("confirm")
    mu, ad = r.select(sel, optimizer="muon"), r.select(sel, optimizer="adamw")
    best_m, cm = r.best_vs_runner_up(mu, "select", "Muon lr", "muon_lr")
    best_a, ca = r.best_vs_runner_up(ad, "select", "AdamW lr", "adamw_lr")
    plan = r.arm_of(ad, lr=PLAN_ADAM_LR)
    cp = r.compare(plan, best_a, "select", f"the plan's Adam lr `{plan}` vs tuned `{best_a}`", "plan_adam") \
        if plan and best_a and plan != best_a else None
    best_x, cx = r.best_vs_runner_up(aux, "aux", "aux lr", "aux_lr")
    tm, ta = r.arm_of(conf, optimizer="muon"), r.arm_of(conf, optimizer="adamw")
    head = r.compare(tm, ta, "confirm", f"tuned Muon `{tm}` vs tuned AdamW `{ta}`", "headline") if tm and ta else None
    p = r.params

    def answer():
        out = [f"At {r.tokens()} tokens ({r.steps} steps), " + r.say(
            head, "tuned Muon beats tuned AdamW", "Muon loses to tuned AdamW",
            "no significant difference between tuned Muon and tuned AdamW") + "."]
        sep = lambda c: r.say(c, "clearly ahead of the runner-up", "behind the runner-up",
                              "not separable from the runner-up")
        for best, c, key, grid, what in ((best_m, cm, "muon_lr", "muon_lrs", "Muon lr"),
                                         (best_a, ca, "adamw_lr", "adamw_lrs", "AdamW lr")):
            if best and r.choice(key) is None:  # the selection stage has not finished: nothing chosen yet
                out.append(f"The {what} is not chosen yet (selection unfinished); on the finished runs the leader "
                           f"is `{best}` ({sep(c)}).")
            elif best:
                out.append(f"The best {what} is {r.choice(key):g} ({sep(c)})."
                           + r.edge(r.choice(key), p.get(grid, []), what))
        if cp:
            out.append(f"The research plan's Adam lr 5e-4 against tuned AdamW at this scale: "
                       f"{r.say(cp, 'it is better', 'it is worse', 'no significant difference')}.")
        if best_x and r.choice("aux_lr") is None:
            out.append(f"The hybrid's aux lr is not chosen yet; on the finished runs the leader is `{best_x}`.")
        elif best_x:
            out.append(f"The hybrid's AdamW groups (embedding, head, scalars) run at the tuned aux lr "
                       f"{r.choice('aux_lr'):g} ({sep(cx)})." + r.edge(r.choice("aux_lr"), p.get("aux_lrs", []),
                                                                       "aux lr"))
        return " ".join(out)
    r.answer.append(answer)
    r.grid_table(sel, "select", "Selection grid: Muon lr (aux lr at the preset default) and AdamW lr")
    r.grid_table(aux, "aux", "Aux lr of the hybrid's AdamW groups at the best Muon lr")
    r.grid_table(conf, "confirm", "Confirmation: the tuned arms on fresh seeds")
    r.curves(sel, baseline=best_a, swept="lr")
    r.sweep(sel, "lr", "peak lr", True, f"final val loss vs peak lr at {r.tokens()} tokens (selection seeds)",
            "final val loss vs peak lr per optimizer (selection seeds)")
