"""reports/INDEX.md, the lab log: one row per campaign of the registry (its question, a one-sentence answer, budget,
date and commit of its runs, link), the hypotheses the campaigns declare with a verdict each, and the chain of
settings (which value came from which campaign's runs). From the default-parameter records only; a campaign whose
report cannot be rendered gets a row saying why, and the index is written anyway."""
from __future__ import annotations

import subprocess

import pandas as pd

from lab import campaigns, records
from lab.report import analyse
from lab.results import ROOT, manifest_path, reports_dir, runs_dir
from lab.tables import metas, rel

VERDICT = {"wins": "supported", "loses": "contradicted (the opposite is significant)",
           "not enough seeds": "not enough seeds"}


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
    hyp = []
    for name, mod in mods.items():
        for key, statement in mod.HYPOTHESES:
            c = reps[name].get(key) if name in reps else None
            if c is None or c.c.n == 0:
                v, ev = "not tested yet", "-"
            else:
                v = VERDICT.get(c.verdict(), f"not supported: no significant difference (MDE {c.c.mde:.3f})")
                ev = f"{mod.REPORT}: {c.label}: {c.text()}"
            hyp.append({"hypothesis (research plan)": statement, "verdict": v, "evidence": ev})
    lines = ["# Lab index: how should Muon be run on nGPT?", "",
             f"Rendered by `python -m lab report all --preset {preset}` from the run records under "
             f"`{rel(runs_dir(preset))}/` (campaigns at their notebooks' default parameters). Every answer is "
             "judged on confirmation seeds that did not pick the winner, as Δ ± 95% CI with Holm-adjusted p; see "
             "each report for the details.", "", "## Campaigns", "",
             pd.DataFrame(rows).to_markdown(index=False), "", "## Hypotheses of the research plan", "",
             pd.DataFrame(hyp, columns=["hypothesis (research plan)", "verdict", "evidence"]).to_markdown(index=False),
             ""]
    if chain:
        lines += ["## Chain of settings (which value came from which campaign's runs)", "",
                  pd.DataFrame(chain).to_markdown(index=False), ""]
    path = reports_dir(preset) / "INDEX.md"
    records.atomic_write(path, "\n".join(lines).rstrip() + "\n")
    return path, failed


def _reads_upstream(r) -> bool:
    """A campaign that takes its settings from another's records (its choices of stage "upstream")."""
    return any(c["stage"] == "upstream" for c in r.m.get("choices", []))
