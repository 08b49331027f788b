"""nGPT, gated nGPT and the GPT baselines on the `smoke` config (ALGORITHMS.md section 6.2, section 13 items 18-19)."""
import math

import pytest
import torch

from lab.config import get_config
from lab.models import MODELS, build_model, flops_per_token, num_params, param_counts
from lab.models.ngpt import NGPT, GatedNGPT, lerp_residual, unit
from lab.optim.sphere import max_sphere_drift, project_to_sphere

ALL = list(MODELS)


def make(model="ngpt", seed=0):
    torch.manual_seed(seed)
    cfg = get_config("smoke", model=model)
    return build_model(cfg), cfg


def tokens(cfg, B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (B, cfg.seq_len), generator=g)


def test_sphere_table_and_unit_norms():
    model, cfg = make()
    rows = ["attn.wq", "attn.wk", "attn.wv", "mlp.w_fc"]
    cols = ["attn.wo", "mlp.w_proj"]
    expected = {"wte.weight": 1, "lm_head.weight": 1}
    for i in range(cfg.n_layer):
        expected |= {f"blocks.{i}.{n}.weight": 1 for n in rows} | {f"blocks.{i}.{n}.weight": 0 for n in cols}
    declared = {name: dim for name, _, dim in model.sphere_params()}
    assert declared == expected  # a wrong axis or a missing matrix fails here
    params = dict(model.named_parameters())
    for name, p, dim in model.sphere_params():
        assert params[name] is p
        assert p.shape[dim] == cfg.n_embd  # the reduced axis is the embedding axis
        torch.testing.assert_close(p.norm(dim=dim), torch.ones(p.shape[1 - dim]), atol=1e-6, rtol=0)
    assert max_sphere_drift(model) < 1e-6


def test_projection_and_drift():
    model, _ = make()
    with torch.no_grad():
        for _, p, _ in model.sphere_params():
            p.mul_(1.5)
    assert max_sphere_drift(model) == pytest.approx(0.5, abs=1e-5)
    project_to_sphere(model)
    assert max_sphere_drift(model) < 1e-6
    gpt, _ = make("gpt")
    before = {k: v.clone() for k, v in gpt.state_dict().items()}
    project_to_sphere(gpt)  # no sphere_params: a no-op
    assert all(torch.equal(before[k], v) for k, v in gpt.state_dict().items())
    assert max_sphere_drift(gpt) == 0.0


@pytest.mark.parametrize("name", ["ngpt", "gated_ngpt"])
def test_hidden_states_unit_norm(name):
    model, cfg = make(name)
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in model.blocks]
    model(tokens(cfg))
    for h in hooks:
        h.remove()
    assert len(outs) == cfg.n_layer
    for h in outs:
        torch.testing.assert_close(h.norm(dim=-1), torch.ones(h.shape[:-1]), atol=1e-5, rtol=0)


