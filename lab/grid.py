"""One execution of a campaign: stages of arms x seeds, run through lab.executor and recorded in the manifest.

A manifest holds the parameters, `runs` (stage, arm, seed, run id, overrides, tags) and `choices` (what each stage
picked, on which seeds, from which grid). It is merged, never emptied: an execution starts from the manifest on
disk, replaces a row only with the same (stage, arm, seed) and a choice only when the same stage picks it again,
and every write is atomic; only a completed execution drops what it no longer made (rows of a grid that changed).
So Ctrl-C, SIGTERM or kill -9 at any moment leaves every earlier pick in place.

One execution per manifest at a time: it holds `.<manifest>.lock` (an flock, dropped by the kernel when the process
dies). A campaign that reads another's choices (`upstream`) refuses with one line while that one is running.
A run counts as running when someone holds its lock, whatever summary is on disk; a stage that meets one stops
before choosing (CampaignPending, exit 3), and the next rerun picks up where it stopped.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pandas as pd

from lab import executor, records
from lab.arms import EXTEND_EDGES, beyond_edge
from lab.campaign import CampaignPending
from lab.config import get_config
from lab.results import ROOT, best_arm, manifest_path, read_manifest, results, runs_dir

SECONDS_PER_RUN = {"smoke": 2.0, "cpu": 500.0, "h100": 120.0}  # guesses until a preset has finished runs
RUN_OVERHEAD_S = 5.0  # per run outside the training loop (model build, data, evaluations)
_HELD: dict[str, list] = {}  # manifest lock path -> [open file, holders in this process]


def _lock_path(manifest: Path) -> Path:
    return manifest.parent / f".{manifest.stem}.lock"


def _acquire(manifest: Path, who: str) -> None:
    path = _lock_path(manifest)
    if str(path) in _HELD:
        _HELD[str(path)][1] += 1
        return
    f, pid = records.take_lock(path)
    if f is None:
        raise CampaignPending(f"{who}: another process (pid {pid}) is running this campaign ({manifest}); rerun "
                              "when it finishes")
    _HELD[str(path)] = [f, 1]


def _release(manifest: Path) -> None:
    held = _HELD.get(str(_lock_path(manifest)))
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        held[0].truncate(0)
        held[0].close()
        del _HELD[str(_lock_path(manifest))]


def running_pid(manifest: Path) -> str | None:
    """The pid of another process executing the campaign of `manifest` right now, else None."""
    import fcntl
    path = _lock_path(manifest)
    if not path.exists() or str(path) in _HELD:
        return None
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            return f.read().strip() or "?"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def _device_override(device: str) -> dict:
    """Config fields that pin `device`. Identity keeps only the device type, and only where it differs from what
    device=auto picks here, so the same grid on ["cuda:0"] or ["cuda:0", "cuda:1"] (or ["cpu"] on a CPU box) reuses
    the same runs."""
    if device == "auto":
        return {}
    import torch
    kind = device.split(":")[0]
    return {} if kind == ("cuda" if torch.cuda.is_available() else "cpu") else {"device": kind}


def _seconds_per_step(preset: str) -> float | None:
    """Mean training seconds per step over the finished runs of `preset`."""
    wall = steps = 0.0
    for p in runs_dir(preset).glob("*/summary.json"):
        try:
            s = records.read_json(p)
        except records.CorruptRecord:
            continue
        if isinstance(s, dict) and s.get("status") == "finished" and s.get("wall_time_s") and s.get("steps"):
            wall, steps = wall + s["wall_time_s"], steps + s["steps"]
    return wall / steps if steps else None


def _final(config, world: int = 1) -> bool:
    """Does the run have a final record (finished or diverged)? Read at runs_dir(preset), whatever the cwd."""
    try:
        s = records.read_summary(runs_dir_of(config) / config.run_id(world))
    except records.CorruptRecord:
        return False
    return bool(s) and s["status"] in records.FINAL


def runs_dir_of(config) -> Path:
    return Path(config.runs_dir) if Path(config.runs_dir).is_absolute() else ROOT / config.runs_dir


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _key(row: dict) -> tuple:
    return row["stage"], row["arm"], int(row["seed"])


class Grid:
    """One execution of campaign `name` at `values["preset"]`, variant `tag`: `params` (the result-changing
    parameters) are recorded in the manifest; `arm_tags(overrides)` gives the tags of an arm given without any.
    Use as a context manager: a completed block finishes the manifest, an interrupted one leaves it merged."""

    def __init__(self, name: str, values: dict, *, tag: str = "", params: dict | None = None, arm_tags=None,
                 named: bool = False):
        self.name, self.preset, self.tag = name, values["preset"], tag
        self.devices = list(values.get("devices") or ["auto"])
        self.wandb, self.verbose = values.get("wandb", "disabled"), bool(values.get("verbose"))
        self.backend = values.get("executor", "local")
        self.cluster = {"partition": values.get("slurm_partition", ""), "gpus_per_job": values.get("gpus_per_job", 1),
                        "timeout_min": values.get("timeout_min", 60)}
        # processes per run: a submitit job of N GPUs trains at world size N, which is part of the run's identity
        self.world = max(1, int(self.cluster["gpus_per_job"])) if self.backend == "submitit" else 1
        self.arm_tags = arm_tags or dict
        self.path = manifest_path(name, self.preset, tag)
        params = dict(params if params is not None else values)
        rd = runs_dir(self.preset)
        # runs_dir as the config records it: relative to the repo root when inside it (campaigns run from there)
        self.runs_dir = os.path.relpath(rd, ROOT) if rd.absolute().is_relative_to(ROOT) else str(rd)
        self.base = {**_device_override(self.devices[0]), "wandb": self.wandb}
        _acquire(self.path, f"campaign {name}")
        try:
            old = read_manifest(name, self.preset, tag)
        except records.CorruptRecord as e:
            aside = self.path.with_suffix(".json.corrupt")
            os.replace(self.path, aside)
            records.warn(f"{e}; moved aside to {aside.name}, starting a new manifest")
            old = None
        if old and named and old.get("params") != params:
            _release(self.path)
            raise ValueError(f"campaign {name}: variant {tag!r} at preset {self.preset} exists with other "
                             f"parameters ({old.get('params')}); give another -p tag")
        self.m = {"campaign": name, "preset": self.preset, "variant": tag or None, **({"named": True} if named else {}),
                  "params": params, "base": self.base, "choices": list((old or {}).get("choices", [])),
                  "runs": list((old or {}).get("runs", []))}
        self.made_rows, self.made_choices = set(), set()
        self.save()

    def __enter__(self) -> Grid:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.close()

    def save(self) -> None:
        records.write_json(self.path, self.m)

    def finish(self) -> None:
        """The execution completed: keep exactly the rows and choices it made (a row of a grid that changed since
        an earlier execution goes; its run record stays), write, and release the manifest."""
        self.m["runs"] = [r for r in self.m["runs"] if _key(r) in self.made_rows]
        self.m["choices"] = [c for c in self.m["choices"] if c["key"] in self.made_choices]
        self.save()
        self.close()

    def close(self) -> None:
        _release(self.path)

    def upstream(self, name: str) -> dict | None:
        """Another campaign's default-parameter manifest at this preset (None if it never ran); CampaignPending
        with one line while that campaign is running (its choices may still change)."""
        pid = running_pid(manifest_path(name, self.preset))
        if pid:
            raise CampaignPending(f"{self.name} reads {name}'s choices, and {name} is running at preset {self.preset} "
                                  f"(pid {pid}); rerun {self.name} when it finishes")
        with contextlib.suppress(records.CorruptRecord):
            return read_manifest(name, self.preset)
        return None

    def _merge(self, row: dict) -> None:
        k = _key(row)
        i = next((i for i, r in enumerate(self.m["runs"]) if _key(r) == k), None)
        if i is None:
            self.m["runs"].append(row)
        else:
            self.m["runs"][i] = row
        self.made_rows.add(k)

    def run(self, stage: str, arms: dict, seeds) -> pd.DataFrame:
        """Run every arm x seed of `stage` that has no final record; return this stage's rows of results(). `arms`:
        {label: overrides} or {label: (overrides, tags)}. Configs are built (and refused) before any training."""
        configs = []
        for label, spec in arms.items():
            overrides, tags = spec if isinstance(spec, tuple) else (spec, self.arm_tags(spec))
            for seed in seeds:
                cfg = get_config(self.preset, **{**self.base, **overrides, "seed": int(seed), "campaign": self.name,
                                                 "runs_dir": self.runs_dir})
                self._merge({"stage": stage, "arm": label, "seed": int(seed), "run_id": cfg.run_id(self.world),
                             "overrides": overrides, "tags": tags})
                configs.append(cfg)
        self.save()
        unique = list({c.run_id(self.world): c for c in configs}.values())
        todo = [c for c in unique if not _final(c, self.world)]
        sps = _seconds_per_step(self.preset)
        est = (sum(c.steps * sps + RUN_OVERHEAD_S for c in todo) if sps
               else len(todo) * SECONDS_PER_RUN.get(self.preset, 60.0)) / len(self.devices)
        print(f"[lab] {self.name} ({self.preset}) stage {stage}: {len(configs)} runs in {len(arms)} arms x "
              f"{len(seeds)} seeds, {len(todo)} to train, expected {_duration(est)} "
              f"({f'{sps:.3f} s/step from finished {self.preset} runs' if sps else 'a guess'}, "
              f"{len(self.devices)} device(s))", flush=True)
        if self.wandb != "disabled" and len(unique) > len(todo):
            variant = f" --variant {self.tag}" if self.tag else ""
            print(f"[lab] {len(unique) - len(todo)} finished runs not mirrored to wandb; `python -m lab wandb-sync "
                  f"{self.name} --preset {self.preset}{variant} --mode {self.wandb}` uploads them from their records",
                  flush=True)
        if todo:
            with contextlib.chdir(ROOT):  # relative paths in configs (runs_dir, data_dir) mean the repo root
                executor.execute(todo, self.devices, f"{self.name}/{stage}", backend=self.backend,
                                 cluster=self.cluster)
        df = self.results()
        df = df[df.stage == stage] if len(df) else df
        busy = df[df.status == "running"] if len(df) else df
        if len(busy):
            raise CampaignPending(f"{self.name}: {busy.run_id.nunique()} run(s) of stage {stage} are being trained "
                                  "by another process; rerun the campaign when they finish (nothing is lost)")
        return df

    def choose(self, key: str, value, stage: str, seeds, grid: list, why: str):
        """Record a choice (and return its value): what was picked, from which grid, on which seeds, and why. It
        replaces an earlier choice of the same key in place."""
        c = {"key": key, "value": value, "stage": stage, "seeds": [int(s) for s in seeds], "grid": grid, "why": why}
        i = next((i for i, x in enumerate(self.m["choices"]) if x["key"] == key), None)
        if i is None:
            self.m["choices"].append(c)
        else:
            self.m["choices"][i] = c
        self.made_choices.add(key)
        self.save()
        print(f"[lab] {self.name}: {key} = {value} ({why})", flush=True)
        return value

    def pick(self, df: pd.DataFrame, key: str, stage: str, seeds, arms: dict[str, object], what: str):
        """Choose among `arms` ({label: value}) the value of the arm with the lowest mean final val loss."""
        best = best_arm(df[df.arm.isin(list(arms))])
        if best is None:
            raise RuntimeError(f"{self.name}: no arm of stage {stage} finished, so no {what} can be chosen "
                               f"(see the failed runs in {self.path})")
        return self.choose(key, arms[best], stage, seeds, list(arms.values()),
                           f"the {what} with the lowest mean final val loss on seeds {list(seeds)}")

    def run_grids(self, stage: str, grids: dict, arm, name, seeds) -> tuple[pd.DataFrame, dict]:
        """Run a value grid per group ({group: [values]}; arm(group, x) -> overrides, name(group, x) -> label); while
        a group's best value sits on an edge of its grid, add the next value past that edge (x/2 or 2x, at most
        EXTEND_EDGES times per group), so a pick is an optimum, not a boundary. Returns this stage's rows and the
        final grids ({group: {label: value}}, ascending)."""
        grids = {k: sorted(v) for k, v in grids.items()}
        df = self.run(stage, {name(k, x): arm(k, x) for k, xs in grids.items() for x in xs}, seeds)
        for _ in range(EXTEND_EDGES):
            new = {}
            for k, xs in grids.items():
                best = best_arm(df[df.arm.isin([name(k, x) for x in xs])])
                x = beyond_edge(xs, next((x for x in xs if name(k, x) == best), None))
                if x is not None:
                    grids[k] = sorted([*xs, x])
                    new[name(k, x)] = arm(k, x)
            if not new:
                break
            df = self.run(stage, new, seeds)
        return df, {k: {name(k, x): x for x in xs} for k, xs in grids.items()}

    def results(self) -> pd.DataFrame:
        """The rows this execution made so far (results() of the manifest, without rows of an earlier grid)."""
        df = results(self.name, self.preset, m=self.m, arm_tags=self.arm_tags)
        if df.empty:
            return df
        return df[[(s, a, int(x)) in self.made_rows for s, a, x in zip(df.stage, df.arm, df.seed)]]
