"""Which runs campaigns at their default parameters still need, without training anything: a dry execution of
their stages against a snapshot of the run records (the record files of SRC/<preset>/<run id>/ copied to a temp
directory; nothing is written under SRC). Picks that depend on unfinished runs are made from the finished ones
(or, with none, the grid's middle value) and flagged provisional: rerun this script as records land.

    python scripts/missing_runs.py lr_sweep horizon --runs /work/main/runs --queue /work/queue/jobs.txt \
        --out /work/wt/notes/r1-missing.txt [--keep DIR]

Prints every needed run per campaign with its state (finished, diverged, training now, queued, missing) and writes
the missing ones (neither finished, nor being trained, nor queued) as `python -m lab run --preset P k=v ...` lines.
With --keep DIR the snapshot (run records + the dry manifests) stays in DIR, so the reports render from it:
`LAB_RUNS_DIR=DIR LAB_REPORTS_DIR=... python -m lab report NAME --preset P`.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's lab

RECORDS = ("config.json", "summary.json", "metrics.jsonl", "meta.json")


def snapshot(src: Path, dst: Path) -> None:
    """Copy the record files of every run directory of src into dst (no checkpoints, no locks, no manifests)."""
    for d in src.iterdir():
        if d.is_dir() and d.name != "campaigns":
            (dst / d.name).mkdir(parents=True, exist_ok=True)
            for f in RECORDS:
                if (d / f).exists():
                    shutil.copy2(d / f, dst / d.name / f)


def state(src: Path, run_id: str, queued: set[str]) -> str:
    d = src / run_id
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        s = json.loads((d / "summary.json").read_text())
        if s.get("status") in ("finished", "diverged"):
            return s["status"]
    with contextlib.suppress(FileNotFoundError), open(d / "lock") as f:  # read-only: never writes the lock
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
        except BlockingIOError:
            return "training now"
    return "queued" if run_id in queued else "missing"


def fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return ",".join(fmt(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def queue_ids(paths: list[str], preset: str) -> set[str]:
    """Run ids of queue lines `campaign k=v ... seed=N`."""
    from lab.config import get_config, parse_overrides
    out = set()
    for p in paths:
        for line in Path(p).read_text().splitlines() if Path(p).exists() else []:
            words = line.split()
            if len(words) > 1:
                with contextlib.suppress(ValueError):
                    out.add(get_config(preset, **parse_overrides(words[1:])).run_id())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("campaigns", nargs="+")
    ap.add_argument("--runs", default="runs", help="the runs root to read (its <preset>/ holds the run records)")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--queue", action="append", default=[], help="queue files of `campaign k=v ...` lines")
    ap.add_argument("--out", help="write the missing runs here as `python -m lab run` lines")
    ap.add_argument("--keep", help="keep the snapshot and the dry manifests in this directory")
    a = ap.parse_args(argv)
    src = Path(a.runs).resolve() / a.preset
    root = Path(a.keep).resolve() if a.keep else Path(tempfile.mkdtemp(prefix="dry-runs-"))
    if root == Path(a.runs).resolve():
        raise SystemExit("--keep must not be the source runs root")
    snapshot(src, root / a.preset)
    os.environ["LAB_RUNS_DIR"] = str(root)
    from lab import campaign, executor, grid
    from lab.config import get_config
    from lab.results import read_manifest
    executor_execute, pick = executor.execute, grid.Grid.pick
    provisional: dict[str, list[str]] = {}

    def dry_pick(self, df, key, stage, seeds, arms, what):
        rows = df[df.arm.isin(list(arms))]
        open_ = sorted(set(rows[~rows.status.isin(["finished", "diverged"])].arm))
        try:
            v = pick(self, df, key, stage, seeds, arms, what)
        except RuntimeError:
            vals = list(arms.values())
            v = self.choose(key, vals[len(vals) // 2], stage, seeds, vals, "dry run: nothing finished yet, the "
                            "grid's middle value")
            open_ = open_ or list(arms)
        if open_:
            provisional.setdefault(self.name, []).append(f"{key} = {v} (unfinished: {len(open_)} arm(s))")
        return v

    executor.execute = lambda *args, **kw: None  # nothing trains
    grid.Grid.pick = dry_pick
    queued = queue_ids(a.queue, a.preset)
    lines, total = [], 0
    try:
        for name in a.campaigns:
            with contextlib.redirect_stdout(sys.stderr):
                campaign.run_stages(name, campaign.check_params(name, {"preset": a.preset}))
            m = read_manifest(name, a.preset)
            runs = {}
            for row in m["runs"]:
                runs.setdefault(row["run_id"], row)
            states = {rid: state(src, rid, queued) for rid in runs}
            counts = {s: sum(v == s for v in states.values()) for s in dict.fromkeys(states.values())}
            print(f"## {name}: {len(runs)} distinct runs needed at the default parameters: "
                  + ", ".join(f"{n} {s}" for s, n in counts.items()))
            for p in provisional.get(name, []):
                print(f"  provisional pick: {p}")
            for rid, row in runs.items():
                words = [f"{k}={fmt(v)}" for k, v in row["overrides"].items()] + [f"seed={row['seed']}"]
                cfg = get_config(a.preset, **dict(w.split("=", 1) for w in words))
                assert cfg.run_id() == rid, (rid, words)  # the line reproduces the run's identity
                print(f"  {states[rid]:>13}  {rid}  {row['stage']:>7}  {' '.join(words)}")
                if states[rid] == "missing":
                    lines.append(f"python -m lab run --preset {a.preset} campaign={name} {' '.join(words)}")
                    total += 1
    finally:
        executor.execute, grid.Grid.pick = executor_execute, pick
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    if a.out:
        Path(a.out).write_text("".join(f"{x}\n" for x in dict.fromkeys(lines)))
    print(f"{len(dict.fromkeys(lines))} missing runs (not finished, not training, not queued)"
          + (f" -> {a.out}" if a.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