def test_eigen_learning_rates_at_init():
    model, cfg = make()
    d = cfg.n_embd
    base = 1 / math.sqrt(d)
    for b in model.blocks:
        for stored in (b.attn_alpha, b.mlp_alpha, b.attn.sqk):
            torch.testing.assert_close(stored, torch.full((d,), base))
        torch.testing.assert_close(b.alpha_attn(), torch.full((d,), cfg.alpha_init))
        torch.testing.assert_close(b.alpha_mlp(), torch.full((d,), cfg.alpha_init))
        torch.testing.assert_close(b.attn.sqk_eff(), torch.ones(cfg.n_head, d // cfg.n_head))
        torch.testing.assert_close(b.mlp.suv, torch.ones(8 * d))
        torch.testing.assert_close(b.mlp.suv_eff(), torch.full((8 * d,), math.sqrt(d)))
    torch.testing.assert_close(model.sz, torch.full((cfg.vocab_size,), base))
    torch.testing.assert_close(model.sz_eff(), torch.ones(cfg.vocab_size))
    # the reparam is linear: doubling the stored alpha doubles the effective one
    with torch.no_grad():
        model.blocks[0].attn_alpha.mul_(2)
    torch.testing.assert_close(model.blocks[0].alpha_attn(), torch.full((d,), 2 * cfg.alpha_init))


@pytest.mark.parametrize("alpha_init", [0.05, 0.15])
def test_alpha_init_is_the_effective_alpha_at_init(alpha_init):
    """alpha_init (the plan's 0.15, NVIDIA's 0.05) is what the block uses at init; the stored value stays at
    base scale 1/sqrt(d), so the eigen learning rate of alpha scales with alpha_init."""
    cfg = get_config("smoke", alpha_init=alpha_init)
    b = build_model(cfg).blocks[0]
    torch.testing.assert_close(b.attn_alpha, torch.full((cfg.n_embd,), cfg.n_embd**-0.5))
    torch.testing.assert_close(b.alpha_mlp(), torch.full((cfg.n_embd,), alpha_init))
    assert get_config("h100").alpha_init == 0.15 and get_config("cpu").alpha_init == 0.05
    assert get_config("smoke", alpha_init=0.15).run_id() != get_config("smoke").run_id()


def test_lerp_residual():
    torch.manual_seed(0)
    h = unit(torch.randn(3, 5, 16))
    branch = 3 * torch.randn(3, 5, 16)
    torch.testing.assert_close(lerp_residual(h, branch, torch.zeros(16)), h, atol=1e-6, rtol=0)
    torch.testing.assert_close(lerp_residual(h, branch, torch.ones(16)), unit(branch), atol=1e-6, rtol=0)
    mid = lerp_residual(h, branch, torch.full((16,), 0.5))
    torch.testing.assert_close(mid, unit(h + unit(branch)), atol=1e-6, rtol=0)


def test_block_alpha_zero_and_one():
    model, cfg = make()
    block = model.blocks[0]
    h = unit(torch.randn(2, cfg.seq_len, cfg.n_embd))
    with torch.no_grad():
        block.attn_alpha.zero_()
        block.mlp_alpha.zero_()
        torch.testing.assert_close(block(h), h, atol=1e-6, rtol=0)
        one = block.base_scale / cfg.alpha_init  # stored value whose effective alpha is 1
        block.attn_alpha.fill_(one)
        block.mlp_alpha.fill_(one)
        h1 = unit(block.attn(h))
        torch.testing.assert_close(block(h), unit(block.mlp(h1)), atol=1e-5, rtol=0)


def test_rope_before_qk_norm():
    model, cfg = make()
    attn = model.blocks[0].attn
    H, Dh = cfg.n_head, cfg.n_embd // cfg.n_head
    with torch.no_grad():
        attn.sqk.copy_(attn.base_scale * (0.5 + torch.rand(cfg.n_embd)))  # non-uniform s_qk: the order matters
    h = unit(torch.randn(2, cfg.seq_len, cfg.n_embd))
    q, k = attn.qk(h)
    sqk = attn.sqk_eff()
    ones = torch.ones(2, cfg.seq_len, H)
    torch.testing.assert_close((q / sqk).norm(dim=-1), ones, atol=1e-5, rtol=0)
    torch.testing.assert_close((k / sqk).norm(dim=-1), ones, atol=1e-5, rtol=0)
    raw = attn.wq(h).view(2, cfg.seq_len, H, Dh)
    torch.testing.assert_close(q, sqk * unit(attn.rotary(raw)), atol=1e-6, rtol=0)
    assert not torch.allclose(q, attn.rotary(sqk * unit(raw)), atol=1e-3)  # RoPE after s_qk would differ
    assert not torch.allclose(unit(attn.rotary(raw)), unit(raw), atol=1e-3)  # and RoPE does something


def test_attention_softmax_scale_sqrt_dhead():
    model, cfg = make()
    attn = model.blocks[0].attn
    B, T, d, H = 2, cfg.seq_len, cfg.n_embd, cfg.n_head
    Dh = d // H
    h = unit(torch.randn(B, T, d))
    with torch.no_grad():
        out = attn(h)
        q, k = (x.double().transpose(1, 2) for x in attn.qk(h))  # (B, H, T, Dh)
        v = attn.wv(h).double().view(B, T, H, Dh).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) * math.sqrt(Dh)  # (B, H, T, T)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
        ref = y @ attn.wo.weight.double().T
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)


