"""Bootstrap fits for the lab's lr laws and speedups (seeds resampled as units; fixed RNG seed: byte-identical reports).

    lr_opt(grid)                      optimal lr from a quadratic in log lr, bootstrap interval over seeds
    lr_exponent(grids)                k in lr* ∝ x^k (x = tokens or width), bootstrap interval
    lr_ratio(a, b)                    lr*_a / lr*_b of two grids, bootstrap interval
    boot_verdict(...), .verdict()     four-way verdict from a bootstrap interval and an equivalence bound
    token_multiplier(muon, adamw)     AdamW tokens to reach Muon's final loss / Muon's tokens, bootstrap interval
    fmt_lr, fmt_exponent, fmt_ratio, fmt_tokens, fmt_multiplier   markdown-table strings

Tests check each against a float64 re-derivation or a simulation (tests/test_stats.py).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import stats

from lab.stats import ALPHA, BOOT_SEED, N_BOOT, Grid, Losses, _num, fmt_ci, fmt_level

# ----------------------------------------------------------------------------------------------------------------
# bootstrap helpers

def _percentile(x: np.ndarray, level: float, n: int) -> tuple[float, float]:
    """Expanded percentile interval (Hesterberg 2015) of bootstrap replicates over n resampled seeds: the percentile
    interval at the level where z = √(n/(n-1)) t_{n-1}, since resampling n seeds under-disperses a mean by
    √((n-1)/n) and ignores the t tails (plain percentiles cover ~88% for a nominal 95% at 6 seeds; see the tests).
    Order statistics, no interpolation, so ±inf replicates stay ±inf."""
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan
    if n >= 2:
        level = 1 - 2 * stats.norm.sf(math.sqrt(n / (n - 1)) * stats.t.ppf(0.5 + level / 2, n - 1))
    q = np.percentile(x, [50 * (1 - level), 50 * (1 + level)], method="inverted_cdf")
    return float(q[0]), float(q[1])


def _table(grid: Mapping[float, Losses]) -> tuple[np.ndarray, np.ndarray]:
    """(keys sorted, (K, S) losses over the union of seeds, nan where a seed is missing)."""
    keys = np.array(sorted(grid), dtype=float)
    seeds = sorted(set().union(*(grid[k].keys() for k in grid)))
    y = np.array([[grid[k].get(s, math.nan) for s in seeds] for k in keys], dtype=float)
    return keys, y


def _boot_means(y: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """(n_boot, K) means over seeds resampled with replacement (a seed is resampled as one unit across the K rows)."""
    idx = rng.integers(0, y.shape[1], (n_boot, y.shape[1]))  # (B, S)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate that drew no seed of a row: nan, dropped
        return np.nanmean(y[:, idx], axis=2).T  # (K, B, S) -> (B, K)


# ----------------------------------------------------------------------------------------------------------------
# optimal lr from a quadratic in log lr

@dataclass
class LrFit:
    """lr* = exp(vertex) of the least-squares parabola of mean final loss in ln lr, with a bootstrap interval."""
    lr: float             # nan when the parabola is not convex
    lo: float             # expanded percentile interval over seed-resampled refits (0 / inf: refits with no minimum)
    hi: float
    level: float
    convex: bool
    inside: bool          # vertex within [min lr, max lr] of the fitted grid
    grid: tuple[float, ...]
    means: tuple[float, ...]   # mean final loss per grid lr over its seeds
    coef: tuple[float, float, float]  # a, b, c of a x^2 + b x + c, x = ln lr
    dropped: tuple[float, ...]  # grid lrs left out: a seed there is not finite (diverged), so the mean is undefined
    n_seeds: int          # seeds resampled (the union over the grid)
    boot_valid: float     # fraction of replicates whose refit is convex
    boot: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.empty(0))  # ln lr* per replicate

    @property
    def note(self) -> str:
        lo, hi = min(self.grid), max(self.grid)
        if not self.convex:
            edge = lo if np.polyval(self.coef, math.log(lo)) < np.polyval(self.coef, math.log(hi)) else hi
            return f"not convex: no interior optimum (the fit is lowest at the grid edge {edge:.3g})"
        if not self.inside:
            return f"vertex outside the grid [{lo:.3g}, {hi:.3g}]: extrapolated, extend the grid"
        return ""


def _vertices(x: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares parabolas of ys (B, K) in x (K,): (ln-space vertices (B,), coefficients (3, B) in x).
    A non-convex fit has no minimum: its vertex is ±inf on the side of the grid where the fit is lower; a replicate
    with a nan mean is nan."""
    xm = x.mean()
    v = np.vander(x - xm, 3)  # (K, 3): centred for conditioning
    cc = np.linalg.pinv(v) @ np.nan_to_num(ys).T  # (3, B)
    a, b, c = cc
    with np.errstate(divide="ignore", invalid="ignore"):
        vert = np.where(a > 0, xm - b / (2 * a), np.nan)
    lower_left = a * (x[0] - xm) ** 2 + b * (x[0] - xm) < a * (x[-1] - xm) ** 2 + b * (x[-1] - xm)
    vert = np.where(a > 0, vert, np.where(lower_left, -np.inf, np.inf))
    vert[np.isnan(ys).any(axis=1)] = np.nan
    # back to coefficients in x (not centred): a(x - m)^2 + b(x - m) + c
    coef = np.stack([a, b - 2 * a * xm, a * xm ** 2 - b * xm + c])
    return vert, coef


