"""4. Multi-GPU traffic: bytes each rank hands to the collectives per training step, per parameter, at a preset's
shapes (the h100 one on 8 ranks), before and after, from lab.optim.distributed's byte accounting (no GPU needed)."""
from __future__ import annotations

import pandas as pd
import torch

from lab.bench.common import Ctx, _md
from lab.config import get_config
from lab.optim.distributed import DistributedMuon, step_bytes
from lab.optim.orthogonalize import orthogonalize_flops


def _numel_plan(sizes: list[int], world: int) -> list[list[int]]:
    """The ownership plan before FLOP balancing: largest matrix first, to the rank with the fewest elements."""
    plan, load = [[] for _ in range(world)], [0] * world
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        r = load.index(min(load))
        plan[r].append(i)
        load[r] += sizes[i]
    return plan


def _imbalance(plan: list[list[int]], cost: list[int]) -> float:
    loads = [sum(cost[i] for i in b) for b in plan]
    return max(loads) / (sum(loads) / len(loads))


def bench_traffic(ctx: Ctx) -> str:
    from lab.models import MODELS
    from lab.optim.setup import routing_table
    p = ctx.p
    preset = p["traffic_preset"]
    cfg = get_config(preset)
    with torch.device("meta"):  # shapes only: the h100 model is never materialized
        model = MODELS[cfg.model](cfg)
    muon_names = {r["name"] for r in routing_table(model, cfg) if r["optimizer"] == "muon"}
    named = list(model.named_parameters())
    muon = [q for n, q in named if n in muon_names]
    n_muon = sum(q.numel() for q in muon)
    n_adamw = sum(q.numel() for n, q in named if n not in muon_names)
    nccl = torch.device("cuda")  # the accounting for CUDA tensors (NCCL): bf16 gradients
    rows = []
    for orth in ("newton_schulz", "gram_newton_schulz"):
        cost = [orthogonalize_flops(q.shape, orth, cfg.ns_steps) for q in muon]
        for world in p["traffic_worlds"]:
            opt = DistributedMuon(muon, rank=0, world=world, orthogonalizer=orth, ns_steps=cfg.ns_steps)
            b = step_bytes(opt, n_adamw, len(named), nccl)
            plan = [[pi for _, pi in bucket] for bucket in opt._buckets()]  # one param group: pi indexes `muon`
            old_muon, old_adamw = 6 * n_muon, 8 * n_adamw  # bf16 grads + fp32 weights; AdamW fp32, not counted
            for scheme, mu, ad, imb, pad in (
                    ("before", old_muon, old_adamw, _imbalance(_numel_plan([q.numel() for q in muon], world), cost),
                     0.0),
                    ("after", b["muon_grads"] + b["muon_weights"], b["adamw_grads"], _imbalance(plan, cost),
                     b["muon_padding"] / (b["muon_grads"] + b["muon_weights"]))):
                rows.append({"orthogonalizer": orth, "ranks": world, "scheme": scheme,
                             "Muon B/weight": mu / n_muon, "AdamW B/weight": ad / n_adamw,
                             "Muon MB": mu / 1e6, "AdamW MB": ad / 1e6, "total MB": (mu + ad) / 1e6,
                             "B/param": (mu + ad) / (n_muon + n_adamw), "Muon padding": pad,
                             "ortho FLOPs max/mean": imb})
    df = pd.DataFrame(rows)
    world = p["traffic_worlds"][0]
    head = df[(df.orthogonalizer == "newton_schulz") & (df.ranks == world)].set_index("scheme")
    b, a = head.loc["before"], head.loc["after"]
    body = f"""\
**What:** the bytes one rank hands to the collectives of one training step (sync_and_clip and the optimizer
steps: a reduce-scatter counts its input, an all-gather its output, an all-reduce twice its tensor; on a ring each
rank sends about (N-1)/N of it), from `lab.optim.distributed.step_bytes` on the `{preset}` preset's real parameter
shapes ({n_muon / 1e6:.1f}M weights on Muon, {n_adamw / 1e6:.1f}M on AdamW; built on the meta device), for CUDA
tensors (NCCL). Before: Muon bf16 gradients + fp32 weights over element-balanced owners (6 bytes per weight), AdamW
gradients all-reduced in fp32 (8 bytes per weight, left out of the accounting then). After: AdamW gradients in bf16
(4 bytes), Muon unchanged per weight but owners balanced by orthogonalization FLOPs, every bucket padded to the
largest (one reduce-scatter and one all-gather for any plan; the padding is counted). The norm + presence
all-reduce ({8 * (1 + len(named))} bytes) is left out of the table. ortho FLOPs max/mean: the busiest rank's
orthogonalization work over the mean (`orthogonalize_flops` for that orthogonalizer).

**Headline:** `{preset}` shapes on {world} ranks: **{b['B/param']:.2f}** -> **{a['B/param']:.2f}** bytes per
parameter per step (Muon {b['Muon B/weight']:.2f} -> {a['Muon B/weight']:.2f} bytes per weight, AdamW
{b['AdamW B/weight']:.0f} -> {a['AdamW B/weight']:.0f}; {b['total MB']:.0f} -> {a['total MB']:.0f} MB per rank).

{_md(df)}
"""
    print(_md(df), flush=True)
    return body
