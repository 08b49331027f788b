"""reports/INDEX.md, the lab log: one row per campaign of the registry (its question, a one-sentence answer, budget,
date and commit of its runs, link), the hypotheses the campaigns declare with a verdict each, and the chain of
settings (which value came from which campaign's runs). From the default-parameter records only; a campaign whose
report cannot be rendered gets a row saying why, and the index is written anyway."""
from __future__ import annotations

import subprocess

import pandas as pd

from lab import campaigns, family, records
from lab.report import analyse
from lab.results import ROOT, manifest_path, reports_dir, runs_dir
from lab.stats import DELTA, fmt_judgement
from lab.tables import metas, rel, seeds_text


def _commit_date(sha: str) -> str:
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs", sha], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render_index(preset: str = "cpu") -> tuple:
    """Write reports/INDEX.md (reports/<preset>/INDEX.md for other presets); return (its path, what failed)."""
    rows, chain, reps, failed = [], [], {}, []
    mods = {n: campaigns.get(n) for n in campaigns.names(lab_notebook=True)}
    for name, mod in mods.items():
        row = {"campaign": name, "question": mod.QUESTION, "answer": "not run yet", "budget": "-", "date": "-",
               "commit": "-", "report": "-"}
        if manifest_path(name, preset).exists():
            try:
                r = reps[name] = analyse(name, preset)
            except Exception as e:  # noqa: BLE001 - the index says which report failed, and why
                failed.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                rows.append({**row, "answer": f"could not be rendered: {failed[-1]}"})
                continue
            commits = sorted({m.get("git_commit") for m in metas(r) if m.get("git_commit")},
                             key=lambda c: (_commit_date(c), c))
            answer = " ".join(f() for f in r.answer).split(". ")[0].rstrip(".") + "."
            row.update(answer=answer, budget=f"{r.budget()} tokens/run",
                       date=_commit_date(commits[-1]) if commits else "-",
                       commit=commits[-1][:10] if commits else "-", report=f"[{mod.REPORT}]({mod.REPORT})")
            for c in r.m.get("choices", []):
                if c["stage"] == "upstream" or not _reads_upstream(r):  # where settings come from
                    chain.append({"campaign": name, "setting": c["key"], "value": c["value"], "from": c.get("why")})
        rows.append(row)
    hyp = _hypotheses(preset, reps)
    lines = ["# Lab index: how should Muon be run on nGPT?", "",
             f"Rendered by `python -m lab report all --preset {preset}` from the run records under "
             f"`{rel(runs_dir(preset))}/` (campaigns at their notebooks' default parameters). Every answer is "
             "judged on confirmation seeds that did not pick the winner; the verdicts below are the lab-wide "
             f"confirmatory family of `lab/family.py` ({len(family.FAMILY)} comparisons declared before their runs, "
             f"Holm over them only, δ = {DELTA:g} nats; see each report's method section).", "", "## Campaigns", "",
             pd.DataFrame(rows).to_markdown(index=False), "", "## Hypotheses of the research plan", "",
             "better / worse: Holm p < 0.05 (95% interval); equivalent: the 90% interval inside ±δ (two one-sided "
             "tests, Holm-adjusted); inconclusive: neither (interval at the level matching its Holm p; the seeds "
             "that would resolve it in the report). Scale: the cpu preset (about 1M parameters, byte-level "
             "Shakespeare, 0.2M–1.6M tokens per run).", "",
             pd.DataFrame(hyp).to_markdown(index=False), ""]
    if chain:
        lines += ["## Chain of settings (which value came from which campaign's runs)", "",
                  pd.DataFrame(chain).to_markdown(index=False), ""]
    path = reports_dir(preset) / "INDEX.md"
    records.atomic_write(path, "\n".join(lines).rstrip() + "\n")
    return path, failed


def _hypotheses(preset: str, reps: dict) -> list[dict]:
    """One row per comparison of the confirmatory family (its four-way verdict), then the rows campaigns add with
    `index_rows(r)` (e.g. horizon's speedup and lr law)."""
    judged, rows = family.judge_all(preset), []
    for c in family.FAMILY:
        j = judged[c.key]
        mod = campaigns.registry().get(c.campaign)
        link = f"[{mod.REPORT}]({mod.REPORT})" if mod is not None and c.campaign in reps else "-"
        rows.append({"hypothesis": c.hypothesis, "plan expected": c.expectation or "-",
                     "verdict": j.verdict if j.n >= 2 else "not tested yet" if j.n == 0 else "1 seed: no test",
                     "Δ [interval]": fmt_judgement(j) if j.n else "-",
                     "confirmation seeds": seeds_text(j.c.seeds) if j.n else "-", "report": link})
    for name, r in reps.items():
        extra = getattr(campaigns.get(name), "index_rows", None)
        for row in (extra(r) if extra else []):
            rows.append({k: row.get(k, "-") for k in ("hypothesis", "plan expected", "verdict", "Δ [interval]",
                                                       "confirmation seeds")} | {"report": f"[{r.module.REPORT}]"
                                                                                 f"({r.module.REPORT})"})
    return rows


def _reads_upstream(r) -> bool:
    """A campaign that takes its settings from another's records (its choices of stage "upstream")."""
    return any(c["stage"] == "upstream" for c in r.m.get("choices", []))
