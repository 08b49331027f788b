"""Distributed training on CPU (gloo, 2 processes): the numbers of 1 process with the same global batch (grad_clip
included) and the val loss it records, a run id per world size and checkpoints of another world size refused (the
global batch would change under one id), DistributedMuon's ownership and
state gathering, the bytes each rank hands to Muon's collectives, and torchrun end to end.

The 2-process runs drive train() itself: one torch.multiprocessing.spawn (env:// rendezvous on a free port) runs
every 2-process job of the module, and the 1-process references run in the pytest process. train() keeps no final
weights (a finished run deletes its checkpoint), so the workers wrap Run.finish to save the model's final
state_dict into the test's own directory: a test-only hook, nothing added to real runs.
"""
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import lab.train as T
from lab import records
from lab.config import get_config
from lab.data import load_data, shakespeare_shards
from lab.models import build_model
from lab.optim import distributed
from lab.optim.distributed import DistributedMuon
from lab.optim.muon import SimpleMuon

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # the default data_dir of `python -m lab run` (the torchrun test uses it through cwd)
ARMS = {
    "newton_schulz": dict(orthogonalizer="newton_schulz", normuon=True),
    "polar_express": dict(orthogonalizer="polar_express", normuon=True),
    "adamw": dict(optimizer="adamw"),
    "newton_schulz_clip": dict(orthogonalizer="newton_schulz", normuon=True, grad_clip=0.1),  # smoke norms ~0.2
}
CKPT_ARM = "newton_schulz"  # sharded momentum and NorMuon buffers: the state a world-size change must move
TOL = 1e-5                  # fp32 on CPU; observed differences are 1e-7..1e-6
SPAWN_TIMEOUT_S = 240
MIXED = [(24, 8), (8, 24), (16, 16), (40, 8), (4, 4)]  # numel 192, 192, 256, 320, 16: uneven buckets on 2 ranks
H100 = [(768, 768)] * 4 + [(6144, 768), (768, 3072)]  # one h100 layer's Muon matrices: wq, wk, wv, wo, w_fc, w_proj
BYTE_SHAPES = {
    "h100/48": [(m // 48, n // 48) for m, n in H100] * 11,  # 11 layers at 1/48 of the width: equal buckets
    "mixed": MIXED,                                          # uneven buckets: padded to the largest on the wire
}
CLIP = 1.0  # the toy gradients' norm is ~100: clipping is active


def _nb(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# bytes a rank hands to each collective: a reduce-scatter its input, an all-gather its output, a reduce or broadcast
# its tensor, an all-reduce twice its tensor (the deprecated names of the first two included)
COLLECTIVES = {
    "reduce_scatter_single": lambda out, inp, *a, **k: _nb(inp),
    "reduce_scatter_tensor": lambda out, inp, *a, **k: _nb(inp),
    "reduce_scatter": lambda out, inputs, *a, **k: sum(map(_nb, inputs)),
    "all_gather_single": lambda out, inp, *a, **k: _nb(out),
    "all_gather_into_tensor": lambda out, inp, *a, **k: _nb(out),
    "all_gather": lambda outs, inp, *a, **k: sum(map(_nb, outs)),
    "reduce": lambda t, *a, **k: _nb(t),
    "broadcast": lambda t, *a, **k: _nb(t),
    "all_reduce": lambda t, *a, **k: 2 * _nb(t),
}


def _cfg(runs_dir, batch_size, arm):
    # 3 val batches: uneven over 2 ranks (rank 0 evaluates batches 0 and 2, rank 1 batch 1)
    return get_config("smoke", steps=4, batch_size=batch_size, val_every=2, val_batches=3, ckpt_every=2,
                      runs_dir=str(runs_dir), data_dir=str(DATA), **ARMS[arm])


def _final_path(out: Path, run_dir, rank: int) -> Path:
    """Where the hook leaves a run's final weights: keyed by run directory (runs_dir is not in the run id)."""
    return out / f"{hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]}.rank{rank}.pt"


def _capturing_finish(out: Path, rank: int):
    """Run.finish that first saves the final model weights to `out` (test-only hook)."""
    finish = T.Run.finish

    def hooked(self, status, val, error=None):
        torch.save(self.model.state_dict(), _final_path(out, self.run_dir, rank))
        return finish(self, status, val, error)
    return hooked


def _optimizer_check(rank: int, out: Path) -> None:
    """DistributedMuon.step() alone (it averages the gradients itself) vs SimpleMuon on the mean gradient, 5 matrices
    of mixed shapes in 2 groups (uneven buckets); then the gathered state_dict vs SimpleMuon's, and a reload keeping
    this rank's share."""
    gen = torch.Generator().manual_seed(0)  # the same numbers on every rank
    init = [torch.randn(s, generator=gen) for s in MIXED]
    ref = [torch.nn.Parameter(t.clone()) for t in init]
    mine = [torch.nn.Parameter(t.clone()) for t in init]
    kw = dict(lr=0.05, normuon=True, weight_decay=0.1, cautious_wd=True, ortho_dtype=torch.float32)
    opt_ref = SimpleMuon([{"params": ref[:2]}, {"params": ref[2:], "lr": 0.03}], **kw)
    opt = DistributedMuon.from_simple(SimpleMuon([{"params": mine[:2]}, {"params": mine[2:], "lr": 0.03}], **kw))
    for _ in range(3):
        for a, b in zip(ref, mine):
            local = [torch.randn(a.shape, generator=gen) for _ in range(2)]  # each rank's own gradient
            a.grad = (local[0] + local[1]) / 2
            b.grad = local[rank].clone()
        opt_ref.step()
        opt.step()
    owned = {id(p) for p in opt.owned()}
    grads_off_owner = [b.grad is not None for b in mine if id(b) not in owned]  # all True: local, left alone
    sd, sd_ref = distributed.broadcast_object(opt.state_dict()), opt_ref.state_dict()  # rank 0's, as its file
    fresh = DistributedMuon.from_simple(SimpleMuon([{"params": mine[:2]}, {"params": mine[2:]}], **kw))
    fresh.load_state_dict(sd)
    torch.save({"weights": [p.detach() for p in mine], "weights_ref": [p.detach() for p in ref],
                "sd": sd, "sd_ref": sd_ref, "owned_before": len(opt.state), "owned_after": len(fresh.state),
                "n_owned": len(fresh.owned()), "grads_off_owner": grads_off_owner}, out / f"optim.rank{rank}.pt")


def _tally(monkeypatch, log: list) -> None:
    """Every torch.distributed collective of COLLECTIVES also appends (name, bytes handed) to `log`."""
    def counted(name, fn, size):
        def wrapped(*a, **k):
            log.append((name, size(*a, **k)))
            return fn(*a, **k)
        return wrapped
    for name, size in COLLECTIVES.items():
        monkeypatch.setattr(torch.distributed, name, counted(name, getattr(torch.distributed, name), size))


def _sync_check(rank: int, world: int, out: Path) -> None:
    """sync_and_clip + step, as train.py calls them, on a toy model: the Muon matrices of BYTE_SHAPES plus a 1-D gain
    on AdamW, every rank with its own gradients, grad_clip active. Saves the final weights next to 1 process's (the
    mean gradient, clip_grad_norm_, SimpleMuon and AdamW), the norms, and the collectives of the second step."""
    res = {}
    for name, shapes in BYTE_SHAPES.items():
        gen = torch.Generator().manual_seed(1)  # the same numbers on every rank
        init = [torch.randn(s, generator=gen) for s in shapes] + [torch.randn(16, generator=gen)]
        ref, mine = (torch.nn.ParameterList([torch.nn.Parameter(t.clone()) for t in init]) for _ in range(2))

        def opts(ps):
            return [SimpleMuon(list(ps)[:-1], lr=0.05, normuon=True, weight_decay=0.1, cautious_wd=True,
                               ortho_dtype=torch.float32), torch.optim.AdamW(list(ps)[-1:], lr=0.01)]
        opt_ref, opt = opts(ref), distributed.wrap(opts(mine), mine, world)
        norms, log = [], []
        for step in range(3):
            local = [[torch.randn(p.shape, generator=gen) for p in ref] for _ in range(world)]  # each rank's grads
            for i, (a, b) in enumerate(zip(ref, mine)):
                a.grad = torch.stack([g[i] for g in local]).sum(0) / world
                b.grad = local[rank][i].clone()
            norm_ref = torch.nn.utils.clip_grad_norm_(ref.parameters(), CLIP).item()
            with pytest.MonkeyPatch.context() as m:
                _tally(m, log if step == 1 else [])
                norm = distributed.sync_and_clip(mine, opt, world, CLIP)
                for o in opt:
                    o.step()
            for o in opt_ref:
                o.step()
            ref.zero_grad(set_to_none=True)
            mine.zero_grad(set_to_none=True)
            norms.append((norm, norm_ref))
        res[name] = {"weights": [p.detach() for p in mine], "weights_ref": [p.detach() for p in ref], "init": init,
                     "norms": norms, "log": log, "n_muon": sum(p.numel() for p in list(mine)[:-1]),
                     "n_adamw": mine[-1].numel()}
    torch.save(res, out / f"sync.rank{rank}.pt")


def _worker(rank: int, world: int, port: int, jobs: list, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    T.Run.finish = _capturing_finish(Path(out), rank)
    for config, stop_at in jobs:
        try:
            T.train(config, progress=False, _stop_at=stop_at)
        except KeyboardInterrupt:
            assert stop_at is not None
        except T.WorldSizeMismatch as e:  # a checkpoint of another world size: refused on every rank
            (Path(out) / f"refused.rank{rank}.txt").write_text(str(e))
    _optimizer_check(rank, Path(out))
    _sync_check(rank, world, Path(out))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(jobs: list, out: Path, world: int = 2) -> None:
    """Run `jobs` [(config, stop_at)] in `world` processes; fail (and kill them) past SPAWN_TIMEOUT_S."""
    ctx = mp.spawn(_worker, args=(world, _free_port(), jobs, str(out)), nprocs=world, join=False)
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not ctx.join(timeout=1):  # raises ProcessRaisedException with the worker's traceback
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{world}-process jobs did not finish in {SPAWN_TIMEOUT_S} s (a rank blocked in a collective?)")


def _move_run(src_runs: Path, src_cfg, src_world: int, dst_runs: Path, dst_cfg, dst_world: int) -> Path:
    """Take a killed run's directory (checkpoint included) over as another world size's run of the same global batch
    (the run ids differ: only a copy can put a checkpoint of one world size in the other's directory)."""
    assert src_cfg.run_id(src_world) != dst_cfg.run_id(dst_world)
    return Path(shutil.copytree(src_runs / src_cfg.run_id(src_world), dst_runs / dst_cfg.run_id(dst_world)))


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """Every run of the module: 1-process references here, 2-process runs in one spawn, cross-world resumes
    (refused)."""
    shakespeare_shards(DATA)  # convert once, before two processes could race for it
    tmp = tmp_path_factory.mktemp("dist")
    out = tmp / "weights"
    out.mkdir()
    mp_ = pytest.MonkeyPatch()
    mp_.setattr(T.Run, "finish", _capturing_finish(out, 0))
    try:
        one = {arm: _cfg(tmp / "one" / arm, 4, arm) for arm in ARMS}
        two = {arm: _cfg(tmp / "two" / arm, 2, arm) for arm in ARMS}
        for c in one.values():
            T.train(c, progress=False)
        # 1 -> 2: a 1-process run killed after step 2 (checkpoint at step 2), resumed by 2 processes
        one_killed = _cfg(tmp / "one_killed", 4, CKPT_ARM)
        with pytest.raises(KeyboardInterrupt):
            T.train(one_killed, progress=False, _stop_at=2)
        two_resumed = _cfg(tmp / "two_resumed", 2, CKPT_ARM)
        _move_run(tmp / "one_killed", one_killed, 1, tmp / "two_resumed", two_resumed, 2)
        # 2 -> 1: a 2-process run killed after step 2, resumed (below) by 1 process
        two_killed = _cfg(tmp / "two_killed", 2, CKPT_ARM)
        t0 = time.perf_counter()
        _spawn([(c, None) for c in two.values()] + [(two_killed, 2), (two_resumed, None)], out)
        spawn_s = time.perf_counter() - t0
        one_resumed = _cfg(tmp / "one_resumed", 4, CKPT_ARM)
        _move_run(tmp / "two_killed", two_killed, 2, tmp / "one_resumed", one_resumed, 1)
        ckpt = records.load_checkpoint(tmp / "one_resumed" / one_resumed.run_id() / "ckpt.pt")
        with pytest.raises(T.WorldSizeMismatch) as refused:
            T.train(one_resumed, progress=False)
    finally:
        mp_.undo()
    return dict(tmp=tmp, out=out, one=one, two=two, ckpt_2proc=ckpt, spawn_s=spawn_s, refused_by_one=str(refused.value),
                one_resumed=one_resumed, two_resumed=two_resumed)


def _weights(d, config, world: int, rank=0) -> dict:
    return torch.load(_final_path(d["out"], Path(config.runs_dir) / config.run_id(world), rank), weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("arm", list(ARMS))
def test_two_processes_match_one(dist, arm):
    """Same global batch (2 x 2 vs 1 x 4): the same final weights within fp32 tolerance, identical on both ranks."""
    one, two = dist["one"][arm], dist["two"][arm]
    w1, w2 = _weights(dist, one, 1), _weights(dist, two, 2)
    assert _max_diff(w2, _weights(dist, two, 2, rank=1)) == 0.0  # every rank ends each step with the same weights
    diff = _max_diff(w1, w2)
    print(f"\n{arm}: max |w_1proc - w_2proc| = {diff:.2e} (2-process spawn {dist['spawn_s']:.1f} s)")
    assert diff < TOL
    assert max(v.abs().max().item() for v in w1.values()) > 0  # not a vacuous comparison
    clip = ARMS[arm].get("grad_clip", 0)
    # exactly one record, written by rank 0, saying world size 2, with the 1-process numbers, under its own id
    run_dirs = list((dist["tmp"] / "two" / arm).iterdir())
    assert [p.name for p in run_dirs] == [two.run_id(2)] and two.run_id(2) != two.run_id(1)
    s1, s2 = records.read_summary(dist["tmp"] / "one" / arm / one.run_id()), records.read_summary(run_dirs[0])
    assert s2["status"] == "finished" and s2["steps"] == 4
    assert records.read_json(run_dirs[0] / "meta.json")["world_size"] == 2
    # val sets are (val_batches x batch_size) windows at any world size: batch 2b vs b per process differ
    assert abs(s1["final_train_loss"] - s2["final_train_loss"]) < 1e-4
    # averaged, not summed, gradients: Muon and Adam are nearly blind to the gradient's scale, the norm is not
    rows1 = records.read_metrics(dist["tmp"] / "one" / arm / one.run_id())
    rows2 = records.read_metrics(run_dirs[0])
    assert len(rows2) == len(rows1) == 5
    for r1, r2 in zip(rows1[:-1], rows2[:-1]):
        for key in ("grad_norm", "train_loss"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-5), (key, r1["step"])
        assert r1["grad_norm"] > clip  # the clip arm clips at every step


def _val_one_process(config, weights: dict) -> float:
    """lab.train.evaluate in this (1-process) pytest process: `weights` on config's val windows."""
    model = build_model(config)
    model.load_state_dict(weights)
    return T.evaluate(model, load_data(config), config, torch.device("cpu"), contextlib.nullcontext())


@pytest.mark.parametrize("arm", ["newton_schulz", "adamw"])
def test_two_process_val_loss_is_the_one_process_number(dist, arm):
    """The val loss a 2-process run records (ranks split the val batches unevenly, then sum) is what 1 process
    computes on the same windows, for the 2-process run's weights and for the 1-process run's (equal within TOL)."""
    one, two = dist["one"][arm], dist["two"][arm]
    recorded = records.read_summary(Path(two.runs_dir) / two.run_id(2))["final_val_loss"]
    mine = _val_one_process(two, _weights(dist, two, 2))
    theirs = _val_one_process(two, _weights(dist, one, 1))  # the 1-process run's weights on the same windows
    print(f"\n{arm}: 2-process val {recorded:.6f}, 1-process eval of its weights {mine:.6f}, "
          f"of the 1-process run's weights {theirs:.6f}")
    assert mine == pytest.approx(recorded, abs=1e-6)
    assert theirs == pytest.approx(recorded, abs=1e-4)
    # the windows depend on the per-process batch (B windows per val batch), not on the world size: the 1-process
    # run (B=4) measured a different set, so its own recorded number is not the one compared here
    assert records.read_summary(Path(one.runs_dir) / one.run_id())["final_val_loss"] != recorded


def test_checkpoint_from_two_processes_has_the_whole_state(dist):
    """Rank 0's checkpoint holds every Muon matrix's momentum and NorMuon buffers (the 1-process layout)."""
    ck = dist["ckpt_2proc"]
    assert ck["world"] == 2 and ck["step"] == 2
    muon = ck["optimizers"][0]
    n_params = sum(len(g["params"]) for g in muon["param_groups"])
    assert n_params == 12 and sorted(muon["state"]) == list(range(n_params))
    assert all({"momentum_buffer", "second_moment"} == set(st) for st in muon["state"].values())
    assert all(st["momentum_buffer"].abs().sum() > 0 for st in muon["state"].values())


def _refused_as_it_was(run_dir: Path, message: str, written_by: int, resumed_by: int) -> None:
    """One line naming the checkpoint and both world sizes; the checkpoint, log and meta.json left as they were."""
    assert message == (f"{run_dir}/ckpt.pt: written by {written_by} process(es), this run has {resumed_by}: not "
                       "resumed at another world size (the global batch would change under one run id); remove it to "
                       "train this run from step 0")
    assert records.load_checkpoint(run_dir / "ckpt.pt")["world"] == written_by
    assert records.read_json(run_dir / "meta.json")["world_size"] == written_by
    assert not (run_dir / "summary.json").exists()  # nothing failed: the run waits for the right world size
    assert [r["step"] for r in records.read_metrics(run_dir)] == [0, 1, 2]


def test_checkpoint_of_two_processes_is_refused_by_one(dist):
    """Killed at step 2 by 2 processes, its directory copied to the 1-process run of the same global batch: refused
    in one line, not resumed (it would mix world sizes in one record)."""
    c = dist["one_resumed"]
    _refused_as_it_was(Path(c.runs_dir) / c.run_id(1), dist["refused_by_one"], written_by=2, resumed_by=1)


def test_checkpoint_of_one_process_is_refused_by_two(dist):
    """Killed at step 2 by 1 process, copied to the 2-process run: both ranks refuse it with the same line."""
    c = dist["two_resumed"]
    said = [(dist["out"] / f"refused.rank{r}.txt").read_text() for r in (0, 1)]
    assert said[0] == said[1]
    _refused_as_it_was(Path(c.runs_dir) / c.run_id(2), said[0], written_by=1, resumed_by=2)


def test_distributed_muon_uneven_buckets_and_state(dist):
    """5 mixed-shape matrices over 2 ranks, each with its own gradients: SimpleMuon's weights on the mean gradient,
    SimpleMuon's state_dict, state kept per owner, every rank's local gradient left alone (the average lives in the
    optimizer for one step)."""
    for rank in (0, 1):
        r = torch.load(dist["out"] / f"optim.rank{rank}.pt", weights_only=True)
        assert r["grads_off_owner"] and all(r["grads_off_owner"])
        for a, b in zip(r["weights"], r["weights_ref"]):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        assert r["sd"]["param_groups"] == r["sd_ref"]["param_groups"]
        assert r["sd"]["state"].keys() == r["sd_ref"]["state"].keys() == set(range(5))
        for i, st in r["sd_ref"]["state"].items():
            assert st.keys() == r["sd"]["state"][i].keys()
            for k in st:
                torch.testing.assert_close(r["sd"]["state"][i][k], st[k], atol=1e-6, rtol=0)
        n = 2 if rank == 0 else 3  # by orthogonalization FLOPs: 16x16 + 4x4 | 40x8 + 24x8 + 8x24 (62400 | 64000)
        assert r["owned_before"] == r["owned_after"] == r["n_owned"] == n


def _old_bytes(shapes, world: int) -> int:
    """What the previous scheme handed per step and rank: one fp32 all-reduce per Muon gradient, then one fp32
    all-gather per chunk of `world` consecutive matrices (numel descending, padded with empty slots), every rank's
    send padded to the chunk's largest matrix."""
    numels = sorted((m * n for m, n in shapes), reverse=True)
    numels += [0] * (-len(numels) % world)
    gathers = sum(world * max(numels[i:i + world]) for i in range(0, len(numels), world))
    return 2 * 4 * sum(numels) + 4 * gathers


@pytest.mark.parametrize("name", list(BYTE_SHAPES))
def test_sync_and_clip_bytes_and_numbers(dist, name):
    """Per step and rank, Muon's collectives hand 2 units (fp32 on gloo) per Muon weight and padding slot, in two
    calls; AdamW and the norm (with the presence counts) take one all-reduce each; and the clipped 2-process step
    is 1 process's on the mean gradient."""
    world, unit = 2, 4
    runs = [torch.load(dist["out"] / f"sync.rank{rank}.pt", weights_only=True)[name] for rank in (0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0]["weights"], runs[1]["weights"]))  # identical on every rank
    for rank, r in enumerate(runs):
        diff = max((a - b).abs().max().item() for a, b in zip(r["weights"], r["weights_ref"]))
        assert diff < 1e-6
        assert min((a - b).abs().max().item() for a, b in zip(r["weights"], r["init"])) > 1e-3  # every weight moved
        for norm, norm_ref in r["norms"]:
            assert norm == pytest.approx(norm_ref, rel=1e-5) and norm > CLIP
        reduces = [b for op, b in r["log"] if op == "all_reduce"]
        assert reduces == [2 * unit * r["n_adamw"], 2 * unit * (1 + len(r["init"]))]  # AdamW; norm + presence
        muon = [(op, b) for op, b in r["log"] if op != "all_reduce"]
        per_weight = sum(b for _, b in muon) / unit / r["n_muon"]
        old = _old_bytes(BYTE_SHAPES[name], world) / unit / r["n_muon"]
        ops = sorted({op for op, _ in muon})
        print(f"\n{name} rank {rank}: Muon hands {per_weight:.3f} units/weight in {len(muon)} calls {ops} "
              f"(old scheme {old:.3f}); max |w_1proc - w_2proc| = {diff:.2e}")
        with torch.device("meta"):  # the owners' plan (shapes only): buckets padded to the largest on the wire
            sizes = DistributedMuon([torch.nn.Parameter(torch.empty(s)) for s in BYTE_SHAPES[name]], rank=0,
                                    world=world)._layout()[1]
        assert per_weight == 2 * world * max(sizes) / r["n_muon"]
        assert len(muon) == 2  # 1 reduce-scatter + 1 all-gather, equal buckets or not


def test_bytes_at_h100_shapes():
    """The h100 model's matrices on 8 ranks: equal buckets, so 1 bf16 reduce-scatter + 1 fp32 all-gather (6 bytes per
    Muon weight) where the previous scheme handed 12.7 (fp32 all-reduce per matrix + padded all-gathers)."""
    shapes, world = H100 * 11, 8
    with torch.device("meta"):
        opt = DistributedMuon([torch.nn.Parameter(torch.empty(s)) for s in shapes], rank=0, world=world)
    mats, sizes, _ = opt._layout()
    n = sum(p.numel() for p in mats)
    assert len(mats) == 66 and len(set(sizes)) == 1 and sum(sizes) == n  # no padding at all
    wire, weights = opt.wire_dtype(torch.device("cuda")).itemsize, mats[0].element_size()  # bf16 grads, fp32 weights
    new, old = (n * wire + n * weights) / n, _old_bytes(shapes, world) / n
    assert (wire, weights) == (2, 4) and new == 6
    print(f"\nh100 shapes on {world} ranks: {new:.2f} bytes per Muon weight (was {old:.2f})")
    assert old == pytest.approx(12.727, abs=1e-3)


def test_torchrun_cli(tmp_path):
    """`torchrun --standalone --nproc_per_node=2 -m lab run --preset smoke` on CPU: one finished run record, of its
    own id. A 1-process record of the same config in the same runs_dir is not reused (issue 18 finding 1b: it said
    "finished after 12 steps" and trained nothing, although 2 processes train at twice the global batch)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"no torchrun next to {sys.executable}")
    runs = tmp_path / "runs"
    one = get_config("smoke", runs_dir=str(runs), data_dir=str(DATA))
    assert T.train(one, progress=False)["status"] == "finished"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env |= {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "lab", "run", "--preset", "smoke",
           f"runs_dir={runs}"]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in 120 s: {e.stdout}\n{e.stderr}")
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(d.name for d in runs.iterdir()) == sorted([one.run_id(1), one.run_id(2)])
    d = runs / one.run_id(2)
    s = records.read_summary(d)
    assert s["status"] == "finished" and s["steps"] == 12 and s["final_val_loss"] < 5.6
    assert records.read_json(d / "meta.json")["world_size"] == 2
    assert not (d / "ckpt.pt").exists()
    assert p.stdout.strip().splitlines()[-1].startswith(f"run {one.run_id(2)}: finished after 12 steps, val loss")
