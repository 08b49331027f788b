"""Executors at the smoke preset: local workers end with their campaign (SIGTERM, SIGINT, kill -9) and a killed
worker fails only its own run; submitit jobs (its local executor) give the records the local backend gives, and a
preempted job requeues and resumes from its checkpoint to the numbers of an uninterrupted run."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from lab import executor as E
from lab import records
from lab.config import get_config

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TIMING = {"elapsed_s", "tokens_per_s", "mfu", "wall_time_s"}  # measured, not computed: never compared
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process-group and /proc behaviour of Linux")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # jobs and workers inherit it: the same numbers as this process
    torch.set_num_threads(1)


def cfg(runs: Path, seed: int = 0, **kw):
    return get_config("smoke", runs_dir=str(runs), seed=seed, campaign="t", **kw)


def wait_for(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def holder(run_dir: Path) -> int | None:
    """The pid holding the run's lock (its trainer), if any."""
    with_pid = (run_dir / records.LOCK_FILE).read_text().strip() if (run_dir / records.LOCK_FILE).exists() else ""
    return int(with_pid) if with_pid.isdigit() and alive(int(with_pid)) else None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def record(run_dir: Path) -> tuple[dict, list[dict], dict]:
    """A run's summary, metrics rows and config without timings (what must be identical across executors)."""
    strip = lambda d: {k: v for k, v in d.items() if k not in TIMING}
    return (strip(records.read_json(run_dir / "summary.json")), [strip(r) for r in records.read_metrics(run_dir)],
            records.read_json(run_dir / "config.json"))


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    todo = [cfg(tmp_path)]
    for kw, msg in [({"backend": "slurm"}, "unknown backend 'slurm'; valid: local, submitit"),
                    ({"cluster": {"gpus": 2}}, "unknown cluster key 'gpus'; valid: partition, gpus_per_job"),
                    ({"cluster": {"gpus_per_job": -1}}, "cluster gpus_per_job=-1; valid: an int >= 0"),
                    ({"cluster": {"timeout_min": 0}}, "cluster timeout_min=0; valid: an int >= 1"),
                    ({"cluster": {"cluster": "debug"}}, "cluster='debug'; valid: slurm, local")]:
        with pytest.raises(ValueError, match=msg.replace("(", r"\(")):
            E.execute(todo, ["cpu"], "t", **{"backend": "submitit", **kw})
    if not __import__("shutil").which("sbatch"):
        with pytest.raises(ValueError, match="no Slurm here"):
            E.execute(todo, ["cpu"], "t", backend="submitit")
    assert not (tmp_path / todo[0].run_id()).exists()


# -----------------------------------------------------------------------------------------------------------------
# local workers

