"""SimpleMuon: momentum -> orthogonalize -> (NorMuon) -> (cautious) decay -> ambient step or geodesic step.

One update for a matrix W (m, n) with gradient G, per ALGORITHMS.md sections 1, 2, 5, 8, 9:
    B <- mu B + (1 - mu) G                      # EMA momentum (fp32)
    M <- (1 - mu) G + mu B  (Nesterov) or B
    O <- orth(M)                                # Newton-Schulz / Polar Express, in bf16 by default; one batched
                                                # call per stack of same-shape matrices
    O <- normuon(O)                             # optional per-row/column variance reduction
    U <- max(1, m/n)^0.5 O                      # Keller's shape scaling ("original")
    D <- U + wd * [mask] * W                    # decoupled decay; cautious: only where U*W >= 0
    W <- W - lr D                               # or, on the sphere: geodesic step along -D
"""
from __future__ import annotations

import torch

from lab.optim.orthogonalize import ORTHOGONALIZERS
from lab.optim.sphere import geodesic_step

GEODESIC_MODES = (None, "lr", "lr_norm")


def normuon_scale(O: torch.Tensor, buf: torch.Tensor, beta2: float) -> torch.Tensor:
    """NorMuon variance reduction (modded-nanogpt form): per-row stats for tall/square, per-column for wide.

    buf is the EMA of mean(O^2) along the reduced axis (zero-init, no bias correction: the final rescale to
    ||O||_F makes the missing correction cancel). Returns O * s with s = rsqrt(buf), renormalized to ||O||_F.
    """
    red = -1 if O.size(-2) >= O.size(-1) else -2
    v_mean = O.square().mean(dim=red, keepdim=True)  # (m, 1) or (1, n)
    buf.lerp_(v_mean, 1 - beta2)
    s = buf.clamp_min(1e-10).rsqrt()
    out = O * s
    return out * (O.norm() / out.norm().clamp_min(1e-10))  # keep the Frobenius norm: lr keeps its meaning


