"""lab.optim.orthogonalize: Newton-Schulz and Polar Express against the exact polar factor (CPU, torch path).

Reference numbers: ALGORITHMS.md sections 2, 4 and 13 (items 1-6).
"""
import numpy as np
import pytest
import torch

from lab.bench.orthogonalize import _ill_conditioned
from lab.optim import (
    ORTHOGONALIZERS,
    exact_polar,
    gram_newton_schulz,
    newton_schulz,
    polar_express,
    polar_express_coefficients,
)
from lab.optim.orthogonalize import (
    NEWTON_SCHULZ_COEFFS,
    POLAR_EXPRESS_COEFFS,
    _first_coeffs,
    _gram_quintic,
    _quintic,
    gram_restarts,
    orthogonalize_flops,
)

ORTHS = [polar_express, newton_schulz]
SIGMA_RANGE = {polar_express: (0.85, 1.15), newton_schulz: (0.68, 1.2)}  # 5 steps, Gaussian inputs


def svals(Y: torch.Tensor) -> torch.Tensor:
    """Singular values in fp32; LAPACK on the tall orientation (wide 768x3072 is ~20x slower on this CPU)."""
    Y = Y.float()
    return torch.linalg.svdvals(Y.mT if Y.size(-2) < Y.size(-1) else Y)


