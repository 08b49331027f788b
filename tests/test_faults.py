"""Faults, reproduced in real processes and shown harmless.

kill -9 at many moments of a run (before, during and after checkpoint writes, mid metrics line, around summary.json,
and at moments timed on the run's progress), a torn metrics log, two writers on one run, corrupt records, leftover
temp files, a failed checkpoint write (a full disk), values that must be refused, an unusable wandb server, a shard
with token ids past the vocabulary. After every fault the rerun must end with the records of an uninterrupted run,
bit for bit (timings aside: tokens_per_s, elapsed_s, wall_time_s, mfu).

Processes. `python -m lab run` spends seconds importing (torch, and lab.cli imports lab.campaign: matplotlib,
scipy) before any work, so most runs here are forked from one zygote process that has imported lab once: each child
runs `lab.cli.main(argv)`, which is all `python -m lab run argv` does, with its own environment and stdout/stderr
files, and is killed with a real SIGKILL. Two tests run `python -m lab run` itself, end to end.

Kill moments: the fault points of lab.records.fault (LAB_FAULT=<point> or <point>@<step or file name>: the process
SIGKILLs itself there), a kill a fixed delay after start, and kills as soon as metrics.jsonl holds N rows.
"""
from __future__ import annotations

import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.config import get_config
from lab.data import write_shard

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # the default data_dir of `python -m lab run`, shared with tests/test_distributed.py
TIMING = ("tokens_per_s", "elapsed_s", "wall_time_s", "mfu")
RECORDS = {"config.json", "routing.md", "routing.json", "meta.json", "metrics.jsonl", "summary.json", "lock"}
LONG = dict(steps=200, ckpt_every=10)  # the kill loop's run: evaluations every 12 steps, 19 checkpoints
DIVERGE = dict(model="gpt", optimizer="adamw", adamw_lr=10.0)  # diverges at step 1 at the smoke preset
WAIT_S = 300

# Reads one JSON command per line: {"cmd": "run", argv, env, out, err, fsize} forks a child running lab.cli.main(argv)
# and answers {"pid"}; {"cmd": "wait", pid, timeout} reaps it (SIGKILL after timeout) and answers {"rc", "timed_out"}.
ZYGOTE = r"""
import json, os, signal, sys, time, traceback
import lab.cli, lab.campaign, lab.train  # what every `python -m lab run` imports, paid once
import torch._dynamo  # imported by the first torch.optim.Optimizer (3 s on a busy 2-core box)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    job = json.loads(line)
    if job["cmd"] == "wait":
        end, timed_out = time.monotonic() + job["timeout"], False
        while True:
            pid, status = os.waitpid(job["pid"], os.WNOHANG)
            if pid:
                break
            if time.monotonic() > end:
                os.kill(job["pid"], signal.SIGKILL)
                _, status = os.waitpid(job["pid"], 0)
                timed_out = True
                break
            time.sleep(0.005)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "timed_out": timed_out}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        rc = 1
        try:
            for fd, path in ((1, job["out"]), (2, job["err"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            os.environ.update(job["env"])
            if job["fsize"]:  # a file-size limit: writes past it fail with EFBIG, as on a full disk
                import resource
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (job["fsize"], job["fsize"]))
            rc = lab.cli.main(job["argv"])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    print(json.dumps({"pid": pid}), flush=True)
"""


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_FAULT", "LAB_COMMAND", "WORLD_SIZE")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}


