"""torch.distributed glue: one run on N processes (`torchrun --nproc_per_node=N -m lab run ...`).

With one process every function is a no-op and `wrap` returns the optimizers unchanged, so train.py reads the
same either way. With N > 1 (NCCL for CUDA tensors, gloo for CPU tensors; everything on the wire is fp32, since
gloo refuses bf16):

  data       each rank draws its slice of the global batch (lab.data): global batch = N * batch_size.
  gradients  `sync_grads` all-reduces every gradient (SUM, then / N: gloo's AVG is unreliable, pytorch#162338),
             so clipping and every optimizer see the gradient of one process with the global batch.
  Muon       `DistributedMuon` (SimpleMuon's own `direction` / `apply_update`, no copy of the math): the Muon
             matrices, in a rank-consistent order (numel descending, ties in param-group order), are dealt
             round-robin, position k to rank k % N, and the list is padded with empty slots to a multiple of N.
             The owner alone computes momentum -> orthogonalize -> NorMuon -> decay/step for its matrices; each
             chunk of N consecutive positions is then all-gathered (the updated weights, padded to the chunk's
             largest matrix) while the next chunk computes, so every rank ends the step with identical weights.
             Momentum and NorMuon buffers live only on the owner: orthogonalization work and Muon state are / N.
  AdamW      replicated: every rank holds the whole AdamW state and applies the same update to the same
             averaged gradients (embeddings, head, gains and scalars: cheap next to the orthogonalizations).

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
    """Average gradients over ranks, clip them to `grad_clip` (0 = off) and return the global grad norm."""
    sync_grads(model, world)
    return torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf).item()


def sync_grads(model: torch.nn.Module, world: int) -> None:
    """Average gradients over ranks: async SUM all-reduces (fp32 on the wire), then / world."""
    if world == 1:
        return
    pending = []  # (param, fp32 buffer, work): buffers and handles stay alive until waited (nanochat #843)
    for p in model.parameters():
        if p.grad is not None:
            g = p.grad if p.grad.dtype == torch.float32 else p.grad.float()
            pending.append((p, g, dist.all_reduce(g, op=dist.ReduceOp.SUM, async_op=True)))
    for p, g, work in pending:
        work.wait()
        g.div_(world)
        if g is not p.grad:
            p.grad.copy_(g)


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
    """SimpleMuon whose matrices are owned round-robin by the ranks (see the module docstring).

    Every rank must hold identical weights and identical (averaged) gradients before `step()`; after it, every
    rank holds the identical updated weights. `state_dict()` is a collective and returns the 1-process layout.
    With world == 1 (no process group needed) it is exactly SimpleMuon.
    """

    def __init__(self, params, *, rank: int | None = None, world: int | None = None, **kwargs):
        self.rank = dist.get_rank() if rank is None else rank
        self.world = dist.get_world_size() if world is None else world
        self._layout = None  # [(group index, param index) | None], built on first use
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
        self._layout = None

    # --- ownership ------------------------------------------------------------------------------------------

    def _slots(self) -> list:
        """Matrices as (group index, param index), numel descending (ties in group order), padded with None
        to a multiple of world. Slot k belongs to rank k % world. Indices, not dicts: load_state_dict replaces
        the group dicts."""
        if self._layout is None:
            flat = [(gi, pi, p.numel()) for gi, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"])]
            order = [(gi, pi) for gi, pi, _ in sorted(flat, key=lambda t: -t[2])]  # stable sort
            self._layout = order + [None] * (-len(order) % self.world)
        return self._layout

    def _item(self, slot) -> tuple[torch.Tensor, dict] | None:
        if slot is None:
            return None
        group = self.param_groups[slot[0]]
        return group["params"][slot[1]], group

    def owned(self) -> list[torch.Tensor]:
        """The matrices this rank updates (and keeps state for)."""
        return [self._item(s)[0] for k, s in enumerate(self._slots()) if s is not None and k % self.world == self.rank]

    # --- step -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._evaluate(closure)
        slots, world = self._slots(), self.world
        pending = []  # (work, received views, chunk, send buffer): alive until waited
        for base in range(0, len(slots), world):
            chunk = [self._item(s) for s in slots[base:base + world]]
            mine = chunk[self.rank]
            if mine is not None and mine[0].grad is not None:  # a missing grad is missing on every rank
                p, group = mine
                self.apply_update(p, self.direction(p, group), group)
            if world > 1:
                pending.append(self._gather(chunk))
        for work, recv, chunk, _send in pending:
            work.wait()
            for r, (item, buf) in enumerate(zip(chunk, recv)):
                if item is not None and r != self.rank:
                    p = item[0]
                    p.copy_(buf[:p.numel()].view_as(p))
        return loss

    def _gather(self, chunk: list):
        """Start the all-gather of one chunk's owned matrices (fp32, padded to the chunk's largest)."""
        real = [item[0] for item in chunk if item is not None]  # never empty: padding is < world slots
        n = max(p.numel() for p in real)
        send = torch.zeros(n, dtype=torch.float32, device=real[0].device)
        mine = chunk[self.rank]
        if mine is not None:
            send[:mine[0].numel()].copy_(mine[0].detach().flatten())
        recv = list(torch.empty(self.world, n, dtype=torch.float32, device=send.device).unbind(0))
        return dist.all_gather(recv, send, async_op=True), recv, chunk, send

    # --- checkpoints ----------------------------------------------------------------------------------------

    def _full_state(self) -> dict:
        """{matrix: state} for every matrix with state on any rank, gathered from the owners. A collective."""
        if self.world == 1:
            return dict(self.state)
        slots = self._slots()
        manifest = {}  # slot -> {key: ("tensor", shape, dtype) | ("value", v)} for the slots this rank owns
        for k, s in enumerate(slots):
            if s is not None and k % self.world == self.rank:
                st = self.state.get(self._item(s)[0], {})
                if st:
                    manifest[k] = {key: ("tensor", tuple(v.shape), v.dtype) if torch.is_tensor(v) else ("value", v)
                                   for key, v in st.items()}
        manifests = [None] * self.world
        dist.all_gather_object(manifests, manifest)
        full, pending = {}, []
        for owner, man in enumerate(manifests):  # the same order on every rank: broadcasts pair up
            for k, entries in man.items():
                p = self._item(slots[k])[0]
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
