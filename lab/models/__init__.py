"""The model registry: build_model(config) -> an fp32 CPU model whose sphere matrices are already projected."""
from __future__ import annotations

import torch.nn as nn

from lab.models.gpt import GPT, SwiGLUGPT
from lab.models.ngpt import NGPT, GatedNGPT

MODELS = {"ngpt": NGPT, "gated_ngpt": GatedNGPT, "gpt": GPT, "gpt_swiglu": SwiGLUGPT}


def build_model(config) -> nn.Module:
    """The config's model, fp32 on CPU, with every sphere matrix projected (nGPT starts on the sphere)."""
    from lab.optim.sphere import project_to_sphere  # here, not at the top: lab.optim.sphere imports lab.models.ngpt

    model = MODELS[config.model](config)
    project_to_sphere(model)
    return model


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_counts(model: nn.Module) -> dict[str, int]:
    """Parameters by routing group (lab.optim.setup.param_kind): embed (wte), head (lm_head), matrix (hidden 2-D
    matrices, Muon's in the hybrid), scalar (1-D: gains, alphas, scalers, gates), and their total."""
    from lab.optim.setup import param_kind  # here: lab.optim imports lab.models

    counts = dict.fromkeys(("embed", "head", "matrix", "scalar"), 0)
    for name, p in model.named_parameters():
        counts[param_kind(name, p)] += p.numel()
    return {**counts, "total": sum(counts.values())}


def flops_per_token(model: nn.Module, config) -> int:
    """Training FLOPs per token (forward + backward), the estimate MFU uses (PaLM appendix B): 6*N for the weights
    plus 12*L*d*T for the attention scores and the weighted sum of values (the full TxT, not the causal half).
    N leaves out the token embedding table (a lookup, no multiply-adds); the untied lm_head is counted."""
    n = num_params(model) - model.wte.weight.numel()
    return 6 * n + 12 * config.n_layer * config.n_embd * config.seq_len
