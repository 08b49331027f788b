"""The markdown of a report's shared sections, from its records and its comparisons: how it was measured (budget,
seeds, statistics, the settings chosen and where from), the comparisons table, an arm table per stage,
throughput, bad runs and the environment (commits, versions, devices, the command that regenerates it).
Names no campaign: each campaign's own sections are written by its module's `analyse`."""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import pandas as pd

from lab import records
from lab.config import get_config
from lab.results import ROOT, arm_stats, manifest_path, runs_dir
from lab.stats import ALPHA, DELTA

ROLE = {"select": "selection", "aux": "selection", "confirm": "confirmation", "run": "run"}


def seeds_text(seeds) -> str:
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def ms(row) -> str:
    """'mean ± std' of a row with n, mean, std."""
    if not row["n"]:
        return "n/a"
    return f"{row['mean']:.4f} ± {row['std']:.4f}" if row["n"] > 1 else f"{row['mean']:.4f}"


def p_text(p: float) -> str:
    return "n/a" if p is None or math.isnan(p) else f"{p:.2g}"


def rel(p: Path) -> str:
    p = Path(p)
    return os.path.relpath(p, ROOT) if p.resolve().is_relative_to(ROOT) else str(p)


def grid_table(df: pd.DataFrame, stage: str, title: str) -> list[str]:
    """An arm table: runs, finished, diverged, failed (every run without a final loss), mean ± std, min, max."""
    st = arm_stats(df)
    t = pd.DataFrame({"arm": st.arm, "runs": st.n, "finished": st.finished, "diverged": st.diverged,
                      "failed/missing": st.failed,
                      "final val (mean ± std)": [ms({"n": n, "mean": m, "std": s})
                                                 for n, m, s in zip(st.finished, st["mean"], st["std"])],
                      "min": st["min"].round(4), "max": st["max"].round(4)})
    return [f"## {title}", "", f"{ROLE.get(stage, stage).capitalize()} seeds {seeds_text(sorted(df.seed.unique()))}; "
            "final validation loss at the end of each run; an arm with a diverged seed is never chosen over one "
            "without.", "", t.to_markdown(index=False, floatfmt=".4f"), ""]


def choices_lines(r) -> list[str]:
    rows = [{"setting": c["key"], "value": c["value"], "chosen in": c["stage"],
             "seeds": seeds_text(c["seeds"]) if c.get("seeds") else "-", "how": c.get("why", "")}
            for c in r.m.get("choices", [])]
    if not rows:
        return []
    return ["Settings, and where each came from:", "", pd.DataFrame(rows).to_markdown(index=False), ""]


def measured_lines(r) -> list[str]:
    p, cfg = r.params, get_config(r.preset)
    seeds, conf = p.get("seeds", []), p.get("confirm_seeds", [])
    b = r.budgets()
    steps = str(b[0]) if len(b) == 1 else f"{b[0]}–{b[-1]}"
    lines = [f"- Budget: {steps} steps × {cfg.batch_size} sequences × {cfg.seq_len} tokens = {r.budget()} "
             f"tokens per run (preset `{r.preset}`: {cfg.model}, {cfg.n_layer} layers, d={cfg.n_embd}, "
             f"{cfg.data}); metric: final validation loss (lower is better) on {cfg.val_batches} fixed val batches."]
    if conf:
        lines.append(f"- Seeds: selection seeds {seeds_text(seeds)} pick every setting; the chosen arms and their "
                     f"baseline are rerun on fresh confirmation seeds {seeds_text(conf)}, and the headline is judged "
                     "there only (the seeds that picked a winner never test it).")
    elif seeds:
        lines.append(f"- Seeds: {seeds_text(seeds)}.")
    if r.comparisons:
        lines.append("- Statistics: a seed fixes the initialization and the batch order, so arms that share a seed "
                     "are paired. Δ = treatment − baseline per seed (< 0: the treatment is better); mean Δ ± the "
                     "half-width of its 95% t-interval; paired t-test p; MDE = the |Δ| these seeds would detect "
                     "with 80% power at the 5% level (noncentral t), from the observed spread of Δ. "
                     + ("Holm-adjusted p over the comparisons of this report (an ad-hoc campaign)."
                        if getattr(r.module, "ADHOC", False) else
                        "This report's own comparisons are exploratory (no multiplicity adjustment, no verdict); "
                        "verdicts come only from the lab-wide confirmatory family (lab/family.py: Holm over it, "
                        f"smallest effect of interest δ = {DELTA:g} nats, confirmation seeds only).")
                     + " Comparisons on selection seeds of a winner picked on those seeds are optimistic for it.")
    return ["## How it was measured", "", *lines, "", *choices_lines(r)]


