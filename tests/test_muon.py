"""SimpleMuon, NorMuon, cautious weight decay, geodesic steps, routing and schedules, against independent references."""
import math

import pytest
import torch

from lab.config import get_config
from lab.models import build_model
from lab.optim import SimpleMuon, build_optimizers
from lab.optim.muon import normuon_scale
from lab.optim.orthogonalize import ORTHOGONALIZERS
from lab.optim.schedules import lr_multiplier, muon_momentum, weight_decay_multiplier
from lab.optim.setup import CautiousAdamW
from lab.optim.sphere import geodesic_step, project_to_sphere

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def _grads(shape, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(steps)]


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48)])
@pytest.mark.parametrize("nesterov", [True, False])
def test_simple_muon_matches_torch_muon(shape, nesterov):
    """Same settings as torch.optim.Muon(adjust_lr_fn="original"): equal within bf16 tolerance."""
    torch.manual_seed(0)
    p0 = torch.randn(shape)
    ours, ref = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    kw = dict(lr=0.02, momentum=0.95, nesterov=nesterov, weight_decay=0.1)
    opt = SimpleMuon([ours], ortho_dtype=torch.bfloat16, **kw)
    opt_ref = torch.optim.Muon([ref], adjust_lr_fn="original", ns_coefficients=NS_COEFFS, ns_steps=5, **kw)
    for g in _grads(shape, 5):
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        opt_ref.step()
    step = (ours.detach() - p0).abs().max()
    assert (ours.detach() - ref.detach()).abs().max() < 0.02 * step  # bf16 orthogonalization: ~1% of the step


def _reference_muon_f64(p, grads, lr, mu, wd, nesterov):
    """Float64 re-derivation of Keller's Muon from the math (no lab code)."""
    p, buf = p.double().clone(), torch.zeros_like(p, dtype=torch.float64)
    a, b, c = NS_COEFFS
    for g in grads:
        g = g.double()
        buf = mu * buf + (1 - mu) * g
        m = (1 - mu) * g + mu * buf if nesterov else buf
        X = m.T if m.shape[0] > m.shape[1] else m
        X = X / (X.norm() + 1e-7)
        for _ in range(5):
            A = X @ X.T
            X = a * X + (b * A + c * A @ A) @ X
        X = X.T if m.shape[0] > m.shape[1] else X
        p = p * (1 - lr * wd) - lr * max(1, p.shape[0] / p.shape[1]) ** 0.5 * X
    return p


@pytest.mark.parametrize("shape", [(40, 24), (24, 40)])
def test_simple_muon_fp32_matches_float64_rederivation(shape):
    p0 = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    grads = _grads(shape, 4, seed=2)
    p = torch.nn.Parameter(p0.clone())
    opt = SimpleMuon([p], lr=0.05, momentum=0.9, weight_decay=0.05, ortho_dtype=torch.float32)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    ref = _reference_muon_f64(p0, grads, 0.05, 0.9, 0.05, True)
    torch.testing.assert_close(p.detach().double(), ref, atol=2e-5, rtol=0)


def test_shape_scaling_tall_is_sqrt_ratio():
    """Keller 'original' scaling: a 3072x768-like (4:1) update is 2x, a wide one 1x (ALGORITHMS.md 13.14)."""
    for shape, factor in [((128, 32), 2.0), ((32, 128), 1.0)]:
        p = torch.nn.Parameter(torch.zeros(shape))
        p.grad = torch.randn(shape)
        opt = SimpleMuon([p], lr=1.0, momentum=0.0, nesterov=False, ortho_dtype=torch.float32,
                         orthogonalizer="polar_express")
        U = opt.direction(p, opt.param_groups[0])
        sv = torch.linalg.svdvals(U)
        assert 0.8 * factor < sv.mean() < 1.2 * factor


