"""Polar Express, NorMuon and cautious weight decay (against plain decay at the same strength) and combinations, at
the tuned hybrid Muon (selection seeds); the best one and plain Muon then run on the confirmation seeds."""
from lab.arms import muon, steps
from lab.campaigns.lr_sweep import tuned
from lab.params import Param

NAME, ORDER = "advanced", 50
TITLE = "Advanced Muon features on nGPT"
QUESTION = ("Which modded-nanogpt Muon features (Polar Express, NorMuon, cautious weight decay) help on nGPT?")
HYPOTHESES = [("polar_express", "Polar Express helps Muon on nGPT"),
              ("normuon", "NorMuon variance reduction helps Muon on nGPT"),
              ("cautious_wd", "Cautious weight decay helps Muon on nGPT")]
REPORT = "ADVANCED_MUON_REPORT.md"
FEATURES = ("newton_schulz", "polar_express", "normuon", "weight_decay", "cautious_wd")
BASELINE = "newton_schulz"  # alone: plain Muon


def overrides(arm: str, weight_decay: float) -> dict:
    """'polar_express+normuon+cautious_wd' -> config overrides. newton_schulz alone is plain Muon (the baseline)."""
    parts = arm.split("+")
    bad = [p for p in parts if p not in FEATURES]
    if bad:
        raise ValueError(f"has unknown feature(s) {bad} in arm {arm!r}; valid: {', '.join(FEATURES)} joined with +")
    o = {"orthogonalizer": "polar_express" if "polar_express" in parts else "newton_schulz",
         "normuon": "normuon" in parts, "cautious_wd": "cautious_wd" in parts, "weight_decay": 0.0}
    if "weight_decay" in parts or "cautious_wd" in parts:
        o["weight_decay"] = float(weight_decay)
    return o


def arm_tags(o: dict) -> dict:
    """{"feature": the features of an arm joined with + in FEATURES order ("newton_schulz" alone: plain Muon)}."""
    on = {"polar_express": o.get("orthogonalizer") == "polar_express", "normuon": bool(o.get("normuon")),
          "weight_decay": bool(o.get("weight_decay")) and not o.get("cautious_wd"),
          "cautious_wd": bool(o.get("cautious_wd"))}
    return {"feature": "+".join(f for f in FEATURES if on.get(f)) or BASELINE}


PARAMS = {
    "seeds": Param(list[int], [0, 1], "selection seeds: they pick the settings", field="seed"),
    "confirm_seeds": Param(list[int], [100, 101, 102], "fresh seeds that judge the picked arm against its baseline",
                           field="seed"),
    "arms": Param(list[str], ["newton_schulz", "polar_express", "normuon", "weight_decay", "cautious_wd",
                              "polar_express+normuon", "polar_express+normuon+cautious_wd"],
                  "features joined with +; newton_schulz alone is plain Muon (the baseline)",
                  check=lambda arms, values: [overrides(a, 0.0) for a in arms] and None),
    "weight_decay": Param(float, 0.1, "Muon decay strength of the weight_decay and cautious_wd arms",
                          field="weight_decay"),
    "lr": Param(float, 0.0, "Muon peak lr; 0: the one lr_sweep chose at this preset (else the preset default)",
                field="lr", zero_default=True),
    "aux_lr": Param(float, 0.0, "lr of the hybrid's AdamW groups (embedding, head, scalars); 0: lr_sweep's choice",
                    field="scalar_lr", zero_default=True),
    "steps": Param(int, 0, "training steps per run; 0 means the preset default", field="steps", zero_default=True),
}


def stages(g, p) -> None:
    t, s = tuned(g, p["lr"], p["aux_lr"]), steps(p["steps"])
    grid = {a: muon(t["muon_lr"], t["aux_lr"], **overrides(a, p["weight_decay"]), **s)
            for a in [BASELINE, *[a for a in p["arms"] if a != BASELINE]]}
    df = g.run("select", grid, p["seeds"])
    best = g.pick(df, "best_arm", "select", p["seeds"], {a: a for a in grid if a != BASELINE}, "feature combination")
    g.run("confirm", {BASELINE: grid[BASELINE], best: grid[best]}, p["confirm_seeds"])


def analyse(r) -> None:
    sel, conf = r.stage("select"), r.stage("confirm")
    base = r.arm_of(sel, feature=BASELINE)
    for arm in dict.fromkeys(sel.arm) if base else []:
        if arm != base:
            r.compare(arm, base, "select", key=r.tags_of(arm)["feature"])
    cwd, wd = r.arm_of(sel, feature="cautious_wd"), r.arm_of(sel, feature="weight_decay")
    if cwd and wd:
        r.compare(cwd, wd, "select", f"`{cwd}` vs `{wd}` (same decay strength)", "cwd_vs_wd")
    best, cbase = r.choice("best_arm"), r.arm_of(conf, feature=BASELINE)
    treat = next((a for a in dict.fromkeys(conf.arm) if a != cbase), None) if len(conf) else None
    head = r.compare(treat, cbase, "confirm", f"best arm `{treat}` vs plain Muon `{cbase}`", "headline") \
        if best and cbase and treat else None

    def answer():
        out = [f"At {r.tokens()} tokens, " + r.say(
            head, f"the best combination `{best}` beats plain Muon",
            f"the best combination on the selection seeds (`{best}`) loses to plain Muon",
            f"no significant difference between the best combination on the selection seeds (`{best}`) and "
            "plain Muon") + "."]
        for k, t in (("polar_express", "Polar Express"), ("normuon", "NorMuon"), ("cautious_wd",
                                                                                  "cautious weight decay")):
            if r.get(k):
                out.append(f"{t} vs plain Muon: {r.get(k).verdict()} ({r.get(k).text()}).")
        if r.get("cwd_vs_wd"):
            out.append(f"Cautious vs plain decay at the same strength: {r.get('cwd_vs_wd').verdict()} "
                       f"({r.get('cwd_vs_wd').text()}).")
        return " ".join(out)
    r.answer.append(answer)
    r.sections.append(lambda: [
        "## Reading the decay arms", "",
        "On the sphere, plain decoupled decay shrinks each unit vector radially and the next projection undoes "
        "it (it only rescales the step by 1/(1 − lr·wd)); cautious decay masks coordinates, which changes the "
        "direction. So cautious decay is compared both with plain Muon and with plain decay at the same "
        f"weight_decay ({r.params.get('weight_decay')}).", ""])
    r.grid_table(sel, "select", "Selection grid: feature combinations at the tuned hybrid Muon")
    r.grid_table(conf, "confirm", "Confirmation: the best combination and plain Muon on fresh seeds")
    r.curves(sel, baseline=base, swept=None)
