"""Keeping nGPT's matrices on the unit sphere. Reads the model's one declaration, `sphere_params()`."""
from __future__ import annotations

import torch

from lab.models.ngpt import unit


@torch.no_grad()
def project_to_sphere(model) -> None:
    """Renormalize every sphere matrix along its declared axis (in fp32, cast back). A no-op for a model without
    sphere_params (the GPT baseline)."""
    for _, p, dim in getattr(model, "sphere_params", tuple)():
        p.copy_(unit(p, dim))


@torch.no_grad()
def max_sphere_drift(model) -> float:
    """max over sphere matrices of | ||vector|| - 1 | along the declared axis (0.0 without sphere_params)."""
    drifts = [(p.float().norm(dim=dim) - 1).abs().max() for _, p, dim in getattr(model, "sphere_params", tuple)()]
    return torch.stack(drifts).max().item() if drifts else 0.0


def geodesic_step(W: torch.Tensor, D: torch.Tensor, lr: float, dim: int, mode: str = "lr") -> torch.Tensor:
    """Exact exponential-map step on the product of unit spheres: one sphere per vector of W along `dim`.

    D is the descent direction (e.g. -U). Per vector i (ALGORITHMS.md section 9):
        T_i = D_i - <D_i, W_i> W_i                 # tangent part (the radial part would only change the norm)
        theta_i = lr  ("lr")  or  lr * ||T_i||  ("lr_norm")
        W_i <- cos(theta_i) W_i + sin(theta_i) T_i / ||T_i||
    Unit vectors stay unit (T_i is orthogonal to W_i), and a small step decreases a loss whose gradient is -D.
    A vector with no tangent component (T_i = 0) stays where it is.
    """
    T = D - (D * W).sum(dim, keepdim=True) * W
    t_norm = T.norm(dim=dim, keepdim=True)  # (m, 1) for rows, (1, n) for columns
    theta = torch.full_like(t_norm, lr) if mode == "lr" else lr * t_norm
    theta = torch.where(t_norm > 1e-12, theta, torch.zeros_like(theta))
    return torch.cos(theta) * W + torch.sin(theta) * (T / t_norm.clamp_min(1e-12))
