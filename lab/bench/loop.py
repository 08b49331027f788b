"""3. Training loop overhead: tokens/s of lab.train.train against a bare loop written here (same work)."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import pandas as pd
import torch

from lab import records
from lab.bench.common import (
    Ctx,
    _md,
    _median,
)
from lab.config import get_config


def _lab_loop(cfg) -> dict:
    """Run lab.train.train; wall-clock stamps at the end of every training step (after its metrics line)."""
    from lab.train import Run, train
    stamps = {}
    original = Run.emit

    def emit(self, row):
        original(self, row)
        if "train_loss" in row:
            stamps[row["step"]] = time.perf_counter()

    with mock.patch.object(Run, "emit", emit):
        s = train(cfg, progress=False)
    rows = [r for r in records.read_metrics(Path(cfg.runs_dir) / cfg.run_id()) if "train_loss" in r]
    return {"stamps": stamps, "reported_dt": {r["step"]: cfg.tokens_per_step / r["tokens_per_s"] for r in rows},
            "final_loss": rows[-1]["train_loss"], "status": s["status"]}


def _bare_loop(cfg) -> dict:
    """The same work as lab.train with nothing else: model, data, optimizers, schedules, projection; no logging,
    evaluation, checkpoints, grad-norm or drift measurement."""
    from lab.data import load_data
    from lab.models import build_model
    from lab.optim.setup import build_optimizers
    from lab.optim.sphere import project_to_sphere
    from lab.train import autocast_ctx, resolve_device, set_schedules
    device = resolve_device(cfg)
    data = load_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    opts, _ = build_optimizers(model, cfg)
    ctx = autocast_ctx(cfg, device)
    sphere = hasattr(model, "sphere_params")
    stamps = {}
    for step in range(cfg.steps):
        set_schedules(opts, cfg, step)
        x, y = (t.to(device) for t in data.train_batch(step))
        with ctx:
            loss = model(x, y)[1]
        loss.backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        if sphere and (step + 1) % cfg.project_every == 0:
            project_to_sphere(model)
        final = loss.item()
        stamps[step] = time.perf_counter()
    return {"stamps": stamps, "final_loss": final}


def _steady_tps(stamps: dict, skip: int, steps: int, tokens: int) -> float:
    """Tokens/s of the median step among steps skip..steps-1 (a step: end of the previous one to end of this one);
    the median, not the mean, so a burst of another process on a shared CPU does not decide the ratio."""
    return tokens / statistics.median(stamps[s] - stamps[s - 1] for s in range(skip, steps))


def bench_loop(ctx: Ctx) -> str:
    p = ctx.p
    steps, skip = p["loop_steps"], p["loop_skip"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lab-bench-loop-") as tmp:
        for i in range(p["loop_pairs"]):
            order = ("lab", "bare") if i % 2 == 0 else ("bare", "lab")
            cfg = get_config(p["loop_preset"], steps=steps, val_every=10**9, ckpt_every=0,
                             runs_dir=str(Path(tmp) / f"pair{i}"), campaign="bench")
            res = {}
            for kind in order:
                res[kind] = _lab_loop(cfg) if kind == "lab" else _bare_loop(cfg)
            lab_tps = _steady_tps(res["lab"]["stamps"], skip, steps, cfg.tokens_per_step)
            bare_tps = _steady_tps(res["bare"]["stamps"], skip, steps, cfg.tokens_per_step)
            rep = cfg.tokens_per_step / statistics.median(res["lab"]["reported_dt"][s] for s in range(skip, steps))
            rows.append({"pair": i, "order": " then ".join(order), "lab tok/s (wall)": lab_tps,
                         "lab tok/s (reported)": rep, "bare tok/s": bare_tps, "lab / bare": lab_tps / bare_tps,
                         "reported / bare": rep / bare_tps,
                         "same final loss": res["lab"]["final_loss"] == res["bare"]["final_loss"],
                         "lab final loss": res["lab"]["final_loss"], "bare final loss": res["bare"]["final_loss"]})
    df = pd.DataFrame(rows)
    ratio = _median(df["lab / bare"])
    verdict = "within" if ratio >= 0.95 else "NOT within"
    cfg = get_config(p["loop_preset"])
    body = f"""\
**What:** tokens/s of `lab.train.train` (`{p['loop_preset']}` preset: {cfg.model}, optimizer={cfg.optimizer},
{steps} steps, val_every large, ckpt_every=0, a fresh temporary runs_dir) against a bare loop written in the
benchmark (same model, data, optimizers, lr/momentum schedules and sphere projection; no metrics file, evaluation,
checkpoint, grad norm or drift check), on {ctx.dev.type}, {p['loop_pairs']} interleaved pairs (order alternating).
Steady state: the median step time over steps {skip}..{steps - 1} (wall clock from the end of one step to the end
of the next; for lab the stamp is taken after the step's metrics line is written, so logging counts), per run; the
ratio is taken within each pair, then the median over pairs. "reported" is lab's own tokens_per_s (its in-loop
timer: training only, logging excluded). Same final loss = the two loops computed bit-identical training
(CPU fp32 is deterministic), i.e. the comparison is like for like.

**Headline:** lab / bare tokens/s = **{ratio:.3f}** (median of {len(df)}): {verdict} 5% of the bare loop.

{_md(df)}
"""
    print(_md(df), flush=True)
    return body