def comparisons_lines(r) -> list[str]:
    """An ad-hoc campaign's comparisons with verdicts (Holm over the report); a lab-notebook campaign's are
    exploratory: intervals only, no verdict words (its verdicts come from the confirmatory family)."""
    if not r.comparisons:
        return []
    adhoc = getattr(r.module, "ADHOC", False)
    t = pd.DataFrame([{"comparison": c.label, "seeds": f"{c.c.n} {c.seeds}", "Δ ± 95% CI": c.c.fmt(),
                       "paired p": p_text(c.c.p), **({"Holm p": p_text(c.p_adj)} if adhoc else {}),
                       "MDE": "n/a" if math.isnan(c.c.mde) else f"{c.c.mde:.4f}",
                       **({"verdict": c.verdict()} if adhoc else {})} for c in r.comparisons])
    if adhoc:
        return ["## Comparisons", "", "Δ = first − second arm (negative: the first is better). Verdicts use the "
                f"Holm-adjusted p at the {ALPHA:.0%} level.", "", t.to_markdown(index=False), ""]
    return ["## Exploratory comparisons", "", "Δ = first − second arm (negative: the first is better), 95% "
            "t-interval, unadjusted p. Exploratory: selection-seed rows and grids inform the picks; they carry no "
            "verdict (the verdicts are the confirmatory table's).", "", t.to_markdown(index=False), ""]


def judgement_text(j) -> str:
    """'better: Δ = -0.0892 [-0.1230, -0.0554] (95%), Holm p 0.012, 6 confirmation seeds'."""
    from lab.stats import fmt_judgement, fmt_seeds_needed
    extra = f"; {fmt_seeds_needed(j.needed)}" if j.verdict == "inconclusive" and j.n >= 2 else ""
    return (f"{j.verdict}: Δ = {fmt_judgement(j)} nats, Holm p {p_text(j.p_holm)}, Holm TOST p "
            f"{p_text(j.p_tost_holm)}, {j.n} confirmation seed{'s' if j.n != 1 else ''}{extra}")


def confirmatory_lines(r, entries, family_size: int) -> list[str]:
    """The campaign's entries of the lab-wide confirmatory family: hypothesis, the plan's expectation, verdict."""
    from lab.family import CONFIRM_SEEDS
    from lab.stats import DELTA
    rows = []
    for c in entries:
        j = r.judgements[c.key]
        rows.append({"hypothesis": c.hypothesis, "plan expected": c.expectation or "-",
                     **{k: v for k, v in j.row().items() if k not in ("p",)}})
    return ["## Confirmatory comparisons (the lab-wide family)", "",
            f"Declared in `lab/family.py` before the runs: {family_size} comparisons in all, Holm over that family "
            f"only (a comparison without data counts as p = 1). Judged on the confirmation seeds "
            f"{seeds_text(CONFIRM_SEEDS)} only. Smallest effect of interest δ = {DELTA:g} nats. Verdicts: **better** "
            "/ **worse** (Holm p < 0.05; 95% interval), **equivalent** (both one-sided tests of |Δ| < δ, "
            "Holm-adjusted, p < 0.05: the 90% interval lies inside ±δ), **inconclusive** (neither; the interval is "
            "at the level matching its Holm p, and 'seeds to resolve' is estimated from the observed spread). "
            "Δ = treatment − control (negative: the treatment reaches a lower loss).", "",
            pd.DataFrame(rows).to_markdown(index=False), ""]


def throughput_lines(r) -> list[str]:
    st = arm_stats(r.df)
    if st.empty or st.tokens_per_s.isna().all():
        return []
    t = pd.DataFrame({"stage": st.stage, "arm": st.arm, "tokens/s (mean)": st.tokens_per_s.round(0),
                      "wall s per run (mean)": st.wall_s.round(0)})
    return ["## Throughput (indicative only)", "", "Measured while other jobs shared the machine (campaign "
            "workers run in parallel); not a comparison. See reports/BENCHMARKS.md for timings measured side by "
            "side.", "", t.to_markdown(index=False), ""]


def bad_lines(r) -> list[str]:
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


def metas(r) -> list[dict]:
    """meta.json of the report's runs that have a final record (a run still training, or one not started, is left
    out: its commit is not behind any number, and a clone without its partial directory renders the same)."""
    out = []
    for rid in r.df[~r.df.status.isin(["running", "missing"])].run_id.unique() if len(r.df) else []:
        with contextlib.suppress(FileNotFoundError, records.CorruptRecord):
            m = records.read_json(runs_dir(r.preset) / rid / "meta.json")
            out.append(m if isinstance(m, dict) else {})
    return out


def environment_lines(r, regenerate: str) -> list[str]:
    ms_ = metas(r)
    uniq = lambda key: sorted({str(m.get(key)) for m in ms_})
    versions = sorted({", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v) for m in ms_})
    nb = manifest_path(r.name, r.preset, r.tag).with_suffix(".ipynb")
    what = f", variant {r.tag}" if r.tag else ""
    return ["## Environment", "",
            f"- preset `{r.preset}`{what}; "
            f"runs: {len(r.df)} ({r.df.run_id.nunique()} distinct); records in `{rel(runs_dir(r.preset))}/`, "
            f"manifest `{rel(manifest_path(r.name, r.preset, r.tag))}`",
            f"- git commit(s) of the runs: {', '.join(c[:12] for c in uniq('git_commit'))}; uncommitted code "
            f"changes: {', '.join(uniq('git_dirty'))}",
            *[f"- versions: {v}" for v in versions], f"- device(s): {'; '.join(uniq('device'))}",
            f"- executed notebook (not committed): `{rel(nb)}`",
            f"- regenerate: `{regenerate}` (reuses finished runs) or "
            f"`python -m lab report {r.name} --preset {r.preset}{' --variant ' + r.tag if r.tag else ''}` "
            "(records only)", ""]