def test_gated_starts_as_ngpt():
    model, cfg = make("ngpt")
    gated = GatedNGPT(cfg)
    missing, unexpected = gated.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.endswith(("attn_gate", "mlp_gate")) for k in missing)
    gates = [p for n, p in gated.named_parameters() if n.endswith("_gate")]
    assert len(gates) == 2 * cfg.n_layer
    assert all(g.ndim == 1 and g.shape == (cfg.n_embd,) and not g.any() for g in gates)
    assert not any(n.endswith("_gate") for n, _ in model.named_parameters())
    idx = tokens(cfg)
    with torch.no_grad():
        assert torch.equal(model(idx)[0], gated(idx)[0])
        gates[0].fill_(1.0)  # and the gate is live
        assert not torch.equal(model(idx)[0], gated(idx)[0])
    assert isinstance(gated, NGPT)


@pytest.mark.parametrize("name", ALL)
def test_forward_loss_at_init(name):
    model, cfg = make(name)
    idx = tokens(cfg)
    logits, loss = model(idx, targets=idx)
    assert logits.shape == (2, cfg.seq_len, cfg.vocab_size)
    assert model(idx)[1] is None
    assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.5
    assert hasattr(model, "sphere_params") == (name in ("ngpt", "gated_ngpt"))


@pytest.mark.parametrize("name", ALL)
def test_causal(name):
    model, cfg = make(name)
    idx = tokens(cfg)
    t = cfg.seq_len // 2
    idx2 = idx.clone()
    idx2[:, t] = (idx2[:, t] + 1) % cfg.vocab_size
    with torch.no_grad():
        a, b = model(idx)[0], model(idx2)[0]
    assert torch.equal(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t:], b[:, t:])


@pytest.mark.parametrize("name", ALL)
def test_finite_grads(name):
    model, cfg = make(name)
    idx = tokens(cfg)
    _, loss = model(idx[:, :-1], targets=idx[:, 1:])
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_counts():
    model, cfg = make()
    d, V, L = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    per_block = 4 * d * d + 8 * d * d + 4 * d * d + 3 * d + 8 * d  # attn, w_fc, w_proj, alphas+sqk, suv
    assert num_params(model) == 2 * V * d + V + L * per_block
    assert flops_per_token(model, cfg) == 6 * (num_params(model) - V * d) + 12 * L * d * cfg.seq_len
    gated, _ = make("gated_ngpt")
    assert num_params(gated) == num_params(model) + 2 * L * d


# --- the matched GPT control (model=gpt_swiglu): nGPT's transformer without the sphere ---

SPHERELESS = ("gpt", "gpt_swiglu")


def matrices(model) -> dict[str, tuple]:
    """name -> shape of every hidden 2-D matrix (what the hybrid gives Muon)."""
    return {n: tuple(p.shape) for n, p in model.named_parameters() if p.ndim == 2 and not n.startswith(("wte.", "lm_"))}


def test_gpt_swiglu_has_ngpts_widths():
    """Every matrix nGPT has, gpt_swiglu has under the same name and shape (and no other): same attention, same
    SwiGLU widths (W_fc d -> 2 x 4d, W_proj 4d -> d), untied wte/lm_head. Only the 1-D parameters differ."""
    ngpt, cfg = make("ngpt")
    ctrl, _ = make("gpt_swiglu")
    shapes = lambda m: {n: tuple(p.shape) for n, p in m.named_parameters() if p.ndim == 2}  # noqa: E731
    assert shapes(ctrl) == shapes(ngpt)
    assert ctrl.wte.weight.data_ptr() != ctrl.lm_head.weight.data_ptr()  # untied, as nGPT
    assert ctrl.blocks[0].mlp.w_fc.weight.shape == (8 * cfg.n_embd, cfg.n_embd)
    vectors = {n.split(".")[-2] for n, p in ctrl.named_parameters() if p.ndim == 1}
    assert vectors == {"attn_norm", "mlp_norm", "norm_f"}  # RMSNorm gains, nothing of nGPT's scalers
    assert not hasattr(ctrl, "sphere_params")


def test_gpt_swiglu_attention_is_ngpts_at_sqk_one():
    """QK-norm (RMS per head, then RoPE, scale 1/sqrt(Dh)) gives logits sqrt(Dh) cos(q, k): nGPT's attention with
    s_qk at its init value 1 (RoPE keeps each head's norm, so normalizing before or after it is the same)."""
    ngpt, cfg = make("ngpt")
    ctrl, _ = make("gpt_swiglu", seed=1)
    a, b = ngpt.blocks[0].attn, ctrl.blocks[0].attn
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k != "sqk"})
    x = torch.randn(2, cfg.seq_len, cfg.n_embd)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), atol=1e-5, rtol=1e-5)
        a.sqk.mul_(1.5)  # and s_qk is the difference once it moves
        assert not torch.allclose(b(x), a(x), atol=1e-3)


