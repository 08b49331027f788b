"""The training loop: complete run records, resume == uninterrupted, divergence/failure recorded, bad input refused."""
import inspect
import json

import pytest
import torch

import lab.train as T
from lab import records
from lab.cli import main
from lab.config import get_config

DIVERGE = dict(model="gpt", optimizer="adamw", adamw_lr=10.0)  # blows up at step 1 at the smoke preset


def cfg(tmp_path, **kw):
    return get_config("smoke", runs_dir=str(tmp_path / "runs"), data_dir=str(tmp_path.parent / "data"), **kw)


def test_run_writes_complete_records(tmp_path):
    c = cfg(tmp_path)
    s = T.train(c, progress=False)
    d = tmp_path / "runs" / c.run_id()
    assert s == records.read_summary(d) and s["status"] == "finished" and s["steps"] == c.steps
    assert s["final_val_loss"] < 5.6 and s["best_val_loss"] <= s["final_val_loss"]  # below ln(256) = 5.55 + noise
    assert json.loads((d / "config.json").read_text()) == json.loads(json.dumps(c.to_dict()))
    meta = records.read_json(d / "meta.json")
    assert {"git_commit", "git_dirty", "versions", "device"} <= set(meta) and meta["versions"]["torch"]
    assert "| name" in (d / "routing.md").read_text()
    rows = records.read_metrics(d)
    assert [r["step"] for r in rows] == list(range(c.steps + 1))
    for key in ("train_loss", "lr/matrix", "lr/embed", "momentum", "weight_decay", "grad_norm", "tokens_per_s"):
        assert key in rows[1], key
    assert rows[-1]["val_loss"] == s["final_val_loss"]
    assert not (d / "ckpt.pt").exists()  # a finished run keeps no checkpoint


def test_killed_run_resumes_to_the_same_numbers(tmp_path):
    a, b = cfg(tmp_path / "a"), cfg(tmp_path / "b")
    whole = T.train(a, progress=False)
    with pytest.raises(KeyboardInterrupt):
        T.train(b, progress=False, _stop_at=8)  # killed after step 8; last checkpoint at step 6
    d = tmp_path / "b" / "runs" / b.run_id()
    assert records.read_summary(d) is None and (d / "ckpt.pt").exists()
    resumed = T.train(b, progress=False)
    for k in ("final_val_loss", "best_val_loss", "final_train_loss", "steps", "status"):
        assert resumed[k] == whole[k], k
    losses = lambda p: [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in records.read_metrics(p)]
    assert losses(d) == losses(tmp_path / "a" / "runs" / a.run_id())


def test_finished_run_is_not_retrained(tmp_path):
    c = cfg(tmp_path)
    T.train(c, progress=False)
    p = tmp_path / "runs" / c.run_id() / "summary.json"
    mtime = p.stat().st_mtime_ns
    assert T.train(c, progress=False)["status"] == "finished" and p.stat().st_mtime_ns == mtime


def test_divergence_is_recorded(tmp_path):
    s = T.train(cfg(tmp_path, **DIVERGE), progress=False)
    assert s["status"] == "diverged" and s["diverged_at"] is not None and s["final_val_loss"] is None


def test_failure_is_recorded_and_raised(tmp_path, monkeypatch):
    def boom(self, step):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(T.Run, "train_step", boom)
    c = cfg(tmp_path)
    with pytest.raises(RuntimeError):
        T.train(c, progress=False)
    s = records.read_summary(tmp_path / "runs" / c.run_id())
    assert s["status"] == "failed" and "disk on fire" in s["error"]


