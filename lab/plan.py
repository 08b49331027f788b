"""Which runs campaigns at their default parameters still need, read from the records alone (nothing is trained or
written): `python -m lab.plan NAME... [--preset cpu] [--out FILE]`.

Each campaign's stages run against `Plan`, a stand-in for lab.grid.Grid that looks runs up (by run id, under
LAB_RUNS_DIR) instead of training them. A pick whose candidates have runs that are not final yet (finished or
diverged) cannot be made: each candidate is tried in turn, so a run every outcome needs is needed now, and a run
only some outcomes need waits on that pick (as do the values a grid adds past an edge that wins on unfinished runs).
Every missing run is printed as a `python -m lab run --preset P key=value ...` line whose config hashes to the run
id the campaign records (checked here), so a queue of these lines trains exactly what the campaign will reuse.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from lab import campaigns, params, records
from lab.config import get_config, parse_overrides
from lab.grid import Grid
from lab.results import manifest_path, read_manifest, runs_dir
from lab.tables import seeds_text

MAX_OUTCOMES = 512  # combinations of unmade picks tried per campaign


class Plan:
    """The Grid interface (run, pick, choose, upstream, run_grids) over the records, training nothing. `forced`:
    the value of each pick that cannot be made yet ({key: value}); `pending` collects those picks' candidates."""

    run_grids = Grid.run_grids  # its extensions go through run(), which notes when they rest on unfinished runs

    def __init__(self, module, preset: str, forced: dict | None = None):
        self.name, self.preset, self.forced = module.NAME, preset, dict(forced or {})
        self.arm_tags = getattr(module, "arm_tags", None) or dict
        self.rows: dict[tuple, dict] = {}
        self.pending: dict[str, list] = {}
        self.incomplete: set[str] = set()
        self.calls: Counter = Counter()

    def upstream(self, name: str) -> dict | None:
        with contextlib.suppress(records.CorruptRecord):
            return read_manifest(name, self.preset)
        return None

    def run(self, stage: str, arms: dict, seeds) -> pd.DataFrame:
        tentative = self.calls[stage] > 0 and stage in self.incomplete  # a grid extended from unfinished runs
        self.calls[stage] += 1
        for label, spec in arms.items():
            overrides, tags = spec if isinstance(spec, tuple) else (spec, self.arm_tags(spec))
            for seed in seeds:
                rid = get_config(self.preset, **{**overrides, "seed": int(seed)}).run_id()
                s, status = status_of(self.preset, rid)
                self.rows[(stage, label, int(seed))] = {
                    "campaign": self.name, "stage": stage, "arm": label, "seed": int(seed), "run_id": rid,
                    "overrides": overrides, "tags": tags, "status": status, "tentative": tentative,
                    "final_val_loss": s.get("final_val_loss") if status == "finished" else None,
                    "diverged_at": s.get("diverged_at"), "tokens_per_s": None, "wall_time_s": None}
                if status not in records.FINAL:
                    self.incomplete.add(stage)
        return self.frame(stage)

    def frame(self, stage: str) -> pd.DataFrame:
        return pd.DataFrame([r for r in self.rows.values() if r["stage"] == stage])

    def choose(self, key: str, value, *args, **kw):
        return value

    def pick(self, df: pd.DataFrame, key: str, stage: str, seeds, arms: dict, what: str):
        from lab.results import best_arm
        sub = df[df.arm.isin(list(arms))]
        if len(sub) and sub.status.isin(records.FINAL).all() and best_arm(sub) is not None:
            return arms[best_arm(sub)]
        self.pending[key] = list(arms.values())
        return self.forced.get(key, self.pending[key][0])


def status_of(preset: str, run_id: str) -> tuple[dict, str]:
    """(summary or {}, status): finished | diverged | failed | started (a directory without a summary: being
    trained, or interrupted) | missing."""
    d = runs_dir(preset) / run_id
    try:
        s = records.read_summary(d)
    except records.CorruptRecord:
        return {}, "failed"
    if s is None:
        return {}, "started" if d.exists() else "missing"
    return s, s["status"]


