"""torch.distributed glue: one run on N processes (`torchrun --nproc_per_node=N -m lab run ...`).

With one process every function is a no-op and `wrap` returns the optimizers unchanged, so train.py reads the
same either way. With N > 1 (NCCL for CUDA tensors, gloo for CPU tensors):

  data       each rank draws its slice of the global batch (lab.data): global batch = N * batch_size.
  ownership  `DistributedMuon` deals the Muon matrices to owners, largest first, each to the least-loaded rank
             (ties to the lowest rank): a rank-consistent plan whose per-rank buckets hold nearly equal numbers of
             weights (exactly equal for the h100 model on 2, 4 or 8 ranks, the smoke model on 2 or 4). Only the
             owner keeps momentum / NorMuon state and orthogonalizes its matrices: both are / N.
  one step   `sync_and_clip` (train.py's only call), then `opt.step()` for every optimizer:
    1. Muon gradients go ONLY to their owner. Each rank copies its local Muon grads into one flat buffer laid
       out bucket by bucket (rank 0's matrices, rank 1's, ...), in the wire dtype, and SUMs it onto the owners:
       one `reduce_scatter_single` (reduce_scatter_tensor's name since torch 2.13) when the buckets are equal,
       else one `reduce` per owner bucket. The owner divides by N (SUM then divide: gloo's AVG is unreliable,
       pytorch#162338) into p.grad; the other ranks set p.grad = None, so their un-reduced local gradients are
       never used. Wire dtype: the orthogonalizer's (SimpleMuon.ortho_dtype, bf16 by default) on NCCL, as
       modded-nanogpt (the fp32 momentum then sums bf16-rounded gradients); fp32 on gloo, which refuses bf16
       (pytorch#111131), so that CPU runs match 1 process to fp32 rounding.
    2. The other gradients (AdamW: embeddings, head, gains, scalars) are all-reduced in one flat fp32 buffer
       (SUM, / N): AdamW stays replicated, every rank applies the same update to the same averaged gradients.
    3. Global grad norm: each rank squares its owned Muon gradients (rank 0 adds the replicated ones), one
       scalar all-reduce sums them: the norm of the averaged gradient, identical on every rank. grad_clip > 0
       scales every gradient by clip_grad_norm_'s factor min(1, clip / (norm + 1e-6)), as 1 process would.
    4. `DistributedMuon.step()`: the owner runs SimpleMuon's own `direction` / `apply_update` (no copy of the
       math) on its matrices, copies them into its bucket of a flat buffer in the parameter dtype, and the
       buckets reach every rank: one `all_gather_single` (all_gather_into_tensor) when the buckets are equal,
       else one `broadcast` per owner bucket. Every rank ends the step with bit-identical weights.
       (step() called without sync_and_clip reduces the gradients itself first: the usual optimizer contract.)
  not done   the reductions are not overlapped with backward (no per-parameter hooks): they start after it.

Bytes each rank hands to Muon's collectives per step (N_mu = Muon weights; a reduce-scatter counts its input,
an all-gather its output, a reduce or broadcast its tensor, an all-reduce twice its tensor; on a ring each
rank sends about (N-1)/N of these numbers):
  now      N_mu * wire (grads) + N_mu * param (weights), no padding anywhere (a bucket is never padded up to
           another: an uneven plan takes the per-owner calls): 2 units on gloo (fp32 + fp32 = 8 bytes), and
           2 + 4 = 6 bytes on NCCL with bf16 gradients and fp32 weights.
  before   2 * 4 * N_mu (fp32 all-reduce of every grad, one call per parameter) + 4 * sum over chunks of N
           consecutive matrices of N * the chunk's largest: >= 12 bytes, 12.7 at the h100 shapes on 8 ranks.
  modded-nanogpt needs ~4 (bf16 both ways: its weights are bf16 with the extra mantissa bits kept by the owner).
  Gathering our fp32 weights in bf16 would leave the non-owners with rounded weights, so they travel in fp32.

Checkpoints are independent of the world size. `DistributedMuon.state_dict()` gathers the sharded state into
exactly the layout of a 1-process SimpleMuon (a collective: every rank calls it, rank 0 writes the file), and
`load_state_dict()` loads that layout and keeps this rank's share. A run saved at N processes resumes at M
(1 included) and the other way round. Note that the global batch is batch_size * N, so resuming at another world
size with the same config changes the global batch from there on.
"""
from __future__ import annotations