def test_gpt_swiglu_init_scale_rule():
    """sigma = 1/sqrt(d) for wte and hidden Linears, sigma/sqrt(2L) for wo and w_proj, 1/d for lm_head; gains 1.
    Checked at the cpu preset (d = 128, L = 4), where every matrix has >= 32k entries (std within ~2%)."""
    torch.manual_seed(0)
    cfg = get_config("cpu", model="gpt_swiglu")
    model = build_model(cfg)
    d, L = cfg.n_embd, cfg.n_layer
    sigma = d**-0.5
    for name, p in model.named_parameters():
        if p.ndim == 1:
            assert torch.equal(p, torch.ones_like(p)), name
            continue
        want = (sigma / d**0.5 if name.startswith("lm_head") else
                sigma / math.sqrt(2 * L) if name.endswith(("attn.wo.weight", "mlp.w_proj.weight")) else sigma)
        assert p.std().item() == pytest.approx(want, rel=0.03), name
        assert abs(p.mean().item()) < 3 * want / p.numel() ** 0.5, name


def test_gpt_swiglu_starts_where_ngpt_starts():
    """Initial logits have nGPT's scale (std ~1/sqrt(d)), so both models start at loss ~ln V."""
    torch.manual_seed(0)
    cfg = get_config("cpu")
    idx = tokens(cfg, B=4)
    with torch.no_grad():
        for name in ("ngpt", "gpt_swiglu"):
            torch.manual_seed(0)
            logits, loss = build_model(get_config("cpu", model=name))(idx, targets=idx)
            assert logits.std().item() == pytest.approx(cfg.n_embd**-0.5, rel=0.25), name
            assert loss.item() == pytest.approx(math.log(cfg.vocab_size), abs=0.05), name


def test_gpt_swiglu_forward_backward_shapes():
    model, cfg = make("gpt_swiglu")
    idx = tokens(cfg, B=3)
    logits, loss = model(idx[:, :-1], targets=idx[:, 1:])
    assert logits.shape == (3, cfg.seq_len - 1, cfg.vocab_size) and loss.shape == ()
    block = model.blocks[0]
    x = torch.randn(3, cfg.seq_len, cfg.n_embd)
    assert block(x).shape == x.shape and block.mlp(x).shape == x.shape and block.attn(x).shape == x.shape
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n  # every parameter is used