def test_grad_scale_invariance():
    """Orthogonalization normalizes: the update does not depend on the gradient's scale (ALGORITHMS.md 13.15)."""
    out = []
    for scale in (1.0, 1000.0):
        p = torch.nn.Parameter(torch.zeros(16, 24))
        opt = SimpleMuon([p], lr=0.1, ortho_dtype=torch.float32)
        p.grad = scale * torch.randn(16, 24, generator=torch.Generator().manual_seed(3))
        opt.step()
        out.append(p.detach().clone())
    torch.testing.assert_close(out[0], out[1], atol=1e-5, rtol=1e-4)


def test_momentum_buffer_not_normalized_in_place():
    """torch PR #190597's bug: with nesterov=False the momentum buffer must not be orthogonalized in place."""
    p = torch.nn.Parameter(torch.zeros(8, 8))
    opt = SimpleMuon([p], lr=0.1, momentum=0.5, nesterov=False, ortho_dtype=torch.float32)
    g = torch.randn(8, 8)
    p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], 0.5 * g)


def test_simple_muon_refuses_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        SimpleMuon([torch.nn.Parameter(torch.zeros(4))])
    with pytest.raises(ValueError, match="orthogonalizer"):
        SimpleMuon([torch.nn.Parameter(torch.zeros(4, 4))], orthogonalizer="cubic")
    with pytest.raises(ValueError, match="sphere_dim"):
        SimpleMuon([torch.nn.Parameter(torch.zeros(4, 4))], geodesic="lr")


# --- NorMuon (ALGORITHMS.md 1.4, 13.10-12) ---

@pytest.mark.parametrize("shape", [(64, 16), (16, 64), (32, 32)])
def test_normuon_keeps_frobenius_norm_and_equalizes_first_step(shape):
    O = torch.randn(shape, dtype=torch.float64) * torch.linspace(0.1, 3, shape[0], dtype=torch.float64)[:, None]
    tall = shape[0] >= shape[1]
    buf = torch.zeros((shape[0], 1) if tall else (1, shape[1]), dtype=torch.float64)
    out = normuon_scale(O, buf, beta2=0.9)
    torch.testing.assert_close(out.norm(), O.norm())
    norms = out.norm(dim=1) if tall else out.norm(dim=0)
    torch.testing.assert_close(norms, torch.full_like(norms, O.norm().item() / math.sqrt(len(norms))))
    v_mean = O.square().mean(dim=-1 if tall else -2, keepdim=True)
    torch.testing.assert_close(buf, 0.1 * v_mean)
    torch.testing.assert_close(normuon_scale(3 * O, buf.clone(), 0.9), 3 * normuon_scale(O, buf.clone(), 0.9))


def test_normuon_option_changes_update_but_keeps_norm():
    g = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    Us = []
    for normuon in (False, True):
        p = torch.nn.Parameter(torch.zeros(32, 16))
        p.grad = g.clone()
        opt = SimpleMuon([p], normuon=normuon, ortho_dtype=torch.float32)
        Us.append(opt.direction(p, opt.param_groups[0]))
    assert not torch.allclose(Us[0], Us[1])
    torch.testing.assert_close(Us[0].norm(), Us[1].norm(), rtol=1e-5, atol=0)


# --- cautious weight decay (ALGORITHMS.md 8, 13.13) ---

def test_cautious_wd_worked_example():
    p = torch.nn.Parameter(torch.tensor([[1.0, -1.0, 1.0, -1.0]]))
    opt = SimpleMuon([p], lr=0.1, weight_decay=1.0, cautious_wd=True)
    opt.apply_update(p, torch.tensor([[1.0, 1.0, -1.0, -1.0]]), opt.param_groups[0])
    torch.testing.assert_close(p.detach(), torch.tensor([[0.8, -1.1, 1.1, -0.8]]))


def test_cautious_wd_zero_update_is_decayed_and_wd0_is_plain_step():
    p = torch.nn.Parameter(torch.tensor([[2.0, -2.0]]))
    opt = SimpleMuon([p], lr=0.1, weight_decay=0.5, cautious_wd=True)
    opt.apply_update(p, torch.zeros(1, 2), opt.param_groups[0])
    torch.testing.assert_close(p.detach(), torch.tensor([[1.9, -1.9]]))  # u=0 counts as aligned (>= 0)
    p2 = torch.nn.Parameter(torch.tensor([[1.0, -1.0]]))
    opt2 = SimpleMuon([p2], lr=0.1, weight_decay=0.0, cautious_wd=True)
    opt2.apply_update(p2, torch.tensor([[1.0, 1.0]]), opt2.param_groups[0])
    torch.testing.assert_close(p2.detach(), torch.tensor([[0.9, -1.1]]))