@pytest.mark.parametrize("overrides", [
    dict(orthogonalizer="polar_express"), dict(normuon=True), dict(cautious_wd=True, weight_decay=0.1),
    dict(geodesic="lr"), dict(geodesic="lr_norm"), dict(project_every=7), dict(model="gated_ngpt"),
    dict(model="gpt"), dict(optimizer="adamw"), dict(optimizer="adamw", cautious_wd=True, adam_weight_decay=0.1),
    dict(grad_accum=2), dict(dtype="bf16"),
])
def test_every_option_trains_and_is_recorded(tmp_path, overrides):
    c = cfg(tmp_path, **overrides)
    s = T.train(c, progress=False)
    assert s["status"] == "finished"
    d = tmp_path / "runs" / c.run_id()
    saved = records.read_json(d / "config.json")
    assert all(saved[k] == v for k, v in overrides.items())
    routing = records.read_json(d / "routing.json")
    opt = overrides.get("optimizer", "muon")
    assert any(r["optimizer"] == opt for r in routing)


@pytest.mark.parametrize("every,expected", [(1, 12), (5, 2), (7, 1)])
def test_lazy_projection_runs_exactly_on_schedule(tmp_path, monkeypatch, every, expected):
    calls = []
    real = T.project_to_sphere
    monkeypatch.setattr(T, "project_to_sphere", lambda m: (calls.append(inspect.stack()[1].function), real(m)))
    c = cfg(tmp_path, project_every=every, steps=12, optimizer="adamw", adamw_lr=0.02)
    s = T.train(c, progress=False)
    assert calls.count("train_step") == expected  # after optimizer steps k with (k + 1) % every == 0
    # evaluations (steps 0, 6 and the end) see projected weights when projection is lazy, and only then
    assert calls.count("projected_weights") == (3 if every > 1 else 0)
    assert s["max_sphere_drift"] > 0


def test_same_config_same_numbers(tmp_path):
    s1 = T.train(cfg(tmp_path / "1"), progress=False)
    s2 = T.train(cfg(tmp_path / "2"), progress=False)
    assert s1["final_val_loss"] == s2["final_val_loss"]


def test_wandb_failure_never_stops_a_run(tmp_path, monkeypatch, capsys):
    import wandb

    def broken(*a, **k):
        raise RuntimeError("no network")
    monkeypatch.setattr(wandb, "init", broken)
    monkeypatch.setattr(records, "_unreachable", lambda url, timeout: None)  # the probe passes: wandb.init fails
    assert T.train(cfg(tmp_path, wandb="online"), progress=False)["status"] == "finished"
    assert "which goes on without it: RuntimeError: no network" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["lr=-1"], "lr=-1.0 must be > 0"), (["momentum=1.5"], "momentum=1.5"), (["optimizer=sgd"], "valid choices"),
    (["colour=red"], "unknown config key"), (["seq_len=99999999"], "seq_len"), (["steps=abc"], "not a valid int"),
])
def test_bad_input_refused_before_any_work(tmp_path, capsys, argv, needle):
    rc = main(["run", "--preset", "smoke", f"runs_dir={tmp_path / 'runs'}", f"data_dir={tmp_path.parent / 'data'}",
               *argv])
    assert rc == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_preset_refused():
    with pytest.raises(ValueError, match="valid presets: smoke, cpu, h100"):
        get_config("huge")


def test_run_id_ignores_only_what_a_run_never_reads(tmp_path):
    muon = get_config("smoke")
    assert muon.run_id() == get_config("smoke", adamw_lr=0.5).run_id()  # Muon runs never read adamw_lr
    assert muon.run_id() == get_config("smoke", beta2=0.5).run_id()  # nor beta2 without NorMuon
    assert muon.run_id() != get_config("smoke", lr=0.5).run_id()
    assert get_config("smoke", normuon=True).run_id() != get_config("smoke", normuon=True, beta2=0.5).run_id()
    adamw = get_config("smoke", optimizer="adamw")
    assert adamw.run_id() == get_config("smoke", optimizer="adamw", lr=0.5, orthogonalizer="polar_express").run_id()
    assert adamw.run_id() != get_config("smoke", optimizer="adamw", adamw_lr=0.5).run_id()
    assert muon.run_id() == get_config("smoke", runs_dir="elsewhere", wandb="offline").run_id()
    # and "never reads" is true: the numbers are the same
    a = T.train(cfg(tmp_path / "a"), progress=False)
    b = T.train(cfg(tmp_path / "b", adamw_lr=0.5), progress=False)
    assert a["final_val_loss"] == b["final_val_loss"]