class Proc:
    """One child of the zygote: a `python -m lab run` without the interpreter start."""

    def __init__(self, zygote: Zygote, pid: int, out: Path, err: Path):
        self.zygote, self.pid, self.out, self.err, self.rc = zygote, pid, out, err, None
        self.t0, self.wall = time.monotonic(), None

    def wait(self, timeout: float = WAIT_S) -> int:
        if self.rc is None:
            ans = self.zygote.ask({"cmd": "wait", "pid": self.pid, "timeout": timeout})
            self.wall = time.monotonic() - self.t0
            assert not ans["timed_out"], f"pid {self.pid} ran past {timeout} s:\n{self.stderr[-3000:]}"
            self.rc = ans["rc"]
        return self.rc

    def alive(self) -> bool:
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    def kill(self) -> int:
        os.kill(self.pid, signal.SIGKILL)
        return self.wait()

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def said(self) -> list[str]:
        """What the process told the user on stderr: its [lab] warnings, error lines and tracebacks (not the
        progress bar)."""
        lines = self.stderr.replace("\r", "\n").split("\n")
        return [ln for ln in lines if ln.startswith(("[lab]", "error", "Traceback"))]

    def last_line(self) -> str:
        return self.stdout.strip().splitlines()[-1]


class Zygote:
    def __init__(self, logs: Path):
        self.logs, self.n = logs, 0
        self.p = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=ROOT, env=_env(), text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, msg: dict) -> dict:
        self.p.stdin.write(json.dumps(msg) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, f"the zygote died (rc {self.p.poll()})"
        return json.loads(line)

    def start(self, args: list[str], env: dict | None = None, fsize: int = 0) -> Proc:
        self.n += 1
        out, err = self.logs / f"{self.n}.out", self.logs / f"{self.n}.err"
        pid = self.ask({"cmd": "run", "argv": args, "env": env or {}, "out": str(out), "err": str(err),
                        "fsize": fsize})["pid"]
        return Proc(self, pid, out, err)

    def run(self, args: list[str], env: dict | None = None, fsize: int = 0) -> Proc:
        p = self.start(args, env, fsize)
        p.wait()
        return p

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=60)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


def argv(runs: Path, *items: str, **kw) -> list[str]:
    """`python -m lab run --preset smoke runs_dir=<runs> data_dir=<repo data> k=v ...` (without `python -m lab`)."""
    kw = {"runs_dir": runs, "data_dir": DATA, **kw}
    return ["run", "--preset", "smoke", *[f"{k}={v}" for k, v in kw.items()], *items]


def run_dir(runs: Path, **kw) -> Path:
    return runs / get_config("smoke", **kw).run_id()


def killed(zygote, tmp_path: Path, fault: str) -> tuple[Path, Path]:
    """A smoke run under tmp_path/runs that SIGKILLed itself at `fault`: (runs, its run directory)."""
    runs = tmp_path / "runs"
    assert zygote.run(argv(runs), env={"LAB_FAULT": fault}).rc == -signal.SIGKILL
    return runs, run_dir(runs)


def untimed(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMING}


def log_lines(d: Path) -> tuple[list[str], str]:
    """(complete lines of metrics.jsonl, the torn tail after the last newline: '' if none)."""
    text = (d / "metrics.jsonl").read_text() if (d / "metrics.jsonl").exists() else ""
    *lines, tail = text.split("\n")
    return lines, tail


def rows_on_disk(d: Path) -> tuple[list[dict], str]:
    lines, tail = log_lines(d)
    return [untimed(json.loads(ln)) for ln in lines], tail  # every complete line must parse


def run_records(d: Path) -> tuple[dict, list[dict]]:
    """(summary, metrics rows) without timings; a log with a torn line or an unreadable one fails."""
    rows, tail = rows_on_disk(d)
    assert tail == "", f"{d}/metrics.jsonl ends in a torn line {tail[:60]!r}"
    return untimed(json.loads((d / "summary.json").read_text())), rows


def assert_finished_like(d: Path, ref: dict, extra: set = frozenset()) -> None:
    """`d` holds the records of the uninterrupted run `ref`, bit for bit (timings aside), and nothing else."""
    summary, rows = run_records(d)
    assert summary == ref["summary"]
    assert rows == ref["rows"]
    assert {p.name for p in d.iterdir()} == RECORDS | extra  # no checkpoint, no temp files
    assert _config(d) == ref["config"] and json.loads((d / "routing.json").read_text()) == ref["routing"]
    assert json.loads((d / "meta.json").read_text())["run_id"] == d.name


