"""An ad-hoc comparison for any question: named arms given as config overrides, one of them the baseline. Every arm
runs on the selection seeds and is compared with the baseline seed by seed (paired Δ ± 95% CI, Holm over the
report); with `confirm_seeds`, the best arm and the baseline then run again on those fresh seeds, and the headline
is judged there. Example: `python -m lab campaign compare --preset smoke -p arms '{"m0.90": {"momentum": 0.9},
"m0.95": {}}' -p baseline m0.95 -p seeds '[0, 1]'`."""
from dataclasses import fields

from lab.config import Config, get_config
from lab.params import Param, did_you_mean

NAME, ORDER, ADHOC = "compare", 900, True
TITLE = "Ad-hoc comparison"
QUESTION = "Does any arm differ from the baseline (paired by seed)?"
HYPOTHESES = []
REPORT = "COMPARE_REPORT.md"
SET_BY_CAMPAIGN = {"seed", "runs_dir", "campaign", "wandb", "wandb_project", "device", "data_dir"}

PARAMS = {
    "arms": Param(dict, {"m0.90": {"momentum": 0.9}, "m0.95": {}}, "named arms: {name: config overrides}"),
    "baseline": Param(str, "m0.95", "the arm every other arm is compared with"),
    "base": Param(dict, {}, 'overrides every arm shares, e.g. {"steps": 100}'),
    "seeds": Param(list[int], [0, 1], "seeds every arm runs on (they pick the best arm)", field="seed"),
    "confirm_seeds": Param(list[int], [], "fresh seeds on which the best arm meets the baseline again ([]: none)",
                           field="seed", empty_ok=True),
}


def _overrides(where: str, o, preset: str, base: dict | None = None) -> dict:
    valid = [f.name for f in fields(Config)]
    if not isinstance(o, dict):
        raise ValueError(f"campaign compare: {where} must be a dict of config overrides, got {o!r}")
    for k in o:
        if k not in valid:
            raise ValueError(f"campaign compare: {where} has unknown config key {k!r}{did_you_mean(k, valid)}; "
                             f"valid keys: {', '.join(valid)}")
        if k in SET_BY_CAMPAIGN:
            raise ValueError(f"campaign compare: {where} sets {k!r}, which the campaign sets itself (seeds: -p seeds; "
                             "devices, wandb: -p devices, -p wandb)")
    try:
        return get_config(preset, **{**(base or {}), **o}).to_dict()
    except ValueError as e:
        raise ValueError(f"campaign compare: {where} is refused: {e}") from None


def check(p: dict) -> None:
    """Arms are known config keys with valid values, at least two and all different; the baseline is one of them."""
    _overrides("base", p["base"], p["preset"])
    if len(p["arms"]) < 2:
        raise ValueError(f"campaign compare: arms={p['arms']!r} needs at least two arms (one is the baseline)")
    if p["baseline"] not in p["arms"]:
        raise ValueError(f"campaign compare: baseline={p['baseline']!r} is not an arm"
                         f"{did_you_mean(p['baseline'], p['arms'])}; arms: {', '.join(p['arms'])}")
    seen = {}
    for name, o in p["arms"].items():
        if not name.strip():
            raise ValueError("campaign compare: an arm needs a non-empty name")
        cfg = _overrides(f"arm {name!r}", o, p["preset"], p["base"])
        key = repr(sorted(cfg.items()))
        if key in seen:
            raise ValueError(f"campaign compare: arms {seen[key]!r} and {name!r} are the same config")
        seen[key] = name


def stages(g, p) -> None:
    arms = {name: ({**p["base"], **o}, {"arm": name}) for name, o in p["arms"].items()}
    df = g.run("select", arms, p["seeds"])
    if p["confirm_seeds"]:
        others = {n: n for n in arms if n != p["baseline"]}
        best = g.pick(df, "best_arm", "select", p["seeds"], others, "arm") if len(others) > 1 else next(iter(others))
        g.run("confirm", {n: arms[n] for n in (p["baseline"], best)}, p["confirm_seeds"])


def analyse(r) -> None:
    sel, conf, baseline = r.stage("select"), r.stage("confirm"), r.params.get("baseline")
    base = r.arm_of(sel, arm=baseline)
    for arm in dict.fromkeys(sel.arm) if base else []:
        if arm != base:
            r.compare(arm, base, "select", f"`{arm}` vs baseline `{base}`", key=arm)
    cbase = r.arm_of(conf, arm=baseline)
    treat = next((a for a in dict.fromkeys(conf.arm) if a != cbase), None) if len(conf) else None
    head = r.compare(treat, cbase, "confirm", f"`{treat}` vs baseline `{cbase}`", "headline") \
        if treat and cbase else None

    def answer():
        if head is not None:
            return (f"At {r.tokens()} tokens, on fresh confirmation seeds, the best arm `{treat}` "
                    + r.say(head, "beats the baseline", "loses to the baseline", "is not separable from the baseline")
                    + f" `{cbase}`.")
        parts = [f"`{c.key}` " + r.say(c, "beats it", "loses to it", "is not separable from it")
                 for c in r.comparisons]
        return (f"At {r.tokens()} tokens, against the baseline `{base}`: " + "; ".join(parts) + "."
                if parts else "Not measured yet.")
    r.answer.append(answer)
    arms = {n: {**r.params.get("base", {}), **o} for n, o in r.params.get("arms", {}).items()}
    r.sections.append(lambda: ["## Arms (config overrides)", "", *[
        f"- `{n}`{' (baseline)' if n == baseline else ''}: {o or 'the preset defaults'}" for n, o in arms.items()], ""])
    r.grid_table(sel, "select", "Arms on the selection seeds")
    r.grid_table(conf, "confirm", "Confirmation: the best arm and the baseline on fresh seeds")
    r.curves(sel, baseline=base, swept=None)