def lr_opt(grid: Grid, n_boot: int = N_BOOT, seed: int | np.random.SeedSequence = BOOT_SEED,
           level: float = 0.95) -> LrFit:
    """Optimal lr from {lr: {seed: final loss}}: a parabola fitted to the per-lr mean loss in ln lr (>= 3 lrs),
    its vertex, and an expanded percentile interval (_percentile) from refits on seeds resampled with replacement
    (one seed = one unit across the grid; fixed RNG seed). Says when the parabola is not convex or its vertex lies
    outside the grid."""
    bad = [lr for lr in grid if not (lr > 0 and math.isfinite(lr))]
    if bad:
        raise ValueError(f"lr_opt: grid lrs must be positive and finite, got {bad}")
    dropped = tuple(sorted(lr for lr, ls in grid.items() if not ls or not all(math.isfinite(v) for v in ls.values())))
    kept = {lr: ls for lr, ls in grid.items() if lr not in dropped}
    if len(kept) < 3:
        raise ValueError(f"lr_opt: a quadratic needs >= 3 grid lrs with finite losses, got {sorted(kept)} "
                         f"(dropped for non-finite seeds: {list(dropped)})")
    lrs, y = _table(kept)
    x = np.log(lrs)
    means = np.nanmean(y, axis=1)
    vert, coef = _vertices(x, means[None, :])
    boot, _ = _vertices(x, _boot_means(y, np.random.default_rng(seed), n_boot))
    lo, hi = _percentile(boot, level, y.shape[1])
    a = float(coef[0, 0])
    v = float(vert[0])
    return LrFit(lr=math.exp(v) if a > 0 else math.nan, lo=math.exp(lo), hi=math.exp(hi), level=level,
                 convex=a > 0, inside=bool(a > 0 and x[0] <= v <= x[-1]), grid=tuple(float(l) for l in lrs),
                 means=tuple(float(m) for m in means), coef=tuple(float(c) for c in coef[:, 0]), dropped=dropped,
                 n_seeds=y.shape[1], boot_valid=float(np.isfinite(boot).mean()), boot=boot)


@dataclass
class Exponent:
    """k in lr* ∝ x^k (x = tokens, steps or width): the least-squares slope of ln lr* on ln x, bootstrap interval."""
    k: float               # nan when some lr* is undefined (a non-convex fit)
    lo: float
    hi: float
    level: float
    xs: tuple[float, ...]
    fits: tuple[LrFit, ...]
    boot_valid: float      # fraction of replicates where every lr* was finite (the others are left out)
    boot: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.empty(0))  # k per valid replicate

    @property
    def transfer_bound(self) -> float:
        """The |k| at which lr* moves by a factor √2 across the measured range of x: the equivalence bound for
        "lr* transfers" (one √2 grid step)."""
        return math.log(math.sqrt(2)) / math.log(max(self.xs) / min(self.xs))

    def verdict(self, ref: float = 0.0, bound: float | None = None, alpha: float = ALPHA) -> BootVerdict:
        """k against ref (0: lr* does not move with x; or K_LR_T, K_HYPERP) within ±bound (default
        transfer_bound)."""
        n = min(f.n_seeds for f in self.fits)
        return boot_verdict(self.k, self.boot, n, self.transfer_bound if bound is None else bound, ref, alpha)