def _config(d: Path) -> dict:
    """config.json without where the run was written and whether it was mirrored"""
    return {k: v for k, v in json.loads((d / "config.json").read_text()).items() if k not in ("runs_dir", "wandb")}


def reference(zygote, runs: Path, **kw) -> dict:
    p = zygote.run(argv(runs, **kw))
    assert p.rc == 0, p.stderr[-3000:]
    d = run_dir(runs, **kw)
    summary, rows = run_records(d)
    steps = get_config("smoke", **kw).steps
    assert summary["status"] == "finished" and summary["steps"] == steps
    assert [r["step"] for r in rows] == list(range(steps + 1))
    return {"dir": d, "summary": summary, "rows": rows, "line": p.last_line(), "wall": p.wall,
            "routing": json.loads((d / "routing.json").read_text()), "config": _config(d)}


@pytest.fixture(scope="module")
def ref_smoke(zygote, tmp_path_factory):
    """The uninterrupted smoke run: 12 steps, checkpoints at 6, evaluations at 0, 6 and 12."""
    return reference(zygote, tmp_path_factory.mktemp("ref_smoke"))


@pytest.fixture(scope="module")
def ref_long(zygote, tmp_path_factory):
    return reference(zygote, tmp_path_factory.mktemp("ref_long"), **LONG)


def temps(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob(".*"))


# ---------------------------------------------------------------------------------------------------------------
# kill -9 at many moments of one run, each followed by a rerun (which the next kill interrupts in turn)

KILLS = [
    "atomic_written@config.json",    # before any training: the first record complete in its temp file
    0.2,                             # seconds after start: loading data, taking the lock, writing records
    "ckpt_written@10",               # the first checkpoint complete in its temp file, no ckpt.pt yet
    "metrics_torn@4",                # no checkpoint: half of row 4 written
    "ckpt_replaced@10",              # the first checkpoint just in place
    "metrics_torn@15",               # resumed at 10: half of row 15 written
    "atomic_written@metrics.jsonl",  # resuming: the log cut back to rows 0..9 in a temp file, not yet in place
    "ckpt_written@30",               # checkpoint 20 in place, 30 complete in its temp file
    47, 66, 83, 100, 121, 138, 155, 177,  # as soon as metrics.jsonl holds this many rows (+ 0-40 ms)
    "ckpt_replaced@190",             # the last checkpoint
    "atomic_written@summary.json",   # the last row written, summary.json complete in its temp file
    "summary_written",               # summary.json in place, the checkpoint not yet removed
]
# what a kill leaves on disk: (complete rows, torn tail, ckpt.pt exists, temp files)
LEFT = {
    "ckpt_written@10": (10, False, False, [".ckpt.pt."]),
    "metrics_torn@4": (4, True, False, []),
    "ckpt_replaced@10": (10, False, True, []),
    "metrics_torn@15": (15, True, True, []),
    "atomic_written@metrics.jsonl": (15, True, True, [".metrics.jsonl."]),
    "ckpt_replaced@190": (190, False, True, []),
    "atomic_written@summary.json": (201, False, True, [".summary.json."]),
    "summary_written": (201, False, True, []),
}


def _kill_at(zygote, args: list[str], d: Path, how, rng: random.Random) -> Proc:
    if isinstance(how, str):
        p = zygote.start(args, env={"LAB_FAULT": how})
        assert p.wait() == -signal.SIGKILL, f"fault {how} did not fire:\n{p.stderr[-3000:]}"
        return p
    p = zygote.start(args)
    if isinstance(how, float):
        time.sleep(how)
    else:
        while not (d / "metrics.jsonl").exists() or (d / "metrics.jsonl").read_bytes().count(b"\n") < how:
            assert p.alive(), f"the run ended before row {how}:\n{p.stderr[-3000:]}"
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.04))
    assert p.kill() == -signal.SIGKILL
    return p