import atexit
import math
import os
from collections import defaultdict

import torch
import torch.distributed as dist

from lab.optim.muon import SimpleMuon


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


def sync_and_clip(model: torch.nn.Module, optimizers: list, world: int, grad_clip: float) -> float:
    """Average the gradients over ranks (Muon's only onto their owners), clip them to `grad_clip` (0 = off) and
    return the global grad norm: the numbers of 1 process with the global batch (module docstring, steps 1-3)."""
    if world == 1:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf).item()
    muons = [o for o in optimizers if isinstance(o, DistributedMuon)]
    sharded = {id(p) for o in muons for g in o.param_groups for p in g["params"]}
    replicated = [p.grad for p in model.parameters() if p.grad is not None and id(p) not in sharded]
    finishers = [o.start_grad_reduce() for o in muons] + [_start_mean(replicated, world)]  # all in flight at once
    for finish in finishers:
        finish()
    owned = [p.grad for o in muons for p in o.owned() if p.grad is not None]  # averaged; None off the owner
    norm = _global_norm(owned + (replicated if rank() == 0 else []), next(model.parameters()).device)
    if grad_clip > 0:
        coef = (grad_clip / (norm + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s factor: the scale of 1 process
        for g in owned + replicated:
            g.mul_(coef)
    return norm.item()


def _start_mean(grads: list[torch.Tensor], world: int):
    """Start the SUM all-reduce of `grads` as one flat fp32 buffer; returns the function that waits and writes the
    mean (SUM / world: gloo's AVG is unreliable, pytorch#162338) back into them."""
    if not grads:
        return lambda: None
    flat = torch.cat([g.reshape(-1).float() for g in grads])  # (sum of numels,): one collective, not one per grad
    works = [dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True)]

    def finish():
        _wait(works, flat)
        flat.div_(world)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))
    return finish


