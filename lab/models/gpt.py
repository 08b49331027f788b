"""Pre-norm GPTs, the baselines nGPT is measured against. Neither has sphere_params(): nothing in them is projected.

GPT (model=gpt, modded-nanogpt / nanochat style): RMSNorm with a learnable gain before each branch and at the end,
RoPE, QK-norm, softmax scale 1/sqrt(Dh), ReLU^2 MLP with 4d hidden units, untied lm_head, no biases; GPT-2 init.

SwiGLUGPT (model=gpt_swiglu), the matched control: the same transformer as nGPT minus what nGPT changes, i.e. the
nGPT paper's own baseline (NVIDIA/ngpt use_nGPT=0) with QK-norm. It shares nGPT's widths and parameter shapes
(wq wk wv wo d x d, SwiGLU W_fc d -> 2 x 4d, W_proj 4d -> d, untied wte and lm_head, no biases), RoPE and
attention function: RMS-normalized q, k with softmax scale 1/sqrt(Dh) give logits sqrt(Dh) cos(q, k), which is
nGPT's attention with s_qk at its init value 1. What it lacks is nGPT: no sphere (no weight projection, no unit
hidden states, no LERP residual, no eigen step sizes alpha, no s_qk, s_uv, s_z); instead pre-norm RMSNorm (learnable
gain) before each branch and at the end, and a plain residual sum.
Init: NVIDIA/ngpt's baseline rule, N(0, sigma^2) with sigma = 1/sqrt(d) for wte and every hidden Linear (the
distribution nGPT draws before projecting: wte rows of norm ~1), sigma / sqrt(2L) for the residual-branch outputs
wo and w_proj, except lm_head at sigma / sqrt(d) = 1/d (muP's readout scale): the initial logits then have std
1/sqrt(d), the scale of nGPT's initial logits (s_z = 1 times cosines), so both start at loss ~ln V (at sigma the
logits would have std 1 and the loss ln V + ~0.5). W_fc's outputs start at std ~1 (RMSNorm'd input), as nGPT's
s_uv * sqrt(d) * cosines do. Every scale is in units of the width, so the rule is the same at every n_embd.

Shapes: B batch, T time, d = n_embd, H heads, Dh = d // H, V vocab.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.models.ngpt import Rotary


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.n_embd
        self.n_head, self.d_head = config.n_head, d // config.n_head
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)
        self.rotary = Rotary(self.d_head, config.seq_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        B, T, d = x.shape
        q = self.wq(x).view(B, T, self.n_head, self.d_head)
        k = self.wk(x).view(B, T, self.n_head, self.d_head)
        v = self.wv(x).view(B, T, self.n_head, self.d_head)
        # QK-norm (no gain): bounds the attention logits, so a large lr cannot blow up the softmax
        q = self.rotary(F.rms_norm(q, (self.d_head,)))
        k = self.rotary(F.rms_norm(k, (self.d_head,)))
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)  # (B, H, T, Dh), default scale 1/sqrt(Dh)
        return self.wo(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    """ReLU^2 with 4d hidden units (the GPT baseline)."""

    def __init__(self, config):
        super().__init__()
        d = config.n_embd
        self.w_fc = nn.Linear(d, 4 * d, bias=False)
        self.w_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        return self.w_proj(F.relu(self.w_fc(x)).square())  # ReLU^2 (modded-nanogpt, nanochat): one cheap op


class SwiGLU(nn.Module):
    """SwiGLU with 4d hidden units, nGPT's MLP without s_uv: u, v = W_fc x; W_proj(u * silu(v))."""

    def __init__(self, config):
        super().__init__()
        d = config.n_embd
        self.w_fc = nn.Linear(d, 2 * 4 * d, bias=False)  # the u and v halves in one matmul (nGPT's layout)
        self.w_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        u, v = self.w_fc(x).chunk(2, dim=-1)  # (B, T, 4d) each
        return self.w_proj(u * F.silu(v))


class Block(nn.Module):
    def __init__(self, config, mlp: type[nn.Module] = MLP):
        super().__init__()
        d = config.n_embd
        self.attn_norm = nn.RMSNorm(d)  # learnable gain, init 1
        self.attn = Attention(config)
        self.mlp_norm = nn.RMSNorm(d)
        self.mlp = mlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        x = x + self.attn(self.attn_norm(x))  # pre-norm: the residual stream itself is never normalized
        x = x + self.mlp(self.mlp_norm(x))
        return x


class GPT(nn.Module):
    """Pre-norm GPT. forward(idx (B, T), targets (B, T) | None) -> (logits (B, T, V), mean cross-entropy | None)."""

    mlp: type[nn.Module] = MLP

    def __init__(self, config):
        super().__init__()
        self.config = config
        d, V, L = config.n_embd, config.vocab_size, config.n_layer
        self.wte = nn.Embedding(V, d)  # untied from lm_head
        self.blocks = nn.ModuleList(Block(config, self.mlp) for _ in range(L))
        self.norm_f = nn.RMSNorm(d)
        self.lm_head = nn.Linear(d, V, bias=False)
        for name, m in self.named_modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=self.init_std(name))

    def init_std(self, name: str) -> float:
        """GPT-2 init: 0.02 at every width; the branch outputs are shrunk by sqrt(2L) so the residual stream's
        variance stays O(1) after summing 2L of them."""
        residual_out = name.endswith(("attn.wo", "mlp.w_proj"))
        return 0.02 / (2 * self.config.n_layer) ** 0.5 if residual_out else 0.02

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.wte(idx)  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.norm_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))  # fp32 softmax
        return logits, loss


class SwiGLUGPT(GPT):
    """The matched control (model=gpt_swiglu): nGPT's transformer without the sphere, see the module docstring."""

    mlp = SwiGLU

    def init_std(self, name: str) -> float:
        """sigma = 1/sqrt(d) (NVIDIA/ngpt's base_scale); wo, w_proj sigma/sqrt(2L); lm_head sigma/sqrt(d) = 1/d."""
        sigma = self.config.n_embd**-0.5
        if name == "lm_head":
            return sigma / self.config.n_embd**0.5
        if name.endswith(("attn.wo", "mlp.w_proj")):
            return sigma / (2 * self.config.n_layer) ** 0.5
        return sigma