def test_cautious_adamw_matches_torch_adamw_when_all_aligned_and_masks_otherwise():
    torch.manual_seed(0)
    p0 = torch.rand(6, 5) + 0.5  # positive weights
    grads = [torch.rand(6, 5) + 0.1 for _ in range(3)]  # positive grads: Adam update u > 0, aligned with p > 0
    a, b = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    ref = torch.optim.AdamW([a], lr=0.01, weight_decay=0.1, betas=(0.8, 0.95), eps=1e-10)
    ours = CautiousAdamW([dict(params=[b], cwd=0.1)], lr=0.01, betas=(0.8, 0.95), eps=1e-10)
    for g in grads:
        a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
    torch.testing.assert_close(b.detach(), a.detach(), atol=1e-6, rtol=0)
    c = torch.nn.Parameter(p0.clone())  # negative grads: update opposes the weight, no decay at all
    plain = torch.nn.Parameter(p0.clone())
    o1 = CautiousAdamW([dict(params=[c], cwd=0.1)], lr=0.01)
    o2 = torch.optim.AdamW([plain], lr=0.01, weight_decay=0.0)
    for g in grads:
        c.grad, plain.grad = -g.clone(), -g.clone()
        o1.step()
        o2.step()
    torch.testing.assert_close(c.detach(), plain.detach())


def test_cautious_adamw_mixed_signs_against_float64_and_skips_params_without_grad():
    """Mixed signs: each coordinate is decayed iff its Adam update and weight agree (float64 re-derivation); a
    parameter whose grad is None is neither stepped nor decayed (the old version decayed it)."""
    g = torch.Generator().manual_seed(3)
    p0, grads = torch.randn(5, 4, generator=g), [torch.randn(5, 4, generator=g) for _ in range(3)]
    p, idle = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(torch.ones(3))
    opt = CautiousAdamW([dict(params=[p, idle], cwd=0.3)], lr=0.05, betas=(0.8, 0.95), eps=1e-10)
    w, m, v = p0.double(), torch.zeros(5, 4, dtype=torch.float64), torch.zeros(5, 4, dtype=torch.float64)
    for t, gr in enumerate(grads, 1):
        p.grad = gr.clone()
        opt.step()
        m, v = 0.8 * m + 0.2 * gr.double(), 0.95 * v + 0.05 * gr.double() ** 2
        u = (m / (1 - 0.8**t)) / ((v / (1 - 0.95**t)).sqrt() + 1e-10)
        w = w - 0.05 * (u + 0.3 * (u * w >= 0) * w)
    torch.testing.assert_close(p.detach().double(), w, atol=1e-6, rtol=0)
    assert torch.equal(idle.detach(), torch.ones(3)) and idle not in opt.state


# --- geodesic steps on the sphere (ALGORITHMS.md 9, 13.21) ---

