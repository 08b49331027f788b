"""Run provenance (issue 18, findings 1, 4, 5, 7, 8, 12), each reproduced at the smoke preset and shown fixed.

1. Run identity: adding a Config field keeps every committed id (a field added later is hashed only away from its
   NEUTRAL value); the world size and the device type / precision enter the id; a checkpoint of another world size
   is refused in one line.
4. One code version per record: meta.json keeps the code-version segments of a run; a checkpoint written by other
   code is not resumed (the run starts again from step 0, saying so in one line naming both versions).
5. A readable checkpoint that does not fit the model is moved aside in one line and the run starts again.
7. `python -m lab run` writes runs/<preset>/<id>/, where campaigns keep their runs (a committed record is reused:
   "already finished"); everything under runs/ but the committed presets' records is git-ignored; an empty or
   non-directory runs_dir is refused before any work.
8. "recorded as failed" is said only when a failed summary.json was written.
12. Ctrl-C ends with one line ("interrupted at step N; rerun to resume"), exit 130, no traceback.

Runs call train() or lab.cli.main (all `python -m lab run` does) in this process; one test sends a real SIGINT to
`python -m lab run`. Every rerun after a fault must end with the numbers of an uninterrupted run, bit for bit
(timings aside).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lab.config as C
import lab.train as T
from lab import records
from lab.cli import main
from lab.config import Config, get_config
from lab.models import build_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # the default data_dir of `python -m lab run`, shared with the other test modules
TIMING = ("tokens_per_s", "elapsed_s", "wall_time_s", "mfu")
KILL_AT = 8  # a killed run: steps 0..8 trained, its checkpoint at step 6 (the smoke preset checkpoints every 6)


def smoke(runs: Path, **kw) -> Config:
    return get_config("smoke", runs_dir=str(runs), data_dir=str(DATA), **kw)


def argv(runs: Path, *items: str) -> list[str]:
    """`python -m lab run --preset smoke runs_dir=<runs> data_dir=<repo data> ...` (without `python -m lab`)."""
    return ["run", "--preset", "smoke", f"runs_dir={runs}", f"data_dir={DATA}", *items]


def untimed(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMING}


def numbers(run_dir: Path) -> tuple[dict, list[dict]]:
    """(summary, metrics rows) without timings."""
    return untimed(records.read_summary(run_dir)), [untimed(r) for r in records.read_metrics(run_dir)]


BAR = re.compile(r"^\w+:\s+\d+%\|")  # a tqdm progress line


def said(text: str) -> list[str]:
    """The lines a process told the user (progress bars left out)."""
    return [ln for ln in re.split(r"[\r\n]", text) if ln.strip() and not BAR.match(ln)]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """The uninterrupted smoke run: (summary, rows) and the line `python -m lab run` ends with."""
    runs = tmp_path_factory.mktemp("ref") / "runs"
    s = T.train(smoke(runs), progress=False)
    assert s["status"] == "finished" and s["steps"] == 12
    return numbers(runs / smoke(runs).run_id())


def killed(runs: Path, **kw) -> tuple[Config, Path]:
    """A smoke run killed after step KILL_AT: (its config, its run directory holding the checkpoint at step 6)."""
    c = smoke(runs, **kw)
    with pytest.raises(KeyboardInterrupt):
        T.train(c, progress=False, _stop_at=KILL_AT)
    d = runs / c.run_id()
    assert records.load_checkpoint(d / "ckpt.pt")["step"] == 6 and records.read_summary(d) is None
    return c, d


# ---------------------------------------------------------------------------------------------------------------
# 1. run identity


@dataclasses.dataclass
class Later(Config):
    """Config with a field added after every committed record: its neutral value (0.0, what every run did before
    it existed) is not today's default (1.0)."""
    dummy: float = 1.0


