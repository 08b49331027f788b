"""Shared pytest setup: without CUDA, Triton kernels run under the interpreter, which must be switched on before any
kernel module is imported (its @triton.jit reads the variable when decorating)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
