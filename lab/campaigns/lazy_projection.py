"""Project nGPT's matrices back to the sphere only every N-th step, for tuned Muon and tuned AdamW (selection seeds);
Muon's best N and the laziness interaction (Muon@N - Muon@1) - (AdamW@N - AdamW@1) are then judged on the
confirmation seeds."""
import math

from lab.arms import adamw, muon, steps
from lab.campaigns.lr_sweep import tuned
from lab.params import Param

NAME, ORDER = "lazy_projection", 60
TITLE = "Lazy sphere projection with Muon and AdamW"
QUESTION = ("How often must nGPT's weights be projected back to the sphere with Muon, and does Muon tolerate lazier "
            "projection than AdamW?")
HYPOTHESES = [("interaction", "Muon tolerates lazier projection than AdamW")]
REPORT = "LAZY_PROJECTION_REPORT.md"

PARAMS = {
    "seeds": Param(list[int], [0, 1], "selection seeds: they pick the settings", field="seed"),
    "confirm_seeds": Param(list[int], [100, 101, 102], "fresh seeds that judge the picked arm against its baseline",
                           field="seed"),
    "frequencies": Param(list[int], [1, 3, 7, 10, 20], "project_every values for both optimizers (7: the plan)",
                         field="project_every"),
    "lr": Param(float, 0.0, "Muon peak lr; 0: the one lr_sweep chose at this preset (else the preset default)",
                field="lr", zero_default=True),
    "aux_lr": Param(float, 0.0, "lr of the hybrid's AdamW groups (embedding, head, scalars); 0: lr_sweep's choice",
                    field="scalar_lr", zero_default=True),
    "adamw_lr": Param(float, 0.0, "AdamW baseline lr; 0: the one lr_sweep chose at this preset", field="adamw_lr",
                      zero_default=True),
    "steps": Param(int, 0, "training steps per run; 0 means the preset default", field="steps", zero_default=True),
}


def arm_tags(o: dict) -> dict:
    return {"optimizer": o["optimizer"], "every": o["project_every"]}


def stages(g, p) -> None:
    t, s, seeds = tuned(g, p["lr"], p["aux_lr"], p["adamw_lr"]), steps(p["steps"]), p["seeds"]
    ks = [1, *[k for k in p["frequencies"] if k != 1]]
    make = {"muon": lambda k: muon(t["muon_lr"], t["aux_lr"], project_every=int(k), **s),
            "adamw": lambda k: adamw(t["adamw_lr"], project_every=int(k), **s)}
    label = {(opt, k): f"{opt} every={k}" for opt in make for k in ks}
    df = g.run("select", {label[(opt, k)]: make[opt](k) for opt in make for k in ks}, seeds)
    best = g.pick(df, "muon_every", "select", seeds, {label[("muon", k)]: k for k in ks}, "Muon projection interval")
    mean = lambda opt, k: df[(df.arm == label[(opt, k)]) & (df.status == "finished")].final_val_loss.astype(
        float).mean()
    inter = {k: (mean("muon", k) - mean("muon", 1)) - (mean("adamw", k) - mean("adamw", 1)) for k in ks[1:]}
    finite = {k: v for k, v in inter.items() if math.isfinite(v)}
    k_int = min(finite, key=finite.get) if finite else ks[-1]
    g.choose("interaction_every", k_int, "select", seeds, ks[1:],
             "the interval with the most negative mean laziness interaction on the selection seeds")
    conf = {label[("muon", k)]: make["muon"](k) for k in dict.fromkeys([1, best, k_int])}
    conf |= {label[("adamw", k)]: make["adamw"](k) for k in dict.fromkeys([1, k_int])}
    g.run("confirm", conf, p["confirm_seeds"])


def interaction(r, df, k: int, stage: str):
    """Per seed: (Muon@k - Muon@1) - (AdamW@k - AdamW@1), as a paired comparison of the two differences."""
    from lab.stats import paired
    f = lambda opt, n: r.finals(r.arm_of(df, optimizer=opt, every=n), stage)
    mk, m1, ak, a1 = f("muon", k), f("muon", 1), f("adamw", k), f("adamw", 1)
    return paired({s: mk[s] - m1[s] for s in mk.keys() & m1.keys()}, {s: ak[s] - a1[s] for s in ak.keys() & a1.keys()})


def analyse(r) -> None:
    sel, conf = r.stage("select"), r.stage("confirm")
    ks = sorted({int(t["every"]) for t in sel.tags}) if len(sel) else []
    for k in ks[1:]:
        for opt in ("muon", "adamw"):
            a, b = r.arm_of(sel, optimizer=opt, every=k), r.arm_of(sel, optimizer=opt, every=1)
            if a and b:
                r.compare(a, b, "select")
        r.add(f"laziness interaction at every={k}: (Muon@{k} − Muon@1) − (AdamW@{k} − AdamW@1)", "select",
              interaction(r, sel, k, "select"))
    best, k_int = r.choice("muon_every"), r.choice("interaction_every")
    mb, m1 = r.arm_of(conf, optimizer="muon", every=best), r.arm_of(conf, optimizer="muon", every=1)
    cb = r.compare(mb, m1, "confirm", key="best_every") if best and best != 1 and mb and m1 else None
    ci = r.add(f"laziness interaction at every={k_int} (confirmation)", "confirm",
               interaction(r, conf, k_int, "confirm"), "interaction") if k_int else None

    def answer():
        if best is None:  # the selection stage has not finished: nothing chosen yet
            return (f"At {r.tokens()} tokens, Muon's projection interval is not chosen yet (selection unfinished: "
                    f"{len(sel[sel.status == 'finished'])} finished selection run(s)).")
        conf_says = r.say(cb, "beats projecting every step", "loses to projecting every step",
                          "shows no significant difference from projecting every step")
        out = [f"At {r.tokens()} tokens, Muon's best projection interval on the selection seeds is every {best} "
               f"step(s)" + (f"; on the confirmation seeds it {conf_says}" if cb else " (projecting every step)")
               + "."]
        if ci:
            out.append(f"Does Muon tolerate lazier projection than AdamW? At every={k_int} the interaction "
                       "(Muon@N − Muon@1) − (AdamW@N − AdamW@1) (negative: Muon loses less by projecting lazily) "
                       "says " + r.say(ci, "yes", "no: AdamW tolerates it better", "no significant difference") + ".")
        return " ".join(out)
    r.answer.append(answer)
    r.grid_table(sel, "select", "Selection grid: projection interval for tuned Muon and tuned AdamW")
    r.grid_table(conf, "confirm", "Confirmation: the chosen intervals on fresh seeds")
    r.curves(sel, baseline=r.arm_of(sel, optimizer="muon", every=1), swept="every")
    r.sweep(sel, "every", "project every N steps", False,
            f"final val loss vs projection interval at {r.tokens()} tokens (selection seeds)",
            "final val loss vs projection interval per optimizer (selection seeds)")
