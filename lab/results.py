"""Reading campaigns back from their records: manifests and run directories -> pandas. Below the grid and the
reports (both use it; it uses neither), so a report renders from records alone. Reading is strict: a record that
does not say what a run did is named (file and what is wrong) and the run counts as bad, never silently dropped.

Layout (LAB_RUNS_DIR / LAB_REPORTS_DIR move the roots; tests point them at tmp dirs):
    runs/<preset>/<run id>/                      one run's records (config, routing, meta, metrics, summary)
    runs/<preset>/campaigns/<name>[-<tag>].json  a campaign's manifest: its parameters, every (stage, arm, seed)
                                                 with its run id, overrides and tags, and the settings it chose
    reports/<FILE>.md, reports/figs/             the cpu preset at the default parameters: the lab notebook
    reports/<preset>/[<FILE>-<tag>.md]           any other preset, and any variant (non-default parameters, tagged
                                                 by a name or a hash of them): the tweak loop never overwrites the
                                                 committed record
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from lab import records
from lab.arms import grid_edge  # noqa: F401  (re-exported: reports and tests read it from here)
from lab.config import get_config

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_PRESET = "cpu"  # the preset whose default-parameter reports are the lab notebook (reports/*.md)
STATUSES = ("finished", "diverged", "failed")  # what a summary.json may say
BAD = ("failed", "invalid", "missing", "running")  # statuses with no final loss: counted, never averaged
ROW_KEYS = ("stage", "arm", "seed", "run_id")


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
    """The manifest (None if the campaign never ran). CorruptRecord naming the file and what is wrong if it is not
    valid JSON, lacks a key, or lists one (stage, arm, seed) twice."""
    p = manifest_path(name, preset, tag)
    if not p.exists():
        return None
    m = records.read_json(p)
    if not isinstance(m, dict) or not isinstance(m.get("runs"), list):
        raise records.CorruptRecord(f"{p}: not a campaign manifest (no runs list); rerun the campaign to rewrite it")
    seen = {}
    for i, row in enumerate(m["runs"]):
        missing = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise records.CorruptRecord(f"{p}: run row {i} has no {', '.join(missing)}")
        key = (row["stage"], row["arm"], row["seed"])
        if key in seen:
            raise records.CorruptRecord(f"{p}: run rows {seen[key]} and {i} are both stage {key[0]!r}, arm "
                                        f"{key[1]!r}, seed {key[2]} (a duplicated row); keep one")
        seen[key] = i
    for i, c in enumerate(m.get("choices", [])):
        if not isinstance(c, dict) or not {"key", "value", "stage"} <= set(c):
            raise records.CorruptRecord(f"{p}: choice {i} lacks key, value or stage")
    return m


def choice(m: dict | None, key: str) -> dict | None:
    """The entry of `m["choices"]` for `key` ({key, value, stage, seeds, grid, why}), None if not chosen (yet)."""
    return next((c for c in (m or {}).get("choices", []) if c["key"] == key), None)


def variants(preset: str | None = None) -> list[dict]:
    """Every manifest under runs/ (or runs/<preset>/): [{preset, campaign, tag, params, path}], sorted."""
    out = []
    for p in sorted(runs_root().glob(f"{preset or '*'}/campaigns/*.json")):
        if p.name.endswith(".checks.json"):
            continue
        try:
            m = records.read_json(p)
        except records.CorruptRecord:
            m = {}
        name = m.get("campaign") or p.stem
        tag = p.stem[len(name) + 1:] if p.stem.startswith(f"{name}-") else ""
        out.append({"preset": p.parent.parent.name, "campaign": name, "tag": tag, "params": m.get("params", {}),
                    "path": p})
    return out


def run_status(run_dir: Path) -> dict:
    """summary.json checked, or a stand-in: running (someone holds the run's lock, whatever summary is on disk),
    missing, failed (unreadable) or invalid (a summary that does not say what the run did; `error` names the file
    and what is wrong)."""
    if records.is_locked(run_dir):
        return {"status": "running"}
    try:
        s = records.read_summary(run_dir)
    except records.CorruptRecord as e:
        return {"status": "failed", "error": f"{e}"}
    if s is None:
        return {"status": "missing"}
    p = Path(run_dir) / "summary.json"
    if s["status"] not in STATUSES:
        why = f"status {s['status']!r} is not one of {', '.join(STATUSES)}"
    elif s["status"] == "finished" and not _finite(s.get("final_val_loss")):
        why = f"finished, but final_val_loss is {s.get('final_val_loss')!r}, not a finite number"
    else:
        return s
    records.warn(f"{p}: {why}; counted as a bad run")
    return {**s, "status": "invalid", "final_val_loss": None, "error": f"{p}: {why}"}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def results(name: str, preset: str, tag: str = "", m: dict | None = None, arm_tags=None) -> pd.DataFrame:
    """One row per manifest row (stage, arm, seed): the run's config values, its tags, status and summary numbers.
    A row written before arms carried tags gets `arm_tags(overrides)` (the campaign's own derivation; default: the
    overrides themselves). A run whose records cannot be read is a row with status failed or invalid and the reason
    in `error`."""
    m = m if m is not None else read_manifest(name, preset, tag)
    if m is None:
        return pd.DataFrame()
    out = []
    for row in m["runs"]:
        run_dir = runs_dir(preset) / row["run_id"]
        overrides = row.get("overrides", {})
        try:
            cfg = records.read_json(run_dir / "config.json")
            if not isinstance(cfg, dict):
                raise records.CorruptRecord(f"{run_dir / 'config.json'}: not a config (a JSON object)")
        except (FileNotFoundError, records.CorruptRecord) as e:
            if not isinstance(e, FileNotFoundError):
                records.warn(f"{e}: using the manifest's overrides instead")
            cfg = get_config(preset, **{**m.get("base", {}), **overrides, "seed": row["seed"]}).to_dict()
        tags = row.get("tags") if row.get("tags") is not None else (arm_tags or dict)(overrides)
        s = run_status(run_dir)
        out.append({**cfg, "stage": row["stage"], "arm": row["arm"], "seed": row["seed"], "tags": tags,
                    "run_id": row["run_id"], "status": s.get("status"), "steps_done": s.get("steps"),
                    "final_val_loss": s.get("final_val_loss"), "best_val_loss": s.get("best_val_loss"),
                    "tokens_per_s": s.get("tokens_per_s"), "wall_time_s": s.get("wall_time_s"),
                    "diverged_at": s.get("diverged_at"), "max_sphere_drift": s.get("max_sphere_drift"),
                    "max_geodesic_drift": s.get("max_geodesic_drift"), "error": s.get("error")})
    return pd.DataFrame(out)


def select(df: pd.DataFrame, **tags) -> pd.DataFrame:
    """The rows of `df` whose arm tags match every `tag=value` given."""
    if df.empty:
        return df
    return df[df.tags.map(lambda t: all(t.get(k) == v for k, v in tags.items()))]


def arm_of(df: pd.DataFrame, **tags) -> str | None:
    """The label of the one arm of `df` whose tags match (None if none; ValueError if several do)."""
    arms = list(dict.fromkeys(select(df, **tags).arm))
    if len(arms) > 1:
        raise ValueError(f"several arms match {tags}: {arms}")
    return arms[0] if arms else None


def finals(df: pd.DataFrame, arm: str, stage: str | None = None) -> dict[int, float]:
    """{seed: final val loss} of an arm's finished runs (in `stage`, if given)."""
    sel = df[(df.arm == arm) & (df.status == "finished")]
    if stage is not None:
        sel = sel[sel.stage == stage]
    return {int(r.seed): float(r.final_val_loss) for r in sel.itertuples()}


def arm_stats(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (stage, arm) in manifest order: counts by status (`failed`: every run with no final loss:
    failed, invalid, missing or still running), final val loss mean/std/min/max over finished seeds."""
    rows = []
    for (stage, arm), g in df.groupby(["stage", "arm"], sort=False):
        vals = g[g.status == "finished"].final_val_loss.astype(float)
        rows.append({"stage": stage, "arm": arm, "n": len(g), "finished": len(vals),
                     "diverged": int((g.status == "diverged").sum()), "failed": int(g.status.isin(BAD).sum()),
                     "mean": vals.mean() if len(vals) else math.nan,
                     "std": vals.std(ddof=1) if len(vals) > 1 else math.nan,
                     "min": vals.min() if len(vals) else math.nan, "max": vals.max() if len(vals) else math.nan,
                     "tokens_per_s": g.tokens_per_s.astype(float).mean(), "wall_s": g.wall_time_s.astype(float).mean()})
    return pd.DataFrame(rows, columns=["stage", "arm", "n", "finished", "diverged", "failed", "mean", "std", "min",
                                       "max", "tokens_per_s", "wall_s"])


def ranked(df: pd.DataFrame) -> list[str]:
    """Arms of df by mean final val loss over finished seeds; arms with a diverged seed rank after every arm
    without one; arms with no finished seed are left out."""
    if df.empty:
        return []
    st = arm_stats(df)
    st = st[st.finished > 0].assign(unstable=lambda d: d.diverged > 0)
    return list(st.sort_values(["unstable", "mean"], kind="stable").arm)


def best_arm(df: pd.DataFrame) -> str | None:
    """The arm of `df` with the lowest mean final val loss over finished seeds (see `ranked`)."""
    r = ranked(df)
    return r[0] if r else None


def metrics(preset: str, run_id: str) -> list[dict]:
    return records.read_metrics(runs_dir(preset) / run_id)


def val_curves(df: pd.DataFrame, preset: str) -> pd.DataFrame:
    """Long table (stage, arm, seed, step, val_loss, elapsed_s) of every finished run's evaluations."""
    rows = []
    for r in df[df.status == "finished"].itertuples() if len(df) else []:
        for m in metrics(preset, r.run_id):
            if m.get("val_loss") is not None:
                rows.append({"stage": r.stage, "arm": r.arm, "seed": r.seed, "step": m["step"],
                             "val_loss": m["val_loss"], "elapsed_s": m.get("elapsed_s")})
    return pd.DataFrame(rows, columns=["stage", "arm", "seed", "step", "val_loss", "elapsed_s"])