def _global_norm(grads: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """sqrt of the sum over ranks of this rank's sum of ||g||^2: one scalar all-reduce, the same on every rank."""
    sq = torch.zeros((), dtype=torch.float32, device=device)
    for g in grads:
        sq += torch.linalg.vector_norm(g, dtype=torch.float32).square()
    dist.all_reduce(sq, op=dist.ReduceOp.SUM)
    return sq.sqrt()


def _wait(works: list, *buffers: torch.Tensor) -> None:
    """Wait for `works`; `buffers` are passed only so that they stay alive until then (nanochat #843)."""
    for work in works:
        work.wait()


def _to_owners(flat: torch.Tensor, sizes: list[int], me: int) -> tuple[list, torch.Tensor]:
    """Start SUMming bucket r of `flat` (buckets back to back, sizes[r] elements each) onto rank r. Returns the
    works and rank `me`'s bucket, where its sum lands. Equal buckets: one reduce-scatter; uneven ones: one reduce
    per owner, so that no bucket is padded up to the largest."""
    buckets = flat.split(sizes)
    if len(set(sizes)) == 1:
        out = torch.empty_like(buckets[me])
        return [dist.reduce_scatter_single(out, flat, op=dist.ReduceOp.SUM, async_op=True)], out
    return [dist.reduce(b, dst=r, op=dist.ReduceOp.SUM, async_op=True)
            for r, b in enumerate(buckets) if b.numel()], buckets[me]


def _from_owners(flat: torch.Tensor, sizes: list[int], me: int) -> list:
    """Start filling every bucket of `flat` from its owner (rank `me` has filled its own). Equal buckets: one
    all-gather, in place; uneven ones: one broadcast per owner."""
    buckets = flat.split(sizes)
    if len(set(sizes)) == 1:
        return [dist.all_gather_single(flat, buckets[me], async_op=True)]
    return [dist.broadcast(b, src=r, async_op=True) for r, b in enumerate(buckets) if b.numel()]


def _others(seq, mine: slice) -> list:
    """The items of `seq` outside `mine`."""
    return list(seq[:mine.start]) + list(seq[mine.stop:])


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
    calls it, to clip before the step), else by `step()` itself. `state_dict()` is a collective and returns the
    1-process layout. With world == 1 (no process group needed) it is exactly SimpleMuon.
    """

    def __init__(self, params, *, rank: int | None = None, world: int | None = None, **kwargs):
        self.rank = dist.get_rank() if rank is None else rank
        self.world = dist.get_world_size() if world is None else world
        self._plan = None      # per rank, the (group index, param index) of its matrices; built on first use
        self._reduced = False  # this step's gradients already averaged onto the owners (by sync_and_clip)
        super().__init__(params, **kwargs)

    @classmethod
    def from_simple(cls, opt: SimpleMuon, rank: int | None = None, world: int | None = None) -> DistributedMuon:
        """The DistributedMuon with `opt`'s param groups (extra keys included), hyperparameters and state."""
        kwargs = {k: v for k, v in opt.defaults.items() if k != "sphere_dim"}
        new = cls([dict(g) for g in opt.param_groups], rank=rank, world=world, ortho_dtype=opt.ortho_dtype,
                  **kwargs)
        if opt.state:
            new.load_state_dict(opt.state_dict())
        return new

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._plan = None

    # --- ownership ------------------------------------------------------------------------------------------

    def _buckets(self) -> list[list[tuple[int, int]]]:
        """buckets[r]: the matrices rank r owns, as (group index, param index) (indices, not dicts: load_state_dict
        replaces the group dicts). Largest first, each to the least-loaded rank (lowest rank on ties); equal
        numels keep param-group order (stable sort). The same plan on every rank."""
        if self._plan is None:
            flat = [(gi, pi, p.numel()) for gi, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"])]
            self._plan, load = [[] for _ in range(self.world)], [0] * self.world
            for gi, pi, n in sorted(flat, key=lambda t: -t[2]):
                r = load.index(min(load))  # balanced buckets: equal ones take one reduce-scatter / all-gather
                self._plan[r].append((gi, pi))
                load[r] += n
        return self._plan

    def _item(self, key: tuple[int, int]) -> tuple[torch.Tensor, dict]:
        group = self.param_groups[key[0]]
        return group["params"][key[1]], group

    def owned(self) -> list[torch.Tensor]:
        """The matrices this rank updates (and keeps state for)."""
        return [self._item(k)[0] for k in self._buckets()[self.rank]]

    def _layout(self) -> tuple[list[torch.Tensor], list[int], slice]:
        """The wire layout: every matrix, bucket by bucket (rank 0's, rank 1's, ...); each bucket's numel; where
        this rank's matrices sit in that list."""
        buckets = [[self._item(k)[0] for k in b] for b in self._buckets()]
        mats = [p for b in buckets for p in b]
        if len({(p.dtype, p.device) for p in mats}) > 1:  # one flat buffer per step (Paddle #79286)
            raise ValueError("DistributedMuon: all matrices must share one dtype and one device")
        first = sum(len(b) for b in buckets[:self.rank])
        return mats, [sum(p.numel() for p in b) for b in buckets], slice(first, first + len(buckets[self.rank]))

    def wire_dtype(self, device: torch.device) -> torch.dtype:
        """The gradients' dtype on the wire: the orthogonalizer's on NCCL (bf16 by default; it rounds the momentum
        to it anyway), fp32 on gloo (it refuses bf16, pytorch#111131)."""
        return (self.ortho_dtype or torch.bfloat16) if device.type == "cuda" else torch.float32

    # --- step -----------------------------------------------------------------------------------------------

    def start_grad_reduce(self):
        """Start SUMming every matrix's gradient onto its owner (module docstring, step 1). Returns the function
        that waits, leaves the averaged gradient in p.grad on the owner and sets p.grad = None on the others."""
        mats, sizes, mine = self._layout()
        present = [p.grad is not None for p in mats]  # a missing grad is missing on every rank (same model)
        flat = torch.zeros(sum(sizes), dtype=self.wire_dtype(mats[0].device), device=mats[0].device)  # (N_mu,)
        for p, part in zip(mats, flat.split([p.numel() for p in mats])):
            if p.grad is not None:
                part.copy_(p.grad.flatten())
        works, summed = _to_owners(flat, sizes, self.rank)  # summed: (sizes[rank],) this rank's bucket

        def finish():
            _wait(works, flat, summed)
            owned = mats[mine]
            for p, has, part in zip(owned, present[mine], summed.split([p.numel() for p in owned])):
                if has:
                    p.grad.copy_(part.view_as(p)).div_(self.world)  # divide in the grad's dtype (fp32)
            for p in _others(mats, mine):
                p.grad = None  # the local, un-reduced gradient: nobody may use it
            self._reduced = True
        return finish

    def reduce_grads(self) -> None:
        """Average every matrix's gradient onto its owner (a collective: every rank calls it)."""
        if self.world > 1:
            self.start_grad_reduce()()

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._evaluate(closure)
        if closure is not None or not self._reduced:
            self.reduce_grads()  # nobody averaged this step's gradients (sync_and_clip does, before clipping)
        self._reduced = False
        for key in self._buckets()[self.rank]:
            p, group = self._item(key)
            if p.grad is not None:
                self.apply_update(p, self.direction(p, group), group)
        if self.world > 1:
            self._gather_weights()
        return loss

    def _gather_weights(self) -> None:
        """Every owner's updated matrices to every rank, in the parameters' dtype (module docstring, step 4)."""
        mats, sizes, mine = self._layout()
        flat = torch.empty(sum(sizes), dtype=mats[0].dtype, device=mats[0].device)  # (N_mu,)
        parts = flat.split([p.numel() for p in mats])
        for p, part in zip(mats[mine], parts[mine]):
            part.copy_(p.flatten())
        _wait(_from_owners(flat, sizes, self.rank), flat)
        for p, part in zip(_others(mats, mine), _others(parts, mine)):
            p.copy_(part.view_as(p))

    # --- checkpoints ----------------------------------------------------------------------------------------

    def _full_state(self) -> dict:
        """{matrix: state} for every matrix with state on any rank, gathered from the owners. A collective."""
        if self.world == 1:
            return dict(self.state)
        manifest = {}  # (group index, param index) -> {key: ("tensor", shape, dtype) | ("value", v)}, owned only
        for k in self._buckets()[self.rank]:
            st = self.state.get(self._item(k)[0], {})
            if st:
                manifest[k] = {key: ("tensor", tuple(v.shape), v.dtype) if torch.is_tensor(v) else ("value", v)
                               for key, v in st.items()}
        manifests = [None] * self.world
        dist.all_gather_object(manifests, manifest)
        full, pending = {}, []
        for owner, man in enumerate(manifests):  # the same order on every rank: broadcasts pair up
            for k, entries in man.items():
                p = self._item(k)[0]
                st = full[p] = {}
                for key, (kind, *info) in entries.items():
                    if kind == "value":
                        st[key] = info[0]
                        continue
                    shape, dtype = info
                    if owner == self.rank:
                        buf = self.state[p][key].detach().float()
                    else:
                        buf = torch.empty(shape, dtype=torch.float32, device=p.device)
                    pending.append((dist.broadcast(buf, src=owner, async_op=True), st, key, buf, dtype))
        for work, st, key, buf, dtype in pending:
            work.wait()
            st[key] = buf.to(dtype)
        return full

    def state_dict(self) -> dict:
        """The whole optimizer state in the layout of a 1-process SimpleMuon (a collective: call on every rank)."""
        local, self.state = self.state, defaultdict(dict, self._full_state())
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
