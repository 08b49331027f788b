"""torch.distributed glue: one run on N processes (`torchrun --nproc_per_node=N -m lab run ...`).

With one process every function is a no-op and `wrap` returns the optimizers unchanged, so train.py reads the
same either way. With N > 1 (NCCL for CUDA tensors, gloo for CPU tensors):

  data       each rank draws its slice of the global batch (lab.data): global batch = N * batch_size.
  ownership  `DistributedMuon` deals the Muon matrices to owners so that every rank does about the same
             orthogonalization work (FLOPs from lab.optim.orthogonalize.orthogonalize_flops, for the configured
             orthogonalizer: per weight, a 768x768 matrix costs 15/10.6 of a 6144x768 one under Newton-Schulz,
             15/5.75 under Gram Newton-Schulz), and among plans as balanced, the one with the smallest
             largest bucket (`_balance`). Only the owner keeps momentum / NorMuon state and orthogonalizes its
             matrices (stacked by shape, as SimpleMuon): both are / N.
  one step   `sync_and_clip` (train.py's only call), then `opt.step()` for every optimizer:
    1. Muon gradients go ONLY to their owner: each rank copies its local Muon gradients into one flat buffer laid
       out bucket by bucket (rank 0's matrices, rank 1's, ...; every bucket padded with zeros to the largest one)
       in the wire dtype and one `reduce_scatter_single` SUMs bucket r onto rank r. The owner divides by N (SUM
       then divide: gloo's AVG is unreliable, pytorch#162338) into fp32 gradients that the optimizer keeps for this
       step (`_averaged`); p.grad keeps every rank's own local gradient, untouched.
    2. The other gradients (AdamW: embeddings, head, gains, scalars) are all-reduced in one flat buffer (SUM, / N,
       written back into p.grad): AdamW stays replicated, every rank applies the same update to the same averaged
       gradients. Wire dtype: bf16 for CUDA gradients (NCCL), fp32 for CPU ones (gloo).
    3. One fp32 all-reduce carries this rank's share of the squared gradient norm (its owned Muon gradients; rank 0
       adds the replicated ones) and a 1 for every parameter whose gradient it holds: the global grad norm,
       identical on every rank, and a check that every rank holds the same gradients (a parameter with a gradient on
       some ranks only is an error naming it, on every rank at once, instead of a hang or a silent zero).
       grad_clip > 0 scales every averaged gradient by clip_grad_norm_'s factor min(1, clip / (norm + 1e-6)).
    4. `DistributedMuon.step()`: the owner runs SimpleMuon's own update (no copy of the math) on its matrices,
       copies them into its bucket of a flat buffer in the parameter dtype, and one `all_gather_single` hands every
       bucket to every rank. Every rank ends the step with bit-identical weights.
  wire dtype Muon's gradients travel in bf16 on NCCL (fp32 when the orthogonalizer runs in fp32 or fp16: fp16 never
       sums gradients, its range overflows), fp32 on gloo, so that CPU runs match 1 process to fp32 rounding.
       `DistributedMuon.grad_dtype` / `sync_and_clip(grad_dtype=...)` choose fp32 or bf16 explicitly (gloo on
       torch 2.13 sums bf16 too: the bf16 wire is tested on CPU).
  lifetime   the averaged state belongs to the gradients it came from: a record holds weak references to them and
       their versions (`_Stamp`), so it is valid while they are the same tensors, unchanged. A second
       `sync_and_clip` on the same gradients changes nothing and returns the same norm; `step()` uses the averaged
       gradients once (and `zero_grad` drops them); a step on gradients that changed since (a new backward, a
       skipped step, an in-place edit) averages them afresh, never reusing a stale average or a local gradient.
  not done   the reductions are not overlapped with backward (no per-parameter hooks): they start after it.

Bytes each rank hands to the collectives per step (a reduce-scatter counts its input, an all-gather its output,
an all-reduce twice its tensor; on a ring each rank sends about (N-1)/N of these numbers); `step_bytes` computes
them for a given model, world size and device, padding included:
  Muon     N * B * wire (grads) + N * B * param (weights), B the largest bucket (N * B = N_mu when the buckets are
           equal): 2 + 4 = 6 bytes per Muon weight on NCCL (bf16 grads, fp32 weights), 8 on gloo.
  AdamW    2 * wire per replicated weight: 4 bytes on NCCL (bf16), 8 on gloo. Before: 8 on NCCL too (fp32).
  norm     2 * 4 * (1 + number of parameters): the norm and the presence counts.
  modded-nanogpt needs ~4 for Muon (bf16 both ways: its weights are bf16 with the extra mantissa bits kept by the
  owner). Gathering our fp32 weights in bf16 would leave the non-owners with rounded weights, so they travel in fp32.

The optimizer state has one layout at any world size. `DistributedMuon.state_dict()` gathers the sharded state on
rank 0 only (it writes the file; each owner sends its state there, the other ranks receive nothing) in exactly the
layout of a 1-process SimpleMuon, and `load_state_dict()` loads that layout and keeps this rank's share. A run does
not move between world sizes, though: the global batch is batch_size * N, so the world size is part of the run id and
lab.train refuses a checkpoint written at another one.
"""
from __future__ import annotations

