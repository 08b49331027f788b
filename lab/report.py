"""Markdown reports rendered from run records alone (manifest + run directories): `python -m lab report NAME|all`.

Every comparison is paired by seed (a seed fixes the init and the batch order): Δ = treatment - baseline per seed,
mean Δ with its 95% t-interval, the paired t-test p, Holm-adjusted over every comparison the report makes, and the
minimum detectable effect at the seeds run (lab.stats). Settings are picked on selection seeds and judged on fresh
confirmation seeds. Each campaign has one analysis function below that registers its comparisons and writes its
answer; `render_report` adds the tables, figures and environment; `render_index` writes reports/INDEX.md.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lab import plots, records
from lab.config import get_config
from lab.results import (
    ROOT,
    arm_stats,
    choice,
    finals,
    grid_edge,
    manifest_path,
    read_manifest,
    reports_dir,
    results,
    runs_dir,
    val_curves,
)
from lab.stats import ALPHA, Paired, holm, paired, verdict

SPECS = {
    "verify": dict(file="VERIFY_REPORT.md", title="Verify: one Muon run on nGPT",
                   question="Does a hybrid Muon run on nGPT complete, does its orthogonalizer make the update "
                            "orthogonal, and does every parameter go to the right optimizer?"),
    "lr_sweep": dict(file="MUON_LR_SWEEP_REPORT.md", title="Muon learning-rate sweep on nGPT",
                     question="Which peak learning rate should Muon use on nGPT, and does tuned Muon beat a tuned "
                              "AdamW baseline?"),
    "horizon": dict(file="HORIZON_REPORT.md", title="Muon vs AdamW across training budgets",
                    question="Does Muon's advantage over tuned AdamW on nGPT depend on the training budget, and how "
                             "many steps does Muon need to reach AdamW's final loss?"),
    "geodesic": dict(file="GEODESIC_MUON_REPORT.md", title="Geodesic Muon updates on nGPT",
                     question="Does an exact geodesic step on the sphere (θ = lr or θ = lr·‖T‖) beat Muon's ambient "
                              "step followed by projection, at matched step size?"),
    "advanced": dict(file="ADVANCED_MUON_REPORT.md", title="Advanced Muon features on nGPT",
                     question="Which modded-nanogpt Muon features (Polar Express, NorMuon, cautious weight decay) "
                              "help on nGPT?"),
    "lazy_projection": dict(file="LAZY_PROJECTION_REPORT.md", title="Lazy sphere projection with Muon and AdamW",
                            question="How often must nGPT's weights be projected back to the sphere with Muon, and "
                                     "does Muon tolerate lazier projection than AdamW?"),
}
HYPOTHESES = [  # the research plan's hypotheses (shared/seeds/002): (campaign, comparison key, statement)
    ("lr_sweep", "headline", "Muon beats the (tuned) Adam baseline on nGPT"),
    ("geodesic", "headline", "Geodesic updates beat projection"),
    ("advanced", "polar_express", "Polar Express helps Muon on nGPT"),
    ("advanced", "normuon", "NorMuon variance reduction helps Muon on nGPT"),
    ("advanced", "cautious_wd", "Cautious weight decay helps Muon on nGPT"),
    ("lazy_projection", "interaction", "Muon tolerates lazier projection than AdamW"),
]
ROLE = {"select": "selection", "aux": "selection", "confirm": "confirmation", "run": "run"}


@dataclass
class Comparison:
    label: str      # what is compared, e.g. "`muon lr=0.05` vs `adamw lr=0.008`"
    seeds: str      # "selection" | "confirmation"
    c: Paired
    key: str = ""   # for the hypotheses table
    p_adj: float = math.nan

    def verdict(self) -> str:
        return verdict(self.c, self.p_adj)

    def text(self) -> str:
        """'Δ = -0.0850 ± 0.0123 nats (95% CI; paired p = 0.003, Holm p = 0.012; 3 confirmation seeds; MDE 0.020)'"""
        c = self.c
        if c.n == 0:
            return "not measured yet (no finished seed pair)"
        if c.n == 1:
            return f"Δ = {c.delta:+.4f} nats on 1 {self.seeds} seed (no test with one seed)"
        p = "paired p undefined (identical differences)" if math.isnan(c.p) else \
            f"paired p = {c.p:.2g}, Holm-adjusted p = {self.p_adj:.2g}"
        return (f"Δ = {c.fmt()} nats (95% CI; {p}; {c.n} {self.seeds} seeds; MDE {c.mde:.3f})")


@dataclass
class Report:
    """One campaign's records and what its analysis found."""
    name: str
    preset: str
    tag: str
    m: dict
    df: pd.DataFrame
    comparisons: list[Comparison] = field(default_factory=list)
    answer: list = field(default_factory=list)   # callables returning sentences (run after Holm)
    sections: list = field(default_factory=list)  # callables returning markdown lines
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)

    @property
    def params(self) -> dict:
        return self.m.get("params", {})

    def choice(self, key: str):
        c = choice(self.m, key)
        return None if c is None else c["value"]

    def stage(self, stage: str) -> pd.DataFrame:
        return self.df[self.df.stage == stage] if len(self.df) else self.df

    def compare(self, treat: str, base: str, stage: str, label: str | None = None, key: str = "") -> Comparison:
        c = paired(finals(self.df, treat, stage), finals(self.df, base, stage))
        return self.add(label or f"`{treat}` vs `{base}`", stage, c, key)

    def add(self, label: str, stage: str, c: Paired, key: str = "") -> Comparison:
        cmp = Comparison(label, ROLE.get(stage, stage), c, key)
        self.comparisons.append(cmp)
        return cmp

    def get(self, key: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.key == key), None)

    @property
    def steps(self) -> int:
        return int(self.df.steps.iloc[0]) if len(self.df) else get_config(self.preset).steps

    def budgets(self) -> list[int]:
        """The steps per run: one value, or several when the campaign spans budgets (horizon)."""
        return sorted({int(x) for x in self.df.steps}) if len(self.df) else [self.steps]

    def budget(self) -> str:
        """'0.8M', or '0.2M–1.6M' for a campaign that spans budgets."""
        b = self.budgets()
        return self.tokens(b[0]) if len(b) == 1 else f"{self.tokens(b[0])}–{self.tokens(b[-1])}"

    def tokens(self, steps: int | None = None) -> str:
        cfg = get_config(self.preset)
        return plots.fmt_tokens((steps or self.steps) * cfg.batch_size * cfg.seq_len * cfg.grad_accum)

    def figdir(self) -> Path:
        d = reports_dir(self.preset, self.tag) / "figs"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def figname(self, what: str) -> str:
        return f"{self.name}{'-' + self.tag if self.tag else ''}_{what}.png"