def test_adding_a_field_keeps_every_committed_id(monkeypatch):
    """Finding 1a. Every committed runs/cpu record's config.json, read as a Config that has one more field, still
    hashes to its directory's name; without a NEUTRAL entry (the old run_id: every field hashed) none would. Changing
    lr, or the new field away from neutral, changes the id."""
    configs = sorted((ROOT / "runs" / "cpu").glob("*/config.json"))
    assert len(configs) >= 174
    recorded = {p.parent.name: json.loads(p.read_text()) for p in configs}
    assert all("dummy" not in d for d in recorded.values())

    monkeypatch.setitem(C.NEUTRAL, "dummy", 0.0)  # what adding the field to lab/config.py must do
    unchanged = [rid for rid, d in recorded.items() if Later.from_dict(d).run_id() == rid]
    print(f"\n{len(unchanged)} of {len(recorded)} committed ids unchanged with a field added")
    assert len(unchanged) == len(recorded)
    assert all(Later.from_dict(d).dummy == 0.0 for d in recorded.values())  # a record predates it: neutral

    for rid, d in recorded.items():
        c = Later.from_dict(d)
        assert dataclasses.replace(c, dummy=0.5).run_id() != rid  # away from neutral: another run
        if c.optimizer == "muon":  # Muon runs read lr (AdamW runs never do: adamw_lr is theirs)
            assert dataclasses.replace(c, lr=c.lr * 1.5).run_id() != rid
        else:
            assert dataclasses.replace(c, adamw_lr=c.adamw_lr * 1.5).run_id() != rid
    assert Later().run_id() != Later(dummy=0.0).run_id() == Config().run_id()  # neutral, not the current default

    monkeypatch.delitem(C.NEUTRAL, "dummy")  # the finding: a new field hashed always re-hashes every record
    assert not any(Later.from_dict(d).run_id() == rid for rid, d in recorded.items())


def test_world_size_is_in_the_id_and_another_world_size_is_refused(tmp_path, capsys):
    """Finding 1b. Two processes (twice the global batch) get another id than one, so a 2-process run never reuses a
    1-process record (tests/test_distributed.py trains both); a checkpoint written by another number of processes
    (one from before world size was in the id) is refused in one line, the run left as it was."""
    c = smoke(tmp_path / "runs")
    assert c.run_id(1) == c.run_id() and len({c.run_id(1), c.run_id(2), c.run_id(4)}) == 3
    _, d = killed(tmp_path / "runs")
    ck = records.load_checkpoint(d / "ckpt.pt")
    records.save_checkpoint(d / "ckpt.pt", {**ck, "world": 2})
    capsys.readouterr()
    rc = main(argv(tmp_path / "runs"))
    out, err = capsys.readouterr()
    line = (f"error: {d}/ckpt.pt: written by 2 process(es), this run has 1: not resumed at another world size (the "
            "global batch would change under one run id); remove it to train this run from step 0")
    print(f"\n{line}")
    assert (rc, out, said(err)) == (2, "", [line])
    assert records.load_checkpoint(d / "ckpt.pt")["world"] == 2 and records.read_summary(d) is None
    assert len(records.read_metrics(d)) == KILL_AT + 1


