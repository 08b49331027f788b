"""nGPT, the normalized Transformer (Loshchilov, Hsieh, Sun, Ginsburg; arXiv 2410.01131), as NVIDIA/ngpt's
model.py with use_nGPT=1 (ALGORITHMS.md section 6.2), plus the gated variant.

Every hidden state lives on the unit sphere, and so does every embedding-axis vector of every matrix: a block moves
h a step |alpha| toward each branch's (normalized) output and renormalizes. There are no norm layers and no biases.
The weights are NOT normalized here: lab.models.build_model projects them once, and the training loop calls
lab.optim.sphere.project_to_sphere after optimizer steps. `sphere_params()` is the one declaration of which matrices
are on the sphere and along which axis; everything sphere-related reads it.

Shapes: B batch, T time, d = n_embd, H heads, Dh = d // H, V vocab.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# The sphere table: module name -> the axis of its .weight that the norm reduces, i.e. the embedding axis
# (nn.Linear stores (out, in): rows of the input projections, columns of the output projections).
SPHERE_DIM = {"wte": 1, "lm_head": 1, "wq": 1, "wk": 1, "wv": 1, "w_fc": 1, "wo": 0, "w_proj": 0}


def unit(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """x / ||x|| along `dim` (nGPT's justnorm), computed in fp32 and cast back to x's dtype.
    eps is a clamp on the norm, not an added term: it only turns 0/0 into 0, any nonzero vector is divided exactly."""
    xf = x.float()
    return (xf / xf.norm(dim=dim, keepdim=True).clamp_min(eps)).to(x.dtype)


def eigen(p: torch.Tensor, init: float, scale: float) -> torch.Tensor:
    """Eigen learning rate: `p` is stored at `scale` and used as p * (init / scale). An optimizer step of size lr on p
    then moves the used value by lr * init / scale, which gives each scaler its own effective learning rate."""
    return p * (init / scale)


def lerp_residual(h: torch.Tensor, branch: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """nGPT's residual: h <- unit(h + alpha * (unit(branch) - h)). A step of (per-channel) size alpha from the unit
    vector h toward the branch's direction, then back onto the sphere: alpha 0 keeps h, alpha 1 gives unit(branch)."""
    return unit(h + alpha * (unit(branch) - h))


class Rotary(nn.Module):
    """Rotary position embedding (RoPE, base 10000), half-split pairing: channel i rotates with channel i + Dh/2.
    Shared by nGPT and the GPT baseline. A rotation within each head, so it keeps every head's norm."""

    def __init__(self, d_head: int, max_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)  # (Dh/2,)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (T_max, Dh/2)
        # non-persistent buffers: follow .to(device) but stay out of the state dict (recomputed, never trained)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, H, Dh)
        T = x.size(1)
        cos = self.cos[None, :T, None, :].to(x.dtype)  # (1, T, 1, Dh/2)
        sin = self.sin[None, :T, None, :].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # (B, T, H, Dh/2) each
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, T, H, Dh)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.n_embd
        self.n_head, self.d_head = config.n_head, d // config.n_head
        self.base_scale = d**-0.5
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)
        self.sqk = nn.Parameter(torch.full((d,), self.base_scale))  # s_qk, stored at base_scale
        self.rotary = Rotary(self.d_head, config.seq_len)

    def sqk_eff(self) -> torch.Tensor:  # (H, Dh), 1 at init
        return eigen(self.sqk, 1.0, self.base_scale).view(self.n_head, self.d_head)

    def qk(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k (B, T, H, Dh) = s_qk * unit(RoPE(W h)) per head: RoPE before the norm, as NVIDIA/ngpt."""
        B, T, _ = h.shape
        q = self.wq(h).view(B, T, self.n_head, self.d_head)
        k = self.wk(h).view(B, T, self.n_head, self.d_head)
        sqk = self.sqk_eff()
        q = sqk * unit(self.rotary(q))  # unit per head makes q.k a cosine; s_qk (per channel) sets its sharpness
        k = sqk * unit(self.rotary(k))
        return q, k

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        B, T, d = h.shape
        q, k = self.qk(h)
        v = self.wv(h).view(B, T, self.n_head, self.d_head)
        q, k = q.to(v.dtype), k.to(v.dtype)  # s_qk is fp32: under bf16 autocast keep SDPA's inputs one dtype
        # q.k is a cosine (times s_qk^2), so it is scaled UP by sqrt(Dh), not down, to let the softmax be sharp
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True, scale=self.d_head**0.5)  # (B, H, T, Dh)
        return self.wo(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    """SwiGLU with 4d hidden units: uv = s_uv * W_fc h; hM = W_proj(u * silu(v))."""

    def __init__(self, config):
        super().__init__()
        d = config.n_embd
        self.sqrt_d = d**0.5
        self.w_fc = nn.Linear(d, 2 * 4 * d, bias=False)  # the u and v halves in one matmul
        self.w_proj = nn.Linear(4 * d, d, bias=False)
        self.suv = nn.Parameter(torch.ones(2 * 4 * d))  # (s_u, s_v), stored at 1

    def suv_eff(self) -> torch.Tensor:  # (8d,), sqrt(d) at init
        # W_fc h is a cosine (~1/sqrt(d) per channel): sqrt(d) brings it back to the range where SiLU is nonlinear
        return eigen(self.suv, 1.0, 1.0) * self.sqrt_d

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        u, v = (self.suv_eff() * self.w_fc(h)).chunk(2, dim=-1)  # (B, T, 4d) each
        return self.w_proj(u * F.silu(v))


class Block(nn.Module):
    def __init__(self, config, gated: bool = False):
        super().__init__()
        d = config.n_embd
        self.base_scale = d**-0.5
        self.attn = Attention(config)
        self.mlp = MLP(config)
        # alpha_A, alpha_M: used as stored * (alpha_init / base_scale), alpha_init at init (config; NVIDIA 0.05)
        self.alpha_init = config.alpha_init
        self.attn_alpha = nn.Parameter(torch.full((d,), self.base_scale))  # alpha_A, stored at base_scale
        self.mlp_alpha = nn.Parameter(torch.full((d,), self.base_scale))  # alpha_M
        # gated nGPT: per-channel gates on the step sizes, 2*sigmoid(0) = 1 so a gated block starts as nGPT's
        self.attn_gate = nn.Parameter(torch.zeros(d)) if gated else None
        self.mlp_gate = nn.Parameter(torch.zeros(d)) if gated else None

    def _alpha(self, alpha: nn.Parameter, gate: nn.Parameter | None) -> torch.Tensor:  # (d,)
        a = eigen(alpha, self.alpha_init, self.base_scale).abs()  # abs (NVIDIA): a step toward the branch, not away
        return a if gate is None else a * (2 * torch.sigmoid(gate))

    def alpha_attn(self) -> torch.Tensor:  # effective alpha_A (gated included), (d,)
        return self._alpha(self.attn_alpha, self.attn_gate)

    def alpha_mlp(self) -> torch.Tensor:  # effective alpha_M, (d,)
        return self._alpha(self.mlp_alpha, self.mlp_gate)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, d), unit rows in and out
        h = lerp_residual(h, self.attn(h), self.alpha_attn())
        h = lerp_residual(h, self.mlp(h), self.alpha_mlp())
        return h


class NGPT(nn.Module):
    """nGPT. forward(idx (B, T), targets (B, T) | None) -> (logits (B, T, V), mean cross-entropy | None)."""

    gated = False

    def __init__(self, config):
        super().__init__()
        self.config = config
        d, V = config.n_embd, config.vocab_size
        self.base_scale = d**-0.5
        self.wte = nn.Embedding(V, d)  # untied from lm_head
        self.blocks = nn.ModuleList(Block(config, gated=self.gated) for _ in range(config.n_layer))
        self.lm_head = nn.Linear(d, V, bias=False)
        self.sz = nn.Parameter(torch.full((V,), self.base_scale))  # s_z, stored at base_scale
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                # only the direction survives: build_model then projects every one of these onto the sphere
                nn.init.normal_(m.weight, std=self.base_scale)

    def sz_eff(self) -> torch.Tensor:  # (V,), 1 at init
        return eigen(self.sz, 1.0, self.base_scale)

    def sphere_params(self):
        """Yield (name, param, dim) for every matrix on the sphere: after projection param.norm(dim=dim) is all ones.
        Rows (dim 1) of wte, lm_head, wq, wk, wv, w_fc; columns (dim 0) of wo, w_proj. Names as named_parameters()."""
        for name, m in self.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in SPHERE_DIM:
                yield f"{name}.weight", m.weight, SPHERE_DIM[leaf]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        # unit(): a no-op while wte's rows are unit; keeps h on the sphere when projection is lazy (every N steps)
        h = unit(self.wte(idx))  # (B, T, d)
        for block in self.blocks:
            h = block(h)  # (B, T, d), unit rows
        logits = self.sz_eff() * self.lm_head(h)  # (B, T, V): cosines scaled per token by s_z, no final norm
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))  # fp32 softmax
        return logits, loss


class GatedNGPT(NGPT):
    """nGPT with a learned per-channel gate on each block's two step sizes:

        h <- unit(h + |alpha| * 2*sigmoid(g) * (unit(branch) - h)),   g in R^d per branch per block, g = 0 at init

    2*sigmoid(0) = 1, so the gated model starts exactly as nGPT with the same weights. Unlike alpha (linear, no
    bound), the gate is bounded: it can shut a channel's step off or at most double it. Gates are 1-D (AdamW)."""

    gated = True
