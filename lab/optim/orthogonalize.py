"""Orthogonalizers: approximate the polar factor U V^T of G = U S V^T with odd matrix polynomials.

An odd quintic p(x) = a x + b x^3 + c x^5 acts on singular values only:
    p(X) = a X + b (X X^T) X + c (X X^T)^2 X = U p(S) V^T
so iterating X <- B X + a X with A = X X^T, B = b A + c A A pushes every singular value of a normalized X toward 1.

    newton_schulz        Keller Jordan's fixed quintic (3.4445, -4.7750, 2.0315): fast, sigma ends in ~[0.68, 1.2]
    polar_express        Amsel et al. (arXiv 2505.16932): one minimax-optimal quintic per step, sigma in [0.859, 1.141]
    gram_newton_schulz   newton_schulz's polynomial, evaluated on the small Gram matrix for rectangular matrices
                         (Zhang, Amsel, Chen, Dao 2026, "Gram Newton-Schulz"): the same result with fewer FLOPs

Both normalize each matrix by its Frobenius norm first (spectral norm <= Frobenius norm, so sigma_max <= 1).
Tall matrices (m > n) iterate on the small Gram matrix A = X^T X (n, n) and right-multiply: X <- a X + X B.
Everything runs in the input's dtype (the caller picks bf16 or fp32). Triton kernels (lab.optim.kernels) compute
the two symmetric products on CUDA; on CPU it is plain torch. Every function takes a batch (..., m, n) of same-shape
matrices and normalizes each on its own: one batched call per shape is what SimpleMuon does.

Gram Newton-Schulz. Every step multiplies X by a polynomial in its Gram matrix R = X X^T (wide X; tall: X^T X on
the right), and all those polynomials are polynomials in R_0, so they commute:
    X_t = Q_t X_0,  Q_t = (a I + Z_t) Q_{t-1},  Z_t = b R_{t-1} + c R_{t-1}^2,  R_t = (a I + Z_t) R_{t-1} (a I + Z_t)
Only R_0 = X_0 X_0^T and the final Q_T X_0 touch the k x K matrix (k = min(m, n), K = max); the steps are k x k
products. Per 5 steps (in k^3 multiply-adds, aspect K/k = r): 10 r + 5 standard, 4 r + 14 Gram with one restart, a
win from r >= 2 (r = 8: 85 -> 46; r = 4: 45 -> 30; square: 15 -> 18, so square matrices keep the standard loop).
A restart (X <- Q X, R <- X X^T) drops the rounding that Q and R pick up from being products of products. Without
one, bf16 loses an ill-conditioned matrix's small singular values (distance to the polar factor 1.7 instead of 0.38
at kappa 1e3). Where it goes depends on the coefficients (Dao-AILab tune it per coefficient set; their default,
after the second step, is for their own): for Keller's quintic after the THIRD step is the better one, worst bf16
distance 1.02x standard Newton-Schulz's over 48 Gaussian and ill-conditioned inputs at 5 steps, against 1.11x after
the second. One restart is not enough for longer schedules (bf16 diverges from 6 steps on, fp32 at 12 on kappa 1e6
inputs), so `gram_restarts` restarts after step 3, 5, 7, ... (worst 1.05x up to 12 steps), in every dtype: one
algorithm, one result up to rounding.
"""
import numpy as np
import torch

from lab.optim import kernels

NEWTON_SCHULZ_COEFFS = (3.4445, -4.7750, 2.0315)  # Keller: steep p'(0)=3.4; sigma ends in ~[0.68, 1.2], not at 1

# polar_express_coefficients(l=1e-3, num_iters=5, safety=2e-2, cushion=0.02), as used in modded-nanogpt
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


# -----------------------------------------------------------------------------------------------------------------
# the shared quintic loop

def _use_kernels(G: torch.Tensor, use_kernels: bool) -> bool:
    return use_kernels and G.is_cuda and kernels.available()