def test_cuda_bf16_never_shares_an_id_with_cpu_fp32(monkeypatch):
    """Finding 1c. `device: auto, dtype: auto` (every committed record) resolves to CPU fp32 here and to CUDA bf16
    autocast on a GPU box: the GPU box gets another id, so it never reuses a CPU record; precision forced by hand
    (dtype=fp32 on CUDA, dtype=bf16 on the CPU) is another run again."""
    auto, fp32, bf16 = get_config("smoke"), get_config("smoke", dtype="fp32"), get_config("smoke", dtype="bf16")
    here = {name: (c.execution(), c.run_id()) for name, c in [("auto", auto), ("fp32", fp32), ("bf16", bf16)]}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = {name: (c.execution(), c.run_id()) for name, c in [("auto", auto), ("fp32", fp32), ("bf16", bf16)]}
    print(f"\nCPU box: {here}\nGPU box: {gpu}")
    assert [here[k][0] for k in here] == ["cpu/fp32", "cpu/fp32", "cpu/bf16"]
    assert [gpu[k][0] for k in gpu] == ["cuda/bf16", "cuda/fp32", "cuda/bf16"]
    ids = [here[k][1] for k in here] + [gpu[k][1] for k in gpu]
    assert len(set(ids)) == 6  # no two of these runs share an id
    assert get_config("smoke", device="cpu").execution() == "cpu/fp32"  # device=cpu on a GPU box: CPU fp32
    # a committed CPU record's config, read on a GPU box: another id, so it is trained there, never reused
    config = sorted((ROOT / "runs" / "cpu").glob("*/config.json"))[0]
    committed = Config.from_dict(json.loads(config.read_text()))
    assert committed.execution() == "cuda/bf16" and committed.run_id() != config.parent.name
    monkeypatch.undo()
    assert committed.execution() == "cpu/fp32" and committed.run_id() == config.parent.name


# ---------------------------------------------------------------------------------------------------------------
# 4. one code version per record


def test_resume_with_the_same_code_keeps_its_segments(tmp_path, ref):
    """Killed at step 8 (checkpoint at 6) and resumed by the same code: meta.json lists both segments (steps 0 and 6)
    of one code version, and the numbers are the uninterrupted run's."""
    _, d = killed(tmp_path / "runs")
    code = records.code_version()
    first = records.read_json(d / "meta.json")["segments"]
    assert [s["start_step"] for s in first] == [0] and all(first[0][k] == code[k] for k in records.CODE_KEYS)
    assert T.train(smoke(tmp_path / "runs"), progress=False)["status"] == "finished"
    assert numbers(d) == ref
    segs = records.read_json(d / "meta.json")["segments"]
    assert [s["start_step"] for s in segs] == [0, 6] and segs[0] == first[0]
    assert records.code_versions(d) == [{**{k: code[k] for k in records.CODE_KEYS}, "start_step": 0}]


def test_a_code_change_restarts_the_run_from_step_0(tmp_path, ref, monkeypatch, capsys):
    """Finding 4. Killed, then the code changed (other uncommitted edits), rerun: the old behaviour resumed it and
    mixed two code versions in one record under meta.json of the new one. Now the checkpoint of the other code is
    dropped with one line naming both versions, the run trains from step 0 and ends with the uninterrupted run's
    numbers, and meta.json holds one segment: the new code from step 0."""
    _, d = killed(tmp_path / "runs")
    old = records.code_version()
    new = {**old, "git_dirty": True, "git_diff_sha1": "0123456789ab"}  # an edit to tracked code since the kill
    monkeypatch.setattr(records, "code_version", lambda root=records.PACKAGE_ROOT: new)
    capsys.readouterr()
    assert main(argv(tmp_path / "runs")) == 0
    out, err = capsys.readouterr()
    line = (f"[lab] {d}/ckpt.pt: written by code {records.describe_code(old)}, this is code "
            f"{records.describe_code(new)} (one code version per record): the run starts again from step 0")
    print(f"\n{line}")
    assert said(err) == [line] and "+ uncommitted edits 0123456789ab (one code" in line
    assert "(resumed at step" not in out
    assert numbers(d) == ref
    assert not (d / "ckpt.pt").exists() and not (d / "ckpt.pt.corrupt").exists()
    meta = records.read_json(d / "meta.json")
    assert [s["start_step"] for s in meta["segments"]] == [0] and meta["git_diff_sha1"] == "0123456789ab"
    assert records.code_versions(d) == [{**{k: new[k] for k in records.CODE_KEYS}, "start_step": 0}]