DRIVER = """
import sys
from lab.config import get_config
from lab.executor import execute
execute([get_config("smoke", runs_dir=sys.argv[1], steps=100000, seed=s, campaign="t") for s in (0, 1)],
        ["cpu", "cpu"], "t/s")
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_workers_end_with_their_campaign(tmp_path, sig):
    """A campaign on two workers is stopped (SIGTERM, SIGINT) or killed (kill -9) while both train: 5 s later no
    worker is alive, and both runs are left to resume (a checkpoint, no failed summary)."""
    runs = tmp_path / "runs"
    dirs = [runs / get_config("smoke", runs_dir=str(runs), steps=100000, seed=s, campaign="t").run_id()
            for s in (0, 1)]
    with open(tmp_path / "stderr", "w") as err:
        # SIGINT at its default, as a shell gives it (an ignored SIGINT in this process would be inherited)
        p = subprocess.Popen([PY, "-c", DRIVER, str(runs)], cwd=ROOT, stderr=err,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        pids = wait_for(lambda: all(holder(d) for d in dirs) and [holder(d) for d in dirs], 180, "both workers")
        assert p.pid not in pids and len(set(pids)) == 2
        wait_for(lambda: all((d / "ckpt.pt").exists() for d in dirs), 60, "checkpoints")
        t0 = time.monotonic()
        p.send_signal(sig)
        # the workers end at once (prctl, the stop handler); the time is printed, not asserted (a loaded CI box is
        # slow to schedule them; the 5 s is measured unloaded)
        wait_for(lambda: not any(alive(q) for q in pids), 30.0, f"the workers to end after {sig.name}")
        print(f"\nworkers ended {time.monotonic() - t0:.2f} s after {sig.name}")
        assert p.wait(10) == -sig  # the campaign itself still ends as the signal ends it
    finally:
        p.kill()
        for q in psutil.Process().children(recursive=True):
            q.kill()
    for d in dirs:
        assert (d / "ckpt.pt").exists() and not (d / "summary.json").exists()  # interrupted, not failed


def test_watchdog_ends_a_worker_without_parent_death_signal(tmp_path):
    """Where prctl is unavailable (not Linux), the watchdog thread alone ends a worker whose parent is killed."""
    ready = tmp_path / "watching"
    child = "import ctypes, os, sys, time; from lab.executor import _end_with; del ctypes.CDLL; " \
            f"_end_with(os.getppid()); open({str(ready)!r}, 'w').close(); time.sleep(60)"
    middle = f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {child!r}]); " \
             "print(p.pid, flush=True); time.sleep(60)"
    p = subprocess.Popen([PY, "-c", middle], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    pid = int(p.stdout.readline())
    try:
        wait_for(ready.exists, 60, "the child's watchdog")
        p.kill()
        t0 = time.monotonic()
        wait_for(lambda: not alive(pid), 5.0, "the orphaned child to end")
        assert time.monotonic() - t0 < 5.0
    finally:
        p.kill()
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_worker_fails_its_run_and_the_others_finish(tmp_path):
    """kill -9 of the worker training one run (as the OOM killer would): that run gets a failed summary naming the
    signal, its worker is replaced, every other run finishes; a run another process holds is reported, not failed."""
    runs = tmp_path / "runs"
    victim = cfg(runs, seed=0, steps=100000)
    others = [cfg(runs, seed=s) for s in (1, 2, 3)]
    held = cfg(runs, seed=4)
    lock = records.RunLock(runs / held.run_id(), held.run_id()).acquire()  # "another process" trains it
    killed = []

    def kill_the_victim():
        pid = wait_for(lambda: holder(runs / victim.run_id()), 180, "the victim's worker")
        wait_for(lambda: (runs / victim.run_id() / "ckpt.pt").exists(), 60, "the victim's checkpoint")
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    t = threading.Thread(target=kill_the_victim, daemon=True)
    t.start()
    out = E.execute([victim, *others, held], ["cpu", "cpu"], "t/s")
    t.join()
    lock.release()
    assert killed and killed[0] != os.getpid()
    assert [s["status"] for s in out] == ["failed", "finished", "finished", "finished", "running"]
    s = records.read_summary(runs / victim.run_id())
    assert s == out[0] and s["status"] == "failed" and "killed by SIGKILL (signal 9" in s["error"]
    assert s["steps"] > 0 and (runs / victim.run_id() / "ckpt.pt").exists()  # a rerun resumes it
    assert not (runs / held.run_id() / "summary.json").exists()
    for c, o in zip(others, out[1:4]):
        assert records.read_summary(runs / c.run_id()) == o and o["final_val_loss"] > 0
    def spawned(q) -> bool:  # a worker, unless it is already gone (a zombie has no command line to read)
        try:
            return "multiprocessing.spawn" in " ".join(q.cmdline())
        except psutil.Error:
            return False
    workers = [q for q in psutil.Process().children() if spawned(q)]
    assert not [q for q in workers if alive(q.pid)]  # every worker ended (the resource tracker stays)


# -----------------------------------------------------------------------------------------------------------------
# submitit (its local executor: the same jobs, run on this machine)

LOCAL = {"cluster": "local", "gpus_per_job": 0, "timeout_min": 10}


def test_submitit_grid_gives_the_records_of_the_local_backend(tmp_path, capsys):
    """A smoke grid (2 optimizers x 2 seeds) as one submitit job per run: every record (config, metrics rows,
    summary; timings aside) identical to the local backend's; a run another process holds comes back running."""
    grid = lambda runs: [cfg(runs, seed=s, optimizer=o) for o in ("muon", "adamw") for s in (0, 1)]
    local, jobs = tmp_path / "local", tmp_path / "submitit"
    E.execute(grid(local), ["cpu"], "t/s")
    held = cfg(jobs, seed=9)
    lock = records.RunLock(jobs / held.run_id(), held.run_id()).acquire()
    out = E.execute([*grid(jobs), held], ["cpu"], "t/s", backend="submitit", cluster=LOCAL)
    lock.release()
    assert [s["status"] for s in out] == ["finished"] * 4 + ["running"]
    assert "5 submitit job(s) on local" in capsys.readouterr().err
    for a, b in zip(grid(local), grid(jobs)):
        assert a.run_id() == b.run_id()
        ra, rb = record(local / a.run_id()), record(jobs / b.run_id())
        assert ra[0] == rb[0] and ra[1] == rb[1]
        assert {**ra[2], "runs_dir": ""} == {**rb[2], "runs_dir": ""}
    assert sorted(p.name for p in (jobs / ".submitit" / "t-s").iterdir())  # the jobs' logs and pickles