def _arms(df: pd.DataFrame) -> pd.DataFrame:
    """One row per arm (first occurrence) with its config columns."""
    return df.drop_duplicates("arm")


def _seeds(seeds) -> str:
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _edge(value, grid: list, what: str) -> str:
    """A warning when the chosen value sits on the edge of its grid (the optimum may lie outside)."""
    side = grid_edge(grid, value)
    return (f" **Grid-edge warning:** the best {what} ({value:g}) is the {side} value of its grid "
            f"{[float(f'{g:g}') for g in grid]}: the optimum may lie beyond it; extend the grid." if side else "")


def _ranked(df: pd.DataFrame) -> list[str]:
    """Arms of df by mean final val loss over finished seeds (arms with a diverged seed last)."""
    st = arm_stats(df)
    st = st[st.finished > 0].assign(unstable=lambda d: d.diverged > 0)
    return list(st.sort_values(["unstable", "mean"], kind="stable").arm)


def _best_vs_runner_up(r: Report, df: pd.DataFrame, stage: str, what: str, key: str):
    """Compare the best arm of `df` with the runner-up (selection seeds: optimistic for the winner)."""
    ranked = _ranked(df)
    if len(ranked) < 2:
        return None, None
    return ranked[0], r.compare(ranked[0], ranked[1], stage, f"best {what} `{ranked[0]}` vs runner-up "
                                                             f"`{ranked[1]}`", key)


def _say(cmp: Comparison | None, win: str, lose: str, tie: str) -> str:
    """Pick the sentence for the comparison's verdict and append its numbers."""
    if cmp is None or cmp.c.n == 0:
        return "not measured yet"
    v = cmp.verdict()
    head = win if v == "wins" else lose if v == "loses" else tie if v == "no significant difference" else \
        f"{tie} (not enough seeds for a test)"
    return f"{head}: {cmp.text()}"


# ---------------------------------------------------------------------------------------------------------------
# the campaigns' analyses

def _verify(r: Report) -> None:
    fin = r.df[r.df.status == "finished"]
    p = manifest_path("verify", r.preset, r.tag).with_suffix(".checks.json")
    chk = None
    with contextlib.suppress(FileNotFoundError, records.CorruptRecord):
        chk = records.read_json(p)
    sv = lambda k: f"[{chk[k]['signal_min']:.3f}, {chk[k]['signal_max']:.3f}]"
    ortho = (f" One real gradient at init (`{chk['param']}`, {chk['shape']}) has {chk['signal_dirs']} of "
             f"{chk['dirs']} singular directions inside the orthogonalizers' design range (normalized σ ≥ 1e-3); "
             f"there its orthogonalized singular values are {sv('newton_schulz')} with Newton–Schulz and "
             f"{sv('polar_express')} with Polar Express (bf16, as on a GPU), i.e. orthogonal up to each method's "
             f"designed band; the near-null directions stay small (median normalized σ of the gradient "
             f"{chk['gradient']['median']:.1e})." if chk else "")
    drift = fin.max_sphere_drift.astype(float).max() if len(fin) else math.nan
    if len(fin) == len(r.df) and len(r.df):
        ans = (f"Yes: {len(fin)}/{len(r.df)} run(s) finished at {r.tokens()} tokens ({r.steps} steps), final val "
               f"loss {', '.join(f'{v:.4f}' for v in fin.final_val_loss)}; the largest row-norm drift before a "
               f"projection was {drift:.1e}.")
    else:
        ans = f"Not yet: run status(es) {', '.join(r.df.status)}."
    r.answer.append(lambda: ans + ortho)
    routing = runs_dir(r.preset) / r.df.run_id.iloc[0] / "routing.md" if len(r.df) else None
    if routing is not None and routing.exists():
        r.sections.append(lambda: ["## Routing (which optimizer takes each parameter)", "", routing.read_text()])
    _curves(r, r.df, baseline=None, swept=None)