def test_same_code_is_the_committed_tree_and_the_edits():
    """Two commits of the same code (one added only run records or reports) are one version; other edits or another
    tree are another; a segment recorded before trees were hashed is told apart by its commit."""
    v = {"git_commit": "a" * 40, "git_code_tree": "t1", "git_dirty": False, "git_diff_sha1": None}
    assert records.same_code(v, {**v, "git_commit": "b" * 40})  # a commit of records only
    assert not records.same_code(v, {**v, "git_code_tree": "t2"})
    assert not records.same_code(v, {**v, "git_dirty": True, "git_diff_sha1": "e1"})
    assert not records.same_code({**v, "git_dirty": True, "git_diff_sha1": "e1"},
                                 {**v, "git_dirty": True, "git_diff_sha1": "e2"})
    assert records.same_code({**v, "git_code_tree": None}, v) and not records.same_code(
        {**v, "git_code_tree": None}, {**v, "git_commit": "b" * 40})
    assert not records.same_code(None, v)  # a checkpoint without segments (older code): never resumed
    now = records.code_version()
    assert now["git_commit"] and now["git_code_tree"] and now["git_dirty"] in (True, False)


def test_code_versions_reads_old_and_new_meta(tmp_path):
    """records.code_versions(run_dir): meta.json written before segments (every committed record) reads as one
    version from step 0; a record that mixes versions lists each with the step it started at."""
    committed = sorted((ROOT / "runs" / "cpu").glob("*/meta.json"))[0]
    meta = records.read_json(committed)
    assert "segments" not in meta
    assert records.code_versions(committed.parent) == [
        {"git_commit": meta["git_commit"], "git_code_tree": None, "git_dirty": meta["git_dirty"],
         "git_diff_sha1": None, "start_step": 0}]
    a = {"git_commit": "a" * 40, "git_code_tree": "t1", "git_dirty": False, "git_diff_sha1": None}
    b = {**a, "git_commit": "b" * 40, "git_code_tree": "t2"}
    segs = [{**a, "start_step": 0, "date": "x"}, {**a, "start_step": 100, "date": "y"},
            {**b, "start_step": 200, "date": "z"}]
    records.write_json(tmp_path / "meta.json", {"run_id": "x", **b, "segments": segs})
    assert records.code_versions(tmp_path) == [{**a, "start_step": 0}, {**b, "start_step": 200}]
    assert records.code_versions(tmp_path / "nothing") == []
    (tmp_path / "meta.json").write_text("[1, 2]")
    with pytest.raises(records.CorruptRecord, match=f"{tmp_path}/meta.json: not a run's meta.json"):
        records.code_versions(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# 5. checkpoints that do not fit the model


def _rename_a_parameter(ck: dict) -> str:
    name = next(iter(ck["model"]))
    ck["model"][f"{name}_renamed"] = ck["model"].pop(name)
    return "RuntimeError: Error(s) in loading state_dict"


def _reshape_a_momentum(ck: dict) -> str:
    st = next(s for s in ck["optimizers"][0]["state"].values() if "momentum_buffer" in s)
    st["momentum_buffer"] = st["momentum_buffer"].reshape(-1)[:3].clone()
    return "ValueError: optimizer state 'momentum_buffer' of shape (3,) for a parameter of shape"


@pytest.mark.parametrize("damage", [_rename_a_parameter, _reshape_a_momentum])
def test_a_checkpoint_that_does_not_fit_is_set_aside(tmp_path, ref, capsys, damage):
    """Finding 5. A readable checkpoint of another model (a renamed parameter; an optimizer state of another shape)
    failed with a state_dict traceback on every rerun, forever. Now it is moved to ckpt.pt.corrupt with one line and
    the run starts again, ending with the uninterrupted run's numbers."""
    c, d = killed(tmp_path / "runs")
    ck = records.load_checkpoint(d / "ckpt.pt")
    why = damage(ck)
    records.save_checkpoint(d / "ckpt.pt", ck)
    if damage is _rename_a_parameter:  # the damage is real: this checkpoint does not load
        with pytest.raises(RuntimeError, match="Missing key"):
            build_model(c).load_state_dict(records.load_checkpoint(d / "ckpt.pt")["model"])
    capsys.readouterr()
    assert main(argv(tmp_path / "runs")) == 0
    lines = said(capsys.readouterr().err)
    print(f"\n{lines}")
    assert len(lines) == 1 and lines[0].startswith(f"[lab] {d}/ckpt.pt: does not fit the model ({why}")
    assert lines[0].endswith("): moved to ckpt.pt.corrupt, the run starts again from step 0")
    assert numbers(d) == ref
    assert (d / "ckpt.pt.corrupt").exists() and not (d / "ckpt.pt").exists()
    assert [s["start_step"] for s in records.read_json(d / "meta.json")["segments"]] == [0]


# ---------------------------------------------------------------------------------------------------------------
# 7. where `lab run` writes


def test_lab_run_writes_under_its_preset_and_reuses_a_finished_record(tmp_path, monkeypatch, capsys, ref):
    """Finding 7. `python -m lab run --preset smoke` writes runs/smoke/<id>/ (LAB_RUNS_DIR moves runs/), the place a
    smoke campaign keeps the same run; a second call says "already finished" and trains nothing."""
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    args = ["run", "--preset", "smoke", f"data_dir={DATA}"]
    assert main(args) == 0
    rid = get_config("smoke").run_id()
    d = tmp_path / "runs" / "smoke" / rid
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["smoke"] and numbers(d) == ref
    val = f"{ref[0]['final_val_loss']:.4f}"
    assert capsys.readouterr().out.splitlines()[-1] == f"run {rid}: finished after 12 steps, val loss {val}"
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    monkeypatch.setattr(T.Run, "train_step", lambda *a: pytest.fail("a finished run was trained again"))
    assert main(args) == 0
    out = capsys.readouterr().out
    line = f"run {rid}: already finished after 12 steps, val loss {val} ({d}, not retrained)"
    print(f"\n{line}")
    assert out == line + "\n"
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before


def test_the_readme_example_reuses_the_committed_record(monkeypatch, capsys):
    """Finding 7: the README's one-run example finds its committed record under runs/cpu/ (it retrained it under
    runs/<id>/ before), and trains nothing."""
    monkeypatch.delenv("LAB_RUNS_DIR", raising=False)
    monkeypatch.chdir(ROOT)
    args = ["run", "--preset", "cpu", "optimizer=muon", "lr=0.023"]  # README: "One run: ..."
    c = get_config("cpu", optimizer="muon", lr=0.023, runs_dir="runs/cpu")
    s = T.recorded(c)
    assert s is not None and s["status"] == "finished", "the README example's record is not committed"
    monkeypatch.setattr(T.Run, "__init__", lambda *a, **k: pytest.fail("the committed run was trained again"))
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    print(f"\n{line}")
    assert line == (f"run {c.run_id()}: already finished after 400 steps, val loss {s['final_val_loss']:.4f} "
                    f"(runs/cpu/{c.run_id()}, not retrained)")


def _ignored(path: str) -> bool:
    p = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT)
    assert p.returncode in (0, 1), f"git check-ignore {path}: rc {p.returncode}"
    return p.returncode == 0


