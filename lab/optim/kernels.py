"""Triton kernels for the symmetric products inside Newton-Schulz / Polar Express (the only module that imports Triton).

Both kernels compute a symmetric matrix C (M, M), so only the tiles on/below the block diagonal are computed; each
tile is stored at C[I, J] and mirrored to C[J, I]. That halves the FLOPs and makes C *exactly* symmetric (inside a
diagonal tile the lower triangle comes from the tile and the strict upper triangle from its mirror).

    xxt(A)                       C = A A^T                   A (M, K) or (B, M, K)
    ba_plus_caa(A, alpha, beta)  C = beta A + alpha A A      A (M, M) symmetric, or (B, M, M)

Where kernels run: CUDA (autotuned block sizes), or CPU tensors under the Triton interpreter (TRITON_INTERPRET=1,
set before this module is imported; one fixed big-block config, since interpreter cost scales with #programs).
Everywhere else -- and always when Triton is missing (macOS) or ENABLED is False -- the same functions use torch.
"""
import os

import torch

try:
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # e.g. macOS: the module still imports, everything falls back to torch
    triton = tl = None
    HAS_TRITON = False

ENABLED = True  # module-level switch: set False to turn the kernels off everywhere (orthogonalizers honor it)
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # read at import: @triton.jit reads it when decorating
_INTERPRET_BLOCKS = dict(BLOCK=64, BLOCK_K=64)  # the one config used by the interpreter
# multi-config autotune needs the GPU's benchmarker: on CUDA only, never under the interpreter (even on a GPU box)
AUTOTUNE = torch.cuda.is_available() and not INTERPRET


def available() -> bool:
    """True when the kernels can launch: Triton imports, ENABLED, and a CUDA device or the interpreter."""
    return HAS_TRITON and ENABLED and (torch.cuda.is_available() or INTERPRET)


if HAS_TRITON:

    @triton.jit
    def _syrk_kernel(A, C, M, K, alpha, beta,
                     stride_ab, stride_am, stride_ak, stride_cb, stride_cm, stride_cn,
                     ADD_A: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK: tl.constexpr, BLOCK_K: tl.constexpr):
        """One (BLOCK, BLOCK) tile I>=J of C = alpha A A^T (+ beta A if ADD_A), stored at C[I,J] and C[J,I]."""
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        if pid_n > pid_m:  # strictly upper tile: written by its mirror (pid_n, pid_m)
            return
        A += tl.program_id(2) * stride_ab  # batch offset
        C += tl.program_id(2) * stride_cb
        rm = pid_m * BLOCK + tl.arange(0, BLOCK)  # rows of this tile, (BLOCK,)
        rn = pid_n * BLOCK + tl.arange(0, BLOCK)  # cols of this tile = rows of A for the right operand
        rk = tl.arange(0, BLOCK_K)
        a_ptrs = A + rm[:, None] * stride_am + rk[None, :] * stride_ak  # (BLOCK, BLOCK_K)
        b_ptrs = A + rn[:, None] * stride_am + rk[None, :] * stride_ak  # (BLOCK, BLOCK_K)
        acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            k_left = K - k * BLOCK_K  # masks handle ragged M and K
            a = tl.load(a_ptrs, mask=(rm[:, None] < M) & (rk[None, :] < k_left), other=0.0)
            b = tl.load(b_ptrs, mask=(rn[:, None] < M) & (rk[None, :] < k_left), other=0.0)
            if UPCAST:  # interpreter: bf16 arithmetic is broken there, fp32 right after the load works
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            # fp32 accumulator; IEEE on fp32 inputs (the default TF32 is ~1e-3 off the torch path)
            acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION)
            a_ptrs += BLOCK_K * stride_ak
            b_ptrs += BLOCK_K * stride_ak
        acc = acc * alpha
        inside = (rm[:, None] < M) & (rn[None, :] < M)
        if ADD_A:  # beta A[I,J]; the mirror gets beta A[I,J]^T = beta A[J,I] because A is symmetric
            a_ij = tl.load(A + rm[:, None] * stride_am + rn[None, :] * stride_ak, mask=inside, other=0.0)
            acc += beta * a_ij.to(tl.float32)
        c = acc.to(C.dtype.element_ty)
        lower = rm[:, None] >= rn[None, :]  # (BLOCK, BLOCK): global row >= global col
        tl.store(C + rm[:, None] * stride_cm + rn[None, :] * stride_cn, c, mask=inside & lower)
        # mirror: swap the strides, so c[r, s] lands at C[rn[s], rm[r]]; strict upper only
        tl.store(C + rm[:, None] * stride_cn + rn[None, :] * stride_cm, c, mask=inside & (rm[:, None] > rn[None, :]))

    if AUTOTUNE:
        _syrk_kernel = triton.autotune(
            configs=[triton.Config(dict(BLOCK=bm, BLOCK_K=bk), num_stages=s, num_warps=w)
                     for bm, bk, s, w in [(128, 64, 4, 8), (64, 128, 4, 8), (128, 32, 3, 8), (64, 64, 3, 4)]],
            key=["M", "K", "ADD_A"],
        )(_syrk_kernel)


