"""Which runs the architecture and width campaigns (issue 21) need at their default parameters, and which of them
the run records already hold, without training anything: a dry execution of their stages against a copy of the
records (summary.json and config.json of SRC/<preset>/<run id>/ copied to a temp directory; nothing is written
under SRC). A stage that would pick from unfinished runs stops the dry execution there: what comes after a pick
(grid extensions of an unfinished grid, Muon's fit points, the confirmation runs) depends on runs not trained yet,
so rerun this script as records land.

    python scripts/missing_arch_width.py --runs /work/main/runs --queue /work/queue/jobs.txt \
        --out /work/wt/notes/r4-missing.txt

Prints every needed run with its state (finished, diverged, started: a run directory without a final record, i.e.
training now or interrupted; queued: a line of a --queue file trains it; missing) and counts per campaign and
stage; writes the missing runs as queue lines `<campaign> k=v k=v ... seed=N` (cpu-preset overrides; adam_betas as
0.8,0.99), in the campaigns' run order: the decisive pair gpt_swiglu and ngpt first, then gated_ngpt, the plan's
configuration, then width 64, 128 and 256 last. A run both campaigns need is listed once, under the first.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's lab

CAMPAIGNS = ("architecture", "width")
RECORDS = ("config.json", "summary.json")


class Undecided(Exception):
    """A pick over runs without a final record: the dry execution stops here."""


def snapshot(src: Path, dst: Path) -> None:
    """Copy the summary and config of every run directory of src into dst."""
    dst.mkdir(parents=True, exist_ok=True)
    for d in src.iterdir():
        if d.is_dir() and d.name != "campaigns":
            (dst / d.name).mkdir(exist_ok=True)
            for f in RECORDS:
                if (d / f).exists():
                    shutil.copy2(d / f, dst / d.name / f)


def state(src: Path, run_id: str, queued: set[str]) -> str:
    d = src / run_id
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        s = json.loads((d / "summary.json").read_text())
        if s.get("status") in ("finished", "diverged"):
            return s["status"]
    if d.is_dir():
        return "started"
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
            if len(words) > 1 and not words[0].startswith("#"):
                with contextlib.suppress(ValueError):
                    out.add(get_config(preset, **parse_overrides(words[1:])).run_id())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="runs", help="the runs root to read (its <preset>/ holds the run records)")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--queue", action="append", default=[], help="queue files of `campaign k=v ...` lines")
    ap.add_argument("--out", help="write the missing runs here as queue lines")
    a = ap.parse_args(argv)
    src = Path(a.runs).resolve() / a.preset
    root = Path(tempfile.mkdtemp(prefix="dry-arch-"))
    snapshot(src, root / a.preset)
    os.environ["LAB_RUNS_DIR"] = str(root)
    from lab import campaign, executor, grid
    from lab.config import get_config
    from lab.results import read_manifest
    real_execute, real_pick = executor.execute, grid.Grid.pick
    stopped: dict[str, str] = {}

    def dry_pick(self, df, key, stage, seeds, arms, what):
        rows = df[df.arm.isin(list(arms))]
        if rows.empty or rows.status.isin(["missing", "running"]).any():
            raise Undecided(f"{key} ({what}): {int(rows.status.isin(['missing', 'running']).sum())} of "
                            f"{len(rows)} runs without a final record")
        return real_pick(self, df, key, stage, seeds, arms, what)

    executor.execute = lambda *args, **kw: []  # nothing trains
    grid.Grid.pick = dry_pick
    queued = queue_ids(a.queue, a.preset)
    lines, seen = [], set()
    try:
        for name in CAMPAIGNS:
            with contextlib.redirect_stdout(sys.stderr):
                try:
                    campaign.run_stages(name, campaign.check_params(name, {"preset": a.preset}))
                except Undecided as e:
                    stopped[name] = str(e)
            m = read_manifest(name, a.preset)
            runs: dict[str, dict] = {}
            for row in m["runs"]:
                runs.setdefault(row["run_id"], row)
            states = {rid: state(src, rid, queued) for rid in runs}
            print(f"## {name}: {len(runs)} distinct runs needed so far at the default parameters")
            by_stage: dict[str, dict[str, int]] = {}
            for rid, row in runs.items():
                st = by_stage.setdefault(row["stage"], {})
                st[states[rid]] = st.get(states[rid], 0) + 1
            for stage, counts in by_stage.items():
                print(f"  stage {stage}: {sum(counts.values())} runs: "
                      + ", ".join(f"{n} {s}" for s, n in counts.items()))
            if name in stopped:
                print(f"  stopped at the pick {stopped[name]}: later runs (extensions of unfinished grids, fit "
                      "points, confirmation) are not known yet")
            for rid, row in runs.items():
                words = [f"{k}={fmt(v)}" for k, v in row["overrides"].items()] + [f"seed={row['seed']}"]
                cfg = get_config(a.preset, **dict(w.split("=", 1) for w in words))
                assert cfg.run_id() == rid, (rid, words)  # the line reproduces the run's identity
                dup = " (also needed above)" if rid in seen else ""
                print(f"  {states[rid]:>9}  {rid}  {row['stage']:>7}  {' '.join(words)}{dup}")
                if states[rid] == "missing" and rid not in seen:
                    lines.append(f"{name} {' '.join(words)}")
                seen.add(rid)
    finally:
        executor.execute, grid.Grid.pick = real_execute, real_pick
        shutil.rmtree(root, ignore_errors=True)
    if a.out:
        Path(a.out).write_text("".join(f"{x}\n" for x in lines))
    print(f"{len(lines)} missing runs (not finished, not started, not queued)" + (f" -> {a.out}" if a.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