def test_only_committed_presets_records_are_not_ignored():
    """Finding 7: everything under runs/ is git-ignored but the committed presets' records (runs/cpu/); checkpoints,
    locks and temp files are ignored everywhere, and no committed file is ignored."""
    if subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    rid = sorted(p.parent.name for p in (ROOT / "runs" / "cpu").glob("*/config.json"))[0]
    kept = [f"runs/cpu/{rid}/{f}" for f in ("config.json", "meta.json", "metrics.jsonl", "summary.json",
                                            "routing.md", "routing.json")] + ["runs/cpu/campaigns/lr_sweep.json"]
    ignored = ["runs/smoke/0123456789ab/summary.json", "runs/0123456789ab/summary.json", "runs/h100/x/meta.json",
               "runs/elsewhere", f"runs/cpu/{rid}/ckpt.pt", f"runs/cpu/{rid}/ckpt.pt.corrupt", f"runs/cpu/{rid}/lock",
               f"runs/cpu/{rid}/.summary.json.x1y2z3", "runs/cpu/campaigns/lr_sweep.ipynb"]
    assert [p for p in kept if _ignored(p)] == [] and [p for p in ignored if not _ignored(p)] == []
    tracked_but_ignored = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard", "--", "runs"], cwd=ROOT,
                                         capture_output=True, text=True, check=True).stdout.split()
    assert tracked_but_ignored == []