def _reference_forward(model, idx: torch.Tensor) -> torch.Tensor:
    """gpt_swiglu's logits re-derived in float64 from its weights, written out from the math (no module calls):
    x = wte[idx]; per block x += Wo attn(rmsnorm(x) * g_a); x += W_proj(u * silu(v)), (u, v) = W_fc (rmsnorm(x) * g_m);
    logits = W_lm (rmsnorm(x) * g_f). attn: q, k RMS-normalized per head, then RoPE (half-split pairs, base 1e4),
    causal softmax(q k^T / sqrt(Dh)) v."""
    cfg = model.config
    W = {n: p.detach().double() for n, p in model.named_parameters()}
    B, T = idx.shape
    d, H = cfg.n_embd, cfg.n_head
    Dh = d // H
    eps = torch.finfo(torch.float32).eps  # nn.RMSNorm / F.rms_norm default for fp32 inputs

    def rmsnorm(x, g=None):
        y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
        return y if g is None else y * g

    pos = torch.arange(T, dtype=torch.float64)[:, None]  # (T, 1)
    freq = 10000.0 ** (-torch.arange(0, Dh, 2, dtype=torch.float64) / Dh)  # (Dh/2,)
    cos, sin = torch.cos(pos * freq), torch.sin(pos * freq)  # (T, Dh/2)

    def rope(x):  # (B, H, T, Dh): channel i pairs with i + Dh/2
        a, b = x[..., : Dh // 2], x[..., Dh // 2:]
        return torch.cat((a * cos - b * sin, a * sin + b * cos), -1)

    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    x = W["wte.weight"][idx]  # (B, T, d)
    for i in range(cfg.n_layer):
        w = lambda n, i=i: W[f"blocks.{i}.{n}"]  # noqa: E731
        h = rmsnorm(x, w("attn_norm.weight"))
        q, k, v = ((h @ w(f"attn.{m}.weight").T).view(B, T, H, Dh).transpose(1, 2) for m in ("wq", "wk", "wv"))
        q, k = rope(rmsnorm(q)), rope(rmsnorm(k))
        att = (q @ k.transpose(-1, -2) / math.sqrt(Dh)).masked_fill(mask, float("-inf")).softmax(-1)
        x = x + (att @ v).transpose(1, 2).reshape(B, T, d) @ w("attn.wo.weight").T
        h = rmsnorm(x, w("mlp_norm.weight"))
        uv = h @ w("mlp.w_fc.weight").T  # (B, T, 8d)
        u, v = uv[..., : 4 * d], uv[..., 4 * d:]
        x = x + (u * v / (1 + torch.exp(-v))) @ w("mlp.w_proj.weight").T  # u * silu(v)
    return rmsnorm(x, W["norm_f.weight"]) @ W["lm_head.weight"].T


def test_gpt_swiglu_matches_float64_rederivation():
    model, cfg = make("gpt_swiglu")
    with torch.no_grad():  # move every weight off its init (gains off 1, a non-small head) so nothing hides
        for p in model.parameters():
            p.add_(0.3 * p.abs().mean() * torch.randn_like(p) if p.ndim == 2 else 0.5 * torch.rand_like(p))
    idx = tokens(cfg)
    with torch.no_grad():
        logits = model(idx)[0]
    ref = _reference_forward(model, idx)
    assert ref.abs().max() > 0.5  # a non-trivial output
    torch.testing.assert_close(logits.double(), ref, atol=2e-5, rtol=1e-5)
    # and the SwiGLU is u * silu(v) with u the FIRST half: swapping the halves changes the output
    mlp, x = model.blocks[0].mlp, torch.randn(2, 3, cfg.n_embd)
    u, v = mlp.w_fc(x).chunk(2, dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), mlp.w_proj(u * torch.nn.functional.silu(v)))
        assert not torch.allclose(mlp(x), mlp.w_proj(v * torch.nn.functional.silu(u)), atol=1e-4)


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_gpt_swiglu_smoke_training_decreases_loss(tmp_path, optimizer):
    """A short real run (lab.train.train, so routing, schedules and records are the campaign's) lowers val loss."""
    from lab import records
    from lab.train import train
    cfg = get_config("smoke", model="gpt_swiglu", optimizer=optimizer, steps=30, val_every=10, ckpt_every=0,
                     runs_dir=str(tmp_path / "runs"), data_dir=str(tmp_path / "data"))
    s = train(cfg, progress=False)
    val = [r["val_loss"] for r in records.read_metrics(tmp_path / "runs" / cfg.run_id()) if "val_loss" in r]
    assert s["status"] == "finished" and len(val) == 4
    assert val[0] == pytest.approx(math.log(cfg.vocab_size), abs=0.1)
    assert val[-1] < val[0] - 1.0, val  # well past noise: from ln 256 = 5.55 to below 4.55 in 30 steps
    print(f"\ngpt_swiglu {optimizer} smoke val loss every 10 steps: " + ", ".join(f"{v:.3f}" for v in val))


# --- routing and parameter counts of every model (the architecture and width campaigns) ---

