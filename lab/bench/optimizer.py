"""2. Optimizer step overhead: step time and state memory on the real parameter set, as a ratio to AdamW."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch

from lab.bench.common import (
    Ctx,
    _bf16_matmul_slowdown,
    _clock,
    _inner,
    _md,
    _median,
    _plt,
)
from lab.config import get_config


def _state_bytes(opts) -> int:
    seen, total = set(), 0
    for opt in opts:
        for st in opt.state.values():
            for v in st.values():
                if torch.is_tensor(v) and id(v) not in seen:
                    seen.add(id(v))
                    total += v.numel() * v.element_size()
    return total


def _optimizer_arms(model, preset: str, overrides: dict, torch_muon: bool) -> tuple[dict, list]:
    """{arm label: [optimizers]} over the model's real routing; the hybrid arms share one AdamW for the rest."""
    from lab.optim.setup import build_optimizers, routing_table

    def cfg(**kw):
        return get_config(preset, **overrides, **kw)

    arms = {"AdamW (baseline, all params)": build_optimizers(model, cfg(optimizer="adamw"))[0]}
    hybrid = {"Muon NS5 + AdamW": dict(orthogonalizer="newton_schulz"),
              "Muon PE5 + AdamW": dict(orthogonalizer="polar_express"),
              "Muon Gram-NS5 + AdamW": dict(orthogonalizer="gram_newton_schulz"),
              "NorMuon NS5 + AdamW": dict(orthogonalizer="newton_schulz", normuon=True)}
    rest = None
    for label, kw in hybrid.items():
        opts = build_optimizers(model, cfg(optimizer="muon", **kw))[0]
        rest = opts[1] if rest is None else rest  # one AdamW for the rest, shared: its cost is the same in every arm
        arms[label] = [opts[0], rest]
    c = cfg(optimizer="muon")
    names = {r["name"] for r in routing_table(model, c) if r["optimizer"] == "muon"}
    matrices = [p for n, p in model.named_parameters() if n in names]
    if torch_muon:
        arms["torch.optim.Muon + AdamW"] = [
            torch.optim.Muon(matrices, lr=c.lr, weight_decay=0.0, momentum=c.momentum, nesterov=True,
                             adjust_lr_fn="original"), rest]
    arms["AdamW (Muon's matrices only)"] = [torch.optim.AdamW(matrices, lr=c.adamw_lr, fused=True)]
    return arms, matrices


def _time_arms(arms: dict, dev: torch.device, repeats: int) -> dict:
    """{arm: {"total": [s...], "parts": [[s per optimizer]...], "ratio": [...]}} over interleaved rounds.

    Round 0 is a warm-up (allocates state, picks how many back-to-back steps make one sample); each later round
    times every arm once, in an order rotated by one per round; ratios are to the baseline in the same round.
    """
    labels = list(arms)
    out = {a: {"total": [], "parts": [], "ratio": []} for a in labels}
    inner = {}
    for a in labels:
        t = sum(_clock(o.step, dev) for o in arms[a])
        inner[a] = _inner(t, target=0.02, cap=20)
    for r in range(repeats):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        this = {}
        for a in order:
            parts = [_clock(o.step, dev, inner[a]) for o in arms[a]]
            this[a] = parts
        for a in labels:
            out[a]["parts"].append(this[a])
            out[a]["total"].append(sum(this[a]))
            out[a]["ratio"].append(sum(this[a]) / sum(this[labels[0]]))
    return out


def _optimizer_table(model, preset: str, overrides: dict, repeats: int, dev: torch.device, torch_muon: bool,
                     extrapolate_layers: int = 0) -> pd.DataFrame:
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(dev)  # fake gradients
    arms, matrices = _optimizer_arms(model, preset, overrides, torch_muon)
    res = _time_arms(arms, dev, repeats)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    mat_bytes = sum(p.numel() * p.element_size() for p in matrices)
    base = "AdamW (baseline, all params)"
    rows = []
    for a, r in res.items():
        parts = [_median([pp[i] for pp in r["parts"]]) for i in range(len(arms[a]))]
        row = {"arm": a, "ms/step": 1e3 * _median(r["total"]), "x AdamW": _median(r["ratio"]),
               "matrix part ms": 1e3 * parts[0] if len(parts) == 2 else math.nan,
               "AdamW part ms": 1e3 * parts[-1] if len(parts) == 2 else math.nan,
               "state bytes / param byte": _state_bytes(arms[a]) / param_bytes}
        if extrapolate_layers:
            L = extrapolate_layers
            t_mat = _median(res["AdamW (Muon's matrices only)"]["total"])
            t_rest = _median([pp[-1] for pp in res["Muon NS5 + AdamW"]["parts"]])
            s_rest = _state_bytes([arms["Muon NS5 + AdamW"][1]])
            full_params = L * mat_bytes + (param_bytes - mat_bytes)
            if len(parts) == 2:
                row[f"x AdamW at {L} layers (est.)"] = (L * parts[0] + parts[1]) / (L * t_mat + t_rest)
                row[f"state/param at {L} layers (est.)"] = (L * _state_bytes([arms[a][0]]) + s_rest) / full_params
            elif a == base:
                row[f"x AdamW at {L} layers (est.)"] = 1.0
                row[f"state/param at {L} layers (est.)"] = row["state bytes / param byte"]
            else:
                row[f"x AdamW at {L} layers (est.)"] = math.nan
                row[f"state/param at {L} layers (est.)"] = math.nan
        rows.append(row)
    for p in model.parameters():
        p.grad = None
    return pd.DataFrame(rows)