def test_kill_at_many_moments_then_rerun_gives_the_uninterrupted_records(zygote, tmp_path, ref_long):
    """19 kills of one 200-step run (checkpoint every 10 steps); after each, the records on disk are a prefix of
    the uninterrupted run's, and the rerun goes on from there. The last rerun ends with the same records."""
    runs, rng = tmp_path / "runs", random.Random(0)
    d, args = run_dir(runs, **LONG), argv(runs, **LONG)
    prev = None
    for how in KILLS:
        p = _kill_at(zygote, args, d, how, rng)
        said = p.said()
        assert not any(s.startswith(("Traceback", "error")) for s in said), (how, said)
        if prev == "ckpt_written@10":  # this process started after a kill mid checkpoint write
            assert any(s.startswith(f"[lab] removed {d}/.ckpt.pt.") for s in said), said
        if prev in ("metrics_torn@15", "atomic_written@metrics.jsonl"):  # it resumed over a torn last line
            assert sum("dropped a torn last line" in s for s in said) == 1, said
        rows, tail = rows_on_disk(d)
        assert rows == ref_long["rows"][:len(rows)], f"after kill {how}: rows that the uninterrupted run lacks"
        if how in LEFT:
            n, torn, ckpt, tmp = LEFT[how]
            assert (len(rows), bool(tail), (d / "ckpt.pt").exists()) == (n, torn, ckpt), how
            assert [t.rsplit(".", 1)[0] + "." for t in temps(d)] == tmp, (how, temps(d))
        if how == "summary_written":
            assert run_records(d)[0] == ref_long["summary"]
        else:
            assert not (d / "summary.json").exists(), how
        prev = how
    # the last kill left summary.json in place: the run is finished, and the rerun says so without training
    val = f"val loss {ref_long['summary']['final_val_loss']:.4f}"
    assert ref_long["line"] == f"run {d.name}: finished after 200 steps, {val}"
    already = f"run {d.name}: already finished after 200 steps, {val} ({d}, not retrained)"
    last = zygote.run(args)
    assert last.rc == 0 and last.said() == [], last.stderr[-3000:]
    assert last.last_line() == already
    assert_finished_like(d, ref_long)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.iterdir()}
    again = zygote.run(args)  # a finished run is never retrained, nor its records touched
    assert again.rc == 0 and again.last_line() == already and again.said() == []
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.iterdir()} == before


def test_second_writer_exits_at_once_and_the_first_finishes(zygote, tmp_path, ref_long):
    runs = tmp_path / "runs"
    d = run_dir(runs, **LONG)
    first = zygote.start(argv(runs, **LONG))
    while not ((d / "lock").exists() and (d / "lock").read_text().strip() == str(first.pid)):
        assert first.alive(), first.stderr[-3000:]
        time.sleep(0.01)
    second = zygote.run(argv(runs, **LONG))
    assert first.alive(), "the first writer finished before the second was refused: the test proves nothing"
    assert second.rc == 3 and second.stdout == ""
    assert second.said() == [f"error: run {d.name} is being trained by another process (pid {first.pid}; "
                             f"lock {d}/lock): not starting a second writer"]
    assert first.wait() == 0 and first.last_line() == ref_long["line"]
    assert_finished_like(d, ref_long)


# ---------------------------------------------------------------------------------------------------------------
# a torn metrics log

def test_torn_last_line_with_a_checkpoint_keeps_the_rows_before_it(zygote, tmp_path, ref_smoke):
    runs, d = killed(zygote, tmp_path, "metrics_torn@8")
    lines, tail = log_lines(d)
    assert len(lines) == 8 and tail.startswith('{"step": 8') and (d / "ckpt.pt").exists()  # checkpoint at 6
    p = zygote.run(argv(runs))
    assert p.rc == 0 and p.said() == [f"[lab] {d}/metrics.jsonl: dropped a torn last line ({tail[:60]!r})"]
    assert log_lines(d)[0][:6] == lines[:6]  # rows 0..5 kept as written (timings too): resumed, not retrained
    assert p.last_line() == ref_smoke["line"]
    assert_finished_like(d, ref_smoke)