WIDTHS = (64, 128, 256)  # the width campaign: heads of 32 dims, depth 4


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_routing_at_the_cpu_preset(name, optimizer):
    """Hybrid: exactly the hidden 2-D matrices go to Muon at lr; wte, lm_head and every 1-D parameter to AdamW at
    their own lrs. AdamW baseline: everything on AdamW at adamw_lr. gpt_swiglu's Muon set is nGPT's, name for name."""
    from lab.optim.setup import build_optimizers
    torch.manual_seed(0)
    cfg = get_config("cpu", model=name, optimizer=optimizer)
    model = build_model(cfg)
    opts, rows = build_optimizers(model, cfg)
    assert sum(len(g["params"]) for o in opts for g in o.param_groups) == len(list(model.parameters()))
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {n for n, _ in model.named_parameters()}
    want_group = {"embed": cfg.embed_lr, "head": cfg.head_lr, "scalar": cfg.scalar_lr, "matrix": cfg.lr}
    hidden = matrices(model)
    for n, p in model.named_parameters():
        r = by_name[n]
        group = "embed" if n == "wte.weight" else "head" if n == "lm_head.weight" else \
            "matrix" if n in hidden else "scalar"
        assert r["group"] == group and (p.ndim == 1) == (group == "scalar"), n
        if optimizer == "adamw":
            assert r["optimizer"] == "adamw" and r["lr"] == cfg.adamw_lr, n
        else:
            assert r["optimizer"] == ("muon" if group == "matrix" else "adamw") and r["lr"] == want_group[group], n
    on_muon = {n for n, r in by_name.items() if r["optimizer"] == "muon"}
    assert on_muon == (set(hidden) if optimizer == "muon" else set())
    if name in ("gpt_swiglu", "gated_ngpt"):
        torch.manual_seed(0)
        assert hidden == matrices(build_model(get_config("cpu")))  # nGPT's Muon matrices exactly


def test_param_counts_at_the_cpu_preset():
    """Parameters per model and routing group at the cpu preset (printed for reports: pytest -s). gpt_swiglu and
    nGPT have the same hidden matrices (16 d^2 per block); they differ only in 1-D parameters: RMSNorm gains
    (2d per block + d) vs nGPT's alpha_A, alpha_M, s_qk, s_uv (11d per block) and s_z (V); gated adds 2d per block."""
    cfg = get_config("cpu")
    d, V, L = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    counts = {}
    for name in ("gpt", "gpt_swiglu", "ngpt", "gated_ngpt"):
        model = build_model(get_config("cpu", model=name))
        counts[name] = c = param_counts(model)
        assert c["total"] == num_params(model) == c["embed"] + c["head"] + c["matrix"] + c["scalar"]
        assert c["embed"] == c["head"] == V * d
    print("\n" + "\n".join(f"{n:11s} " + "  ".join(f"{k} {v:>9,}" for k, v in c.items()) for n, c in counts.items()))
    assert counts["gpt"]["matrix"] == L * 12 * d * d  # attention 4 d^2 + ReLU^2 MLP 8 d^2
    assert counts["gpt_swiglu"]["matrix"] == counts["ngpt"]["matrix"] == counts["gated_ngpt"]["matrix"]
    assert counts["ngpt"]["matrix"] == L * 16 * d * d  # attention 4 d^2 + SwiGLU 8 d^2 + 4 d^2
    assert counts["gpt"]["scalar"] == counts["gpt_swiglu"]["scalar"] == 2 * L * d + d
    assert counts["ngpt"]["scalar"] == 11 * L * d + V
    assert counts["gated_ngpt"]["scalar"] == 13 * L * d + V
    assert counts["gpt_swiglu"]["total"] == 1_115_264 and counts["ngpt"]["total"] == 1_120_000  # d=128, L=4, V=256
    assert counts["gpt"]["total"] == 853_120 and counts["gated_ngpt"]["total"] == 1_121_024


@pytest.mark.parametrize("name", ["ngpt", "gpt_swiglu", "gated_ngpt"])
@pytest.mark.parametrize("width", WIDTHS)
def test_width_campaign_configs_build_and_route(name, width):
    """n_embd 64/128/256 with n_head = n_embd // 32 at the cpu preset: valid configs, heads of 32 dims, Muon gets
    exactly the 16 d^2-per-block hidden matrices, the model starts at loss ~ln V."""
    from lab.optim.setup import build_optimizers
    cfg = get_config("cpu", model=name, n_embd=width, n_head=width // 32, n_layer=4)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.blocks[0].attn.d_head == 32 and len(model.blocks) == 4
    _, rows = build_optimizers(model, cfg)
    muon_rows = [r for r in rows if r["optimizer"] == "muon"]
    assert {r["name"] for r in muon_rows} == set(matrices(model))
    assert sum(math.prod(r["shape"]) for r in muon_rows) == param_counts(model)["matrix"] == 4 * 16 * width**2
    idx = tokens(cfg, B=1)
    with torch.no_grad():
        assert model(idx, targets=idx)[1].item() == pytest.approx(math.log(cfg.vocab_size), abs=0.1)