def cautious_mask(update: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """CWD (arXiv 2510.12402): decay only coordinates where the update and the weight share sign (0 counts)."""
    return (update * p >= 0).to(p.dtype)


class SimpleMuon(torch.optim.Optimizer):
    """Muon for hidden 2-D matrices (embeddings, head and 1-D params belong on AdamW; see lab.optim.setup).

    A param group may carry `sphere_dim` (the axis along which its matrices are unit vectors, from the model's
    `sphere_params()`); `geodesic` then moves each such vector along a great circle instead of a straight line.
    """

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0,
                 orthogonalizer="newton_schulz", ns_steps=5, normuon=False, beta2=0.95, cautious_wd=False,
                 geodesic=None, use_kernels=True, ortho_dtype=None):
        if orthogonalizer not in ORTHOGONALIZERS:
            raise ValueError(f"orthogonalizer={orthogonalizer!r}; valid: {', '.join(ORTHOGONALIZERS)}")
        if geodesic not in GEODESIC_MODES:
            raise ValueError(f"geodesic={geodesic!r}; valid: {GEODESIC_MODES}")
        if not lr > 0 or not 0 <= momentum < 1 or not 0 <= beta2 < 1 or weight_decay < 0 or ns_steps < 1:
            raise ValueError(f"SimpleMuon: bad value in lr={lr}, momentum={momentum}, beta2={beta2}, "
                             f"weight_decay={weight_decay}, ns_steps={ns_steps}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        orthogonalizer=orthogonalizer, ns_steps=ns_steps, normuon=normuon, beta2=beta2,
                        cautious_wd=cautious_wd, geodesic=geodesic, use_kernels=use_kernels, sphere_dim=None)
        super().__init__(params, defaults)
        self.ortho_dtype = ortho_dtype  # None: bf16 on CUDA (as the references), fp32 on CPU (bf16 bmm ~25x slower)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"SimpleMuon takes 2-D matrices only, got shape {tuple(p.shape)}; "
                                     "route 0-D/1-D params, embeddings and the head to AdamW")
            if group["geodesic"] and group["sphere_dim"] is None:
                raise ValueError("geodesic updates need a param group with `sphere_dim` (the model declares none "
                                 "for these params: is it an nGPT?)")

    def momentum(self, p: torch.Tensor, group: dict, grad: torch.Tensor, out: torch.Tensor) -> None:
        """B <- mu B + (1 - mu) G (fp32 state); writes M (Nesterov: (1 - mu) G + mu B, else B) into `out`."""
        state = self.state[p]
        g = grad.float()
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(g)
        buf = state["momentum_buffer"]
        mu = group["momentum"]
        buf.lerp_(g, 1 - mu)
        if group["nesterov"]:
            torch.lerp(g, buf, mu, out=out)  # buf is never modified
        else:
            out.copy_(buf)

    def directions(self, items: list) -> list[torch.Tensor]:
        """The updates U (fp32, before decay) of [(matrix, group, gradient)]: momentum for each, then ONE batched
        orthogonalization per stack of same-shape matrices with the same settings (bit-identical to one call per
        matrix on CPU: each matrix is normalized and multiplied on its own inside the batch), then NorMuon and the
        shape scaling for each."""
        stacks: dict[tuple, list[int]] = {}
        for i, (p, group, _) in enumerate(items):
            key = (tuple(p.shape), p.device, group["orthogonalizer"], group["ns_steps"], group["use_kernels"])
            stacks.setdefault(key, []).append(i)
        O = [None] * len(items)
        for (shape, device, name, steps, use_kernels), idx in stacks.items():
            M = torch.empty((len(idx), *shape), dtype=torch.float32, device=device)  # (B, m, n)
            for j, i in enumerate(idx):
                self.momentum(*items[i], out=M[j])
            dtype = self.ortho_dtype or (torch.bfloat16 if M.is_cuda else torch.float32)
            out = ORTHOGONALIZERS[name](M.to(dtype), steps=steps, use_kernels=use_kernels).float()  # (B, m, n)
            for j, i in enumerate(idx):
                O[i] = out[j]
        return [self.finish_direction(p, group, o) for (p, group, _), o in zip(items, O)]

    def finish_direction(self, p: torch.Tensor, group: dict, O: torch.Tensor) -> torch.Tensor:
        """NorMuon (optional) and Keller's shape scaling of the orthogonalized momentum O (fp32)."""
        if group["normuon"]:
            state = self.state[p]
            if "second_moment" not in state:
                red_shape = (O.size(0), 1) if O.size(0) >= O.size(1) else (1, O.size(1))
                state["second_moment"] = torch.zeros(red_shape, dtype=torch.float32, device=O.device)
            O = normuon_scale(O, state["second_moment"], group["beta2"])
        return O * max(1.0, p.size(0) / p.size(1)) ** 0.5

    def direction(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        """The update U of one matrix on its own (momentum -> orthogonalize -> NorMuon -> shape scaling)."""
        return self.directions([(p, group, p.grad)])[0]

    @torch.no_grad()
    def apply_update(self, p: torch.Tensor, U: torch.Tensor, group: dict) -> None:
        """Decoupled (cautious) decay plus the step: ambient W -= lr D, or geodesic along -D."""
        lr, wd = group["lr"], group["weight_decay"]
        D = U
        if wd > 0:
            mask = cautious_mask(U, p) if group["cautious_wd"] else 1.0
            D = U + wd * mask * p.float()
        if group["geodesic"]:
            p.copy_(geodesic_step(p, -D, lr, group["sphere_dim"], group["geodesic"]))  # fp32 inside
        else:
            p.sub_((lr * D).to(p.dtype))

    @staticmethod
    def _evaluate(closure):
        """The torch.optim closure protocol: re-evaluate the loss with grad enabled (None without a closure)."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    @torch.no_grad()
    def update(self, items: list) -> None:
        """One step for [(matrix, group, gradient)] (stacked orthogonalization, see `directions`)."""
        for (p, group, _), U in zip(items, self.directions(items)):
            self.apply_update(p, U, group)

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._evaluate(closure)
        self.update([(p, g, p.grad) for g in self.param_groups for p in g["params"] if p.grad is not None])
        return loss