def _plot_optimizer(tables: dict, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 3.6), squeeze=False)
    for ax, (name, df) in zip(axes[0], tables.items()):
        ax.barh(df["arm"], df["x AdamW"], color="tab:blue")
        ax.axvline(1, color="k", lw=0.6)
        ax.set(xscale="log", xlabel="step time / AdamW step", title=name)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_optimizer(ctx: Ctx) -> str:
    from lab.models import build_model
    p, dev = ctx.p, ctx.dev
    slow_bf16 = _bf16_matmul_slowdown(dev)
    preset = p["opt_preset"]
    torch.manual_seed(0)
    model = build_model(get_config(preset)).to(dev)
    n_params = sum(q.numel() for q in model.parameters())
    t1 = _optimizer_table(model, preset, {}, p["opt_repeats"], dev, torch_muon=True)
    del model
    print(_md(t1), flush=True)

    h = dict(p["opt_h100"])
    hpreset = h.pop("preset")
    full_layers = get_config(hpreset).n_layer
    torch.manual_seed(0)
    hmodel = build_model(get_config(hpreset, **h)).to(dev)
    hn = sum(q.numel() for q in hmodel.parameters())
    # torch.optim.Muon always runs Newton-Schulz in bf16: on a CPU without native bf16 that is ~30x slower
    h_torch_muon = dev.type == "cuda" or slow_bf16 < 3
    t2 = _optimizer_table(hmodel, hpreset, h, p["opt_h100_repeats"], dev, torch_muon=h_torch_muon,
                          extrapolate_layers=full_layers)
    del hmodel
    print(_md(t2), flush=True)

    f, rel = ctx.fig("optimizer")
    _plot_optimizer({f"{preset} preset model": t1, f"{hpreset} preset, {h.get('n_layer')} layer": t2}, f)

    def ratio(df, arm, col="x AdamW"):
        v = df.loc[df.arm == arm, col]
        return v.iloc[0] if len(v) else math.nan

    ext = f"x AdamW at {full_layers} layers (est.)"
    headline = (f"Muon NS5 + AdamW step = **{ratio(t1, 'Muon NS5 + AdamW'):.1f}x** an AdamW step on the `{preset}` "
                f"preset model ({n_params / 1e6:.2f}M params; PE5 {ratio(t1, 'Muon PE5 + AdamW'):.1f}x, Gram-NS5 "
                f"{ratio(t1, 'Muon Gram-NS5 + AdamW'):.1f}x, NorMuon "
                f"{ratio(t1, 'NorMuon NS5 + AdamW'):.1f}x, torch.optim.Muon "
                f"{ratio(t1, 'torch.optim.Muon + AdamW'):.1f}x); "
                f"`{hpreset}` shapes, {full_layers} layers (estimated from one block): "
                f"**{ratio(t2, 'Muon NS5 + AdamW', ext):.1f}x**.")
    skipped = "" if h_torch_muon else (
        f"torch.optim.Muon is left out of the {hpreset} table on this device: it always orthogonalizes in bf16, and "
        f"a bf16 matmul here takes {slow_bf16:.0f}x the fp32 one (no native bf16 on this CPU), so one step would take "
        f"minutes. ")
    body = f"""\
**What:** one optimizer step (fake Gaussian gradients, no forward/backward) on the real parameter set, on
{dev.type}. Arms: AdamW over every parameter (`build_optimizers` with optimizer=adamw: fused where available; the
baseline), the hybrid SimpleMuon + AdamW from `build_optimizers` with each orthogonalizer and with NorMuon (the
matrices orthogonalized in one batched call per shape),
`torch.optim.Muon` (hidden 2-D matrices, adjust_lr_fn="original") + the same AdamW for the rest, and, for
reference, AdamW over only the matrices Muon takes. Hybrid step = Muon part + AdamW part (one shared AdamW,
timed within the same sample). Time: median over {p['opt_repeats']} interleaved rounds (arm order rotated each
round) after a warm-up round; x AdamW: median over rounds of arm / baseline in the same round. State bytes: every
tensor in the optimizers' state, over the bytes of all parameters. SimpleMuon orthogonalizes in
{'bf16' if dev.type == 'cuda' else 'fp32'} here (its default on {dev.type}); torch.optim.Muon always in bf16.

**Headline:** {headline}

### `{preset}` preset model: the whole model ({n_params / 1e6:.2f}M parameters)

{_md(t1)}

### `{hpreset}` preset shapes: a {h.get('n_layer')}-layer model ({hn / 1e6:.1f}M parameters)

Which subset: the `{hpreset}` model built with n_layer={h.get('n_layer')} (one block's hidden matrices
(4 x 768x768, 6144x768, 768x3072) plus the full {get_config(hpreset).vocab_size}-token embedding
and head, on AdamW in every arm); the full {full_layers}-layer model is estimated as {full_layers} x (matrix part)
+ (AdamW part), with the baseline {full_layers} x (AdamW on the matrices) + (AdamW part); the per-layer vectors of
the other layers are left out (< 0.1% of the parameters). {skipped}

{_md(t2)}

![optimizer step time]({rel})
"""
    return body
