"""3. Whole training step: Muon vs AdamW (forward, backward, optimizer steps, projection), every arm in one process,
interleaved, with the orthogonalization's share of the step; before stacking and Gram Newton-Schulz, and after."""
from __future__ import annotations

import contextlib
import os
import time

import pandas as pd
import torch

from lab.bench.common import Ctx, _md, _median, _sync
from lab.config import get_config
from lab.optim.muon import SimpleMuon
from lab.optim.orthogonalize import ORTHOGONALIZERS


class PerMatrixMuon(SimpleMuon):
    """SimpleMuon with one orthogonalizer call per matrix: the path before stacking (tests/test_muon.py checks that
    stacking changed no bit of the result)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.apply_update(p, self.direction(p, group), group)


BEFORE, AFTER = "Muon NS5, per matrix (before)", "Muon Gram-NS5, stacked (after)"
ARMS = {  # label: (config overrides, per-matrix)
    "AdamW (baseline)": (dict(optimizer="adamw"), False),
    BEFORE: (dict(), True),
    "Muon NS5, stacked (default now)": (dict(), False),
    AFTER: (dict(orthogonalizer="gram_newton_schulz"), False),
}


@contextlib.contextmanager
def ortho_clock(dev: torch.device):
    """Every orthogonalizer SimpleMuon looks up is timed while the block runs; yields [seconds so far]."""
    spent, saved = [0.0], dict(ORTHOGONALIZERS)

    def timed(fn):
        def wrapper(*args, **kwargs):
            _sync(dev)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(dev)
            spent[0] += time.perf_counter() - t0
            return out
        return wrapper
    ORTHOGONALIZERS.update({k: timed(f) for k, f in saved.items()})
    try:
        yield spent
    finally:
        ORTHOGONALIZERS.update(saved)


def _arm(preset: str, overrides: dict, per_matrix: bool, dev: torch.device):
    from lab.models import build_model
    from lab.optim.setup import build_optimizers
    cfg = get_config(preset, **overrides)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(dev)
    opts = build_optimizers(model, cfg)[0]
    if per_matrix:
        muon = opts[0]
        opts[0] = PerMatrixMuon([dict(g) for g in muon.param_groups],
                                **{k: v for k, v in muon.defaults.items() if k != "sphere_dim"})
    return cfg, model, opts


def _train_step(cfg, model, opts, data, step: int, dev: torch.device, autocast) -> tuple[float, float]:
    """What lab.train does in one step, without its records: schedules, forward, backward, every optimizer step,
    zero_grad, sphere projection on schedule. Returns (seconds of the whole step, of its optimizer steps)."""
    from lab.optim.sphere import project_to_sphere
    from lab.train import set_schedules
    _sync(dev)
    t0 = time.perf_counter()
    set_schedules(opts, cfg, step)
    x, y = (t.to(dev) for t in data.train_batch(step))
    with autocast:
        loss = model(x, y)[1]
    loss.backward()
    _sync(dev)
    t1 = time.perf_counter()
    for o in opts:
        o.step()
    _sync(dev)
    t2 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    if hasattr(model, "sphere_params") and (step + 1) % cfg.project_every == 0:
        project_to_sphere(model)
    _sync(dev)
    return time.perf_counter() - t0, t2 - t1


def bench_step(ctx: Ctx) -> str:
    from lab.data import load_data
    from lab.train import autocast_ctx
    p, dev = ctx.p, ctx.dev
    preset, rounds = p["step_preset"], p["step_rounds"]
    arms = {label: _arm(preset, kw, per, dev) for label, (kw, per) in ARMS.items()}
    data = load_data(next(iter(arms.values()))[0])
    autocast = autocast_ctx(next(iter(arms.values()))[0], dev)
    labels = list(arms)
    res = {a: {"step": [], "opt": [], "ortho": []} for a in labels}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with ortho_clock(dev) as spent:
        for r in range(rounds + 1):  # round 0: warm-up, not kept
            for a in labels[r % len(labels):] + labels[:r % len(labels)]:
                spent[0] = 0.0
                step_s, opt_s = _train_step(*arms[a], data, r, dev, autocast)
                if r:
                    res[a]["step"].append(step_s)
                    res[a]["opt"].append(opt_s)
                    res[a]["ortho"].append(spent[0])
    base = res[labels[0]]["step"]
    # the part every arm shares (schedules, forward, backward, zero_grad, projection: the same code on the same
    # batch), pooled over all arms; each arm's own part is its optimizer steps
    common = _median([s - o for a in labels for s, o in zip(res[a]["step"], res[a]["opt"])])
    opt_base = _median(res[labels[0]]["opt"])
    rows = []
    for a in labels:
        st, opt, orth = res[a]["step"], res[a]["opt"], res[a]["ortho"]
        rows.append({"arm": a, "ms/step": 1e3 * _median(st), "x AdamW": _median([t / b for t, b in zip(st, base)]),
                     "optimizer ms": 1e3 * _median(opt), "orthogonalization ms": 1e3 * _median(orth),
                     "orthogonalization share": _median([o / t for o, t in zip(orth, st)]),
                     "x AdamW from parts": (common + _median(opt)) / (common + opt_base),
                     "share from parts": _median(orth) / (common + _median(opt)), "rounds": len(st)})
    df = pd.DataFrame(rows)
    before, after = (df.set_index("arm").loc[x] for x in (BEFORE, AFTER))
    share_cut = 1 - after["orthogonalization share"] / before["orthogonalization share"]
    share_cut_parts = 1 - after["share from parts"] / before["share from parts"]
    df["share vs before"] = df["orthogonalization share"] / before["orthogonalization share"] - 1
    met = (after["x AdamW"] <= 1.06, share_cut >= 0.30)
    cfg = arms[labels[0]][0]
    body = f"""\
