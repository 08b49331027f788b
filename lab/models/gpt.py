"""A standard pre-norm GPT, the baseline nGPT is measured against (modded-nanogpt / nanochat style).

RMSNorm with a learnable gain before each branch and at the end, RoPE, QK-norm, softmax scale 1/sqrt(Dh),
ReLU^2 MLP with 4d hidden units (modded-nanogpt's and nanochat's choice), untied lm_head, no biases.
It has no sphere_params(): nothing in it is projected.

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
    def __init__(self, config):
        super().__init__()
        d = config.n_embd
        self.w_fc = nn.Linear(d, 4 * d, bias=False)
        self.w_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        return self.w_proj(F.relu(self.w_fc(x)).square())  # ReLU^2 (modded-nanogpt, nanochat): one cheap op


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.n_embd
        self.attn_norm = nn.RMSNorm(d)  # learnable gain, init 1
        self.attn = Attention(config)
        self.mlp_norm = nn.RMSNorm(d)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        x = x + self.attn(self.attn_norm(x))  # pre-norm: the residual stream itself is never normalized
        x = x + self.mlp(self.mlp_norm(x))
        return x


class GPT(nn.Module):
    """Pre-norm GPT. forward(idx (B, T), targets (B, T) | None) -> (logits (B, T, V), mean cross-entropy | None)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        d, V, L = config.n_embd, config.vocab_size, config.n_layer
        self.wte = nn.Embedding(V, d)  # untied from lm_head
        self.blocks = nn.ModuleList(Block(config) for _ in range(L))
        self.norm_f = nn.RMSNorm(d)
        self.lm_head = nn.Linear(d, V, bias=False)
        for name, m in self.named_modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                # GPT-2 init; the branch outputs are shrunk by sqrt(2L) so the residual stream's variance
                # stays O(1) after summing 2L of them
                residual_out = name.endswith(("attn.wo", "mlp.w_proj"))
                nn.init.normal_(m.weight, std=0.02 / (2 * L) ** 0.5 if residual_out else 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.wte(idx)  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.norm_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))  # fp32 softmax
        return logits, loss