@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("mode", ["lr", "lr_norm"])
def test_geodesic_stays_on_sphere_over_100_large_steps(dim, mode):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(24, 16, generator=g)
    W = W / W.norm(dim=dim, keepdim=True)
    for _ in range(100):
        W = geodesic_step(W, torch.randn(24, 16, generator=g), lr=0.5, dim=dim, mode=mode)
    torch.testing.assert_close(W.norm(dim=dim), torch.ones(W.shape[1 - dim]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["lr", "lr_norm"])
def test_geodesic_step_decreases_linear_loss_and_matches_retraction(mode):
    """Loss <W, G> with the Muon-style update built from G: the step goes down (sign is -T, not +U)."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(16, 8, generator=g)
    W = W / W.norm(dim=1, keepdim=True)
    G = torch.randn(16, 8, generator=g)
    W1 = geodesic_step(W, -G, lr=0.01, dim=1, mode=mode)
    assert (W1 * G).sum() < (W * G).sum()
    # small steps: the exp map agrees with the projected step normalize(W - lr T) to O(lr^3) in angle
    T = -G + (G * W).sum(1, keepdim=True) * W
    lr = 1e-2
    theta = lr if mode == "lr" else lr * T.norm(dim=1, keepdim=True)
    retr = W + torch.tan(torch.as_tensor(theta)) * T / T.norm(dim=1, keepdim=True)
    retr = retr / retr.norm(dim=1, keepdim=True)
    torch.testing.assert_close(geodesic_step(W.double(), -G.double(), lr, 1, mode).float(), retr, atol=1e-5, rtol=0)


def _unit_along(shape, dim, seed=0, dtype=torch.float32):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return (W / W.norm(dim=dim, keepdim=True)).to(dtype)


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("mode", ["lr", "lr_norm"])
def test_geodesic_muon_with_a_constant_gradient_stays_on_the_sphere(dim, mode):
    """A constant gradient turns every vector toward its update until the tangent part is rounding noise: the step
    must neither leave the sphere nor follow that noise (the bug: drift 0.17-0.22 from step 20 on)."""
    p = torch.nn.Parameter(_unit_along((32, 64), dim))
    G = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    opt = SimpleMuon([{"params": [p], "sphere_dim": dim}], lr=0.2, momentum=0.9, geodesic=mode)
    drift = []
    for _ in range(500):
        p.grad = G.clone()
        opt.step()
        drift.append((p.detach().norm(dim=dim) - 1).abs().max().item())
        assert torch.isfinite(p).all()
    assert max(drift) < 1e-5, (max(drift), drift.index(max(drift)))


@pytest.mark.parametrize("mode", ["lr", "lr_norm"])
def test_geodesic_step_with_direction_parallel_to_w_does_not_move(mode):
    W = _unit_along((8, 16), 1)
    for D in (3 * W, -2 * W, torch.zeros_like(W)):
        out = geodesic_step(W, D, lr=0.3, dim=1, mode=mode)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, W, atol=0, rtol=0)
    D = 3 * W
    D[0] += torch.randn(16)  # one vector with a real tangent part moves, the parallel ones stay
    out = geodesic_step(W, D, lr=0.3, dim=1, mode=mode)
    assert (out[0] - W[0]).norm() > 1e-3 and torch.equal(out[1:], W[1:])


@pytest.mark.parametrize("mode", ["lr", "lr_norm"])
def test_geodesic_on_bf16_parameters_computes_in_fp32(mode):
    """bf16 params: the step is computed in fp32 and cast back; norms stay within bf16 rounding (no accumulation),
    and the step agrees with the fp32 step up to that rounding."""
    W16 = _unit_along((16, 32), 1, dtype=torch.bfloat16)
    G = torch.randn(16, 32, generator=torch.Generator().manual_seed(2))
    out = geodesic_step(W16, -G, lr=0.1, dim=1, mode=mode)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), geodesic_step(W16.float(), -G, 0.1, 1, mode).bfloat16().float())
    p = torch.nn.Parameter(W16.clone())
    opt = SimpleMuon([{"params": [p], "sphere_dim": 1}], lr=0.2, momentum=0.9, geodesic=mode)
    for _ in range(200):
        p.grad = G.bfloat16()
        opt.step()
    assert (p.detach().float().norm(dim=1) - 1).abs().max() < 1e-2  # bf16 has 8 mantissa bits: 2^-8 = 4e-3


def test_geodesic_muon_on_ngpt_keeps_unit_norm_without_projection():
    cfg = get_config("smoke", geodesic="lr_norm", lr=0.2)
    torch.manual_seed(0)
    model = build_model(cfg)
    (muon, _), _ = build_optimizers(model, cfg)
    for _ in range(5):
        x = torch.randint(0, 256, (2, 16))
        model(x, x)[1].backward()
        muon.step()
        model.zero_grad()
    on_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    for _, p, dim in model.sphere_params():
        if id(p) in on_muon:
            torch.testing.assert_close(p.norm(dim=dim), torch.ones(p.shape[1 - dim]), atol=1e-5, rtol=0)


def test_geodesic_refused_without_sphere_params():
    with pytest.raises(ValueError, match="sphere"):
        get_config("smoke", model="gpt", geodesic="lr")
    cfg = get_config("smoke", model="gpt")
    model = build_model(cfg)
    cfg.geodesic = "lr"  # bypass the config check: the optimizer refuses too
    with pytest.raises(ValueError, match="sphere"):
        build_optimizers(model, cfg)


# --- stacked orthogonalization: one batched call per shape, bit-identical to one call per matrix ---

def _per_matrix_direction(opt: SimpleMuon, p, group):
    """SimpleMuon.direction as it was before stacking (one orthogonalizer call per matrix), copied verbatim."""
    state = opt.state[p]
    g = p.grad.float()
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = torch.zeros_like(g)
    buf = state["momentum_buffer"]
    mu = group["momentum"]
    buf.lerp_(g, 1 - mu)
    m = g.lerp(buf, mu) if group["nesterov"] else buf
    orth = ORTHOGONALIZERS[group["orthogonalizer"]]
    dtype = opt.ortho_dtype or (torch.bfloat16 if m.is_cuda else torch.float32)
    O = orth(m.to(dtype), steps=group["ns_steps"], use_kernels=group["use_kernels"]).float()
    if group["normuon"]:
        if "second_moment" not in state:
            red_shape = (O.size(0), 1) if O.size(0) >= O.size(1) else (1, O.size(1))
            state["second_moment"] = torch.zeros(red_shape, dtype=torch.float32, device=O.device)
        O = normuon_scale(O, state["second_moment"], group["beta2"])
    return O * max(1.0, p.size(0) / p.size(1)) ** 0.5


@torch.no_grad()
def _per_matrix_step(opt: SimpleMuon) -> None:
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                opt.apply_update(p, _per_matrix_direction(opt, p, group), group)


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(orthogonalizer="polar_express", normuon=True, weight_decay=0.1, cautious_wd=True, nesterov=False),
    dict(orthogonalizer="gram_newton_schulz", geodesic="lr_norm", normuon=True),
], ids=["newton_schulz", "polar_express+normuon+cwd", "gram+geodesic"])
def test_stacked_step_is_bit_identical_to_one_call_per_matrix(overrides):
    """The cpu preset model's 24 Muon matrices (16 x 128x128, 4 x 1024x128, 4 x 128x512 in two sphere groups):
    4 steps of SimpleMuon.step (stacked by shape) == the per-matrix path on the same gradients, torch.equal on
    every weight and every state tensor (CPU, fp32)."""
    cfg = get_config("cpu", **overrides)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(build_model(cfg))
    opts = [build_optimizers(m, cfg)[0][0] for m in models]
    init = {n: p.detach().clone() for n, p in models[0].named_parameters()}
    assert sum(len(g["params"]) for g in opts[0].param_groups) == 24 and len(opts[0].param_groups) == 2
    gen = torch.Generator().manual_seed(1)
    for step in range(4):
        grads = [torch.randn(p.shape, generator=gen) * 1e-2 for p in models[0].parameters()]
        for m in models:
            for p, g in zip(m.parameters(), grads):
                p.grad = g.clone()
        for ga, gb in zip(opts[0].param_groups, opts[1].param_groups):
            ga["lr"] = gb["lr"] = ga["initial_lr"] * (1 - 0.1 * step)  # a schedule, as train.py sets it
        opts[0].step()
        _per_matrix_step(opts[1])
    moved = 0
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.equal(a, b), name
        moved += not torch.equal(a, init[name])
    assert moved == 24  # every Muon matrix moved (AdamW's parameters are not stepped here)
    sa, sb = opts[0].state_dict()["state"], opts[1].state_dict()["state"]
    assert sa.keys() == sb.keys() == set(range(24))
    for i in sa:
        assert sa[i].keys() == sb[i].keys() and all(torch.equal(sa[i][k], sb[i][k]) for k in sa[i])


# --- routing (ALGORITHMS.md 12, 13.17) ---

@pytest.mark.parametrize("model_name", ["ngpt", "gated_ngpt", "gpt"])
@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_routing_every_param_in_exactly_one_group(model_name, optimizer):
    cfg = get_config("smoke", model=model_name, optimizer=optimizer)
    model = build_model(cfg)
    opts, rows = build_optimizers(model, cfg)
    ids = [id(p) for o in opts for g in o.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {r["name"] for r in rows} == {n for n, _ in model.named_parameters()}
    for r in rows:
        if r["optimizer"] == "muon":
            assert len(r["shape"]) == 2 and not r["name"].startswith(("wte.", "lm_head."))
        if r["name"].startswith(("wte.", "lm_head.")) or len(r["shape"]) < 2:
            assert r["optimizer"] == "adamw"
    if optimizer == "adamw":
        assert all(r["optimizer"] == "adamw" and r["lr"] == cfg.adamw_lr for r in rows)
    else:
        assert any(r["optimizer"] == "muon" for r in rows)
        by_group = {r["group"]: r["lr"] for r in rows}
        assert by_group["embed"] == cfg.embed_lr and by_group["head"] == cfg.head_lr
        assert by_group["matrix"] == cfg.lr


def test_routing_carries_sphere_axes_for_ngpt():
    cfg = get_config("smoke")
    model = build_model(cfg)
    _, rows = build_optimizers(model, cfg)
    declared = {n: d for n, _, d in model.sphere_params()}
    assert {r["name"]: r["sphere_dim"] for r in rows if r["sphere_dim"] is not None} == declared


# --- schedules (ALGORITHMS.md 1.7, 13.16) ---

def test_schedules():
    assert muon_momentum(0) == pytest.approx(0.85)
    assert muon_momentum(150) == pytest.approx(0.90)
    assert muon_momentum(300) == muon_momentum(1000) == pytest.approx(0.95)
    assert lr_multiplier(0, 100, 0.1, 0.3) == pytest.approx(0.1)
    assert lr_multiplier(50, 100, 0.1, 0.3) == 1.0
    assert lr_multiplier(85, 100, 0.1, 0.3) == pytest.approx(0.5)
    assert lr_multiplier(99, 100, 0.0, 0.3) == pytest.approx(1 / 30)
    assert weight_decay_multiplier(0, 100) == 1.0 and weight_decay_multiplier(50, 100) == 0.5


@pytest.mark.parametrize("preset", ["smoke", "cpu", "h100"])
def test_momentum_warmup_ends_before_the_warmdown(preset):
    """The warmup is a fraction of the run: 0.95 is reached before the lr warmdown starts (the h100 preset used to
    keep modded's 300 steps in a 400-step run, so momentum was still warming up during the warmdown)."""
    c = get_config(preset)
    warmdown_start = c.steps - round(c.warmdown_frac * c.steps)
    assert c.momentum_warmup < warmdown_start
    assert muon_momentum(c.momentum_warmup, c.momentum_start, c.momentum, c.momentum_warmup) == c.momentum
    assert get_config("cpu").momentum_warmup == 100 and get_config("cpu", steps=800).momentum_warmup == 200


def test_projection_after_update_restores_unit_norm():
    cfg = get_config("smoke", optimizer="adamw", adamw_lr=0.05)
    model = build_model(cfg)
    (opt,), _ = build_optimizers(model, cfg)
    x = torch.randint(0, 256, (2, 16))
    model(x, x)[1].backward()
    opt.step()
    assert max(abs(p.norm(dim=d) - 1).max().item() for _, p, d in model.sphere_params()) > 1e-4
    project_to_sphere(model)
    for _, p, d in model.sphere_params():
        torch.testing.assert_close(p.norm(dim=d), torch.ones_like(p.norm(dim=d)), atol=1e-6, rtol=0)