def lr_exponent(grids: Mapping[float, Grid], n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                level: float = 0.95) -> Exponent:
    """k of lr* ∝ x^k from {x: {lr: {seed: final loss}}} at >= 2 values of x: lr* per x by lr_opt, then the slope of
    ln lr* on ln x; each replicate resamples seeds inside every x's grid independently, refits each lr*, then the
    slope. Set it beside K_LR_T (-1) and K_HYPERP (-0.32)."""
    if len(grids) < 2 or any(not (x > 0) for x in grids):
        raise ValueError(f"lr_exponent needs >= 2 positive budgets/widths, got {sorted(grids)}")
    xs = sorted(grids)
    fits = [lr_opt(grids[x], n_boot, s, level) for x, s in zip(xs, np.random.SeedSequence(seed).spawn(len(xs)))]
    lx = np.log(xs)
    cx = lx - lx.mean()
    slope = lambda ly: (cx * (ly - ly.mean(axis=-1, keepdims=True))).sum(-1) / (cx ** 2).sum()  # least squares
    k = float(slope(np.log([f.lr for f in fits]))) if all(f.convex for f in fits) else math.nan
    ly = np.stack([f.boot for f in fits], axis=1)  # (B, X)
    ok = np.isfinite(ly).all(axis=1)
    n = min(f.n_seeds for f in fits)  # fewest seeds resampled in a grid
    boot = slope(ly[ok])
    lo, hi = _percentile(boot, level, n) if ok.any() else (math.nan, math.nan)
    return Exponent(k, lo, hi, level, tuple(float(x) for x in xs), tuple(fits), float(ok.mean()), boot)


@dataclass
class LrRatio:
    """lr*_a / lr*_b of two grids (e.g. Muon on nGPT vs on GPT), bootstrap interval from independent resampling."""
    ratio: float           # nan when either fit is not convex
    lo: float
    hi: float
    level: float
    a: LrFit
    b: LrFit
    boot: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.empty(0))  # ln ratio per replicate

    def verdict(self, bound: float = math.log(math.sqrt(2)), alpha: float = ALPHA) -> BootVerdict:
        """ln(lr*_a / lr*_b) against 0, equivalent within ±bound (default: one √2 grid step); the interval is of
        ln ratio (exp it to print a ratio)."""
        return boot_verdict(math.log(self.ratio), self.boot, min(self.a.n_seeds, self.b.n_seeds), bound, 0.0, alpha)


def lr_ratio(a: Grid, b: Grid, n_boot: int = N_BOOT, seed: int = BOOT_SEED, level: float = 0.95) -> LrRatio:
    """lr*_a / lr*_b from two {lr: {seed: final loss}} grids, each by lr_opt with its own RNG stream (seeds
    resampled independently in each grid); the interval is on ln ratio, reported as a ratio."""
    sa, sb = np.random.SeedSequence(seed).spawn(2)
    fa, fb = lr_opt(a, n_boot, sa, level), lr_opt(b, n_boot, sb, level)
    boot = fa.boot - fb.boot
    boot = np.where(np.isinf(fa.boot) & np.isinf(fb.boot), np.nan, boot)  # inf - inf: undefined, left out
    lo, hi = _percentile(boot, level, min(fa.n_seeds, fb.n_seeds))
    return LrRatio(fa.lr / fb.lr, math.exp(lo), math.exp(hi), level, fa, fb, boot)