def _gram(X: torch.Tensor, tall: bool, fused: bool) -> torch.Tensor:
    """A = X^T X (tall) or X X^T (wide): the min(m, n)^2 Gram matrix, (B, k, k)."""
    Y = X.mT if tall else X  # (B, k, K): a view, the kernel reads it through its strides
    return kernels.xxt(Y) if fused else torch.bmm(Y, Y.mT)


def _quintic(X: torch.Tensor, coeffs, fused: bool = False) -> torch.Tensor:
    """X <- a X + (b A + c A^2) X for each (a, b, c), A the Gram matrix; X (B, m, n) already normalized.

    Tall X uses A = X^T X and X <- a X + X (b A + c A^2): the same polynomial in the singular values.
    """
    tall = X.size(-2) > X.size(-1)
    for a, b, c in coeffs:
        A = _gram(X, tall, fused)  # (B, k, k) symmetric, k = min(m, n)
        if fused:
            B = kernels.ba_plus_caa(A, alpha=c, beta=b)  # b A + c A A, exactly symmetric
        else:
            B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A A
        X = torch.baddbmm(X, X, B, beta=a) if tall else torch.baddbmm(X, B, X, beta=a)  # a X + X B  |  a X + B X
    return X


def _orthogonalize(G: torch.Tensor, coeffs, scale: float, eps: float, use_kernels: bool) -> torch.Tensor:
    """Normalize each matrix of G (..., m, n) by scale*||.||_F + eps, run the quintic loop, restore the shape."""
    assert G.ndim >= 2, f"need a matrix or a batch of matrices, got shape {tuple(G.shape)}"
    X = G.reshape(-1, *G.shape[-2:])  # (B, m, n)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * scale + eps)  # per matrix; zero stays zero (0 / eps)
    X = _quintic(X, coeffs, fused=_use_kernels(G, use_kernels))
    return X.reshape(G.shape)


def _first_coeffs(table, steps: int) -> list:
    """The FIRST `steps` tuples of the table; beyond its length, repeat the last one."""
    return [table[min(i, len(table) - 1)] for i in range(steps)]


# -----------------------------------------------------------------------------------------------------------------
# public orthogonalizers

def newton_schulz(G: torch.Tensor, steps: int = 5, use_kernels: bool = True) -> torch.Tensor:
    """Keller Jordan's quintic Newton-Schulz: X0 = G / (||G||_F + 1e-7), then `steps` times X <- p(X) with
    p(x) = 3.4445 x - 4.7750 x^3 + 2.0315 x^5. G (m, n) or (..., m, n); returns the same shape and dtype.
    """
    return _orthogonalize(G, [NEWTON_SCHULZ_COEFFS] * steps, scale=1.0, eps=1e-7, use_kernels=use_kernels)


def polar_express(G: torch.Tensor, steps: int = 5, use_kernels: bool = True) -> torch.Tensor:
    """Polar Express: X0 = G / (1.02 ||G||_F + 1e-6), then X <- p_t(X) with the t-th tuple of POLAR_EXPRESS_COEFFS
    (the first `steps` tuples; more steps repeat the last). The 1.02 matters: the composition diverges for
    sigma > ~1.03, and it was designed for sigma in [1e-3, 1] with a 2% safety margin.
    G (m, n) or (..., m, n); returns the same shape and dtype.
    """
    coeffs = _first_coeffs(POLAR_EXPRESS_COEFFS, steps)
    return _orthogonalize(G, coeffs, scale=1.02, eps=1e-6, use_kernels=use_kernels)


GRAM_MIN_ASPECT = 2  # Gram iteration for max(m, n) >= 2 min(m, n); square matrices keep the standard loop


def gram_restarts(steps: int) -> tuple[int, ...]:
    """The 0-based step indices before which the Gram iteration forms X and its Gram matrix afresh: after the third
    step and every second one after it (module docstring)."""
    return tuple(range(3, steps, 2))