def test_torn_last_line_without_a_checkpoint_starts_a_fresh_log(zygote, tmp_path, ref_smoke):
    runs, d = killed(zygote, tmp_path, "metrics_torn@3")
    lines, tail = log_lines(d)
    assert len(lines) == 3 and tail and not (d / "ckpt.pt").exists()
    p = zygote.run(argv(runs))
    assert p.rc == 0 and p.said() == [] and p.last_line() == ref_smoke["line"]
    assert_finished_like(d, ref_smoke)


def test_a_log_that_lacks_rows_before_the_checkpoint_restarts_the_run(zygote, tmp_path, ref_smoke):
    """Resuming over a gap would leave a log with missing rows: the run starts again from step 0 instead."""
    runs, d = killed(zygote, tmp_path, "ckpt_replaced@6")
    lines, _ = log_lines(d)
    (d / "metrics.jsonl").write_text("".join(ln + "\n" for i, ln in enumerate(lines) if i not in (2, 3)))
    p = zygote.run(argv(runs))
    assert p.rc == 0 and p.said() == [f"[lab] {d}/metrics.jsonl lacks the rows of 2 of the 6 steps before the "
                                      "checkpoint (first: 2): the run starts again from step 0"]
    assert_finished_like(d, ref_smoke)


# ---------------------------------------------------------------------------------------------------------------
# corrupt records

@pytest.mark.parametrize("damage", ["truncated", "empty", "not_a_checkpoint"])
def test_corrupt_checkpoint_is_moved_aside_and_the_run_restarts(zygote, tmp_path, ref_smoke, damage):
    runs = tmp_path / "runs"
    d, ckpt = run_dir(runs), run_dir(runs) / "ckpt.pt"
    assert zygote.run(argv(runs), env={"LAB_FAULT": "ckpt_replaced@6"}).rc == -signal.SIGKILL
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:ckpt.stat().st_size // 2])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    else:
        torch.save({"model": {}, "step": 6}, ckpt)
    bad = ckpt.read_bytes()
    p = zygote.run(argv(runs))
    assert p.rc == 0, p.stderr[-3000:]
    said = p.said()
    assert len(said) == 1 and said[0].startswith(f"[lab] {ckpt}: ") and \
        said[0].endswith(": moved to ckpt.pt.corrupt, the run starts again from step 0"), said
    assert (d / "ckpt.pt.corrupt").read_bytes() == bad
    assert p.last_line() == ref_smoke["line"]
    assert_finished_like(d, ref_smoke, extra={"ckpt.pt.corrupt"})


def test_garbage_summary_and_config_of_an_unfinished_run(zygote, tmp_path, ref_smoke):
    """summary.json garbage: one line naming it, the run resumes from its checkpoint; config.json garbage: rewritten."""
    runs, d = killed(zygote, tmp_path, "ckpt_replaced@6")
    lines, _ = log_lines(d)
    config = (d / "config.json").read_text()
    (d / "summary.json").write_text('{"status": "fini')
    (d / "config.json").write_bytes(b"\x00\xff garbage")
    p = zygote.run(argv(runs))
    assert p.rc == 0 and len(p.said()) == 1, p.said()
    assert p.said()[0].startswith(f"[lab] {d}/summary.json: not valid JSON (") and p.said()[0].endswith(
        "): ignoring it, the run resumes from its checkpoint (or starts again)")
    assert log_lines(d)[0][:6] == lines[:6]  # resumed at 6: rows 0..5 kept as written
    assert (d / "config.json").read_text() == config
    assert_finished_like(d, ref_smoke)