def _launch(A: torch.Tensor, out: torch.Tensor | None, alpha: float, beta: float, add_a: bool) -> torch.Tensor:
    """Run _syrk_kernel on A (M, K) or (B, M, K) (any strides); returns C (M, M) or (B, M, M) in A's dtype."""
    assert A.ndim in (2, 3), f"expected (M, K) or (B, M, K), got {tuple(A.shape)}"
    A3 = A if A.ndim == 3 else A.unsqueeze(0)  # (B, M, K)
    Bsz, M, K = A3.shape
    if out is None:
        out = A.new_empty(A.shape[:-1] + (M,))
    C3 = out if out.ndim == 3 else out.unsqueeze(0)  # (B, M, M)
    assert C3.shape == (Bsz, M, M), f"out has shape {tuple(out.shape)}, need {(Bsz, M, M)}"
    extra = {} if AUTOTUNE else dict(_INTERPRET_BLOCKS)  # block sizes: autotuned, or the one fixed config
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK"]), triton.cdiv(M, meta["BLOCK"]), Bsz)
    _syrk_kernel[grid](A3, C3, M, K, alpha, beta, *A3.stride(), *C3.stride(),
                       ADD_A=add_a, UPCAST=INTERPRET, PRECISION=_precision(A.dtype), **extra)
    return out


def _precision(dtype: torch.dtype) -> str:
    """tl.dot's input precision: exact fp32 products for fp32 inputs (bf16/fp16 inputs are exact in any mode)."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _use_kernel(A: torch.Tensor) -> bool:
    return available() and (A.is_cuda or INTERPRET)


def xxt(A: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """C = A A^T for A (M, K) or (B, M, K); C is exactly symmetric. Torch fallback when the kernel can't run."""
    if not _use_kernel(A):
        return torch.matmul(A, A.mT, out=out)
    return _launch(A, out, 1.0, 0.0, add_a=False)


def ba_plus_caa(A: torch.Tensor, alpha: float, beta: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """C = beta A + alpha A A for a SYMMETRIC square A (M, M) or (B, M, M); C is exactly symmetric.

    The kernel computes A A^T, which equals A A only because A is symmetric (A = X X^T in Newton-Schulz):
    for a non-symmetric A the result is wrong, not merely A A^T.
    """
    assert A.size(-1) == A.size(-2), f"A must be square, got {tuple(A.shape)}"
    if not _use_kernel(A):
        if A.ndim == 2:
            return torch.addmm(A, A, A, beta=beta, alpha=alpha, out=out)
        return torch.baddbmm(A, A, A, beta=beta, alpha=alpha, out=out)
    return _launch(A, out, alpha, beta, add_a=True)