**What:** one whole training step of the `{preset}` preset (schedules, forward, backward, every optimizer step,
zero_grad, sphere projection: lab.train's step without its records) for four arms built from the same seed: AdamW
on every parameter, and the hybrid Muon + AdamW with Newton-Schulz one call per matrix (the path before this
change), Newton-Schulz stacked by shape (the default path now, bit-identical to the per-matrix one), and Gram
Newton-Schulz stacked (`orthogonalizer=gram_newton_schulz`). All arms live in one process and run once per round
on the same batch, in an order rotated every round, for {rounds} rounds after a warm-up round; x AdamW is the
median over rounds of the arm's time over AdamW's in the same round. Orthogonalization ms: the time inside the
orthogonalizer calls of that step; share: over the whole step (median over rounds). "From parts": the same two
numbers from medians of the parts, less noisy: every arm runs the same schedules, forward, backward, zero_grad and
projection (their time, pooled over all arms' steps: {1e3 * common:.1f} ms) plus its own optimizer steps, so
x AdamW = (common + optimizer) / (common + AdamW's optimizer). On {dev.type}, torch threads
{torch.get_num_threads()}, batch {cfg.batch_size} x {cfg.seq_len} tokens.
Note: this CPU is shared (load average {load:.1f} at the start, on {os.cpu_count()} cores: two training runs and
other jobs), which slows every arm; the ratios are measured side by side in the same rounds, so they stay fair,
but their level moves with the load (the optimizer's matrix products suffer more than the forward pass from a
busy cache).

**Headline:** whole Muon step / AdamW step **{before['x AdamW']:.3f}x** before, **{after['x AdamW']:.3f}x** after
(stacked + Gram; goal <= 1.06: {'met' if met[0] else 'NOT met'}; from parts {before['x AdamW from parts']:.3f}x ->
{after['x AdamW from parts']:.3f}x); the orthogonalization's share of the step
**{before['orthogonalization share']:.3f}** before, **{after['orthogonalization share']:.3f}** after
({share_cut:.0%} smaller; goal >= 30%: {'met' if met[1] else 'NOT met'}; from parts {share_cut_parts:.0%}).

{_md(df)}
"""
    print(_md(df), flush=True)
    return body