@pytest.mark.parametrize("summary", ["garbage", "not_a_summary", "deleted"])
def test_finished_run_without_a_readable_summary_retrains(zygote, tmp_path, ref_smoke, summary):
    runs = tmp_path / "runs"
    d = run_dir(runs)
    shutil.copytree(ref_smoke["dir"], d)
    if summary == "deleted":
        (d / "summary.json").unlink()
    else:
        (d / "summary.json").write_text("}{" if summary == "garbage" else "[1, 2]")
    p = zygote.run(argv(runs))
    assert p.rc == 0 and p.last_line() == ref_smoke["line"]  # "finished after 12 steps", once
    if summary == "deleted":
        assert p.said() == []
    else:
        assert len(p.said()) == 1 and p.said()[0].startswith(f"[lab] {d}/summary.json: "), p.said()
    assert_finished_like(d, ref_smoke)


# ---------------------------------------------------------------------------------------------------------------
# leftovers, a failed write, a diverged run

def test_leftover_temp_files_are_removed_on_restart(zygote, tmp_path, ref_smoke):
    runs, d = killed(zygote, tmp_path, "ckpt_written@6")
    planted = [d / f".{name}.x1y2z3" for name in ("metrics.jsonl", "summary.json", "config.json", "meta.json")]
    for p in planted:
        p.write_text("half")
    left = sorted(d.glob(".*"))
    assert len(left) == 5 and any(p.name.startswith(".ckpt.pt.") for p in left)
    p = zygote.run(argv(runs))
    assert p.rc == 0 and sorted(p.said()) == sorted(
        f"[lab] removed {t}, the temp file of an interrupted write" for t in left)
    assert temps(d) == []
    assert_finished_like(d, ref_smoke)


def test_failed_first_checkpoint_write_then_rerun(zygote, tmp_path, ref_smoke):
    """The first checkpoint does not fit (a file-size limit: EFBIG, as ENOSPC on a full disk): the run is recorded
    as failed, its temp file removed; the rerun trains 12 steps, not 18."""
    runs = tmp_path / "runs"
    d = run_dir(runs)
    p = zygote.run(argv(runs), fsize=100_000)  # the smoke checkpoint is ~0.5 MB, every other record < 10 kB
    assert p.rc == 1, p.stderr[-3000:]
    said = p.said()
    assert len(said) == 1 and said[0].startswith(f"error: run {d.name} failed (OSError: writing {d}/ckpt.pt failed (")
    assert said[0].endswith("; a full disk?)); recorded as failed in its summary.json, a rerun starts from step 0 "
                            "(no checkpoint)"), said
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "failed" and s["steps"] == 6 and s["error"]
    assert not (d / "ckpt.pt").exists() and temps(d) == []
    p = zygote.run(argv(runs))
    assert p.rc == 0 and p.last_line() == ref_smoke["line"]
    assert_finished_like(d, ref_smoke)


def test_diverged_run_counts_the_step_that_diverged(zygote, tmp_path):
    runs = tmp_path / "runs"
    d = run_dir(runs, **DIVERGE)
    assert zygote.run(argv(runs, **DIVERGE), env={"LAB_FAULT": "atomic_written@summary.json"}).rc == -signal.SIGKILL
    assert not (d / "summary.json").exists()
    p = zygote.run(argv(runs, **DIVERGE))
    s = json.loads((d / "summary.json").read_text())
    assert p.rc == 2 and s["status"] == "diverged" and s["steps"] == s["diverged_at"] + 1
    assert p.last_line() == f"run {d.name}: diverged after {s['steps']} steps"
    rows, tail = rows_on_disk(d)
    assert [r["step"] for r in rows] == list(range(s["steps"])) and tail == ""
    assert {x.name for x in d.iterdir()} == RECORDS
    mtime = (d / "summary.json").stat().st_mtime_ns
    again = zygote.run(argv(runs, **DIVERGE))  # a diverged run is final: never retrained
    assert again.rc == 2 and (d / "summary.json").stat().st_mtime_ns == mtime
    assert again.last_line() == f"run {d.name}: already diverged after {s['steps']} steps ({d}, not retrained)"


# ---------------------------------------------------------------------------------------------------------------
# values refused before any work

