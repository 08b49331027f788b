"""Reading campaigns back from their records: manifests and run directories -> pandas. Below campaign.py and
report.py (both use it; it uses neither), so a report renders from records alone.

Layout (LAB_RUNS_DIR / LAB_REPORTS_DIR move the roots; tests point them at tmp dirs):
    runs/<preset>/<run id>/                      one run's records (config, routing, meta, metrics, summary)
    runs/<preset>/campaigns/<name>[-<tag>].json  a campaign's manifest: its parameters, every (stage, arm, seed)
                                                 with its run id, and the settings it chose (`choices`)
    reports/<FILE>.md, reports/figs/             the cpu preset at the notebooks' default parameters: the lab notebook
    reports/<preset>/[<FILE>-<tag>.md]           any other preset, and any run with non-default parameters (a "variant",
                                                 tagged by a hash of those parameters): the tweak loop never overwrites
                                                 the committed record
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from lab import records
from lab.config import get_config

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_PRESET = "cpu"  # the preset whose default-parameter reports are the lab notebook (reports/*.md)


def runs_root() -> Path:
    return Path(os.environ.get("LAB_RUNS_DIR") or ROOT / "runs")


def runs_dir(preset: str) -> Path:
    return runs_root() / preset


def reports_root() -> Path:
    return Path(os.environ.get("LAB_REPORTS_DIR") or ROOT / "reports")


def reports_dir(preset: str, tag: str = "") -> Path:
    """Where a campaign's report goes: reports/ for the cpu preset at default parameters, reports/<preset>/ else."""
    return reports_root() if preset == NOTEBOOK_PRESET and not tag else reports_root() / preset


def manifest_path(name: str, preset: str, tag: str = "") -> Path:
    return runs_dir(preset) / "campaigns" / (f"{name}-{tag}.json" if tag else f"{name}.json")


def read_manifest(name: str, preset: str, tag: str = "") -> dict | None:
    """The manifest (None if the campaign never ran); CorruptRecord naming the file if it cannot be read."""
    p = manifest_path(name, preset, tag)
    if not p.exists():
        return None
    m = records.read_json(p)
    if not isinstance(m, dict) or not isinstance(m.get("runs"), list):
        raise records.CorruptRecord(f"{p}: not a campaign manifest (no runs list); rerun the campaign to rewrite it")
    return m


def choice(m: dict | None, key: str) -> dict | None:
    """The entry of `m["choices"]` for `key` ({key, value, stage, seeds, grid, why}), None if not chosen (yet)."""
    return next((c for c in (m or {}).get("choices", []) if c["key"] == key), None)


def grid_edge(grid: list, value) -> str | None:
    """"lowest" or "highest" when `value` is that edge of a 3+ value grid (the optimum may lie beyond); else None."""
    if value is None or len(grid) < 3 or value not in grid:
        return None
    return "lowest" if value == min(grid) else "highest" if value == max(grid) else None


def _run_status(run_dir: Path) -> dict:
    """summary.json as a dict, or a stand-in: running (locked by a trainer), missing, or failed (unreadable)."""
    try:
        s = records.read_summary(run_dir)
    except records.CorruptRecord as e:
        return {"status": "failed", "error": f"{e}"}
    if s is not None:
        return s
    return {"status": "running" if records.is_locked(run_dir) else "missing"}


def results(name: str, preset: str, tag: str = "", m: dict | None = None) -> pd.DataFrame:
    """One row per manifest row (stage, arm, seed): the run's config values, status and summary numbers. A run whose
    records cannot be read is a row with status failed and the reason in `error`."""
    m = m if m is not None else read_manifest(name, preset, tag)
    if m is None:
        return pd.DataFrame()
    out = []
    for row in m["runs"]:
        run_dir = runs_dir(preset) / row["run_id"]
        try:
            cfg = records.read_json(run_dir / "config.json")
        except (FileNotFoundError, records.CorruptRecord) as e:
            if not isinstance(e, FileNotFoundError):
                records.warn(f"{e}: using the manifest's overrides instead")
            cfg = get_config(preset, **{**m.get("base", {}), **row["overrides"], "seed": row["seed"]}).to_dict()
        s = _run_status(run_dir)
        out.append({**cfg, "stage": row.get("stage", "grid"), "arm": row["arm"], "seed": row["seed"],
                    "run_id": row["run_id"], "status": s.get("status"), "steps_done": s.get("steps"),
                    "final_val_loss": s.get("final_val_loss"), "best_val_loss": s.get("best_val_loss"),
                    "tokens_per_s": s.get("tokens_per_s"), "wall_time_s": s.get("wall_time_s"),
                    "diverged_at": s.get("diverged_at"), "max_sphere_drift": s.get("max_sphere_drift"),
                    "max_geodesic_drift": s.get("max_geodesic_drift"), "error": s.get("error")})
    return pd.DataFrame(out)


def finals(df: pd.DataFrame, arm: str, stage: str | None = None) -> dict[int, float]:
    """{seed: final val loss} of an arm's finished runs (in `stage`, if given)."""
    sel = df[(df.arm == arm) & (df.status == "finished")]
    if stage is not None:
        sel = sel[sel.stage == stage]
    return {int(r.seed): float(r.final_val_loss) for r in sel.itertuples()}


def arm_stats(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (stage, arm) in manifest order: counts by status, final val loss mean/std/min/max over finished
    seeds."""
    rows = []
    for (stage, arm), g in df.groupby(["stage", "arm"], sort=False):
        vals = g[g.status == "finished"].final_val_loss.astype(float)
        rows.append({"stage": stage, "arm": arm, "n": len(g), "finished": len(vals),
                     "diverged": int((g.status == "diverged").sum()),
                     "failed": int(g.status.isin(["failed", "missing", "running"]).sum()),
                     "mean": vals.mean() if len(vals) else math.nan,
                     "std": vals.std(ddof=1) if len(vals) > 1 else math.nan,
                     "min": vals.min() if len(vals) else math.nan, "max": vals.max() if len(vals) else math.nan,
                     "tokens_per_s": g.tokens_per_s.astype(float).mean(), "wall_s": g.wall_time_s.astype(float).mean()})
    return pd.DataFrame(rows, columns=["stage", "arm", "n", "finished", "diverged", "failed", "mean", "std", "min",
                                       "max", "tokens_per_s", "wall_s"])


def best_arm(df: pd.DataFrame) -> str | None:
    """The arm of `df` with the lowest mean final val loss over finished seeds. Arms with a diverged seed rank after
    every arm without one; arms with no finished seed never win."""
    if df.empty:
        return None
    st = arm_stats(df)
    st = st[st.finished > 0]
    if st.empty:
        return None
    return st.assign(unstable=st.diverged > 0).sort_values(["unstable", "mean"], kind="stable").arm.iloc[0]


def metrics(preset: str, run_id: str) -> list[dict]:
    return records.read_metrics(runs_dir(preset) / run_id)


def val_curves(df: pd.DataFrame, preset: str) -> pd.DataFrame:
    """Long table (stage, arm, seed, step, val_loss, elapsed_s) of every finished run's evaluations."""
    rows = []
    for r in df[df.status == "finished"].itertuples():
        for m in metrics(preset, r.run_id):
            if m.get("val_loss") is not None:
                rows.append({"stage": r.stage, "arm": r.arm, "seed": r.seed, "step": m["step"],
                             "val_loss": m["val_loss"], "elapsed_s": m.get("elapsed_s")})
    return pd.DataFrame(rows, columns=["stage", "arm", "seed", "step", "val_loss", "elapsed_s"])