def _gram_quintic(X: torch.Tensor, coeffs, restarts=None, fused: bool = False) -> torch.Tensor:
    """The quintic loop of _quintic evaluated on the k x k Gram matrix (module docstring); X (B, m, n) normalized.

    Wide X: X_t = Q_t X_0 with Q_t = (aI + Z_t) Q_{t-1}; tall X: X_t = X_0 Q_t with Q_t = Q_{t-1} (aI + Z_t), where
    Z_t = b R + c R^2 and R is the current Gram matrix, updated as R <- (aI + Z) R (aI + Z) (skipped where the next
    step restarts or none follows). A restart before step i (restarts: default gram_restarts) applies Q to X and
    forms R from the result.
    """
    restarts = gram_restarts(len(coeffs)) if restarts is None else restarts
    tall = X.size(-2) > X.size(-1)
    R = _gram(X, tall, fused)  # (B, k, k), exactly symmetric with the kernel
    Q = None
    for i, (a, b, c) in enumerate(coeffs):
        if i in restarts and Q is not None:
            X = torch.bmm(X, Q) if tall else torch.bmm(Q, X)  # (B, m, n): the polynomial so far, applied once
            R = _gram(X, tall, fused)
            Q = None
        Z = torch.baddbmm(R, R, R, beta=b, alpha=c)  # b R + c R^2
        if Q is None:
            Q = Z.clone()
            Q.diagonal(dim1=-2, dim2=-1).add_(a)  # a I + Z
        else:
            Q = torch.baddbmm(Q, Q, Z, beta=a) if tall else torch.baddbmm(Q, Z, Q, beta=a)  # Q (aI + Z) | (aI + Z) Q
        if i + 1 < len(coeffs) and i + 1 not in restarts:
            RZ = torch.baddbmm(R, R, Z, beta=a)  # R (aI + Z)
            R = torch.baddbmm(RZ, Z, RZ, beta=a)  # (aI + Z) R (aI + Z)
    return torch.bmm(X, Q) if tall else torch.bmm(Q, X)


def _gram_applies(shape) -> bool:
    k, K = sorted(shape[-2:])
    return K >= GRAM_MIN_ASPECT * k


def gram_newton_schulz(G: torch.Tensor, steps: int = 5, use_kernels: bool = True) -> torch.Tensor:
    """newton_schulz's result (the same normalization and quintic, equal to fp32 rounding) computed on the Gram
    matrix for matrices with aspect ratio >= GRAM_MIN_ASPECT, restarting after step 3, 5, ... (gram_restarts);
    square-ish matrices run the standard loop. G (m, n) or (..., m, n); returns the same shape and dtype."""
    if not _gram_applies(G.shape):
        return newton_schulz(G, steps=steps, use_kernels=use_kernels)
    assert G.ndim >= 2, f"need a matrix or a batch of matrices, got shape {tuple(G.shape)}"
    X = G.reshape(-1, *G.shape[-2:])  # (B, m, n)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # as newton_schulz
    X = _gram_quintic(X, [NEWTON_SCHULZ_COEFFS] * steps, fused=_use_kernels(G, use_kernels))
    return X.reshape(G.shape)


ORTHOGONALIZERS = {"newton_schulz": newton_schulz, "polar_express": polar_express,
                   "gram_newton_schulz": gram_newton_schulz}


def orthogonalize_flops(shape, orthogonalizer: str = "newton_schulz", steps: int = 5) -> int:
    """FLOPs (2 per multiply-add) of the matrix products of one orthogonalization of an (m, n) matrix: what
    DistributedMuon balances over ranks. Standard loop: per step k^2 K (Gram) + k^3 (A^2) + k^2 K (B X)."""
    k, K = sorted(shape[-2:])
    if orthogonalizer != "gram_newton_schulz" or not _gram_applies(shape):
        return 2 * steps * (2 * k * k * K + k**3)
    macs, fresh, restarts = k * k * K, True, gram_restarts(steps)  # R_0
    for i in range(steps):
        if i in restarts and not fresh:
            macs += 2 * k * k * K  # X <- Q X, R <- X X^T
            fresh = True
        macs += k**3 + (0 if fresh else k**3)  # Z, then Q (a copy at a segment's first step)
        fresh = False
        if i + 1 < steps and i + 1 not in restarts:
            macs += 2 * k**3  # R <- (aI + Z) R (aI + Z)
    return 2 * (macs + k * k * K)  # + the final Q X


