"""lab.optim.kernels under the Triton interpreter (CPU): symmetric products == torch, outputs exactly symmetric.

The interpreter is ~1000x slower than torch, so every shape here is small (ALGORITHMS.md 13 items 7-9, scaled down).
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before lab.optim.kernels is imported (@triton.jit reads it)

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from lab.optim import kernels  # noqa: E402
from lab.optim.orthogonalize import (  # noqa: E402
    NEWTON_SCHULZ_COEFFS,
    POLAR_EXPRESS_COEFFS,
    _gram_quintic,
    _quintic,
    gram_newton_schulz,
    polar_express,
)

pytestmark = pytest.mark.skipif(not kernels.INTERPRET, reason="kernels module imported before TRITON_INTERPRET=1")




def gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def symmetric(*shape, seed=0):
    S = gaussian(*shape, seed=seed)
    return (S + S.mT) / 2


def assert_exactly_symmetric(C):
    assert torch.equal(C, C.mT)


def test_available():
    assert kernels.available()


def test_interpreter_never_autotunes_and_fp32_dots_are_ieee():
    """Under TRITON_INTERPRET=1 the kernel runs its one fixed config even on a CUDA box (autotune's benchmarker
    fails in the interpreter); fp32 inputs ask tl.dot for IEEE products (the default TF32 is ~1e-3 off on a GPU)."""
    assert not kernels.AUTOTUNE and not hasattr(kernels._syrk_kernel, "configs")
    assert kernels._precision(torch.float32) == "ieee" and kernels._precision(torch.bfloat16) == "tf32"


@pytest.mark.parametrize("shape", [(100, 70), (64, 96), (3, 40, 72), (130, 20)])
def test_xxt_fp32(shape):
    """Ragged M and K (masks), more than one tile per side, batched; result == A @ A^T and exactly symmetric."""
    A = gaussian(*shape)
    C = kernels.xxt(A)
    assert C.shape == shape[:-1] + (shape[-2],) and C.dtype == A.dtype
    torch.testing.assert_close(C, A @ A.mT, atol=1e-4, rtol=1e-4)
    assert_exactly_symmetric(C)


def test_xxt_strided_input_and_out():
    """A transposed view (the tall path passes X^T) and a preallocated `out`."""
    A = gaussian(70, 100)
    out = torch.empty(100, 100)
    C = kernels.xxt(A.mT, out=out)
    assert C.data_ptr() == out.data_ptr()
    torch.testing.assert_close(C, A.mT @ A, atol=1e-4, rtol=1e-4)
    assert_exactly_symmetric(C)


def test_xxt_bf16():
    """bf16 loads are upcast to fp32 right after tl.load; compare to fp32 torch on the bf16-rounded values."""
    A = gaussian(100, 70).bfloat16()
    C = kernels.xxt(A)
    assert C.dtype == torch.bfloat16
    ref = A.float() @ A.float().mT
    torch.testing.assert_close(C.float(), ref, atol=1e-2 * ref.abs().max().item(), rtol=1e-2)
    assert_exactly_symmetric(C)


@pytest.mark.parametrize("shape", [(70, 70), (2, 40, 40)])
def test_ba_plus_caa_fp32(shape):
    S = symmetric(*shape)
    alpha, beta = 2.0315, -4.7750
    C = kernels.ba_plus_caa(S, alpha=alpha, beta=beta)
    torch.testing.assert_close(C, beta * S + alpha * S @ S, atol=1e-4, rtol=1e-4)
    assert_exactly_symmetric(C)


def test_ba_plus_caa_bf16():
    S = symmetric(70, 70).bfloat16()
    C = kernels.ba_plus_caa(S, alpha=0.5, beta=-2.8)
    assert C.dtype == torch.bfloat16
    Sf = S.float()
    ref = -2.8 * Sf + 0.5 * Sf @ Sf
    torch.testing.assert_close(C.float(), ref, atol=1e-2 * ref.abs().max().item(), rtol=1e-2)
    assert_exactly_symmetric(C)


def test_torch_fallback_when_disabled(monkeypatch):
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert not kernels.available()
    A, S = gaussian(30, 20), symmetric(30, 30)
    torch.testing.assert_close(kernels.xxt(A), A @ A.mT)
    torch.testing.assert_close(kernels.ba_plus_caa(S, 0.5, 2.0), 2.0 * S + 0.5 * S @ S)


@pytest.mark.parametrize("shape", [(48, 80), (80, 48), (2, 40, 72)])
@pytest.mark.parametrize("coeffs", [POLAR_EXPRESS_COEFFS, [NEWTON_SCHULZ_COEFFS] * 5], ids=["pe", "ns"])
def test_quintic_kernel_path_matches_torch(shape, coeffs):
    """The full 5-step loop with both kernels forced on == the pure torch loop (wide, tall and batched)."""
    G = gaussian(*shape, seed=1)
    X = G.reshape(-1, *shape[-2:])
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)
    torch.testing.assert_close(_quintic(X, coeffs, fused=True), _quintic(X, coeffs, fused=False),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", [(32, 96), (96, 32), (2, 24, 64)])
def test_gram_quintic_kernel_path_matches_torch(shape):
    """Gram Newton-Schulz with the XXT kernel forming every Gram matrix == the pure torch loop (wide, tall, batched)."""
    G = gaussian(*shape, seed=2)
    X = G.reshape(-1, *shape[-2:])
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    coeffs = [NEWTON_SCHULZ_COEFFS] * 5
    torch.testing.assert_close(_gram_quintic(X, coeffs, fused=True), _gram_quintic(X, coeffs, fused=False),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("orth", [polar_express, gram_newton_schulz], ids=lambda f: f.__name__)
def test_orthogonalizers_use_kernels_only_on_cuda(monkeypatch, orth):
    """On CPU tensors the public functions take the torch path even with use_kernels=True."""
    def boom(*args, **kwargs):
        raise AssertionError("kernel called on a CPU tensor")
    monkeypatch.setattr(kernels, "xxt", boom)
    monkeypatch.setattr(kernels, "ba_plus_caa", boom)
    orth(gaussian(16, 48), use_kernels=True)