class BootVerdict(NamedTuple):
    verdict: str   # "higher" | "lower" (than the reference) | "equivalent" (within ±bound of it) | "inconclusive"
    lo: float      # the interval at the level the verdict uses (1 - alpha: higher / lower / inconclusive;
    hi: float      #   1 - 2 alpha: equivalent), on the scale of est
    level: float


def boot_verdict(est: float, boot: np.ndarray, n: int, bound: float, ref: float = 0.0,
                 alpha: float = ALPHA) -> BootVerdict:
    """Four-way verdict on a bootstrapped quantity (point est, replicates boot, n seeds resampled) against ref:
    higher / lower when the (1 - alpha) interval excludes ref, equivalent when the (1 - 2 alpha) interval lies inside
    (ref - bound, ref + bound) (the bootstrap analogue of TOST), else inconclusive. Expanded percentile intervals;
    no multiplicity adjustment (these hypotheses have no p-value to enter a Holm family)."""
    if not (bound > 0):
        raise ValueError(f"boot_verdict needs a positive equivalence bound, got {bound}")
    boot = np.asarray(boot, dtype=float)
    lo, hi = _percentile(boot, 1 - alpha, n)
    if not math.isfinite(est) or math.isnan(lo):
        return BootVerdict("inconclusive", lo, hi, 1 - alpha)
    if lo > ref or hi < ref:
        return BootVerdict("higher" if lo > ref else "lower", lo, hi, 1 - alpha)
    lo90, hi90 = _percentile(boot, 1 - 2 * alpha, n)
    if ref - bound < lo90 and hi90 < ref + bound:
        return BootVerdict("equivalent", lo90, hi90, 1 - 2 * alpha)
    return BootVerdict("inconclusive", lo, hi, 1 - alpha)


# ----------------------------------------------------------------------------------------------------------------
# speedup as a token multiplier

@dataclass
class Multiplier:
    """AdamW tokens needed to reach Muon's final loss at Muon's budget, over that budget."""
    budget: float          # Muon's tokens T
    target: float          # Muon's mean final val loss at T
    tokens: float          # AdamW tokens to reach it (nan when censored)
    ratio: float           # tokens / T (nan when censored)
    lo: float              # expanded percentile interval of the ratio (0 / inf: replicates below / past the range)
    hi: float
    level: float
    censored: str          # "" | ">" (past the largest AdamW budget) | "<" (already reached at the smallest)
    adamw_budgets: tuple[float, ...]

    @property
    def bound(self) -> float:
        """The AdamW budget a censored value lies beyond (nan when not censored)."""
        return {">": max(self.adamw_budgets), "<": min(self.adamw_budgets)}.get(self.censored, math.nan)


def _tokens_to_reach(lt: np.ndarray, ll: np.ndarray, target: np.ndarray) -> np.ndarray:
    """First crossing of ln loss = target on the piecewise-linear curve (lt (K,), ll (B, K)): ln tokens (B,),
    +inf past the largest budget, -inf when the smallest budget already does better (nan in, nan out)."""
    hit = ll <= target[:, None]  # (B, K)
    i = np.argmax(hit, axis=1)
    j = np.maximum(i - 1, 0)
    r = np.arange(len(i))
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (target - ll[r, j]) / (ll[r, i] - ll[r, j])  # i = j = 0: nan, replaced below
        out = np.where(i == 0, np.where(ll[:, 0] == target, lt[0], -np.inf), lt[j] + w * (lt[i] - lt[j]))
    out = np.where(hit.any(axis=1), out, np.inf)
    return np.where(np.isnan(ll).any(axis=1) | np.isnan(target), np.nan, out)


