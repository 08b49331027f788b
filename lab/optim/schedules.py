"""Schedules: pure functions of the step (so a resumed run recomputes them exactly)."""
from __future__ import annotations


def lr_multiplier(step: int, steps: int, warmup_frac: float = 0.0, warmdown_frac: float = 0.3) -> float:
    """Linear warmup, constant, linear warmdown to 0 at `steps` (nanochat's trapezoid)."""
    warmup = round(warmup_frac * steps)
    warmdown = round(warmdown_frac * steps)
    if step < warmup:
        return (step + 1) / warmup
    if step >= steps - warmdown:
        return max(0.0, (steps - step) / max(warmdown, 1))
    return 1.0


def muon_momentum(step: int, start: float = 0.85, end: float = 0.95, warmup: int = 300) -> float:
    """Linear 0.85 -> 0.95 over the first `warmup` steps, then flat (modded-nanogpt / nanochat)."""
    frac = min(step / warmup, 1.0) if warmup > 0 else 1.0
    return (1 - frac) * start + frac * end


def weight_decay_multiplier(step: int, steps: int) -> float:
    """Muon weight decay decays linearly from its configured value to 0 over the run (nanochat 2026-01)."""
    return max(0.0, 1.0 - step / steps)
