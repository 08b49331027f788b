"""Routing: the one function that decides which optimizer group every parameter goes to, and with which lr."""
from __future__ import annotations

import torch

from lab.optim.muon import SimpleMuon


class CautiousAdamW(torch.optim.Optimizer):
    """AdamW with cautious weight decay (CWD, arXiv 2510.12402; ALGORITHMS.md section 8), per parameter group:

        m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2               (fp32 state, as torch.optim.AdamW)
        u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)              # the Adam direction
        p <- p - lr (u + cwd * [u * p >= 0] * p)                         # decay only where it agrees with the step

    With cwd = 0 it is torch.optim.AdamW(weight_decay=0) (a test checks it). Parameters without a gradient are
    left alone (neither stepped nor decayed), and nothing is cloned: the mask comes from the pre-step weights.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, cwd=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, cwd=cwd))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                st["step"] += 1
                t = st["step"].item()
                grad = p.grad.float()
                st["exp_avg"].lerp_(grad, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
                denom = (st["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(g["eps"])
                u = st["exp_avg"] / (1 - b1**t) / denom
                w = p.float()
                if g["cwd"] > 0:
                    u += g["cwd"] * (u * w >= 0) * w
                p.copy_(w - g["lr"] * u)
        return loss


def param_kind(name: str, p: torch.Tensor) -> str:
    """embed | head | matrix | scalar. Hidden 2-D matrices are the only ones Muon may take (section 12)."""
    if name.startswith("wte."):
        return "embed"
    if name.startswith("lm_head."):
        return "head"
    return "matrix" if p.ndim == 2 else "scalar"


def routing_table(model: torch.nn.Module, config) -> list[dict]:
    """One row per parameter: name, shape, optimizer, group, lr, weight_decay, sphere_dim."""
    sphere = {name: dim for name, _, dim in getattr(model, "sphere_params", lambda: [])()}
    adam_lr = {"embed": config.embed_lr, "head": config.head_lr, "scalar": config.scalar_lr}
    rows = []
    for name, p in model.named_parameters():
        kind = param_kind(name, p)
        on_muon = config.optimizer == "muon" and kind == "matrix"
        if on_muon:
            lr, wd = config.lr, config.weight_decay
        else:
            lr = config.adamw_lr if config.optimizer == "adamw" else adam_lr.get(kind, config.scalar_lr)
            wd = config.adam_weight_decay if kind != "scalar" else 0.0  # never decay gains/scalers/gates
        rows.append(dict(name=name, shape=list(p.shape), optimizer="muon" if on_muon else "adamw", group=kind,
                         lr=lr, weight_decay=wd, sphere_dim=sphere.get(name),
                         update=update_rule(config, on_muon, sphere.get(name))))
    return rows


def update_rule(config, on_muon: bool, sphere_dim: int | None) -> str:
    """How this parameter is updated, e.g. 'polar_express x5 + normuon + geodesic lr_norm' (for the routing table)."""
    parts = [f"{config.orthogonalizer} x{config.ns_steps}"] if on_muon else ["adamw"]
    parts += ["normuon"] * (on_muon and config.normuon) + ["cautious_wd"] * config.cautious_wd
    geodesic = on_muon and sphere_dim is not None and config.geodesic != "none"
    if geodesic:
        parts.append(f"geodesic {config.geodesic}")
    elif sphere_dim is not None:
        parts.append(f"project every {config.project_every}")
    return " + ".join(parts)


def build_optimizers(model: torch.nn.Module, config) -> tuple[list[torch.optim.Optimizer], list[dict]]:
    """(optimizers, routing). Muon groups are split by sphere_dim so a geodesic step knows each matrix's axis."""
    rows = routing_table(model, config)
    params = dict(model.named_parameters())
    groups: dict[tuple, dict] = {}
    for r in rows:
        key = (r["optimizer"], r["group"], r["sphere_dim"] if r["optimizer"] == "muon" else None, r["weight_decay"])
        g = groups.setdefault(key, dict(params=[], lr=r["lr"], weight_decay=r["weight_decay"], kind=r["group"],
                                        sphere_dim=r["sphere_dim"]))
        g["params"].append(params[r["name"]])
    muon_groups = [g for (opt, *_), g in groups.items() if opt == "muon"]
    adam_groups = [g for (opt, *_), g in groups.items() if opt == "adamw"]
    optimizers = []
    if muon_groups:
        geodesic = None if config.geodesic == "none" else config.geodesic
        for g in muon_groups:
            if geodesic and g["sphere_dim"] is None:
                raise ValueError(f"geodesic={geodesic!r} but Muon matrices {len(g['params'])} have no sphere axis; "
                                 "geodesic needs a model whose sphere_params() declares them (ngpt, gated_ngpt)")
        optimizers.append(SimpleMuon(muon_groups, lr=config.lr, momentum=config.momentum_start,
                                     nesterov=config.nesterov, weight_decay=config.weight_decay,
                                     orthogonalizer=config.orthogonalizer, ns_steps=config.ns_steps,
                                     normuon=config.normuon, beta2=config.beta2, cautious_wd=config.cautious_wd,
                                     geodesic=geodesic, use_kernels=config.use_kernels))
    if adam_groups:
        betas, eps = tuple(config.adam_betas), config.adam_eps
        if config.cautious_wd:  # decay is ours (masked)
            for g in adam_groups:
                g["cwd"] = g.pop("weight_decay")
            optimizers.append(CautiousAdamW(adam_groups, lr=config.adamw_lr, betas=betas, eps=eps))
        else:
            fused = next(model.parameters()).device.type in ("cuda", "cpu")  # fused kernels: one launch per group
            optimizers.append(torch.optim.AdamW(adam_groups, lr=config.adamw_lr, betas=betas, eps=eps, fused=fused))
    assert sum(len(g["params"]) for o in optimizers for g in o.param_groups) == len(params), "routing lost a param"
    for o in optimizers:  # schedules scale these
        for g in o.param_groups:
            g["initial_lr"], g["initial_wd"] = g["lr"], g.get("cwd", g.get("weight_decay", 0.0))
    return optimizers, rows


def format_routing(rows: list[dict]) -> str:
    """The routing table as markdown (printed at start and saved in the run directory)."""
    import pandas as pd
    df = pd.DataFrame(rows)
    df["sphere_dim"] = ["-" if r["sphere_dim"] is None else r["sphere_dim"] for r in rows]  # not NaN
    return df.to_markdown(index=False)