@pytest.mark.parametrize("value,says", [
    ("", "is empty; give a directory (default: runs/<preset>)"),
    ("{file}", "is not a directory"),
    ("{file}/runs", "is under {file}, which is not a directory"),
])
def test_empty_or_non_directory_runs_dir_refused_before_any_work(tmp_path, monkeypatch, capsys, value, says):
    """Finding 7 (an empty runs_dir= put a run directory in the current directory) and finding 8 (runs_dir=README.md
    ended in "recorded as failed" with nothing recorded): one line, exit 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "README.md"
    file.write_text("not a directory\n")
    value, says = value.format(file=file), says.format(file=file)
    rc = main(["run", "--preset", "smoke", f"runs_dir={value}", f"data_dir={DATA}"])
    out, err = capsys.readouterr()
    assert (rc, out, said(err)) == (2, "", [f"error: config: runs_dir={value!r} {says}"])
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"] and file.read_text() == "not a directory\n"


# ---------------------------------------------------------------------------------------------------------------
# 8. "recorded as failed" only when it was


def _full_disk(*a, **k):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("summary_fails", [False, True])
def test_recorded_as_failed_only_when_it_was(tmp_path, monkeypatch, capsys, summary_fails):
    """Finding 8. The first checkpoint write fails (a full disk). If summary.json could be written, the line says
    the run is recorded as failed there; if that write fails too, it says no summary.json says so (it used to claim
    the record anyway)."""
    monkeypatch.setattr(records, "save_checkpoint", _full_disk)
    if summary_fails:
        write_json = records.write_json
        monkeypatch.setattr(records, "write_json", lambda path, obj: _full_disk() if Path(path).name == "summary.json"
                            else write_json(path, obj))
    d = tmp_path / "runs" / smoke(tmp_path / "runs").run_id()
    rc = main(argv(tmp_path / "runs"))
    lines = said(capsys.readouterr().err)
    full = "OSError: [Errno 28] No space left on device"
    what = (f"recording the failure failed too ({full}): no summary.json says so" if summary_fails else
            "recorded as failed in its summary.json") + ", a rerun starts from step 0 (no checkpoint)"
    print(f"\n{lines}")
    assert (rc, lines) == (1, [f"error: run {d.name} failed ({full}); {what}"])
    s = records.read_summary(d)
    if summary_fails:
        assert s is None
    else:
        assert s["status"] == "failed" and s["steps"] == 6 and "No space left on device" in s["error"]


def test_failure_after_a_checkpoint_says_where_a_rerun_resumes(tmp_path, monkeypatch, capsys, ref):
    """A write failure at step 9 (checkpoint at 6): recorded as failed, the line names the step a rerun resumes
    from, and the rerun ends with the uninterrupted run's numbers."""
    real = T.Run.train_step
    monkeypatch.setattr(T.Run, "train_step", lambda self, step: _full_disk() if step == 9 else real(self, step))
    d = tmp_path / "runs" / smoke(tmp_path / "runs").run_id()
    assert main(argv(tmp_path / "runs")) == 1
    assert said(capsys.readouterr().err) == [
        f"error: run {d.name} failed (OSError: [Errno 28] No space left on device); recorded as failed in its "
        "summary.json, a rerun resumes from its checkpoint at step 6"]
    assert records.read_summary(d)["status"] == "failed"
    monkeypatch.setattr(T.Run, "train_step", real)
    assert main(argv(tmp_path / "runs")) == 0 and numbers(d) == ref


