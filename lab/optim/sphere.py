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
def max_drift(pairs) -> float:
    """max over (matrix, axis) pairs of | ||vector|| - 1 | along the axis (0.0 for none)."""
    drifts = [(p.float().norm(dim=dim) - 1).abs().max() for p, dim in pairs]
    return torch.stack(drifts).max().item() if drifts else 0.0


def max_sphere_drift(model) -> float:
    """max_drift over every sphere matrix the model declares (0.0 without sphere_params)."""
    return max_drift((p, dim) for _, p, dim in getattr(model, "sphere_params", tuple)())


GEODESIC_TOL = 1e-4  # a tangent part below this fraction of ||D_i|| is rounding noise: the vector stays put


def geodesic_step(W: torch.Tensor, D: torch.Tensor, lr: float, dim: int, mode: str = "lr") -> torch.Tensor:
    """Exact exponential-map step on the product of unit spheres: one sphere per vector of W along `dim`.

    D is the descent direction (e.g. -U). Per vector i (ALGORITHMS.md section 9), in fp32 whatever W's dtype:
        w_i = W_i / ||W_i||                        # the point on the sphere
        T_i = D_i - <D_i, w_i> w_i                 # tangent part (the radial part would only change the norm)
        T_i <- T_i - <T_i, w_i> w_i                # second Gram-Schmidt pass: when D_i is nearly parallel to w_i,
                                                   # T_i is mostly cancellation error and not orthogonal to w_i
        theta_i = lr  ("lr")  or  lr * ||T_i||  ("lr_norm")
        W_i <- cos(theta_i) w_i + sin(theta_i) T_i / ||T_i||
    The result is unit to fp32 rounding (w_i and T_i/||T_i|| are orthonormal), and a small step decreases a loss
    whose gradient is -D. A vector whose tangent part is below GEODESIC_TOL * ||D_i|| (D_i parallel to W_i: the
    step would follow rounding noise) or that is zero stays where it is. Returns W's shape and dtype.
    """
    dtype = torch.promote_types(W.dtype, torch.float32)  # fp32 for bf16/fp16/fp32 params (fp64 stays fp64)
    Wf, Df = W.to(dtype), D.to(dtype)
    r = Wf.norm(dim=dim, keepdim=True)  # (m, 1) for rows, (1, n) for columns
    w = Wf / r.clamp_min(1e-30)
    T = Df - (Df * w).sum(dim, keepdim=True) * w
    T = T - (T * w).sum(dim, keepdim=True) * w
    t_norm = T.norm(dim=dim, keepdim=True)
    moving = (t_norm > GEODESIC_TOL * Df.norm(dim=dim, keepdim=True)) & (r > 0)
    theta = lr * (torch.ones_like(t_norm) if mode == "lr" else t_norm)
    out = torch.cos(theta) * w + torch.sin(theta) * (T / t_norm.clamp_min(1e-30))
    return torch.where(moving, out, Wf).to(W.dtype)
