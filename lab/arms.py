"""Building blocks of arms (config overrides) and of the value grids campaigns sweep. Pure functions, no imports
beyond the standard library: campaign modules use them at import time.

    muon(lr, aux, **kw) / adamw(lr, **kw)   the overrides of the hybrid Muon arm and of the AdamW baseline
    around(x), grid_edge(grid, v), beyond_edge(grid, best)   small grids around a tuned value, and their edges
"""
from __future__ import annotations

EXTEND_EDGES = 2  # values added past a winning grid edge (factor 2 each): the optimum, not the boundary, is picked


def muon(lr: float, aux: float, **kw) -> dict:
    """Config overrides of the hybrid Muon arm: Muon lr for hidden matrices, one aux lr for its AdamW groups."""
    return {"optimizer": "muon", "lr": float(lr), "embed_lr": float(aux), "head_lr": float(aux),
            "scalar_lr": float(aux), **kw}


def adamw(lr: float, **kw) -> dict:
    return {"optimizer": "adamw", "adamw_lr": float(lr), **kw}


def steps(n: int) -> dict:
    """{"steps": n}, or {} for 0 (the preset default)."""
    return {"steps": int(n)} if n else {}


def peak_lr(o: dict) -> float | None:
    """The lr an arm's optimizer peaks at: Muon's lr for a Muon arm, adamw_lr for an AdamW one (None if unset)."""
    return o.get("lr") if o.get("optimizer", "muon") == "muon" else o.get("adamw_lr")


def around(x: float) -> list[float]:
    """The small grid [x/2, x, 2x] around a tuned value (neighbours on a factor-2 grid)."""
    return [x / 2, x, 2 * x]


def grid_edge(grid: list, value) -> str | None:
    """"lowest" or "highest" when `value` is that edge of a 3+ value grid (the optimum may lie beyond); else None."""
    if value is None or len(grid) < 3 or value not in grid:
        return None
    return "lowest" if value == min(grid) else "highest" if value == max(grid) else None


def beyond_edge(grid: list[float], best: float | None) -> float | None:
    """The next value (factor 2) past the edge of `grid` that `best` sits on; None when it is inside (or missing)."""
    side = grid_edge(grid, best)
    return min(grid) / 2 if side == "lowest" else 2 * max(grid) if side == "highest" else None