def test_failure_before_training_records_nothing_and_says_so(tmp_path, monkeypatch, capsys):
    """An OSError before the run exists (its lock cannot be taken): nothing recorded, and the line says so."""
    monkeypatch.setattr(records.RunLock, "acquire", lambda self: _full_disk())
    rc = main(argv(tmp_path / "runs"))
    rid = smoke(tmp_path / "runs").run_id()
    assert (rc, said(capsys.readouterr().err)) == (
        1, [f"error: run {rid} failed (OSError: [Errno 28] No space left on device); it failed before training "
            "started: nothing recorded"])
    assert not (tmp_path / "runs" / rid / "summary.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# 12. Ctrl-C


def test_ctrl_c_is_one_line_and_the_rerun_resumes(tmp_path, monkeypatch, capsys, ref):
    """Finding 12 (in this process): Ctrl-C during step 9 (checkpoint at 6) ends with one line, exit 130, no
    traceback; the rerun resumes from step 6 and ends with the uninterrupted run's numbers."""
    real = T.Run.train_step

    def ctrl_c_at_9(self, step):
        if step == 9:
            raise KeyboardInterrupt
        return real(self, step)
    monkeypatch.setattr(T.Run, "train_step", ctrl_c_at_9)
    d = tmp_path / "runs" / smoke(tmp_path / "runs").run_id()
    assert main(argv(tmp_path / "runs")) == 130
    lines = said(capsys.readouterr().err)
    assert lines == [f"interrupted at step 9; rerun to resume (run {d.name}, from its checkpoint at step 6)"]
    monkeypatch.setattr(T.Run, "train_step", real)
    assert main(argv(tmp_path / "runs")) == 0
    assert "(resumed at step 6)" in capsys.readouterr().out
    assert numbers(d) == ref


def test_sigint_to_python_m_lab_run(tmp_path):
    """Finding 12, end to end: SIGINT to `python -m lab run` mid-run (it printed a KeyboardInterrupt traceback):
    one line naming the step and the checkpoint a rerun resumes from, exit 130."""
    runs = tmp_path / "runs"
    c = smoke(runs, steps=3000, ckpt_every=20)
    d = runs / c.run_id()
    env = {**{k: v for k, v in os.environ.items() if k not in ("LAB_FAULT", "LAB_COMMAND", "WORLD_SIZE", "RANK")},
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    p = subprocess.Popen([sys.executable, "-m", "lab", *argv(runs, "steps=3000", "ckpt_every=20")], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a `cmd &` ignores it
    try:
        end = time.monotonic() + 240
        while not ((d / "metrics.jsonl").exists() and (d / "metrics.jsonl").read_bytes().count(b"\n") >= 45):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < end, "no 45 steps in 240 s"
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = said(err)
    print(f"\n{lines[-1]}")
    assert p.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert lines[-1].startswith("interrupted at step ") and len(lines) == 1, lines
    n, saved = map(int, re.fullmatch(rf"interrupted at step (\d+); rerun to resume \(run {d.name}, from its "
                                     r"checkpoint at step (\d+)\)", lines[0]).groups())
    rows = len(records.read_metrics(d))
    assert rows <= n <= rows + 1 and saved % 20 == 0 and n - 20 <= saved <= n and saved >= 40
    assert records.load_checkpoint(d / "ckpt.pt")["step"] == saved and records.read_summary(d) is None
    assert out.startswith(f"[lab] run {d.name}: ngpt / muon for 3000 steps on cpu")
