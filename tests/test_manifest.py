"""Manifests that survive interruption (issue 18, findings 2 and 3): merged, never emptied; a choice is replaced only
when the same stage picks again; Ctrl-C, SIGTERM or kill -9 at any moment of a rerun leaves every pick in place; a
downstream campaign never reads a half-written upstream; "running" means someone holds the run's lock."""
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lab import campaigns, params, records
from lab import executor as E
from lab import results as res
from lab.campaign import CampaignPending, run_stages
from lab.campaigns.lr_sweep import tuned
from lab.config import get_config
from lab.grid import Grid

ROOT = Path(__file__).resolve().parent.parent
ARMS = {"a": {"optimizer": "adamw", "adamw_lr": 0.004}, "b": {"optimizer": "adamw", "adamw_lr": 0.008},
        "c": {"optimizer": "adamw", "adamw_lr": 0.016}}
LOSS = {0.004: 5.0, 0.008: 4.0, 0.016: 4.5}


def use_dirs(mp, root: Path) -> Path:
    mp.setenv("LAB_RUNS_DIR", str(root / "runs"))
    mp.setenv("LAB_REPORTS_DIR", str(root / "reports"))
    return root


def fake(calls: list, stop_after: int | None = None):
    """A stand-in for training: a finished summary with a loss set by the lr; KeyboardInterrupt on call
    `stop_after` (a Ctrl-C while that run trains)."""
    def train(cfg, progress=False):
        calls.append(cfg.run_id())
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt
        s = {"run_id": cfg.run_id(), "status": "finished", "final_val_loss": LOSS[cfg.adamw_lr] + cfg.seed / 100,
             "best_val_loss": 4.0, "steps": cfg.steps}
        records.write_json(Path(cfg.runs_dir) / cfg.run_id() / "summary.json", s)
        return s
    return train


def campaign(arms: dict, seeds=(0, 1)) -> Grid:
    """Two stages: pick the best lr on `seeds`, then a confirmation of the pick on seed 100."""
    with Grid("g", {"preset": "smoke"}, params={"seeds": list(seeds)}) as g:
        df = g.run("select", {k: ARMS[k] for k in arms}, seeds)
        best = g.pick(df, "lr", "select", seeds, {k: ARMS[k]["adamw_lr"] for k in arms}, "lr")
        g.run("confirm", {f"lr={best}": {"optimizer": "adamw", "adamw_lr": best}}, [100])
    return g


def manifest() -> dict:
    return records.read_json(res.manifest_path("g", "smoke"))


def test_an_interrupted_rerun_keeps_every_row_and_choice(dirs, monkeypatch):
    calls = []
    monkeypatch.setattr(E, "_train", fake(calls))
    campaign("ab")
    first = manifest()
    assert [c["key"] for c in first["choices"]] == ["lr"] and len(first["runs"]) == 5
    # a rerun with a grid that grew (c is new), interrupted while c trains: nothing is lost, nothing is emptied
    monkeypatch.setattr(E, "_train", fake(calls := [], stop_after=1))
    with pytest.raises(KeyboardInterrupt):
        campaign("abc")
    m = manifest()
    assert m["choices"] == first["choices"]
    assert [r for r in m["runs"] if r["arm"] != "c"] == first["runs"] and {r["arm"] for r in m["runs"]} >= {"c"}
    # the same stage on the same seeds picks again: the choice is replaced (in place), the confirmation follows
    monkeypatch.setattr(E, "_train", fake(calls := []))
    campaign("abc")
    m = manifest()
    assert m["choices"][0]["grid"] == [0.004, 0.008, 0.016] and m["choices"][0]["value"] == 0.008
    # a completed execution keeps exactly what it made: a grid that shrank drops its old rows (their runs stay)
    campaign("ab")
    assert manifest() == first


def test_a_second_execution_of_the_same_campaign_refuses_while_the_first_holds_it(dirs):
    lock = res.manifest_path("g", "smoke").parent / ".g.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a+") as f:  # another process's execution (a second open file: flock conflicts with it)
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write("4242\n")
        f.flush()
        with pytest.raises(CampaignPending, match=r"campaign g: another process \(pid 4242\) is running this"):
            Grid("g", {"preset": "smoke"})
    assert not res.manifest_path("g", "smoke").exists()  # nothing was written


