"""4. CUDA: Triton kernels vs torch, Polar Express with/without kernels, MFU of the h100 preset (CUDA only)."""
from __future__ import annotations

import functools
import math
import statistics
import time

import pandas as pd
import torch

from lab import records
from lab.bench.common import (
    Ctx,
    _md,
    _median,
)
from lab.config import get_config
from lab.optim.orthogonalize import (
    polar_express,
)


def _cuda_ms(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        ts.append(start.elapsed_time(end))
    return statistics.median(ts)


def _mfu(ctx: Ctx) -> dict:
    from lab.models import build_model, flops_per_token
    from lab.optim.setup import build_optimizers
    from lab.optim.sphere import project_to_sphere
    from lab.train import autocast_ctx, peak_flops
    p, dev = ctx.p, ctx.dev
    cfg = get_config(p["mfu_preset"], **p["mfu_overrides"], device="cuda")
    torch.manual_seed(0)
    model = build_model(cfg).to(dev)
    opts, _ = build_optimizers(model, cfg)
    ac = autocast_ctx(cfg, dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    warm, timed = p["mfu_steps"]

    def step(i):
        tok = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len + 1), device=dev, generator=gen)
        for _ in range(cfg.grad_accum):
            with ac:
                loss = model(tok[:, :-1], tok[:, 1:])[1]
            loss.backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        if (i + 1) % cfg.project_every == 0:
            project_to_sphere(model)

    for i in range(warm):
        step(i)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(warm, warm + timed):
        step(i)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / timed
    tps = cfg.tokens_per_step / dt
    fpt = flops_per_token(model, cfg)
    peak = peak_flops(dev)
    return {"preset": p["mfu_preset"], "model": cfg.model, "params (M)": sum(q.numel() for q in model.parameters())
            / 1e6, "tokens/step": cfg.tokens_per_step, "ms/step": 1e3 * dt, "tokens/s": tps,
            "TFLOP/s": fpt * tps / 1e12, "peak TFLOP/s (bf16 dense)": peak / 1e12 if peak else math.nan,
            "MFU": fpt * tps / peak if peak else math.nan, "timed steps": timed}


def bench_cuda(ctx: Ctx) -> str:
    if ctx.dev.type != "cuda":
        line = "skipped: no CUDA (this device: " + records.device_name(ctx.dev) + ")"
        print(f"[bench] cuda: {line}", flush=True)
        return line + "\n"
    from lab.optim import kernels
    p, dev = ctx.p, ctx.dev
    if not kernels.available():
        line = f"skipped: Triton kernels unavailable (HAS_TRITON={kernels.HAS_TRITON}, ENABLED={kernels.ENABLED})"
        return line + "\n"
    gen = torch.Generator(device=dev).manual_seed(0)
    rows = []
    for m, n in p["cuda_shapes"]:
        X = torch.randn(m, n, device=dev, generator=gen, dtype=torch.bfloat16)
        A = X.mT if m > n else X  # the operand of the Gram matrix in the quintic loop: (k, K), k = min(m, n)
        S = (A @ A.mT) / A.size(1)
        P = functools.partial
        cases = {
            "xxt: A A^T": (P(torch.mm, A, A.mT), P(kernels.xxt, A)),
            "ba_plus_caa: bS + cSS": (P(torch.addmm, S, S, S, beta=-4.775, alpha=2.0315),
                                      P(kernels.ba_plus_caa, S, alpha=2.0315, beta=-4.775)),
            "polar_express 5 steps": (P(polar_express, X, 5, use_kernels=False),
                                      P(polar_express, X, 5, use_kernels=True)),
        }
        for op, (f_torch, f_triton) in cases.items():
            t_torch, t_tri = _cuda_ms(f_torch, p["cuda_repeats"]), _cuda_ms(f_triton, p["cuda_repeats"])
            err = ((f_triton().float() - f_torch().float()).norm() / f_torch().float().norm()).item()
            rows.append({"op": op, "matrix": f"{m}x{n}", "operand": f"{tuple(A.shape)}", "torch ms": t_torch,
                         "triton ms": t_tri, "speedup torch/triton": t_torch / t_tri, "rel diff": err})
    df = pd.DataFrame(rows)
    mfu = pd.DataFrame([_mfu(ctx)])
    pe = df[df.op == "polar_express 5 steps"]["speedup torch/triton"]
    headline = (f"Polar Express with kernels is **{_median(pe):.2f}x** faster than without (median over shapes); "
                f"MFU of the `{p['mfu_preset']}` preset: **{mfu['MFU'].iloc[0]:.3f}**.")
    body = f"""\
**What:** on {records.device_name(dev)}, bf16: the Triton symmetric kernels (`lab.optim.kernels.xxt`,
`ba_plus_caa`) against torch (`torch.mm(A, A.T)`, `torch.addmm`), and the whole Polar Express (5 steps) with and
without the kernels, on the Gram operands of the `h100` preset's matrices (tall matrices use A = X^T); CUDA-event
medians of {p['cuda_repeats']} calls. MFU: the `{p['mfu_preset']}` preset model trained for {p['mfu_steps'][1]}
steps after {p['mfu_steps'][0]} warm-up steps (eager, bf16 autocast, hybrid Muon+AdamW with kernels) on **synthetic
tokens** (uniform over the {get_config(p['mfu_preset'], **p['mfu_overrides']).vocab_size}-token vocabulary: FineWeb
may not be downloaded, and the cost does not depend on the tokens); FLOPs per token from `lab.models.flops_per_token`
(6N + attention).

**Headline:** {headline}

{_md(df)}

{_md(mfu)}
"""
    print(_md(df), flush=True)
    print(_md(mfu), flush=True)
    return body
