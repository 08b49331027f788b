"""Running campaigns (lab/campaigns/<name>.py): check the parameters, execute the stages, render the report.

    run_campaign(name, preset, params)   check params, then execute notebooks/<name>.ipynb with papermill
    run_stages(name, values)             the stages of a campaign in this process (what the notebook calls)
    run_headless(name, preset, **params) stages and report without papermill or jupyter (a bare GPU box)
    check_params(name, params)           coerce and check a campaign's parameters (before papermill, and in it)

A campaign runs in stages (lab.grid.Grid). A stage that picks a setting (best lr, best feature) runs its grid on
the selection `seeds`; the chosen arm and its baseline are then rerun on fresh `confirm_seeds` (disjoint), and
reports judge the winner only there. Every choice is written to the manifest with the grid and seeds it came from.
A run's identity is its config hash (Config.run_id), so a rerun reuses every finished or diverged run (in any
campaign), resumes a partial one and retries a failed one.

This module imports only lab.params, lab.config and the registry at the top: a bad parameter is refused before
torch, pandas or papermill is imported.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from lab import campaigns, params

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


class CampaignPending(RuntimeError):
    """A stage cannot choose yet: some of its runs, or a campaign it reads, are being run by another process."""


def notebook_path(name: str) -> Path:
    return NOTEBOOKS / f"{campaigns.get(name).NAME}.ipynb"


def check_params(name: str, values: dict) -> dict:
    """`values` coerced to the declared types and checked (lab.params.check); ValueError names the bad value."""
    return params.check(campaigns.get(name), values)


def variant_tag(name: str, values: dict) -> str:
    return params.variant_tag(campaigns.get(name), values)


def report_path(name: str, values: dict) -> Path:
    from lab.report import report_file
    return report_file(campaigns.get(name), values["preset"], variant_tag(name, values))


def _rel(p: Path) -> str:
    return os.path.relpath(p, ROOT) if Path(p).resolve().is_relative_to(ROOT) else str(p)


def run_stages(name: str, values: dict):
    """Run a campaign's stages with checked `values` in this process; return its results (one row per run)."""
    from lab.grid import Grid
    module = campaigns.get(name)
    with Grid(name, values, tag=params.variant_tag(module, values), params=params.result_params(module, values),
              arm_tags=getattr(module, "arm_tags", None), named=bool(values.get("tag"))) as g:
        module.stages(g, values)
        df = g.results()
    return df


def run_headless(name: str, preset: str = "cpu", **given) -> Path:
    """Run a campaign's stages and render its report without papermill or jupyter; return the report's path."""
    from lab.report import render_report
    values = check_params(name, {**given, "preset": preset})
    run_stages(name, values)
    render_report(name, preset, variant_tag(name, values))
    out = report_path(name, values)
    print(f"[lab] campaign {name}: report {_rel(out)}", flush=True)
    return out


def run_campaign(name: str, preset: str = "cpu", given: dict | None = None) -> Path:
    """Check the parameters, then execute notebooks/<name>.ipynb with papermill into
    runs/<preset>/campaigns/<name>[-<tag>].ipynb (not committed); the notebook renders the report, whose path is
    returned (and printed as the last line).

    `name == "all"` runs every lab-notebook campaign in order (a parameter goes to each campaign that declares it;
    every campaign's share is checked before the first one runs), then re-renders reports/INDEX.md.
    """
    given = dict(given or {})
    if "preset" in given:
        raise ValueError("campaign: give the preset with --preset, not as a parameter")
    if name == "all":
        order = campaigns.names(lab_notebook=True)
        declared = {k for n in order for k in params.spec(campaigns.get(n))}
        unknown = sorted(set(given) - declared)
        if unknown:
            hint = "".join(params.did_you_mean(u, declared) for u in unknown)
            raise ValueError(f"campaign all: unknown parameter(s) {unknown}{hint}; valid parameters: "
                             f"{sorted(declared)}")
        shares = {n: {k: v for k, v in given.items() if k in params.spec(campaigns.get(n))} for n in order}
        for n in order:
            check_params(n, {**shares[n], "preset": preset})
        for n in order:
            run_campaign(n, preset, shares[n])
        from lab.index import render_index
        path, failed = render_index(preset)
        for f in failed:
            print(f"[lab] INDEX: could not render {f}", file=sys.stderr, flush=True)
        print(f"[lab] campaign all: index {_rel(path)}", flush=True)
        return path
    values = check_params(name, {**given, "preset": preset})  # refused here, before papermill starts
    import papermill as pm  # lazily: run_headless and the stages work without it
    tag = variant_tag(name, values)
    from lab.results import manifest_path
    out = manifest_path(name, preset, tag).with_suffix(".ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("WANDB_NOTEBOOK_NAME", f"{name}.ipynb")
    shown = {k: values[k] for k in given}
    print(f"[lab] campaign {name} (preset {preset}{', variant ' + tag if tag else ''}) {shown or ''} -> {_rel(out)}",
          flush=True)
    try:
        pm.execute_notebook(str(notebook_path(name)), str(out), parameters=values, kernel_name="python3",
                            language="python", cwd=str(ROOT), progress_bar=False, stdout_file=sys.stdout,
                            stderr_file=sys.stderr, kernel_manager_class="lab.kernel.QuietKernelManager")
    except pm.PapermillExecutionError as e:
        if e.ename == "CampaignPending":
            raise CampaignPending(e.evalue) from None
        if e.ename == "ValueError":
            raise ValueError(e.evalue) from None
        raise RuntimeError(f"campaign {name}: cell {e.exec_count} raised {e.ename}: {e.evalue} "
                           f"(the executed notebook with the traceback: {out})") from e
    path = report_path(name, values)
    print(f"[lab] campaign {name}: report {_rel(path)}", flush=True)
    return path


def show(name: str, values: dict) -> str:
    """In a notebook: render the report, display it and its figures inline; return its path."""
    from lab.report import show as _show
    return _show(name, values)


def help_text(name: str) -> str:
    """`python -m lab campaign NAME --help`: the question and every parameter with its type, default and help."""
    module = campaigns.get(name)
    rows = [f"  {k}: {params.type_name(p.type)} = {p.default!r}\n      {p.help}"
            for k, p in params.spec(module).items() if k != "preset"]
    doc = " ".join((module.__doc__ or "").split())
    return (f"campaign {name}: {module.QUESTION}\n\n{doc}\n\nparameters (-p NAME VALUE; lists and dicts as JSON or "
            f"Python literals):\n" + "\n".join(rows) + f"\n\nreport: reports/[<preset>/]{module.REPORT}")
