"""torch.distributed glue. With one process every function is a no-op, so train.py reads the same either way."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup() -> tuple[int, int]:
    """(rank, world_size). Under torchrun (WORLD_SIZE > 1) the process group is initialised here, once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def device(config) -> torch.device:
    if torch.cuda.is_available() and config.device != "cpu":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def mean_scalar(t: torch.Tensor) -> torch.Tensor:
    """Mean of a scalar over ranks (SUM then divide: gloo's AVG is unreliable, pytorch#162338)."""
    if not dist.is_initialized():
        return t
    t = t.detach().float().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def sync_grads(model: torch.nn.Module, world: int) -> None:
    """Average gradients over ranks (fp32 on the wire: gloo refuses bf16)."""
    if world == 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            g = p.grad.float()
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            p.grad.copy_(g / world)


def wrap(optimizers: list, model: torch.nn.Module, world: int) -> list:
    """The optimizers to step on this rank (replicated for now: every rank runs the same update)."""
    return optimizers