import atexit
import math
import os
import weakref
from collections import defaultdict

import torch
import torch.distributed as dist
from torch.utils.weak import WeakIdKeyDictionary

from lab.optim.muon import SimpleMuon
from lab.optim.orthogonalize import orthogonalize_flops


def setup() -> tuple[int, int]:
    """(rank, world_size). Under torchrun (WORLD_SIZE > 1) the process group is initialised here, once, and
    destroyed at interpreter exit."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # NCCL for CUDA tensors (its device is set by `device()`), gloo for CPU tensors, object collectives and
        # barriers; a CPU run on a CUDA machine (device=cpu) therefore works too
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        atexit.register(_shutdown)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def device(config) -> torch.device:
    if torch.cuda.is_available() and config.device != "cpu":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean_scalar(t: torch.Tensor) -> torch.Tensor:
    """Mean of a scalar over ranks (SUM then divide: gloo's AVG is unreliable, pytorch#162338)."""
    if not dist.is_initialized():
        return t
    t = t.detach().float().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over ranks (a copy; `t` itself at world size 1)."""
    if not dist.is_initialized():
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (`obj` itself without a process group)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_true(flag: bool) -> bool:
    """True if `flag` is true on every rank."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([0.0 if flag else 1.0])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)  # gloo: CPU tensor
    return t.item() == 0


def replicated_wire_dtype(device: torch.device) -> torch.dtype:
    """The AdamW gradients' dtype on the wire: bf16 for CUDA gradients (NCCL), fp32 for CPU ones (gloo)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class _Stamp:
    """Which gradients an average was made from: valid while every parameter holds the same gradient tensor (a weak
    reference: a freed gradient invalidates it) at the same version (an in-place change invalidates it)."""

    def __init__(self, params):
        self.items = [(p, None, None) if p.grad is None else (p, weakref.ref(p.grad), p.grad._version)
                      for p in params]

    def valid(self) -> bool:
        for p, ref, version in self.items:
            if ref is None:
                if p.grad is not None:
                    return False
            elif ref() is not p.grad or p.grad._version != version:
                return False
        return True


_SYNCED = WeakIdKeyDictionary()  # model -> (_Stamp of every gradient after the sync, norm): the last sync_and_clip


def sync_and_clip(model: torch.nn.Module, optimizers: list, world: int, grad_clip: float,
                  grad_dtype: torch.dtype | None = None) -> float:
    """Average the gradients over ranks (Muon's only onto their owners), clip them to `grad_clip` (0 = off) and
    return the global grad norm: the numbers of 1 process with the global batch (module docstring, steps 1-3).
    Called again on the same gradients it changes nothing and returns the same norm. grad_dtype: the wire dtype of
    every gradient (fp32 or bf16; default: see the module docstring)."""
    if world == 1:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf).item()
    last = _SYNCED.get(model)
    if last is not None and last[0].valid():
        return last[1]  # these gradients are averaged (and clipped) already
    named = list(model.named_parameters())
    device = named[0][1].device
    present = torch.tensor([p.grad is not None for _, p in named], dtype=torch.float32, device=device)  # (P,)
    muons = [o for o in optimizers if isinstance(o, DistributedMuon)]
    sharded = {id(p) for o in muons for g in o.param_groups for p in g["params"]}
    replicated = [p for _, p in named if id(p) not in sharded]
    finishers = [o.start_grad_reduce(grad_dtype) for o in muons]  # all in flight at once
    finishers.append(_start_mean(replicated, world, grad_dtype or replicated_wire_dtype(device)))
    for finish in finishers:
        finish()
    owned = [g for o in muons for g in o.averaged_grads() if g is not None]  # this rank's share, averaged
    averaged = [p.grad for p in replicated if p.grad is not None]
    totals = torch.cat([_sum_of_squares(owned + (averaged if rank() == 0 else []), device).view(1), present])
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)  # (1 + P,): ||g||^2 over ranks, ranks holding each gradient
    _check_present(totals[1:], [n for n, _ in named], world)
    norm = totals[0].sqrt()
    if grad_clip > 0:
        coef = (grad_clip / (norm + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s factor: the scale of 1 process
        for g in owned + averaged:
            g.mul_(coef)
    _SYNCED[model] = (_Stamp([p for _, p in named]), norm.item())
    return norm.item()


def _sum_of_squares(grads: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    sq = torch.zeros((), dtype=torch.float32, device=device)
    for g in grads:
        sq += torch.linalg.vector_norm(g, dtype=torch.float32).square()
    return sq


def _check_present(counts: torch.Tensor, names: list[str], world: int) -> None:
    """Raise (on every rank: they all see the same counts) if a gradient exists on some ranks only."""
    bad = [(n, int(c)) for n, c in zip(names, counts.tolist()) if c not in (0, world)]
    if bad:
        name, c = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise RuntimeError(f"distributed: the gradient of {name} exists on {c} of {world} ranks{more}; every rank "
                           "must compute the same gradients (a parameter left out of some ranks' forward?)")


def _start_mean(params: list[torch.Tensor], world: int, dtype: torch.dtype):
    """Start the SUM all-reduce of the gradients of `params` as one flat buffer in `dtype` (zeros where a gradient
    is missing: the buffer has the same size on every rank whatever each holds); returns the function that waits
    and writes the mean (SUM / world, in the gradient's dtype) back into each gradient."""
    if not params:
        return lambda: None
    sizes = [p.numel() for p in params]
    flat = torch.zeros(sum(sizes), dtype=dtype, device=params[0].device)  # (sum of numels,): one collective
    for p, part in zip(params, flat.split(sizes)):
        if p.grad is not None:
            part.copy_(p.grad.reshape(-1))
    works = [dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True)]

    def finish():
        _wait(works, flat)
        for p, part in zip(params, flat.split(sizes)):
            if p.grad is not None:
                p.grad.copy_(part.view_as(p.grad)).div_(world)
    return finish


def _wait(works: list, *buffers: torch.Tensor) -> None:
    """Wait for `works`; `buffers` are passed only so that they stay alive until then (nanochat #843)."""
    for work in works:
        work.wait()


def _others(seq, mine: slice) -> list:
    """The items of `seq` outside `mine`."""
    return list(seq[:mine.start]) + list(seq[mine.stop:])


def _balance(costs: list[int], sizes: list[int], world: int) -> list[int]:
    """The owner of each matrix: the largest per-rank sum of `costs` (orthogonalization FLOPs) as small as possible,
    then the largest per-rank sum of `sizes` (the bucket every other is padded to). The better of two greedy plans
    (largest cost first, or largest size first, each to the rank with the least (cost, size) so far), improved by
    moves and swaps off a most-loaded rank while they lower (max cost, max size). Deterministic: every rank
    computes the same plan."""
    n = len(costs)

    def loads(owner):
        c, s = [0] * world, [0] * world
        for i, r in enumerate(owner):
            c[r] += costs[i]
            s[r] += sizes[i]
        return c, s

    def improve(owner):
        c, s = loads(owner)
        for _ in range(10 * n):  # each round lowers the key or stops
            best = (max(c), max(s))
            hot = {r for r in range(world) if c[r] == best[0] or s[r] == best[1]}
            found = None
            for i in (i for i in range(n) if owner[i] in hot):
                a = owner[i]
                trades = [(r, None) for r in range(world) if r != a]
                trades += [(owner[j], j) for j in range(n) if owner[j] != a]
                for r, j in trades:
                    dc = costs[i] - (costs[j] if j is not None else 0)
                    ds = sizes[i] - (sizes[j] if j is not None else 0)
                    c2, s2 = c[:], s[:]
                    c2[a] -= dc
                    c2[r] += dc
                    s2[a] -= ds
                    s2[r] += ds
                    if (max(c2), max(s2)) < best:
                        found = (i, r, j, c2, s2)
                        break
                if found:
                    break
            if not found:
                break
            i, r, j, c, s = found
            if j is not None:
                owner[j] = owner[i]
            owner[i] = r
        return owner

    plans = []
    for first, second in ((costs, sizes), (sizes, costs)):
        owner, f, g = [0] * n, [0] * world, [0] * world
        for i in sorted(range(n), key=lambda i: (-first[i], -second[i], i)):
            r = min(range(world), key=lambda r: (f[r], g[r], r))
            owner[i] = r
            f[r] += first[i]
            g[r] += second[i]
        plans.append(improve(owner))
    return min(plans, key=lambda o: (max(loads(o)[0]), max(loads(o)[1])))


@torch.no_grad()
def broadcast_params(model: torch.nn.Module) -> None:
    """Every rank starts from rank 0's weights (as DDP does); a no-op without a process group."""
    if not dist.is_initialized():
        return
    for p in model.parameters():
        buf = p.detach() if p.dtype == torch.float32 else p.detach().float()
        dist.broadcast(buf, src=0)
        if buf is not p:
            p.copy_(buf)


def _check_same_model(model: torch.nn.Module) -> None:
    """Refuse ranks that built different models (they would deadlock or silently mix weights later)."""
    sig = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    sigs = [None] * dist.get_world_size()
    dist.all_gather_object(sigs, sig)
    for r, s in enumerate(sigs):
        if s != sigs[0]:
            raise RuntimeError(f"distributed: rank {r} built a different model than rank 0 "
                               f"({len(s)} vs {len(sigs[0])} parameters): same config on every rank?")


def wrap(optimizers: list, model: torch.nn.Module, world: int) -> list:
    """The optimizers to step on this rank: a SimpleMuon becomes a DistributedMuon, AdamW stays (replicated)."""
    if world == 1:
        return optimizers
    _check_same_model(model)
    broadcast_params(model)
    return [DistributedMuon.from_simple(o) if type(o) is SimpleMuon else o for o in optimizers]


class DistributedMuon(SimpleMuon):
    """SimpleMuon whose matrices are owned by the ranks (see the module docstring).

    Every rank must hold identical weights before `step()`, and after it every rank holds the identical updated
    weights. The gradients are averaged onto the owners by `start_grad_reduce` / `reduce_grads` (sync_and_clip
    calls it, to clip before the step), else by `step()` itself; the average is kept for the step of the gradients
    it came from (module docstring, "lifetime"). `state_dict()` is a collective and returns the 1-process layout on
    rank 0. Without a process group (or with world == 1) it is exactly SimpleMuon.
    """

    def __init__(self, params, *, rank: int | None = None, world: int | None = None,
                 grad_dtype: torch.dtype | None = None, **kwargs):
        up = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if up else 0)
        self.world = world if world is not None else (dist.get_world_size() if up else 1)
        if not 0 <= self.rank < self.world:
            raise ValueError(f"DistributedMuon: rank={self.rank} is outside 0..{self.world - 1} (world={self.world})")
        if grad_dtype not in (None, torch.float32, torch.bfloat16):
            raise ValueError(f"DistributedMuon: grad_dtype={grad_dtype}; valid: None, torch.float32, torch.bfloat16 "
                             "(gradients are never summed in fp16: its range overflows)")
        self.grad_dtype = grad_dtype
        self._plan = None      # per rank, the (group index, param index) of its matrices; built on first use
        self._averaged = None  # (_Stamp of the local gradients, averaged gradient per owned matrix): one step's
        super().__init__(params, **kwargs)

    @classmethod
    def from_simple(cls, opt: SimpleMuon, rank: int | None = None, world: int | None = None,
                    grad_dtype: torch.dtype | None = None) -> DistributedMuon:
        """The DistributedMuon with `opt`'s param groups (extra keys included), hyperparameters and state."""
        kwargs = {k: v for k, v in opt.defaults.items() if k != "sphere_dim"}
        new = cls([dict(g) for g in opt.param_groups], rank=rank, world=world, grad_dtype=grad_dtype,
                  ortho_dtype=opt.ortho_dtype, **kwargs)
        if opt.state:
            new.load_state_dict(opt.state_dict())
        return new

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._plan = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._averaged = None
        super().zero_grad(set_to_none)

    # --- ownership ------------------------------------------------------------------------------------------

    def _buckets(self) -> list[list[tuple[int, int]]]:
        """buckets[r]: the matrices rank r owns, as (group index, param index) (indices, not dicts: load_state_dict
        replaces the group dicts), balanced by orthogonalization FLOPs (`_balance`). The same plan on every rank."""
        if self._plan is None:
            keys = [(gi, pi) for gi, g in enumerate(self.param_groups) for pi in range(len(g["params"]))]
            costs, sizes = [], []
            for key in keys:
                p, g = self._item(key)
                costs.append(orthogonalize_flops(p.shape, g["orthogonalizer"], g["ns_steps"]))
                sizes.append(p.numel())
            owner = _balance(costs, sizes, self.world)
            self._plan = [[k for k, o in zip(keys, owner) if o == r] for r in range(self.world)]
        return self._plan

    def _item(self, key: tuple[int, int]) -> tuple[torch.Tensor, dict]:
        group = self.param_groups[key[0]]
        return group["params"][key[1]], group

    def owned(self) -> list[torch.Tensor]:
        """The matrices this rank updates (and keeps state for)."""
        return [self._item(k)[0] for k in self._buckets()[self.rank]]

    def _layout(self) -> tuple[list[torch.Tensor], list[int], slice]:
        """The wire layout: every matrix, bucket by bucket (rank 0's, rank 1's, ...); each bucket's numel (on the
        wire every bucket is padded to the largest); where this rank's matrices sit in that list."""
        buckets = [[self._item(k)[0] for k in b] for b in self._buckets()]
        mats = [p for b in buckets for p in b]
        if len({(p.dtype, p.device) for p in mats}) > 1:  # one flat buffer per step (Paddle #79286)
            raise ValueError("DistributedMuon: all matrices must share one dtype and one device")
        first = sum(len(b) for b in buckets[:self.rank])
        return mats, [sum(p.numel() for p in b) for b in buckets], slice(first, first + len(buckets[self.rank]))

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """One view of `flat` (world * B,) per matrix, in _layout's order: bucket r starts at r * B."""
        B, views = flat.numel() // self.world, []
        for r, bucket in enumerate(self._buckets()):
            offset = r * B
            for key in bucket:
                n = self._item(key)[0].numel()
                views.append(flat[offset:offset + n])
                offset += n
        return views

    def wire_dtype(self, device: torch.device) -> torch.dtype:
        """The gradients' dtype on the wire: grad_dtype if set; else bf16 on NCCL (fp32 when the orthogonalizer
        runs in fp32 or fp16: fp16 never sums gradients), fp32 on gloo (CPU runs match 1 process to fp32 rounding)."""
        if self.grad_dtype is not None:
            return self.grad_dtype
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if self.ortho_dtype in (None, torch.bfloat16) else torch.float32

    def wire_bytes(self, device: torch.device, grad_dtype: torch.dtype | None = None) -> dict:
        """Bytes this rank hands to Muon's collectives per step (module docstring): the gradients' reduce-scatter
        (its input) and the weights' all-gather (its output), both N * B elements, and how many of them pad."""
        mats, sizes, _ = self._layout()
        total = self.world * max(sizes)
        g = torch.empty((), dtype=grad_dtype or self.wire_dtype(device)).element_size()
        w = mats[0].element_size()
        return {"muon_grads": total * g, "muon_weights": total * w, "muon_padding": (total - sum(sizes)) * (g + w)}

    # --- step -----------------------------------------------------------------------------------------------

    def start_grad_reduce(self, grad_dtype: torch.dtype | None = None):
        """Start SUMming every matrix's local gradient onto its owner (module docstring, step 1). Returns the
        function that waits and keeps the owner's averaged gradients for this step (p.grad is left alone)."""
        mats, sizes, mine = self._layout()
        B, device = max(sizes), mats[0].device
        flat = torch.zeros(self.world * B, dtype=grad_dtype or self.wire_dtype(device), device=device)  # (N * B,)
        for p, part in zip(mats, self._views(flat)):
            if p.grad is not None:
                part.copy_(p.grad.reshape(-1))
        stamp = _Stamp(mats)
        summed = torch.empty(B, dtype=flat.dtype, device=device)  # (B,): this rank's bucket, summed over ranks
        works = [dist.reduce_scatter_single(summed, flat, op=dist.ReduceOp.SUM, async_op=True)]

        def finish():
            _wait(works, flat, summed)
            owned = mats[mine]
            parts = summed[:sizes[self.rank]].split([p.numel() for p in owned])
            grads = [None if p.grad is None else part.view(p.shape).to(p.grad.dtype).div_(self.world)
                     for p, part in zip(owned, parts)]  # divide in the gradient's dtype (fp32)
            self._averaged = (stamp, grads)
        return finish

    def reduce_grads(self, grad_dtype: torch.dtype | None = None) -> None:
        """Average every matrix's gradient onto its owner (a collective: every rank calls it), after checking that
        every rank holds the same set of gradients (one small all-reduce)."""
        if self.world == 1:
            return
        mats = self._layout()[0]
        counts = torch.tensor([p.grad is not None for p in mats], dtype=torch.float32, device=mats[0].device)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        _check_present(counts, [f"Muon matrix {tuple(p.shape)} (#{i} of the wire layout)" for i, p in enumerate(mats)],
                       self.world)
        self.start_grad_reduce(grad_dtype)()

    def averaged_grads(self) -> list:
        """This step's averaged gradients of the owned matrices (None where a matrix has none), [] if not reduced."""
        return self._averaged[1] if self._averaged is not None else []

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._evaluate(closure)
        owned = [self._item(k) for k in self._buckets()[self.rank]]
        if self.world == 1:
            grads = [p.grad for p, _ in owned]
        else:
            if self._averaged is None or not self._averaged[0].valid():
                self.reduce_grads()  # not averaged yet, or averaged from gradients that have changed since
            (_, grads), self._averaged = self._averaged, None  # this step's: never reused
        self.update([(p, group, g) for (p, group), g in zip(owned, grads) if g is not None])
        if self.world > 1:
            self._gather_weights()
        return loss

    def _gather_weights(self) -> None:
        """Every owner's updated matrices to every rank, in the parameters' dtype (module docstring, step 4)."""
        mats, sizes, mine = self._layout()
        B = max(sizes)
        flat = torch.empty(self.world * B, dtype=mats[0].dtype, device=mats[0].device)  # (N * B,)
        views = self._views(flat)
        for p, part in zip(mats[mine], views[mine]):
            part.copy_(p.reshape(-1))
        mine_flat = flat[self.rank * B:(self.rank + 1) * B]
        _wait([dist.all_gather_single(flat, mine_flat, async_op=True)], flat)
        for p, part in zip(_others(mats, mine), _others(views, mine)):
            p.copy_(part.view_as(p))

    # --- checkpoints ----------------------------------------------------------------------------------------

    def _gathered_state(self) -> dict | None:
        """{matrix: state} for every matrix with state, on rank 0; None on the others. Each owner sends its state
        tensors to rank 0 as one flat fp32 buffer (one message; the other ranks receive nothing). A collective."""
        if self.world == 1:
            return dict(self.state)
        manifest, tensors = [], []  # [((group, param), [(key, shape, dtype) | (key, None, value)])], fp32 buffers
        for k in self._buckets()[self.rank]:
            entries = []
            for key, v in self.state.get(self._item(k)[0], {}).items():
                if torch.is_tensor(v):
                    entries.append((key, tuple(v.shape), v.dtype))
                    tensors.append(v.detach().reshape(-1).float())
                else:
                    entries.append((key, None, v))
            if entries:
                manifest.append((k, entries))
        manifests = [None] * self.world if self.rank == 0 else None
        dist.gather_object(manifest, manifests, dst=0)
        if self.rank != 0:
            if tensors:
                dist.send(torch.cat(tensors), dst=0)
            return None
        device = self._layout()[0][0].device
        bufs, works = {}, []
        for owner, man in enumerate(manifests):
            n = sum(math.prod(shape) for _, entries in man for _, shape, _ in entries if shape is not None)
            if owner == 0:
                bufs[owner] = torch.cat(tensors) if tensors else None
            elif n:
                bufs[owner] = torch.empty(n, dtype=torch.float32, device=device)
                works.append(dist.irecv(bufs[owner], src=owner))
        _wait(works, *[b for b in bufs.values() if b is not None])
        full = {}
        for owner, man in enumerate(manifests):
            offset = 0
            for k, entries in man:
                st = full[self._item(k)[0]] = {}
                for key, shape, info in entries:
                    if shape is None:
                        st[key] = info
                        continue
                    n = math.prod(shape)
                    st[key] = bufs[owner][offset:offset + n].view(shape).to(info).clone()
                    offset += n
        return full

    def state_dict(self) -> dict:
        """On rank 0 the whole optimizer state in the layout of a 1-process SimpleMuon; on the other ranks the same
        param_groups with no state (only rank 0 writes checkpoints). A collective: call it on every rank."""
        local, self.state = self.state, defaultdict(dict, self._gathered_state() or {})
        try:
            return super().state_dict()
        finally:
            self.state = local

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a 1-process-layout state (from any world size) and keep only the matrices this rank owns."""
        super().load_state_dict(state_dict)
        mine = {id(p) for p in self.owned()}
        for p in [p for p in self.state if id(p) not in mine]:
            del self.state[p]


def step_bytes(muon: DistributedMuon | None, replicated_numel: int, n_params: int, device: torch.device,
               grad_dtype: torch.dtype | None = None) -> dict:
    """Bytes one rank hands to the collectives of one training step (sync_and_clip and every step()), by the
    module docstring's accounting: Muon's gradients and weights (padding included, and counted apart), AdamW's
    gradients (an all-reduce counts twice its buffer) and the norm + presence all-reduce; and the total."""
    out = muon.wire_bytes(device, grad_dtype) if muon is not None else {
        "muon_grads": 0, "muon_weights": 0, "muon_padding": 0}
    wire = torch.empty((), dtype=grad_dtype or replicated_wire_dtype(device)).element_size()
    out["adamw_grads"] = 2 * wire * replicated_numel
    out["norm"] = 2 * 4 * (1 + n_params)
    out["total"] = out["muon_grads"] + out["muon_weights"] + out["adamw_grads"] + out["norm"]
    return out