def gaussian(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def scalar_map(coeffs, sigma: np.ndarray) -> np.ndarray:
    """Run the real quintic loop on a batch of 1x1 matrices in float64: exactly the scalar map on sigma."""
    X = torch.tensor(sigma, dtype=torch.float64).view(-1, 1, 1)  # (N, 1, 1)
    return _quintic(X, coeffs).view(-1).numpy()




# --- big Gaussian matrices: each orthogonalized once (module fixture) ------------------------------------------

@pytest.fixture(scope="module")
def big():
    """{(name, 'wide'|'tall'): output} for G 768x3072 and G^T, fp32, 5 steps."""
    G = gaussian(768, 3072)
    return {(f.__name__, kind): f(X) for f in ORTHS for kind, X in (("wide", G), ("tall", G.mT))}


@pytest.mark.parametrize("orth", ORTHS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("kind", ["wide", "tall"])
def test_singular_values_big_fp32(big, orth, kind):
    Y = big[(orth.__name__, kind)]
    assert Y.shape == ((768, 3072) if kind == "wide" else (3072, 768)) and Y.dtype == torch.float32
    s = svals(Y)
    lo, hi = SIGMA_RANGE[orth]
    assert lo <= s.min() and s.max() <= hi, (s.min().item(), s.max().item())


@pytest.mark.parametrize("orth", ORTHS, ids=lambda f: f.__name__)
def test_transpose_equivariance_big(big, orth):
    """The tall path (A = X^T X, X <- aX + XB) agrees with the wide path on the transpose."""
    wide, tall = big[(orth.__name__, "wide")], big[(orth.__name__, "tall")]
    torch.testing.assert_close(tall, wide.mT, atol=1e-4, rtol=1e-4)


def test_cubic_iteration_does_not_orthogonalize():
    """Regression guard (ALGORITHMS.md 13.6): the cubic (1.5, -0.5) x5 after ||.||_F * 1.1 leaves sigma_max ~0.36,
    far from 1. Our orthogonalizers must not be that iteration."""
    G = gaussian(768, 3072)
    X = G / (G.norm() * 1.1)
    for _ in range(5):
        X = 1.5 * X - 0.5 * (X @ X.mT) @ X
    assert svals(X).max() < 0.4


# --- bf16 and smaller matrices ---------------------------------------------------------------------------------

@pytest.mark.parametrize("orth", ORTHS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("transpose", [False, True], ids=["256x768", "768x256"])
def test_singular_values_bf16(orth, transpose):
    G = gaussian(256, 768, dtype=torch.bfloat16)
    G = G.mT if transpose else G
    Y = orth(G)
    assert Y.dtype == torch.bfloat16 and Y.shape == G.shape
    s = svals(Y)
    lo, hi = SIGMA_RANGE[orth]
    assert lo - 0.03 <= s.min() and s.max() <= hi + 0.03, (s.min().item(), s.max().item())


def test_polar_express_closer_to_exact_polar_than_newton_schulz():
    G = gaussian(256, 768, seed=1)
    P = exact_polar(G)
    assert P.shape == G.shape and P.dtype == G.dtype
    torch.testing.assert_close(P @ P.mT, torch.eye(256), atol=1e-5, rtol=0)  # exact_polar is orthogonal
    dist = {f: ((f(G) - P).norm() / P.norm()).item() for f in ORTHS}
    assert dist[polar_express] < dist[newton_schulz] < 0.25, dist


@pytest.mark.parametrize("orth", ORTHS, ids=lambda f: f.__name__)
def test_scale_invariance(orth):
    G = gaussian(64, 96, seed=2)
    torch.testing.assert_close(orth(3.7 * G), orth(G), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(orth(0.05 * G), orth(G), atol=2e-5, rtol=1e-5)  # (eps = 1e-6 breaks it far below)


@pytest.mark.parametrize("orth", ORTHS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", [(64, 96), (96, 64)])
def test_batched_equals_loop(orth, shape):
    """Batched (3, m, n) == one matrix at a time; normalization is per matrix (a 100x scaled copy changes nothing)."""
    G = gaussian(3, *shape, seed=3)
    G[2] = 100 * G[1]
    Y = orth(G)
    for i in range(3):
        torch.testing.assert_close(Y[i], orth(G[i]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(Y[2], Y[1], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("orth", ORTHS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_matrix_and_shapes(orth, dtype):
    """Zero (e.g. padding in a bank) -> zero with no NaN; shape and dtype preserved for 2-D, 3-D, 4-D inputs."""
    Z = torch.zeros(2, 16, 24, dtype=dtype)
    Z[1] = gaussian(16, 24, dtype=dtype)
    Y = orth(Z)
    assert Y.dtype == dtype and torch.isfinite(Y).all()
    assert torch.equal(Y[0], torch.zeros_like(Y[0])) and Y[1].abs().max() > 0.1
    for shape in [(16, 24), (24, 16), (2, 3, 16, 24), (1, 1)]:
        assert orth(gaussian(*shape, dtype=dtype)).shape == shape


def test_orthogonalizers_dict():
    assert ORTHOGONALIZERS == {"newton_schulz": newton_schulz, "polar_express": polar_express,
                               "gram_newton_schulz": gram_newton_schulz}
    from lab.config import ORTHOGONALIZERS as CONFIG_CHOICES
    assert set(CONFIG_CHOICES) == set(ORTHOGONALIZERS)  # every one selectable in a config, and only those


def test_polar_express_steps_use_first_tuples_then_repeat_last():
    assert _first_coeffs(POLAR_EXPRESS_COEFFS, 3) == list(POLAR_EXPRESS_COEFFS[:3])  # first, not last (optax bug)
    assert _first_coeffs(POLAR_EXPRESS_COEFFS, 7) == list(POLAR_EXPRESS_COEFFS) + [POLAR_EXPRESS_COEFFS[-1]] * 2
    G = gaussian(32, 48, seed=4)
    X = (G / (G.norm() * 1.02 + 1e-6)).unsqueeze(0)
    torch.testing.assert_close(polar_express(G, steps=2), _quintic(X, POLAR_EXPRESS_COEFFS[:2])[0])


# --- the coefficients and the scalar maps (float64, exact) ------------------------------------------------------

def test_polar_express_coefficients_reproduce_table():
    got = np.array(polar_express_coefficients())
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, np.array(POLAR_EXPRESS_COEFFS), rtol=0, atol=1e-10)
    other = np.array(polar_express_coefficients(safety=1e-2))  # the safety factor matters
    assert abs(other[0, 0] - 8.2373) < 1e-3
    assert np.abs(other - np.array(POLAR_EXPRESS_COEFFS)).max() > 0.1


def test_polar_express_scalar_map():
    """p5 o ... o p1 maps [1e-3, 1] into [0.8588, 1.1412]; each p is odd; small sigma is not orthogonalized."""
    sigma = np.concatenate([np.geomspace(1e-3, 1, 2000), np.linspace(1e-3, 1, 2000)])
    out = scalar_map(POLAR_EXPRESS_COEFFS, sigma)
    assert 0.8588 <= out.min() and out.max() <= 1.1412, (out.min(), out.max())
    for t in POLAR_EXPRESS_COEFFS:
        np.testing.assert_allclose(scalar_map([t], -sigma), -scalar_map([t], sigma), rtol=0, atol=1e-15)
    assert abs(scalar_map(POLAR_EXPRESS_COEFFS, np.array([1e-4]))[0] - 0.0988) < 2e-3
    assert abs(sum(POLAR_EXPRESS_COEFFS[-1]) - 1.0600) < 1e-4


def test_newton_schulz_scalar_map():
    one = np.array([1.0])
    assert abs(scalar_map([NEWTON_SCHULZ_COEFFS], one)[0] - 0.701) < 1e-12  # p(1) = a + b + c
    assert abs(scalar_map([NEWTON_SCHULZ_COEFFS] * 5, one)[0] - 0.696) < 1e-3
    sigma = np.geomspace(2e-3, 1, 2000)
    np.testing.assert_allclose(scalar_map([NEWTON_SCHULZ_COEFFS], -sigma), -scalar_map([NEWTON_SCHULZ_COEFFS], sigma),
                               rtol=0, atol=1e-15)
    out = scalar_map([NEWTON_SCHULZ_COEFFS] * 5, sigma)
    assert 0.68 <= out.min() and out.max() <= 1.21, (out.min(), out.max())


# --- Gram Newton-Schulz: newton_schulz's result from the small Gram matrix ---------------------------------------

GRAM_SHAPES = [(1024, 128), (128, 512), (96, 32), (2, 40, 120)]  # the cpu preset's w_fc and w_proj, tall, batched


def _dist(O: torch.Tensor, P: torch.Tensor) -> float:
    return ((O.double() - P.double()).norm() / P.double().norm()).item()


@pytest.mark.parametrize("shape", GRAM_SHAPES, ids=str)
def test_gram_newton_schulz_agrees_with_newton_schulz_in_fp32(shape):
    """Same polynomial, different evaluation order: equal to fp32 rounding (~1e-6), for every matrix of a batch."""
    G = gaussian(*shape, seed=5)
    ours, ref = gram_newton_schulz(G), newton_schulz(G)
    assert ours.shape == G.shape and ours.dtype == G.dtype
    rel = ((ours - ref).norm() / ref.norm()).item()
    print(f"\n{shape}: ||gram - ns|| / ||ns|| = {rel:.2e}")
    assert rel < 5e-6
    for steps in (1, 3, 4, 7):  # no restart, a restart at the last step, one, two
        torch.testing.assert_close(gram_newton_schulz(G, steps=steps), newton_schulz(G, steps=steps),
                                   atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", [(1024, 128), (128, 512)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gram_newton_schulz_is_as_close_to_the_polar_factor_as_newton_schulz(shape, dtype):
    """Distance to the exact polar factor (float64 SVD), Gaussian and ill-conditioned (kappa 1e3, as the
    orthogonalization benchmark): within 1.1x of standard Newton-Schulz's distance in fp32 and bf16."""
    gen = torch.Generator().manual_seed(0)
    Gg = torch.randn(shape, generator=gen, dtype=torch.float64)
    Gi, Pi = _ill_conditioned(shape, 1e3, gen)
    for kind, G, P in (("gauss", Gg, exact_polar(Gg)), ("ill", Gi, Pi)):
        X = G.to(dtype)
        ours, ref = _dist(gram_newton_schulz(X), P), _dist(newton_schulz(X), P)
        print(f"\n{shape} {dtype} {kind}: gram {ours:.4f}, ns {ref:.4f} (ratio {ours / ref:.3f})")
        assert ours <= 1.1 * ref


def test_gram_restart_is_what_keeps_bf16_accurate():
    """Without the restart the bf16 Gram iteration loses an ill-conditioned matrix's small singular values
    (distance ~1.7); with it (after the third step), it is within 1.1x of standard Newton-Schulz."""
    assert gram_restarts(5) == (3,) and gram_restarts(3) == () and gram_restarts(12) == (3, 5, 7, 9, 11)
    G, P = _ill_conditioned((1024, 128), 1e3, torch.Generator().manual_seed(0))
    X = G.bfloat16()
    X = (X / (X.norm() + 1e-7)).unsqueeze(0)
    coeffs = [NEWTON_SCHULZ_COEFFS] * 5
    ref = _dist(newton_schulz(G.bfloat16()), P)
    assert _dist(_gram_quintic(X, coeffs)[0], P) <= 1.1 * ref
    assert _dist(_gram_quintic(X, coeffs, restarts=())[0], P) > 2 * ref


@pytest.mark.parametrize("steps", [6, 8, 12])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gram_longer_schedules_restart_often_enough(steps, dtype):
    """One restart is not enough beyond 5 steps (bf16 diverges from 6 steps on, fp32 at 12 on kappa 1e6): with a
    restart every second step the distance stays within 1.1x of standard Newton-Schulz's, finite."""
    G, P = _ill_conditioned((256, 64), 1e6, torch.Generator().manual_seed(3))
    X = G.to(dtype)
    ours, ref = _dist(gram_newton_schulz(X, steps=steps), P), _dist(newton_schulz(X, steps=steps), P)
    assert ours <= 1.1 * ref, (ours, ref)


@pytest.mark.parametrize("shape", [(48, 48), (48, 80), (80, 48)], ids=str)
def test_gram_newton_schulz_keeps_the_standard_loop_below_aspect_2(shape):
    G = gaussian(3, *shape, seed=6)
    assert torch.equal(gram_newton_schulz(G), newton_schulz(G))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gram_zero_matrix_and_scale_invariance(dtype):
    Z = torch.zeros(2, 16, 48, dtype=dtype)
    Z[1] = gaussian(16, 48, dtype=dtype)
    Y = gram_newton_schulz(Z)
    assert Y.dtype == dtype and torch.isfinite(Y).all()
    assert torch.equal(Y[0], torch.zeros_like(Y[0])) and Y[1].abs().max() > 0.1
    G = gaussian(96, 24, seed=7)
    torch.testing.assert_close(gram_newton_schulz(3.7 * G), gram_newton_schulz(G), atol=2e-5, rtol=1e-5)


def test_orthogonalize_flops():
    """Counted from the loop structure: per 5 steps in k^3 multiply-adds, 10 r + 5 standard and 4 r + 14 Gram."""
    k = 128
    for r in (2, 4, 8):
        assert orthogonalize_flops((r * k, k)) == orthogonalize_flops((k, r * k)) == 2 * (10 * r + 5) * k**3
        assert orthogonalize_flops((r * k, k), "gram_newton_schulz") == 2 * (4 * r + 14) * k**3
    assert orthogonalize_flops((k, k), "gram_newton_schulz") == orthogonalize_flops((k, k)) == 2 * 15 * k**3
    assert orthogonalize_flops((k, k), "polar_express", steps=3) == 2 * 9 * k**3
    assert orthogonalize_flops((2 * k, k), "gram_newton_schulz", steps=1) == 2 * (2 * 2 + 1) * k**3  # R, Z, Q X