def outcomes(name: str, preset: str) -> list[Plan]:
    """Every way the campaign's unmade picks can come out (each a Plan of its runs); at most MAX_OUTCOMES."""
    module = campaigns.get(name)
    values = params.check(module, {"preset": preset})
    todo, done = [{}], []
    while todo:
        forced = todo.pop(0)
        p = Plan(module, preset, forced)
        module.stages(p, values)
        new = [k for k in p.pending if k not in forced]
        if new and len(done) + len(todo) < MAX_OUTCOMES:
            todo += [{**forced, new[0]: v} for v in p.pending[new[0]]]
        else:
            done.append(p)
    return done


def needed(name: str, preset: str) -> tuple[list[dict], list[dict], list[str]]:
    """(runs every outcome needs, runs only some need; neither list holds a final run), and the unmade picks."""
    plans = outcomes(name, preset)
    ids = [{r["run_id"] for r in p.rows.values() if not r["tentative"]} for p in plans]
    always = set.intersection(*ids) if ids else set()
    first, rows = {}, {}
    for p in plans:
        for r in p.rows.values():
            if r["status"] not in records.FINAL:
                first.setdefault(r["run_id"], r)
    for rid, r in first.items():
        rows.setdefault("now" if rid in always else "later", []).append(r)
    pending = sorted({k for p in plans for k in p.pending})
    return rows.get("now", []), rows.get("later", []), pending


def _value(v) -> str:
    if isinstance(v, (tuple, list)):
        return ",".join(str(x) for x in v)
    return repr(v) if isinstance(v, float) else str(v)


def command(preset: str, row: dict) -> str:
    """The `python -m lab run` line of a run (checked: its config hashes to the run's id)."""
    words = [f"{k}={_value(v)}" for k, v in row["overrides"].items()] + [f"seed={row['seed']}"]
    rid = get_config(preset, **parse_overrides(words)).run_id()
    if rid != row["run_id"]:
        raise RuntimeError(f"plan: {' '.join(words)} hashes to {rid}, not the campaign's {row['run_id']}")
    return f"python -m lab run --preset {preset} {' '.join(words)}"


def report(names: list[str], preset: str) -> tuple[str, dict[str, int]]:
    """The text of the missing runs of `names` (each run once, under the first campaign that needs it) and the
    count per campaign (shared runs counted in each)."""
    lines, seen, counts = [f"# runs the campaigns {', '.join(names)} need at preset {preset}, default parameters, "
                           f"that have no final record under {runs_dir(preset)} (by `python -m lab.plan`)"], set(), {}
    for name in names:
        now, later, pending = needed(name, preset)
        order = lambda r: (r["stage"] != "confirm", r["stage"], r["arm"], r["seed"])
        now, later = sorted(now, key=order), sorted(later, key=order)
        counts[name] = len(now)
        started = [r for r in now if r["status"] == "started"]
        lines += ["", f"# {name}: {len(now)} run(s) needed now ({_by_stage(now)})"
                  + (f", of which {len(started)} started without a summary (being trained, or interrupted: "
                     "queue again if no one trains it)" if started else "")
                  + (f"; {len(later)} more wait on picks not made yet ({', '.join(pending)})" if later else "")]
        for r in now:
            if r["run_id"] not in seen:
                lines.append(command(preset, r) + ("  # started" if r["status"] == "started" else ""))
            else:
                lines.append(f"# (also needed here: {r['run_id']}, listed above)")
            seen.add(r["run_id"])
        groups: dict[tuple, list[dict]] = {}
        for r in later:
            groups.setdefault((r["stage"], r["arm"]), []).append(r)
        for (stage, arm), rs in groups.items():
            cmd = [command(preset, r) for r in rs][0].rsplit(" seed=", 1)[0]
            lines.append(f"# later, if picked ({stage} `{arm}`), seeds {seeds_text([r['seed'] for r in rs])}: "
                         f"{cmd} seed=SEED")
    return "\n".join(lines) + "\n", counts


def _by_stage(rows: list[dict]) -> str:
    c = Counter(r["stage"] for r in rows)
    return ", ".join(f"{k} {v}" for k, v in c.items()) or "none"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help="campaigns")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--out", default=None, help="also write the list here")
    a = ap.parse_args(argv)
    for n in a.names:
        campaigns.get(n)  # an unknown name: one line, before any work
        if not manifest_path(n, a.preset).parent.exists():
            print(f"note: no campaign records at {manifest_path(n, a.preset).parent}", file=sys.stderr)
    text, counts = report(a.names, a.preset)
    print(text, end="")
    if a.out:
        records.atomic_write(Path(a.out), text)
    print("# missing now per campaign: " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