def token_multiplier(muon: Mapping[float, Losses], adamw: Mapping[float, Losses], n_boot: int = N_BOOT,
                     seed: int = BOOT_SEED, level: float = 0.95) -> list[Multiplier]:
    """Per Muon budget T ({tokens: {seed: final loss}}), the AdamW tokens needed to reach Muon's mean final loss,
    read off AdamW's tuned final-loss-vs-budget curve ({tokens: {seed: final loss}}, >= 2 budgets): ln loss is
    piecewise linear in ln tokens between measured budgets (a power law between neighbours), first crossing.
    Past the largest (or before the smallest) AdamW budget the result is censored, never extrapolated. Interval:
    every (optimizer, budget) cell's seeds resampled independently with replacement."""
    if len(adamw) < 2:
        raise ValueError(f"token_multiplier needs AdamW at >= 2 budgets, got {sorted(adamw)}")
    for who, g in (("muon", muon), ("adamw", adamw)):
        bad = [t for t, ls in g.items() if not (t > 0) or not ls or any(not (0 < v < math.inf) for v in ls.values())]
        if bad:
            raise ValueError(f"token_multiplier: {who} budgets {bad} need positive tokens and positive finite losses")
    rng = np.random.default_rng(seed)
    ta, ya = _table(adamw)
    lt = np.log(ta)
    ll = np.log(np.nanmean(ya, axis=1))[None, :]  # (1, K)
    n_adamw = int((~np.isnan(ya)).sum(axis=1).min())  # fewest seeds in an AdamW budget
    ll_b = np.log(np.stack([_boot_means(row[None, ~np.isnan(row)], rng, n_boot)[:, 0] for row in ya], axis=1))
    out = []
    for t in sorted(muon):
        y = np.array([list(muon[t].values())], dtype=float)  # (1, S)
        target = float(np.mean(y))
        point = float(_tokens_to_reach(lt, ll, np.array([math.log(target)]))[0])
        boot = _tokens_to_reach(lt, ll_b, np.log(_boot_means(y, rng, n_boot)[:, 0])) - math.log(t)
        lo, hi = _percentile(boot, level, min(y.shape[1], n_adamw))
        cens = ">" if point == math.inf else "<" if point == -math.inf else ""
        tok = math.exp(point) if not cens else math.nan
        out.append(Multiplier(float(t), target, tok, tok / t, math.exp(lo), math.exp(hi), level, cens,
                              tuple(float(x) for x in ta)))
    return out


# ----------------------------------------------------------------------------------------------------------------
# markdown formatting

def fmt_lr(f: LrFit, digits: int = 3) -> str:
    """'0.0213 [0.0171, 0.0265] (95%)', with the fit's caveat appended when it has one."""
    spec = f".{digits}g"
    s = "n/a" if not f.convex else f"{_num(f.lr, spec)} [{_num(f.lo, spec)}, {_num(f.hi, spec)}] ({fmt_level(f.level)})"
    return f"{s}; {f.note}" if f.note else s


def fmt_exponent(e: Exponent, digits: int = 2) -> str:
    """'-0.48 [-0.61, -0.35] (95%)'."""
    return fmt_ci(e.k, e.lo, e.hi, e.level, digits)


def fmt_ratio(r: LrRatio, digits: int = 2) -> str:
    """'2.03x [1.71, 2.40] (95%)' (lr*_a / lr*_b)."""
    spec = f".{digits}f"
    return f"{_num(r.ratio, spec)}x [{_num(r.lo, spec)}, {_num(r.hi, spec)}] ({fmt_level(r.level)})"


def fmt_tokens(t: float) -> str:
    """1.6e6 -> '1.6M', 2e5 -> '200k', 950 -> '950'."""
    for unit, v in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if t >= v:
            return f"{t / v:.3g}{unit}"
    return f"{t:.3g}"


def fmt_multiplier(m: Multiplier, digits: int = 2) -> str:
    """'1.62x [1.41, 1.90] (95%)'; censored: '> 1.6M tokens (> 2.00x)'; an unbounded interval end reads as the
    measured range's bound, e.g. '[1.41, > 2.00]'."""
    top, bottom = max(m.adamw_budgets) / m.budget, min(m.adamw_budgets) / m.budget
    if m.censored:
        b = m.bound / m.budget
        return f"{m.censored} {fmt_tokens(m.bound)} tokens ({m.censored} {b:.{digits}f}x)"
    end = lambda x: f"> {top:.{digits}f}" if x == math.inf else f"< {bottom:.{digits}f}" if x == 0 else \
        f"{x:.{digits}f}"
    return f"{m.ratio:.{digits}f}x [{end(m.lo)}, {end(m.hi)}] ({fmt_level(m.level)})"
