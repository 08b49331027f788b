"""What the sphere campaigns (advanced, geodesic, lazy_projection) share: lr grids tuned per arm on their own ladder
and extended past a winning edge, and the parts of their reports: the lab-wide family's verdicts (lab/family.py)
with the plan's expectations beside them, exploratory rows (an interval, no verdict words), the tuning effort per
arm family, and figures of at most six lines whose captions name the seeds. Not a campaign (the registry skips
modules whose name starts with _); light at import, like the campaign modules."""
from __future__ import annotations

import json

from lab import family
from lab.arms import EXTEND_EDGES, grid_edge

MAX_LINES = 6  # lines per axes in a figure (small multiples beyond)


def beyond_sqrt2(grid: list[float], best: float | None) -> float | None:
    """The value past the edge of a √2 ladder that `best` sits on: twice (half) the value one step inside the upper
    (lower) edge, so the ladder's rounded values recur (0.0325 -> 0.046, 0.0163 -> 0.0115, 0.0113 -> 0.016);
    None when `best` is inside (or missing)."""
    side, g = grid_edge(grid, best), sorted(grid)
    return 2 * g[-2] if side == "highest" else g[1] / 2 if side == "lowest" else None


def tune(g, stage: str, grids: dict, arm, name, seeds, beyond=beyond_sqrt2):
    """Grid.run_grids with the extension rule as a parameter: every group's grid ({group: [values]}; arm(group, x)
    -> overrides or (overrides, tags); name(group, x) -> label) on `seeds`; while a group's best sits on an edge,
    the value `beyond` it is added (at most EXTEND_EDGES times per group). Returns this stage's rows and the final
    grids {group: {label: value}} (ascending)."""
    from lab.results import best_arm
    grids = {k: sorted(v) for k, v in grids.items()}
    df = g.run(stage, {name(k, x): arm(k, x) for k, xs in grids.items() for x in xs}, seeds)
    for _ in range(EXTEND_EDGES):
        new = {}
        for k, xs in grids.items():
            best = best_arm(df[df.arm.isin([name(k, x) for x in xs])])
            x = beyond(xs, next((x for x in xs if name(k, x) == best), None))
            if x is not None:
                grids[k] = sorted([*xs, x])
                new[name(k, x)] = arm(k, x)
        if not new:
            break
        df = g.run(stage, new, seeds)
    return df, {k: {name(k, x): x for x in xs} for k, xs in grids.items()}


# --- reports ------------------------------------------------------------------------------------------------------

def judged(r, key: str, what: str) -> str:
    """One sentence per family entry: what, its verdict and numbers, and what the plan expected."""
    return f"{what[:1].upper()}{what[1:]}: {r.verdict_text(key)} (the plan expected: {family.entry(key).expectation})."


def explore(r, treat: str | None, base: str | None, stage: str, label: str | None = None, key: str = "",
            base_stage: str | None = None):
    """An exploratory comparison (an interval, no verdict words): treat − base per seed over the seeds both finished
    (treat in `stage`, base in `base_stage`, default the same); None when an arm is missing."""
    from lab.stats import paired
    if not (treat and base):
        return None
    c = paired(r.finals(treat, stage), r.finals(base, base_stage or stage))
    return r.add(label or f"`{treat}` vs `{base}`", "confirm" if stage == "confirm" else "select", c, key)


def interval(cmp) -> str:
    """'Δ = -0.0123 [-0.0300, +0.0054] (95%) nats on 2 selection seeds': an exploratory row, no verdict words."""
    from lab.stats import fmt_paired
    if cmp is None or cmp.c.n == 0:
        return "not measured yet"
    return f"Δ = {fmt_paired(cmp.c)} nats on {cmp.c.n} {cmp.seeds} seed{'s' if cmp.c.n != 1 else ''}"


def arm_or_none(r, df, **tags) -> str | None:
    """The one arm of `df` with these tags, None when none does or when several do (an old manifest's rows)."""
    try:
        return r.arm_of(df, **tags)
    except ValueError:
        return None


def mean(r, arm: str | None, stage: str) -> float | None:
    f = r.finals(arm, stage)
    return sum(f.values()) / len(f) if f else None


def upstream_trials(r, optimizer: str) -> int | None:
    """Settings lr_sweep tried for `optimizer` before its confirmation (distinct overrides), None without its
    default-parameter records at this preset."""
    from lab import records
    from lab.results import read_manifest
    try:
        m = read_manifest("lr_sweep", r.preset)
    except records.CorruptRecord:
        return None
    if m is None:
        return None
    rows = [x for x in m["runs"] if x["stage"] != "confirm" and (x.get("tags") or {}).get("optimizer") == optimizer]
    return len({json.dumps(x.get("overrides", {}), sort_keys=True) for x in rows}) or None


def trials_lines(r, rows: list[tuple[str, str, object]], note: str = "") -> list[str]:
    """The tuning effort per arm family: rows of (arm family, what was tuned, rows of this report's results or an
    int for settings tried elsewhere): distinct settings tried and runs (selection seeds)."""
    import pandas as pd

    from lab.tables import seeds_text
    out = []
    for fam, what, df in rows:
        if isinstance(df, int) or df is None:
            out.append({"arm family": fam, "tuned": what, "settings tried": df if df is not None else "n/a",
                        "runs": "-", "seeds": "-"})
        elif len(df):
            out.append({"arm family": fam, "tuned": what, "settings tried": df.arm.nunique(), "runs": len(df),
                        "seeds": seeds_text(sorted(df.seed.unique()))})
    if not out:
        return []
    return ["## Tuning effort per arm family", "", "Settings tried on the selection seeds before anything was "
            "confirmed (a setting: one arm's config; a grid's values past a winning edge included)." +
            (f" {note}" if note else ""), "", pd.DataFrame(out).to_markdown(index=False), ""]


def curves(r, df, baseline: str | None, what: str, lead: str) -> None:
    """Validation curves of the (at most MAX_LINES) arms of `df` and the paired Δ against `baseline`, captioned with
    the seeds they are on; a single seed has no band."""
    from lab.tables import ROLE, seeds_text
    arms = list(dict.fromkeys(df.arm))
    if not arms:
        return
    left = arms[MAX_LINES:]  # a non-default grid with more arms: the first MAX_LINES are drawn, the caption says so
    df = df[df.arm.isin(arms[:MAX_LINES])]
    n = len(r.figures)
    r.curves(df, baseline, None, what)
    if len(r.figures) == n:  # no finished run with curves yet
        return
    fin = df[df.status == "finished"]
    seeds = sorted(int(s) for s in fin.seed.unique())
    role = ROLE.get(df.stage.iloc[0], "selection") if len(df) else "selection"
    band = "band: min–max over seeds" if len(seeds) > 1 else "one seed, so no band"
    r.figures[-1] = (r.figures[-1][0], f"{lead}, {role} seeds {seeds_text(seeds)}: validation loss per arm (mean over "
                     f"seeds, {band}; y-range: the last two-thirds of training)"
                     + (f", and the Δ against `{baseline}` paired by seed" if baseline else "")
                     + (f"; not drawn (more than {MAX_LINES} lines): {', '.join(left)}" if left else ""))


def seeds_of(df) -> str:
    from lab.tables import seeds_text
    return seeds_text(sorted(int(s) for s in df.seed.unique()))


def param(r, key: str):
    """The report's parameter `key`: as its manifest records it, else its default today (a manifest written
    before the parameter existed)."""
    from lab.params import defaults
    return r.params[key] if key in r.params else defaults(r.module).get(key)