def _lr_sweep(r: Report) -> None:
    sel, aux, conf = r.stage("select"), r.stage("aux"), r.stage("confirm")
    mu, ad = sel[sel.optimizer == "muon"], sel[sel.optimizer == "adamw"]
    best_m, cm = _best_vs_runner_up(r, mu, "select", "Muon lr", "muon_lr")
    best_a, ca = _best_vs_runner_up(r, ad, "select", "AdamW lr", "adamw_lr")
    plan = next((a for a in ad.arm.unique() if math.isclose(ad[ad.arm == a].adamw_lr.iloc[0], 5e-4)), None)
    cp = r.compare(plan, best_a, "select", f"the plan's Adam lr `{plan}` vs tuned `{best_a}`", "plan_adam") \
        if plan and best_a and plan != best_a else None
    best_x, cx = _best_vs_runner_up(r, aux, "aux", "aux lr", "aux_lr")
    arms = list(conf.arm.unique())
    head = r.compare(arms[0], arms[1], "confirm", f"tuned Muon `{arms[0]}` vs tuned AdamW `{arms[1]}`",
                     "headline") if len(arms) == 2 else None
    p = r.params

    def answer():
        out = [f"At {r.tokens()} tokens ({r.steps} steps), " + _say(
            head, "tuned Muon beats tuned AdamW", "Muon loses to tuned AdamW",
            "no significant difference between tuned Muon and tuned AdamW") + "."]
        sep = lambda c: _say(c, "clearly ahead of the runner-up", "behind the runner-up",
                             "not separable from the runner-up")
        for best, c, key, grid, what in ((best_m, cm, "muon_lr", "muon_lrs", "Muon lr"),
                                         (best_a, ca, "adamw_lr", "adamw_lrs", "AdamW lr")):
            if best and r.choice(key) is None:  # the selection stage has not finished: nothing chosen yet
                out.append(f"The {what} is not chosen yet (selection unfinished); on the finished runs the leader "
                           f"is `{best}` ({sep(c)}).")
            elif best:
                out.append(f"The best {what} is {r.choice(key):g} ({sep(c)})." + _edge(r.choice(key), p.get(grid, []),
                                                                                       what))
        if cp:
            out.append(f"The research plan's Adam lr 5e-4 against tuned AdamW at this scale: "
                       f"{_say(cp, 'it is better', 'it is worse', 'no significant difference')}.")
        if best_x and r.choice("aux_lr") is None:
            out.append(f"The hybrid's aux lr is not chosen yet; on the finished runs the leader is `{best_x}`.")
        elif best_x:
            out.append(f"The hybrid's AdamW groups (embedding, head, scalars) run at the tuned aux lr "
                       f"{r.choice('aux_lr'):g} ({sep(cx)})." + _edge(r.choice("aux_lr"), p.get("aux_lrs", []),
                                                                      "aux lr"))
        return " ".join(out)
    r.answer.append(answer)
    _grid_table(r, sel, "select", "Selection grid: Muon lr (aux lr at the preset default) and AdamW lr")
    _grid_table(r, aux, "aux", "Aux lr of the hybrid's AdamW groups at the best Muon lr")
    _grid_table(r, conf, "confirm", "Confirmation: the tuned arms on fresh seeds")
    _curves(r, sel, baseline=best_a, swept="peak_lr")
    pts = sel.assign(peak_lr=[row.lr if row.optimizer == "muon" else row.adamw_lr for row in sel.itertuples()])
    fn = r.figname("sweep")
    plots.sweep_figure(pts[pts.status == "finished"], "peak_lr", "peak lr", True,
                       f"final val loss vs peak lr at {r.tokens()} tokens (selection seeds)", r.figdir() / fn)
    r.figures.append((fn, "final val loss vs peak lr per optimizer (selection seeds)"))