@pytest.mark.parametrize("item", ["lr=inf", "weight_decay=nan", "diverge_factor=nan", "adam_eps=inf",
                                  "adam_betas=0.9,nan", "grad_clip=-inf"])
def test_non_finite_values_refused_before_any_work(zygote, tmp_path, item):
    runs = tmp_path / "runs"
    p = zygote.run(argv(runs, item))
    key, value = item.split("=")
    shown = repr(tuple(float(v) for v in value.split(","))) if "," in value else float(value)
    assert p.rc == 2 and p.stdout == ""
    assert p.said() == [f"error: config: {key}={shown} must be a finite number (nan and inf are refused)"]
    assert not runs.exists()


def test_python_m_lab_run_refuses_lr_inf(tmp_path):
    """End to end, as typed: one line, exit 2, nothing written."""
    runs = tmp_path / "runs"
    p = subprocess.run([sys.executable, "-m", "lab", *argv(runs, "lr=inf")], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=WAIT_S)
    assert (p.returncode, p.stdout, p.stderr) == (
        2, "", "error: config: lr=inf must be a finite number (nan and inf are refused)\n")
    assert not runs.exists()


def test_shard_with_token_ids_past_vocab_size_refused_before_any_work(tmp_path):
    """End to end with `python -m lab run`: a FineWeb shard of another tokenizer fails at load, not mid-run."""
    fw, runs = tmp_path / "data" / "fineweb", tmp_path / "runs"
    write_shard(fw / "fineweb_val_000000.bin", np.arange(4096) % 50257)
    bad = np.arange(8192) % 50257
    bad[5000] = 60000
    write_shard(fw / "fineweb_train_000001.bin", bad)
    p = subprocess.run([sys.executable, "-m", "lab", *argv(runs, data_dir=tmp_path / "data", data="fineweb",
                                                             vocab_size=50304)],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=WAIT_S)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == (f"error: shard {fw}/fineweb_train_000001.bin: token id 60000 >= vocab_size=50304 (a shard "
                        "of another tokenizer? set vocab_size to at least 60001 or rebuild the shard)\n")
    assert not runs.exists()


# ---------------------------------------------------------------------------------------------------------------
# wandb with a key but a server that cannot be used

class _Error500(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def wandb_server(request):
    """(url, seconds the probe may take) of a server that refuses connections, accepts them and never answers, or
    answers every request with HTTP 500."""
    kind = request.param
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = None
    if kind == "refused":
        sock.close()  # nothing listens on the port
    elif kind == "silent":
        sock.listen(16)  # the kernel completes the handshake; nobody ever reads or answers
    else:
        sock.close()
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Error500)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}", kind
    if server:
        server.shutdown()
        server.server_close()
    sock.close()


@pytest.mark.parametrize("wandb_server", ["refused", "silent", "error500"], indirect=True)
def test_unusable_wandb_server_costs_seconds_and_the_run_goes_on(zygote, tmp_path, ref_smoke, wandb_server):
    url, kind = wandb_server
    home = tmp_path / "home"
    env = {"WANDB_BASE_URL": url, "WANDB_API_KEY": "0123456789abcdef" * 2 + "01234567", "HOME": str(home),
           "WANDB_DIR": str(home), "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_CACHE_DIR": str(home / "cache")}
    off = zygote.run(argv(tmp_path / "off"), env=env)
    on = zygote.run(argv(tmp_path / "on", wandb="online"), env=env)
    assert off.rc == 0 and on.rc == 0 and on.last_line() == ref_smoke["line"]
    d = run_dir(tmp_path / "on")
    said = on.said()
    assert len(said) == 1 and said[0].startswith(
        f"[lab] wandb mirror off for run {d.name}, which goes on without it: ConnectionError: {url} cannot be used ("
    ), said
    extra = on.wall - off.wall
    assert extra < (8.0 if kind == "silent" else 4.0), f"{kind}: wandb cost {extra:.1f} s"  # the probe waits 5 s
    assert_finished_like(d, ref_smoke)