def exact_polar(G: torch.Tensor) -> torch.Tensor:
    """U V^T from a float64 SVD G = U S V^T (the reference for tests and benches); same shape/dtype as G."""
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return (U @ Vh).to(G.dtype)


# -----------------------------------------------------------------------------------------------------------------
# deriving the Polar Express coefficients (float64, numpy)

def _poly(coeffs, x):
    a, b, c = coeffs
    return a * x + b * x**3 + c * x**5


def _optimal_quintic(l: float, u: float, tol: float = 1e-15, max_iter: int = 100):
    """Odd quintic p minimizing max |1 - p(x)| on [l, u], by Remez exchange on 4 points l < q < r < u.

    Equioscillation: p(l) = 1 - E, p(q) = 1 + E, p(r) = 1 - E, p(u) = 1 + E, a 4x4 linear system in (a, b, c, E);
    then q, r move to the interior extrema of p, the roots of p'(x) = a + 3b x^2 + 5c x^4.
    """
    if l / u >= 1 - 5e-6:  # interval ~a point: the limit is the quintic with p(u)=1, p'(u)=p''(u)=0
        return 15 / 8 / u, -10 / 8 / u**3, 3 / 8 / u**5
    q, r = (3 * l + u) / 4, (l + 3 * u) / 4
    E = np.inf
    for _ in range(max_iter):
        x = np.array([l, q, r, u])
        M = np.stack([x, x**3, x**5, np.array([1.0, -1.0, 1.0, -1.0])], axis=1)  # p(x_i) + s_i E = 1
        a, b, c, E_new = np.linalg.solve(M, np.ones(4))
        disc = np.sqrt(9 * b * b - 20 * a * c)  # p'(x) = 0 as a quadratic in x^2
        q, r = np.sqrt((-3 * b - disc) / (10 * c)), np.sqrt((-3 * b + disc) / (10 * c))
        if abs(E_new - E) < tol:
            break
        E = E_new
    return float(a), float(b), float(c)


def polar_express_coefficients(l: float = 1e-3, num_iters: int = 5, safety: float = 2e-2,
                               cushion: float = 0.02) -> list:
    """The Polar Express composition for sigma in [l, 1] (ALGORITHMS.md section 4), float64.

    Per step on the current interval [l, u]:
        p = optimal_quintic(max(l, cushion u), u)      # cushion: don't chase tiny sigma with a huge p'(0)
        if cushion u > l: p *= 2 / (p(l) + p(u))       # recenter so p straddles 1 on the whole [l, u]
        if not last: p(x) <- p(x / (1 + safety))       # safety margin for rounding (all but the last)
        l = p(l); u = 2 - l                            # next interval, symmetric about 1
    Returns a list of (a, b, c); the defaults reproduce POLAR_EXPRESS_COEFFS.
    """
    u, out = 1.0, []
    for it in range(num_iters):
        a, b, c = _optimal_quintic(max(l, cushion * u), u)
        if cushion * u > l:
            s = 2 / (_poly((a, b, c), l) + _poly((a, b, c), u))  # recentering
            a, b, c = a * s, b * s, c * s
        if it < num_iters - 1:
            f = 1 + safety  # evaluate at x / f: coefficient of x^k divided by f^k
            a, b, c = a / f, b / f**3, c / f**5
        out.append((a, b, c))
        l = _poly((a, b, c), l)
        u = 2 - l
        l = min(l, u)
    return out