def test_a_downstream_campaign_refuses_while_its_upstream_runs(dirs):
    choice = lambda k, v: {"key": k, "value": v, "stage": "select", "seeds": [0], "grid": [v], "why": "w"}
    records.write_json(res.manifest_path("lr_sweep", "smoke"), {
        "campaign": "lr_sweep", "preset": "smoke", "runs": [], "choices": [choice("muon_lr", 0.05)]})
    with open(res.manifest_path("lr_sweep", "smoke").parent / ".lr_sweep.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # lr_sweep is being rerun: its picks may still change
        g = Grid("geodesic", {"preset": "smoke"})
        with pytest.raises(CampaignPending, match="geodesic reads lr_sweep's choices, and lr_sweep is running"):
            tuned(g)
        g.close()
    assert tuned(Grid("geodesic", {"preset": "smoke"}))["muon_lr"] == 0.05  # once it has finished


def test_a_run_being_retrained_by_another_process_counts_as_running_whatever_its_summary(dirs, monkeypatch):
    """Finding 3: a run that failed once keeps its failed summary.json while another process retrains it; a second
    campaign must not pick without it."""
    monkeypatch.setattr(E, "_train", fake([]))
    campaign("ab")
    before = manifest()
    held = get_config("smoke", **ARMS["b"], seed=0, campaign="g")  # the winner, seed 0
    run_dir = res.runs_dir("smoke") / held.run_id()
    records.write_json(run_dir / "summary.json", {"run_id": held.run_id(), "status": "failed", "error": "boom"})
    lock = records.RunLock(run_dir, held.run_id()).acquire()  # "another process" retrains it
    try:
        assert res.run_status(run_dir)["status"] == "running"
        monkeypatch.setattr(E, "_train", lambda cfg, progress=False: pytest.fail("a held run is not trained"))
        monkeypatch.setattr(E, "_run_config", lambda d: {"status": "running"})  # what a worker meeting RunLocked says
        with pytest.raises(CampaignPending, match="1 run"):
            campaign("ab")
    finally:
        lock.release()
    assert manifest()["choices"] == before["choices"]  # no pick without it


def test_a_notebook_kernel_elsewhere_finds_the_same_runs(tmp_path, monkeypatch):
    """A kernel started in notebooks/ (or anywhere) reads the records the CLI wrote: runs_dir in a config is
    relative to the repo root, never to the cwd."""
    inside = ROOT / "runs" / "smoke" / f"test-{uuid.uuid4().hex[:8]}"  # runs/smoke/ is git-ignored scratch
    monkeypatch.setenv("LAB_RUNS_DIR", str(inside))
    monkeypatch.setenv("LAB_REPORTS_DIR", str(tmp_path / "reports"))
    try:
        monkeypatch.setattr(E, "_train", fake(calls := []))
        campaign("ab")
        assert Grid("g", {"preset": "smoke"}).runs_dir.startswith("runs/smoke/test-")  # relative: it travels
        monkeypatch.chdir(ROOT / "notebooks")
        campaign("ab")
        monkeypatch.chdir(tmp_path)
        campaign("ab")
        assert len(calls) == 5  # the first execution only
    finally:
        shutil.rmtree(inside, ignore_errors=True)


RERUN = """
import json, sys
from lab.campaign import run_headless
run_headless("lr_sweep", "smoke", **json.loads(sys.argv[1]))
"""
SWEEP = {"steps": 6, "seeds": [0, 1], "confirm_seeds": [100], "muon_lrs": [0.02], "adamw_lrs": [0.004, 0.008],
         "aux_lrs": [0.004, 0.008]}
# (the [lab] line after which the signal goes, extra delay s, signal): ten moments of a rerun, from imports to the
# final manifest write (a rerun prints: stage select, muon_lr, adamw_lr, stage aux, aux_lr, stage confirm, report)
MOMENTS = [(0, 0.3, signal.SIGINT), (1, 0.0, signal.SIGINT), (1, 0.05, signal.SIGKILL), (2, 0.0, signal.SIGTERM),
           (3, 0.0, signal.SIGINT), (3, 0.02, signal.SIGKILL), (4, 0.0, signal.SIGINT), (5, 0.0, signal.SIGTERM),
           (6, 0.0, signal.SIGINT), (6, 0.01, signal.SIGKILL)]


@pytest.mark.slow
def test_ctrl_c_at_ten_moments_of_an_lr_sweep_rerun_leaves_its_choices(dirs, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    values = params.check(campaigns.get("lr_sweep"), {**SWEEP, "preset": "smoke"})
    run_stages("lr_sweep", values)
    path = res.manifest_path("lr_sweep", "smoke", params.variant_tag(campaigns.get("lr_sweep"), values))
    first = path.read_bytes()
    choices = json.loads(first)["choices"]
    assert [c["key"] for c in choices] == ["muon_lr", "adamw_lr", "aux_lr"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for line, delay, sig in MOMENTS:
        p = subprocess.Popen([sys.executable, "-u", "-c", RERUN, json.dumps(SWEEP)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        seen = 0
        while seen < line:
            out = p.stdout.readline()
            if not out:
                break
            seen += out.startswith("[lab]")
        time.sleep(delay)
        p.send_signal(sig)
        p.communicate(timeout=300)
        m = records.read_json(path)  # never half-written
        assert m["choices"] == choices, (line, delay, sig)
        assert {json.dumps(r, sort_keys=True) for r in m["runs"]} >= \
            {json.dumps(r, sort_keys=True) for r in json.loads(first)["runs"]}, (line, delay, sig)
    run_stages("lr_sweep", values)
    assert path.read_bytes() == first  # and a completed rerun writes what the first execution wrote