def test_preempted_submitit_job_requeues_and_resumes_from_its_checkpoint(tmp_path):
    """SIGUSR2 (Slurm's preemption / time-limit signal with submitit) mid-run: the job checkpoints itself, requeues,
    resumes from the run's ckpt.pt (the steps before it are not retrained) and ends with every number of an
    uninterrupted run."""
    c = lambda runs: cfg(runs, seed=3, steps=600, ckpt_every=25)
    ref, jobs = tmp_path / "ref", tmp_path / "submitit"
    E.execute([c(ref)], ["cpu"], "t/s")
    run_dir = jobs / c(jobs).run_id()
    before = {}

    def preempt():
        pid = wait_for(lambda: holder(run_dir), 180, "the job to train")
        wait_for(lambda: (run_dir / "ckpt.pt").exists(), 60, "a checkpoint")
        k = records.load_checkpoint(run_dir / "ckpt.pt")["step"]  # any resume starts at or after k
        before["k"], before["rows"] = k, [r for r in records.read_metrics(run_dir) if r["step"] < k]
        os.kill(pid, signal.SIGUSR2)
        before["pid"] = pid

    t = threading.Thread(target=preempt, daemon=True)
    t.start()
    out = E.execute([c(jobs)], ["cpu"], "t/s", backend="submitit", cluster=LOCAL)
    t.join()
    assert before["pid"] and out[0]["status"] == "finished"
    logs = "".join(p.read_text() for p in (jobs / ".submitit").rglob("*_log.*"))
    assert "this job is" in logs and "Requeued job" in logs  # submitit: "...this job is timed-out", requeued
    assert f"[lab] run {c(jobs).run_id()}: resuming from its checkpoint" in logs
    assert "starts again from step 0" not in logs
    rows = records.read_metrics(run_dir)
    assert rows[:len(before["rows"])] == before["rows"]  # timings too: the steps before the checkpoint were kept
    assert record(run_dir)[:2] == record(ref / c(ref).run_id())[:2]
    assert [r["step"] for r in rows if "train_loss" in r] == list(range(600))


def test_a_killed_submitit_job_is_recorded_as_failed(tmp_path):
    """kill -9 of a job's process (no chance to requeue): its run gets a failed summary naming the job and its logs."""
    c = cfg(tmp_path, seed=5, steps=100000)

    def kill():
        pid = wait_for(lambda: holder(tmp_path / c.run_id()), 180, "the job to train")
        os.kill(pid, signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()
    out = E.execute([c], ["cpu"], "t/s", backend="submitit", cluster=LOCAL)
    s = records.read_summary(tmp_path / c.run_id())
    assert out == [s] and s["status"] == "failed"
    assert "its submitit job" in s["error"] and "without a summary" in s["error"] and ".submitit" in s["error"]