def test_resume_loads_on_the_cpu_and_restores_the_rng_there(tmp_path, monkeypatch):
    """The GPU crash: a checkpoint loaded with map_location=<the run's device> puts the CPU RNG state on the GPU,
    and torch.set_rng_state takes only a CPU ByteTensor. Every load goes through records.load_checkpoint with
    map_location='cpu' (tensors move to the device in load_state_dict), and the RNG state is set from the CPU."""
    c = cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        T.train(c, progress=False, _stop_at=8)
    loads, states = [], []
    real_load, real_set = torch.load, torch.set_rng_state

    def spy_load(*a, **k):
        loads.append(k.get("map_location"))
        return real_load(*a, **k)

    def spy_set(state):
        states.append((state.device.type, state.dtype))
        return real_set(state)
    monkeypatch.setattr(torch, "load", spy_load)
    monkeypatch.setattr(torch, "set_rng_state", spy_set)
    assert T.train(c, progress=False)["status"] == "finished"
    assert loads == ["cpu"] and states == [("cpu", torch.uint8)]


def test_evaluations_never_change_a_lazy_runs_trajectory(tmp_path, monkeypatch):
    """Evaluating on projected weights (project, evaluate, restore) leaves a lazy run exactly where it was: the same
    train losses, drift and final weights with an evaluation after every step as with evaluations only at 0, 6, 12."""
    finals = {}
    real_finish = T.Run.finish

    def keep_weights(self, *a, **k):
        finals[self.config.val_every] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return real_finish(self, *a, **k)
    monkeypatch.setattr(T.Run, "finish", keep_weights)
    kw = dict(project_every=5, optimizer="adamw", adamw_lr=0.02)
    dense, sparse = cfg(tmp_path / "dense", val_every=1, **kw), cfg(tmp_path / "sparse", val_every=6, **kw)
    s_dense, s_sparse = T.train(dense, progress=False), T.train(sparse, progress=False)
    rows = lambda c, p: records.read_metrics(p / "runs" / c.run_id())
    r_dense, r_sparse = rows(dense, tmp_path / "dense"), rows(sparse, tmp_path / "sparse")
    assert sum("val_loss" in r for r in r_dense) == 13 and sum("val_loss" in r for r in r_sparse) == 3
    assert [r.get("train_loss") for r in r_dense] == [r.get("train_loss") for r in r_sparse]
    assert s_dense["max_sphere_drift"] == s_sparse["max_sphere_drift"] > 0
    assert s_dense["final_val_loss"] == s_sparse["final_val_loss"]
    assert all(torch.equal(finals[1][k], finals[6][k]) for k in finals[6])


@pytest.mark.parametrize("mode", ["lr", "lr_norm"])
def test_geodesic_drift_is_recorded(tmp_path, mode):
    """The geodesic-updated matrices' drift, measured after every step before any projection, is in the summary."""
    s = T.train(cfg(tmp_path, geodesic=mode, project_every=12), progress=False)
    assert s["status"] == "finished" and 0 <= s["max_geodesic_drift"] < 1e-5
    assert s["max_sphere_drift"] > 1e-3  # the AdamW-updated sphere matrices (embeddings) do drift between projections
    assert T.train(cfg(tmp_path / "plain"), progress=False)["max_geodesic_drift"] is None


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
                                       ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12),
                                       ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA GeForce RTX 4090", None)])
def test_mfu_peak_by_gpu_variant(monkeypatch, name, peak):
    """MFU's denominator: an H100 PCIe (756 TFLOP/s dense bf16) or NVL (835) is not an SXM (989); unknown: no MFU."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert T.peak_flops(torch.device("cuda")) == peak