def _horizon(r: Report) -> None:
    conf = r.stage("confirm")
    budgets = sorted(int(b) for b in r.params.get("budgets", []))
    rows, cmps = [], {}
    for b in budgets:
        mu, ad = f"muon steps={b}", f"adamw steps={b}"
        if mu in set(conf.arm) and ad in set(conf.arm):
            cmps[b] = r.compare(mu, ad, "confirm", f"Muon vs AdamW at {r.tokens(b)} tokens ({b} steps)",
                                f"budget{b}")
    curves = val_curves(conf, r.preset)
    for b in budgets:
        for opt in ("muon", "adamw"):
            v = finals(conf, f"{opt} steps={b}")
            vals = list(v.values())
            c = cmps.get(b)
            rows.append({"optimizer": opt, "budget": b, "tokens": b * _tokens_per_step(r.preset),
                         "lr": r.choice(f"{opt}_lr@{b}"), "n": len(vals),
                         "mean": pd.Series(vals).mean() if vals else math.nan,
                         "std": pd.Series(vals).std(ddof=1) if len(vals) > 1 else math.nan,
                         "min": min(vals) if vals else math.nan, "max": max(vals) if vals else math.nan,
                         "delta": c.c.delta if c else math.nan, "lo": c.c.lo if c else math.nan,
                         "hi": c.c.hi if c else math.nan})
    table = pd.DataFrame(rows)
    target = {b: _to_target(curves, f"muon steps={b}", f"adamw steps={b}", b) for b in budgets}

    def answer():
        done = [b for b in budgets if b in cmps and cmps[b].c.n]
        if not done:
            return "Not measured yet."
        v = {b: cmps[b].verdict() for b in done}
        kinds = {"wins": [], "loses": [], "no significant difference": [], "not enough seeds": []}
        for b in done:
            kinds[v[b]].append(r.tokens(b))
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
        out.append(_crossing(done, cmps, r))
        keys = [(f"{opt}_lr@{b}", f"{name} at {b} steps") for b in budgets
                for opt, name in (("muon", "Muon"), ("adamw", "AdamW"))]
        edges = [f"{what} ({r.choice(k):g})" for k, what in keys if grid_edge(_grid(r, k), r.choice(k))]
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
            edge = lambda opt, lr, b=b: " (grid edge)" if grid_edge(_grid(r, f"{opt}_lr@{b}"), lr) else ""
            t.append({"budget": f"{b} steps ({r.tokens(b)} tokens)",
                      "Muon lr": f"{m.lr:g}{edge('muon', m.lr)}" if m.lr else "-",
                      "AdamW lr": f"{a.lr:g}{edge('adamw', a.lr)}" if a.lr else "-",
                      "Muon final val": _ms(m), "AdamW final val": _ms(a),
                      "Δ Muon − AdamW ± 95% CI": c.c.fmt() if c else "n/a",
                      "p": _p(c.c.p) if c else "", "Holm p": _p(c.p_adj) if c else "",
                      "Muon steps to AdamW's final": _target_text(tg, b),
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
    _grid_table(r, r.stage("select"), "select", "Selection grid: lr at each budget")
    fn = r.figname("budgets")
    if len(table.dropna(subset=["mean"])):
        plots.horizon_figure(table.dropna(subset=["mean"]), r.figdir() / fn,
                             "Muon vs AdamW across budgets (confirmation seeds)")
        r.figures.append((fn, "final val loss vs training tokens (log x) with seed bands, and Δ per budget"))
    _curves(r, conf, baseline=None, swept="steps", what="curves")


def _geodesic(r: Report) -> None:
    sel, conf = r.stage("select"), r.stage("confirm")
    modes = r.params.get("modes", [])
    name = lambda m: "projection" if m == "none" else f"geodesic {m}"
    lrs = sorted(sel[sel.geodesic == "none"].lr.unique()) if len(sel) else []
    for m in modes:
        for x in lrs:
            a, b = f"{name(m)} lr={x:g}", f"projection lr={x:g}"
            if a in set(sel.arm) and b in set(sel.arm):
                r.compare(a, b, "select", f"`{a}` vs `{b}` (same lr)")
    arms = list(conf.arm.unique())
    head = r.compare(arms[1], arms[0], "confirm", f"`{arms[1]}` vs `{arms[0]}` (each at its own best lr)",
                     "headline") if len(arms) == 2 else None

    def answer():
        best = {m: r.choice(f"lr[{m}]") for m in ["none", *modes]}
        tuned = "; ".join(f"{name(m)} {v:g}" for m, v in best.items() if v is not None)
        edges = "".join(_edge(v, _grid(r, f"lr[{m}]"), f"lr of {name(m)}") for m, v in best.items() if v is not None)
        return (f"At {r.tokens()} tokens, with each update rule at its own tuned lr ({tuned}; matched step size "
                f"by tuning each mode on its own grid), " + _say(
                    head, "the geodesic step beats projection", "the geodesic step loses to projection",
                    "no significant difference between the geodesic step and projection") + "." + edges + drift())

    def drift():
        d = pd.to_numeric(r.df.get("max_geodesic_drift", pd.Series(dtype=float)), errors="coerce").dropna()
        return (f" The geodesic-updated matrices stayed on the sphere: max | ‖w‖ − 1 | after any step, over "
                f"{len(d)} geodesic run(s), {d.max():.1e}." if len(d) else "")
    r.answer.append(answer)
    r.sections.append(lambda: [
        "## Why tune each mode's lr (matched step size)", "",
        "At the same lr the three rules do not turn a vector by the same angle. An ambient step followed by "
        "projection turns unit vector i by atan(lr·‖T_i‖), where T_i is the tangent part of its update (‖T_i‖ < 1 "
        "where the update has a radial part, and it differs between the rows of W_q and the columns of W_proj); "
        "`geodesic lr_norm` turns it by lr·‖T_i‖ (the same angle to O(lr³)); `geodesic lr` turns every vector by "
        "exactly lr. Comparing at equal lr therefore confounds the geometry with the step size, so each mode is "
        "tuned on its own grid [x/2, x, 2x] around the tuned Muon lr (extended past an edge that wins), and the "
        "confirmed comparison pits each method at its own best step size. The same-lr comparisons on the "
        "selection seeds are listed for completeness.", ""])
    _grid_table(r, sel, "select", "Selection grid: each mode on its own lr grid")
    _grid_table(r, conf, "confirm", "Confirmation: the tuned modes on fresh seeds")
    base = f"projection lr={r.choice('lr[none]'):g}" if r.choice("lr[none]") is not None else None
    _curves(r, sel, baseline=base if base in set(sel.arm) else None, swept=None)


def _advanced(r: Report) -> None:
    sel, conf = r.stage("select"), r.stage("confirm")
    base = "newton_schulz"
    for arm in [a for a in sel.arm.unique() if a != base]:
        r.compare(arm, base, "select", key=arm)
    if {"cautious_wd", "weight_decay"} <= set(sel.arm):
        r.compare("cautious_wd", "weight_decay", "select", "`cautious_wd` vs `weight_decay` (same decay strength)",
                  "cwd_vs_wd")
    best = r.choice("best_arm")
    head = r.compare(best, base, "confirm", f"best arm `{best}` vs plain Muon `{base}`", "headline") \
        if best and {best, base} <= set(conf.arm) else None

    def answer():
        out = [f"At {r.tokens()} tokens, " + _say(
            head, f"the best combination `{best}` beats plain Muon",
            f"the best combination on the selection seeds (`{best}`) loses to plain Muon",
            f"no significant difference between the best combination on the selection seeds (`{best}`) and "
            "plain Muon") + "."]
        singles = [(k, t) for k, t in (("polar_express", "Polar Express"), ("normuon", "NorMuon"),
                                       ("cautious_wd", "cautious weight decay")) if r.get(k)]
        for k, t in singles:
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
    _grid_table(r, sel, "select", "Selection grid: feature combinations at the tuned hybrid Muon")
    _grid_table(r, conf, "confirm", "Confirmation: the best combination and plain Muon on fresh seeds")
    _curves(r, sel, baseline=base if base in set(sel.arm) else None, swept=None)


def _lazy(r: Report) -> None:
    sel, conf = r.stage("select"), r.stage("confirm")
    ks = sorted(int(k) for k in sel.project_every.unique()) if len(sel) else []
    for k in ks[1:]:
        for opt in ("muon", "adamw"):
            r.compare(f"{opt} every={k}", f"{opt} every=1", "select")
        r.add(f"laziness interaction at every={k}: (Muon@{k} − Muon@1) − (AdamW@{k} − AdamW@1)", "select",
              _interaction(sel, k, "select"))
    best, k_int = r.choice("muon_every"), r.choice("interaction_every")
    cb = r.compare(f"muon every={best}", "muon every=1", "confirm", key="best_every") \
        if best and best != 1 and f"muon every={best}" in set(conf.arm) else None
    ci = r.add(f"laziness interaction at every={k_int} (confirmation)", "confirm",
               _interaction(conf, k_int, "confirm"), "interaction") if k_int else None

    def answer():
        if best is None:  # the selection stage has not finished: nothing chosen yet
            return (f"At {r.tokens()} tokens, Muon's projection interval is not chosen yet (selection unfinished: "
                    f"{len(sel[sel.status == 'finished'])} finished selection run(s)).")
        conf_says = _say(cb, "beats projecting every step", "loses to projecting every step",
                         "shows no significant difference from projecting every step")
        out = [f"At {r.tokens()} tokens, Muon's best projection interval on the selection seeds is every {best} "
               f"step(s)" + (f"; on the confirmation seeds it {conf_says}" if cb else " (projecting every step)")
               + "."]
        if ci:
            out.append(f"Does Muon tolerate lazier projection than AdamW? At every={k_int} the interaction "
                       "(Muon@N − Muon@1) − (AdamW@N − AdamW@1) (negative: Muon loses less by projecting lazily) "
                       "says " + _say(ci, "yes", "no: AdamW tolerates it better", "no significant difference") + ".")
        return " ".join(out)
    r.answer.append(answer)
    _grid_table(r, sel, "select", "Selection grid: projection interval for tuned Muon and tuned AdamW")
    _grid_table(r, conf, "confirm", "Confirmation: the chosen intervals on fresh seeds")
    _curves(r, sel, baseline="muon every=1" if "muon every=1" in set(sel.arm) else None, swept="project_every")
    fn = r.figname("sweep")
    plots.sweep_figure(sel[sel.status == "finished"], "project_every", "project every N steps", False,
                       f"final val loss vs projection interval at {r.tokens()} tokens (selection seeds)",
                       r.figdir() / fn)
    r.figures.append((fn, "final val loss vs projection interval per optimizer (selection seeds)"))


def _interaction(df: pd.DataFrame, k: int, stage: str) -> Paired:
    """Per seed: (Muon@k - Muon@1) - (AdamW@k - AdamW@1), as a paired comparison of the two differences."""
    f = lambda arm: finals(df, arm, stage)
    mk, m1, ak, a1 = f(f"muon every={k}"), f("muon every=1"), f(f"adamw every={k}"), f("adamw every=1")
    dm = {s: mk[s] - m1[s] for s in mk.keys() & m1.keys()}
    da = {s: ak[s] - a1[s] for s in ak.keys() & a1.keys()}
    return paired(dm, da)


ANALYSES = {"verify": _verify, "lr_sweep": _lr_sweep, "horizon": _horizon, "geodesic": _geodesic,
            "advanced": _advanced, "lazy_projection": _lazy}


# ---------------------------------------------------------------------------------------------------------------
# helpers shared by the analyses

def _tokens_per_step(preset: str) -> int:
    return get_config(preset).tokens_per_step


def _grid(r: Report, key: str) -> list:
    """The grid a choice was made from (as the campaign recorded it, extensions past an edge included)."""
    c = choice(r.m, key)
    return list(c["grid"]) if c else []


def _ms(row) -> str:
    if not row["n"]:
        return "n/a"
    return f"{row['mean']:.4f} ± {row['std']:.4f}" if row["n"] > 1 else f"{row['mean']:.4f}"


def _p(p: float) -> str:
    return "n/a" if p is None or math.isnan(p) else f"{p:.2g}"


def _to_target(curves: pd.DataFrame, muon_arm: str, adamw_arm: str, budget: int) -> dict | None:
    """Steps (and wall-clock fraction) Muon's mean val curve needs to reach AdamW's mean final val loss."""
    mc = curves[curves.arm == muon_arm]
    ac = curves[curves.arm == adamw_arm]
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


def _target_text(t: dict, budget: int) -> str:
    if not t:
        return "n/a"
    if t["steps"] is None:
        return "not reached"
    return f"{t['steps']:.0f} ({t['frac']:.0%})"


def _crossing(done: list[int], cmps: dict, r: Report) -> str:
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


def _trend(d: list[tuple[int, float]], r: Report) -> str:
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


def _grid_table(r: Report, df: pd.DataFrame, stage: str, title: str) -> None:
    if df.empty:
        return
    seeds = sorted(df.seed.unique())

    def section():
        st = arm_stats(df)
        t = pd.DataFrame({"arm": st.arm, "runs": st.n, "finished": st.finished, "diverged": st.diverged,
                          "failed/missing": st.failed,
                          "final val (mean ± std)": [_ms({"n": n, "mean": m, "std": s})
                                                     for n, m, s in zip(st.finished, st["mean"], st["std"])],
                          "min": st["min"].round(4), "max": st["max"].round(4)})
        return [f"## {title}", "", f"{ROLE.get(stage, stage).capitalize()} seeds {_seeds(seeds)}; final validation "
                "loss at the end of each run; an arm with a diverged seed is never chosen over one without.", "",
                t.to_markdown(index=False, floatfmt=".4f"), ""]
    r.sections.append(section)


def _curves(r: Report, df: pd.DataFrame, baseline: str | None, swept: str | None, what: str = "curves") -> None:
    curves = val_curves(df, r.preset)
    if curves.empty:
        return
    arms = _arms(df)
    if swept == "peak_lr":
        arms = arms.assign(peak_lr=[x.lr if x.optimizer == "muon" else x.adamw_lr for x in arms.itertuples()])
    fn = r.figname(what)
    plots.curves_figure(curves, arms, baseline, swept, f"{SPECS[r.name]['title']} ({r.preset})",
                        r.figdir() / fn)
    r.figures.append((fn, "validation loss per arm (mean over seeds, band: min–max; y-range: the last two-thirds "
                          "of training)" + (f", and the paired Δ against `{baseline}`" if baseline else "")))


# ---------------------------------------------------------------------------------------------------------------
# rendering

def _choices_lines(r: Report) -> list[str]:
    rows = [{"setting": c["key"], "value": c["value"], "chosen in": c["stage"],
             "seeds": _seeds(c["seeds"]) if c["seeds"] else "-", "how": c["why"]} for c in r.m.get("choices", [])]
    if not rows:
        return []
    return ["Settings, and where each came from:", "", pd.DataFrame(rows).to_markdown(index=False), ""]


def _measured_lines(r: Report) -> list[str]:
    p, cfg = r.params, get_config(r.preset)
    seeds, conf = p.get("seeds", []), p.get("confirm_seeds", [])
    b = r.budgets()
    steps = str(b[0]) if len(b) == 1 else f"{b[0]}–{b[-1]}"
    lines = [f"- Budget: {steps} steps × {cfg.batch_size} sequences × {cfg.seq_len} tokens = {r.budget()} "
             f"tokens per run (preset `{r.preset}`: {cfg.model}, {cfg.n_layer} layers, d={cfg.n_embd}, "
             f"{cfg.data}); metric: final validation loss (lower is better) on {cfg.val_batches} fixed val batches."]
    if conf:
        lines.append(f"- Seeds: selection seeds {_seeds(seeds)} pick every setting; the chosen arms and their "
                     f"baseline are rerun on fresh confirmation seeds {_seeds(conf)}, and the headline is judged "
                     "there only (the seeds that picked a winner never test it).")
    elif seeds:
        lines.append(f"- Seeds: {_seeds(seeds)}.")
    if r.comparisons:
        lines.append("- Statistics: a seed fixes the initialization and the batch order, so arms that share a seed "
                     "are paired. Δ = treatment − baseline per seed (< 0: the treatment is better); mean Δ ± the "
                     "half-width of its 95% t-interval; paired t-test p; Holm-adjusted p over all "
                     f"{len(r.comparisons)} comparisons of this report; MDE = the |Δ| these seeds would detect "
                     "with 80% power at the 5% level, from the observed spread of Δ. Comparisons on selection "
                     "seeds of a winner picked on those seeds are optimistic for it.")
    return ["## How it was measured", "", *lines, "", *_choices_lines(r)]


def _comparisons_lines(r: Report) -> list[str]:
    if not r.comparisons:
        return []
    t = pd.DataFrame([{"comparison": c.label, "seeds": f"{c.c.n} {c.seeds}", "Δ ± 95% CI": c.c.fmt(),
                       "paired p": _p(c.c.p), "Holm p": _p(c.p_adj),
                       "MDE": "n/a" if math.isnan(c.c.mde) else f"{c.c.mde:.4f}", "verdict": c.verdict()}
                      for c in r.comparisons])
    return ["## Comparisons", "", "Δ = first − second arm (negative: the first is better). Verdicts use the "
            f"Holm-adjusted p at the {ALPHA:.0%} level.", "", t.to_markdown(index=False), ""]


def _throughput_lines(r: Report) -> list[str]:
    st = arm_stats(r.df)
    if st.empty or st.tokens_per_s.isna().all():
        return []
    t = pd.DataFrame({"stage": st.stage, "arm": st.arm, "tokens/s (mean)": st.tokens_per_s.round(0),
                      "wall s per run (mean)": st.wall_s.round(0)})
    return ["## Throughput (indicative only)", "", "Measured while other jobs shared the machine (campaign "
            "workers run in parallel); not a comparison. See reports/BENCHMARKS.md for timings measured side by "
            "side.", "", t.to_markdown(index=False), ""]


def _bad_lines(r: Report) -> list[str]:
    bad = r.df[r.df.status != "finished"].drop_duplicates("run_id")
    if bad.empty:
        return []
    out = ["## Diverged, failed and unfinished runs", ""]
    for x in bad.itertuples():
        err = str(x.error).strip().splitlines()[0] if isinstance(x.error, str) and x.error.strip() else ""
        at = f" at step {int(x.diverged_at)}" if x.status == "diverged" and pd.notna(x.diverged_at) else ""
        # a run in progress and one never started read the same: the report depends on the committed records only
        status = "not finished yet" if x.status in ("running", "missing") else x.status
        out.append(f"- {x.arm} seed {x.seed} (`{x.run_id}`): {status}{at}{': ' + err if err else ''}")
    return out + [""]


def _rel(p: Path) -> str:
    p = Path(p)
    return os.path.relpath(p, ROOT) if p.resolve().is_relative_to(ROOT) else str(p)


def _metas(r: Report) -> list[dict]:
    """meta.json of the report's runs that have a final record (a run still training, or one not started, is left
    out: its commit is not behind any number, and a clone without its partial directory renders the same)."""
    metas = []
    for rid in r.df[~r.df.status.isin(["running", "missing"])].run_id.unique() if len(r.df) else []:
        with contextlib.suppress(FileNotFoundError, records.CorruptRecord):
            metas.append(records.read_json(runs_dir(r.preset) / rid / "meta.json"))
    return metas


def _environment_lines(r: Report) -> list[str]:
    metas = _metas(r)
    uniq = lambda key: sorted({str(m.get(key)) for m in metas})
    versions = sorted({", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v) for m in metas})
    nb = manifest_path(r.name, r.preset, r.tag).with_suffix(".ipynb")
    variant = f" -p ... (variant {r.tag})" if r.tag else ""
    what = f", variant {r.tag} (parameters: {r.params})" if r.tag else ""
    return ["## Environment", "",
            f"- preset `{r.preset}`{what}; "
            f"runs: {len(r.df)} ({r.df.run_id.nunique()} distinct); records in `{_rel(runs_dir(r.preset))}/`, "
            f"manifest `{_rel(manifest_path(r.name, r.preset, r.tag))}`",
            f"- git commit(s) of the runs: {', '.join(c[:12] for c in uniq('git_commit'))}; uncommitted code "
            f"changes: {', '.join(uniq('git_dirty'))}",
            *[f"- versions: {v}" for v in versions], f"- device(s): {'; '.join(uniq('device'))}",
            f"- executed notebook (not committed): `{_rel(nb)}`",
            f"- regenerate: `python -m lab campaign {r.name} --preset {r.preset}{variant}` (reuses finished runs) or "
            f"`python -m lab report {r.name} --preset {r.preset}{' --variant ' + r.tag if r.tag else ''}` "
            "(records only)", ""]


def analyse(name: str, preset: str = "cpu", tag: str = "") -> Report:
    """Read a campaign's records and run its analysis (comparisons Holm-adjusted, figures written)."""
    if name not in SPECS:
        raise ValueError(f"unknown report {name!r}; valid: {', '.join(SPECS)}, all")
    m = read_manifest(name, preset, tag)  # CorruptRecord names the file
    if m is None:
        raise FileNotFoundError(f"no records of campaign {name} at preset {preset}: run `python -m lab campaign "
                                f"{name} --preset {preset}` first (looked for {manifest_path(name, preset, tag)})")
    r = Report(name, preset, tag, m, results(name, preset, tag, m=m))
    if r.df.empty:
        raise FileNotFoundError(f"campaign {name} at preset {preset} has a manifest but no runs yet")
    ANALYSES[name](r)
    for c, p in zip(r.comparisons, holm([c.c.p for c in r.comparisons])):
        c.p_adj = p
    return r


def render_report(name: str, preset: str = "cpu", tag: str = "") -> str:
    """Render the report of a campaign (reports/<FILE>.md for the cpu preset at default parameters, else
    reports/<preset>/<FILE>[-<tag>].md) from its records; return the markdown. `name == "all"` renders every
    campaign with records at `preset` and the index."""
    if name == "all":
        names = [n for n in SPECS if manifest_path(n, preset).exists()]
        if not names:
            raise FileNotFoundError(f"no campaign records at preset {preset} under {_rel(runs_dir(preset))}: run "
                                    f"`python -m lab campaign all --preset {preset}` first")
        texts = [render_report(n, preset) for n in names]
        return "\n\n".join([*texts, render_index(preset)])
    r = analyse(name, preset, tag)
    spec = SPECS[name]
    answer = " ".join(f() for f in r.answer)
    lines = [f"# {spec['title']}", "", f"**Question.** {spec['question']}", "",
             f"**Answer (at {r.budget()} tokens).** {answer}", "", *_measured_lines(r), *_comparisons_lines(r)]
    for section in r.sections:
        lines += section()
    if r.figures:
        lines += ["## Figures", ""] + [f"![{cap}](figs/{fn})\n\n*{cap}.*\n" for fn, cap in r.figures]
    lines += [*_throughput_lines(r), *_bad_lines(r), *_environment_lines(r)]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip() + "\n"
    stem = Path(spec["file"]).stem
    out = reports_dir(preset, tag) / (f"{stem}-{tag}.md" if tag else spec["file"])
    records.atomic_write(out, text)
    return text


def _commit_date(sha: str) -> str:
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs", sha], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render_index(preset: str = "cpu") -> str:
    """reports/INDEX.md (reports/<preset>/INDEX.md for other presets): one row per campaign, the chain of
    settings, and the research plan's hypotheses with a verdict each. From the default-parameter records only."""
    rows, chain, reps = [], [], {}
    for name, spec in SPECS.items():
        if not manifest_path(name, preset).exists():
            rows.append({"campaign": name, "question": spec["question"], "answer": "not run yet", "budget": "-",
                         "date": "-", "commit": "-", "report": "-"})
            continue
        r = reps[name] = analyse(name, preset)
        commits = sorted({m.get("git_commit") for m in _metas(r) if m.get("git_commit")},
                         key=lambda c: (_commit_date(c), c))
        answer = " ".join(f() for f in r.answer).split(". ")[0].rstrip(".") + "."
        rows.append({"campaign": name, "question": spec["question"], "answer": answer,
                     "budget": f"{r.budget()} tokens/run", "date": _commit_date(commits[-1]) if commits else "-",
                     "commit": commits[-1][:10] if commits else "-", "report": f"[{spec['file']}]({spec['file']})"})
        for c in r.m.get("choices", []):
            if c["stage"] == "upstream" or name == "lr_sweep":
                chain.append({"campaign": name, "setting": c["key"], "value": c["value"], "from": c["why"]})
    hyp = []
    for name, key, statement in HYPOTHESES:
        c = reps[name].get(key) if name in reps else None
        if c is None or c.c.n == 0:
            v, ev = "not tested yet", "-"
        else:
            v = {"wins": "supported", "loses": "contradicted (the opposite is significant)",
                 "no significant difference": f"not supported: no significant difference (MDE {c.c.mde:.3f})",
                 "not enough seeds": "not enough seeds"}[c.verdict()]
            ev = f"{SPECS[name]['file']}: {c.label}: {c.text()}"
        hyp.append({"hypothesis (research plan)": statement, "verdict": v, "evidence": ev})
    lines = ["# Lab index: how should Muon be run on nGPT?", "",
             f"Rendered by `python -m lab report all --preset {preset}` from the run records under "
             f"`{_rel(runs_dir(preset))}/` (campaigns at their notebooks' default parameters). Every answer is "
             "judged on confirmation seeds that did not pick the winner, as Δ ± 95% CI with Holm-adjusted p; see "
             "each report for the details.", "", "## Campaigns", "",
             pd.DataFrame(rows).to_markdown(index=False), "", "## Hypotheses of the research plan", "",
             pd.DataFrame(hyp).to_markdown(index=False), ""]
    if chain:
        lines += ["## Chain of settings (which value came from which campaign's runs)", "",
                  pd.DataFrame(chain).to_markdown(index=False), ""]
    text = "\n".join(lines).rstrip() + "\n"
    records.atomic_write(reports_dir(preset) / "INDEX.md", text)
    return text


def show(name: str, preset: str = "cpu", tag: str = "") -> str:
    """In a notebook: render the report, display it (text and tables) and its figures inline; return the path."""
    from IPython.display import Image, Markdown, display
    text = render_report(name, preset, tag)
    display(Markdown(re.sub(r"!\[[^\]]*\]\([^)]*\)\n?", "", text)))
    for png in re.findall(r"!\[[^\]]*\]\(([^)]*)\)", text):
        display(Image(filename=str(reports_dir(preset, tag) / png)))
    stem = Path(SPECS[name]["file"]).stem
    return str(reports_dir(preset, tag) / (f"{stem}-{tag}.md" if tag else SPECS[name]["file"]))
