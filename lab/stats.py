"""Inference for the lab's comparisons: paired tests, a declared Holm family with four verdicts, lr laws, speedups.

Arms that share a seed are paired (a seed fixes the init and the batch order). Lower loss is better, so Δ < 0 means
the treatment wins.

    paired(treatment, baseline)       mean Δ over shared seeds, 95% t-interval, paired t-test p, MDE (noncentral t)
    interaction(a, b, c, d)           per seed (a - b) - (c - d), as a Paired
    holm(ps)                          Holm-Bonferroni adjusted p-values
    tost(c)                           two one-sided tests of |Δ| < DELTA: (p, 90% interval)
    mde(sd, n), seeds_needed(...)     power of the paired t-test from scipy.stats.nct
    Family(names).judge(results)      better / worse / equivalent / inconclusive per declared comparison
    lr_opt(grid)                      optimal lr from a quadratic in log lr, bootstrap interval over seeds
    lr_exponent(grids)                k in lr* ∝ x^k (x = tokens or width), bootstrap interval
    lr_ratio(a, b)                    lr*_a / lr*_b of two grids, bootstrap interval
    boot_verdict(...), .verdict()     four-way verdict from a bootstrap interval and an equivalence bound
    token_multiplier(muon, adamw)     AdamW tokens to reach Muon's final loss / Muon's tokens, bootstrap interval
    fmt_*, Judgement.row()            markdown-table strings, e.g. "-0.0092 [-0.0151, -0.0033] (95%)"

Tests check each against scipy on known data, a float64 re-derivation, or a simulation (tests/test_stats.py).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05       # two-sided level of every difference test (TOST: each one-sided test at ALPHA, a 90% interval)
POWER = 0.8        # power at which minimum detectable effects and seeds-to-resolve are quoted
DELTA = 0.01       # nats: the smallest effect of interest (about the run-to-run floor at the cpu preset)
SEEDS_CAP = 1000   # seeds_needed beyond this is reported as unreachable (inf)
N_BOOT = 4000      # bootstrap replicates
BOOT_SEED = 0      # fixed RNG seed: a report re-renders byte-identical
K_LR_T = -1.0      # lr* ∝ T^-1: lr x steps constant
K_HYPERP = -0.32   # published for Muon on a Frobenius sphere (HyperP, arXiv 2603.28743), in steps

Losses = Mapping[int, float]       # {seed: final val loss}
Grid = Mapping[float, Losses]      # {lr: {seed: final val loss}}


# ----------------------------------------------------------------------------------------------------------------
# paired differences

@dataclass
class Paired:
    """treatment - baseline over the seeds both arms finished; lower (negative) Δ = the treatment wins."""
    seeds: list[int]
    delta: float          # mean of the per-seed differences (nan without seeds)
    lo: float             # 95% t-interval of the mean difference (nan below 2 seeds)
    hi: float
    p: float              # paired t-test p (nan below 2 seeds or with identical differences)
    mde: float            # the |Δ| this many seeds would detect with 80% power at 5% (noncentral t; nan below 2)
    d: tuple[float, ...] = ()  # the per-seed differences, in seed order

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2

    @property
    def sd(self) -> float:
        return float(np.std(self.d, ddof=1)) if self.n >= 2 else math.nan

    def interval(self, level: float) -> tuple[float, float]:
        """Two-sided t-interval of the mean difference at `level` (e.g. 0.90)."""
        if self.n < 2:
            return math.nan, math.nan
        half = float(stats.t.ppf(0.5 + level / 2, self.n - 1)) * self.sd / math.sqrt(self.n)
        return self.delta - half, self.delta + half

    def fmt(self, digits: int = 4) -> str:
        """'-0.0850 ± 0.0123' (Δ ± half-width of the 95% CI)."""
        if self.n == 0:
            return "n/a"
        if math.isnan(self.half):
            return f"{self.delta:+.{digits}f} (1 seed)"
        return f"{self.delta:+.{digits}f} ± {self.half:.{digits}f}"


def paired(treatment: Losses, baseline: Losses) -> Paired:
    """Compare two arms on the seeds they share ({seed: final val loss}; missing or non-finite values dropped)."""
    seeds = sorted(s for s in treatment.keys() & baseline.keys()
                   if math.isfinite(treatment[s]) and math.isfinite(baseline[s]))
    d = np.array([treatment[s] - baseline[s] for s in seeds], dtype=float)
    nan = math.nan
    if len(d) == 0:
        return Paired(seeds, nan, nan, nan, nan, nan)
    if len(d) == 1:
        return Paired(seeds, float(d[0]), nan, nan, nan, nan, (float(d[0]),))
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
    p = float(stats.ttest_rel([treatment[s] for s in seeds], [baseline[s] for s in seeds]).pvalue)
    return Paired(seeds, mean, mean - half, mean + half, p, mde(sd, n), tuple(float(x) for x in d))


def interaction(a: Losses, b: Losses, c: Losses, d: Losses) -> Paired:
    """Per seed (a - b) - (c - d) on the seeds all four share, e.g. (Muon@k - Muon@1) - (AdamW@k - AdamW@1)."""
    seeds = [s for s in a.keys() & b.keys() & c.keys() & d.keys()
             if all(math.isfinite(x[s]) for x in (a, b, c, d))]
    return paired({s: a[s] - b[s] for s in seeds}, {s: c[s] - d[s] for s in seeds})


def holm(ps: list[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values (same order as `ps`; nan stays nan and is not counted)."""
    idx = [i for i, p in enumerate(ps) if p is not None and not math.isnan(p)]
    m, out, running = len(idx), [math.nan] * len(ps), 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: ps[i])):
        running = max(running, min(1.0, (m - rank) * ps[i]))  # monotone: never below an earlier adjusted p
        out[i] = running
    return out


def verdict(c: Paired, p_adj: float) -> str:
    """'wins' | 'loses' (the treatment, lower loss is better) | 'no significant difference' | 'not enough seeds'."""
    if c.n < 2:
        return "not enough seeds"
    if math.isnan(p_adj) or p_adj >= ALPHA:
        return "no significant difference"
    return "wins" if c.delta < 0 else "loses"


def tost(c: Paired, delta: float = DELTA, alpha: float = ALPHA) -> tuple[float, float, float]:
    """Two one-sided t-tests of -delta < Δ < delta: (p = the larger one-sided p, lo, hi of the (1 - 2 alpha)
    interval). p < alpha exactly when that interval lies inside (-delta, delta). nan below 2 seeds."""
    if c.n < 2:
        return math.nan, math.nan, math.nan
    df, se = c.n - 1, c.sd / math.sqrt(c.n)
    with np.errstate(divide="ignore", invalid="ignore"):  # se = 0 (identical differences): t = ±inf, p = 0 or 1
        t_lo, t_hi = np.divide(c.delta + delta, se), np.divide(c.delta - delta, se)
    p = max(float(stats.t.sf(t_lo, df)), float(stats.t.cdf(t_hi, df)))
    return (p, *c.interval(1 - 2 * alpha))


# ----------------------------------------------------------------------------------------------------------------
# power of the paired t-test (noncentral t)

def power(effect: float, sd: float, n: int | np.ndarray, alpha: float = ALPHA) -> float | np.ndarray:
    """Power of the two-sided paired t-test at level alpha to detect a true mean difference `effect` with n seeds."""
    n = np.asarray(n, dtype=float)
    df, nc = n - 1, abs(effect) / sd * np.sqrt(n)
    tc = stats.t.ppf(1 - alpha / 2, df)
    # far in the lower tail scipy's nct.cdf can return nan for a probability that underflows: it is 0 there
    return stats.nct.sf(tc, df, nc) + np.nan_to_num(stats.nct.cdf(-tc, df, nc), nan=0.0)


def mde(sd: float, n: int, alpha: float = ALPHA, pwr: float = POWER) -> float:
    """Minimum detectable effect: the |Δ| the two-sided paired t-test at alpha detects with power `pwr` at n seeds."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    f = lambda es: power(es, 1.0, n, alpha) - pwr  # es: the effect in units of sd
    hi = 2 * (stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(pwr, n - 1)) / math.sqrt(n)  # twice the normal-style
    while f(hi) < 0:
        hi *= 2
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-14) * sd)


def _first(ok, cap: int) -> float:
    """Smallest n in [2, cap] with ok(n), for ok monotone in n (bisection); inf when even cap fails."""
    if not ok(cap):
        return math.inf
    lo, hi = 1, cap  # ok(hi), not ok(lo) (n = 1 never resolves anything)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return float(hi)


class SeedsNeeded(NamedTuple):
    n: float    # total seeds (inf: more than SEEDS_CAP; nan: spread unknown)
    goal: str   # "exclude 0" | "inside ±δ" | "" (none reachable / spread unknown)


def seeds_needed(delta_obs: float, sd: float, delta: float = DELTA, alpha: float = ALPHA, pwr: float = POWER,
                 cap: int = SEEDS_CAP) -> SeedsNeeded:
    """Total seeds at which, with the observed mean difference and spread taken as true, either the two-sided paired
    t-test at alpha excludes 0 with power `pwr` ("exclude 0", noncentral t), or the expected (1 - 2 alpha) interval
    |Δ| + t_{1-alpha} sd/√n fits inside ±delta ("inside ±δ"); the smaller of the two."""
    if not (math.isfinite(delta_obs) and math.isfinite(sd)):
        return SeedsNeeded(math.nan, "")
    if sd == 0:
        return SeedsNeeded(2, "exclude 0" if delta_obs != 0 else "inside ±δ")
    n_diff = _first(lambda n: power(delta_obs, sd, n, alpha) >= pwr, cap) if delta_obs != 0 else math.inf
    n_eq = _first(lambda n: abs(delta_obs) + stats.t.ppf(1 - alpha, n - 1) * sd / math.sqrt(n) < delta, cap)
    if math.isinf(n_diff) and math.isinf(n_eq):
        return SeedsNeeded(math.inf, "")
    return SeedsNeeded(n_diff, "exclude 0") if n_diff <= n_eq else SeedsNeeded(n_eq, "inside ±δ")


# ----------------------------------------------------------------------------------------------------------------
# the declared confirmatory family and its four verdicts

VERDICTS = ("better", "worse", "equivalent", "inconclusive")


@dataclass
class Judgement:
    """One declared comparison judged within its family (Δ = treatment - baseline, lower loss = better)."""
    name: str
    c: Paired
    p: float              # paired t-test p (nan: untestable, counted as 1 in Holm)
    p_holm: float         # Holm-adjusted over the family
    p_tost: float         # two one-sided tests of |Δ| < delta
    p_tost_holm: float    # Holm-adjusted over the family
    lo90: float           # the TOST (90%) interval
    hi90: float
    verdict: str          # better | worse | equivalent | inconclusive
    lo_v: float           # the interval at the level the verdict uses: 95% (better / worse), 90% (equivalent),
    hi_v: float           #   Holm-matched 1 - alpha p/p_holm (inconclusive: it includes 0 exactly when Holm p >= alpha)
    level: float
    within_delta: bool    # better / worse, yet also equivalent within ±delta (a real but smaller-than-δ effect)
    needed: SeedsNeeded   # inconclusive: total seeds that would resolve it (at Holm's strictest level alpha/m)
    delta_bound: float = DELTA

    @property
    def delta(self) -> float:
        return self.c.delta

    @property
    def n(self) -> int:
        return self.c.n

    @property
    def interval(self) -> tuple[float, float, float]:
        """(lo, hi, level) at the level the verdict uses."""
        return self.lo_v, self.hi_v, self.level

    def row(self, digits: int = 4) -> dict:
        """One markdown-table row (DataFrame.to_markdown): every number of the judgement, formatted."""
        fp = lambda p: "n/a" if math.isnan(p) else f"{p:.2g}"
        v = self.verdict + (f" (|Δ| < {self.delta_bound:g})" if self.within_delta else "")
        return {"comparison": self.name, "seeds": self.n, "Δ [interval]": fmt_judgement(self, digits),
                "p": fp(self.p), "Holm p": fp(self.p_holm), "TOST p": fp(self.p_tost),
                "Holm TOST p": fp(self.p_tost_holm), "MDE": "n/a" if math.isnan(self.c.mde) else
                f"{self.c.mde:.{digits}f}", "verdict": v, "seeds to resolve": fmt_seeds_needed(self.needed)}


@dataclass(frozen=True)
class Family:
    """A confirmatory family declared before the runs: ordered comparison names. Holm runs over this family only,
    and its size never shrinks: a declared comparison without data (or without a defined p) counts as p = 1."""
    names: tuple[str, ...]
    delta: float = DELTA
    alpha: float = ALPHA

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))
        if not self.names:
            raise ValueError("a Family needs at least one declared comparison name")
        dup = sorted({x for x in self.names if self.names.count(x) > 1})
        if dup:
            raise ValueError(f"Family names must be unique; repeated: {dup}")
        if not (self.delta > 0 and 0 < self.alpha < 0.5):
            raise ValueError(f"Family needs delta > 0 and 0 < alpha < 0.5, got delta={self.delta}, alpha={self.alpha}")

    def judge(self, results: Mapping[str, Paired]) -> list[Judgement]:
        """Judge every declared comparison ({name: Paired on confirmation seeds}; a missing name is untested)."""
        extra = [k for k in results if k not in self.names]
        if extra:
            raise ValueError(f"comparisons not declared in the family: {extra}; declared: {list(self.names)}")
        empty = Paired([], math.nan, math.nan, math.nan, math.nan, math.nan)
        cs = [results.get(k, empty) for k in self.names]
        a, m = self.alpha, len(cs)
        p = [c.p if c.n >= 2 else math.nan for c in cs]
        t = [tost(c, self.delta, a) for c in cs]
        one = lambda ps: [1.0 if math.isnan(x) else x for x in ps]
        ph, th = holm(one(p)), holm(one([x[0] for x in t]))
        out = []
        for name, c, p_, ph_, (pt, lo90, hi90), th_ in zip(self.names, cs, p, ph, t, th):
            equiv = c.n >= 2 and th_ < a
            if c.n >= 2 and ph_ < a:
                v, (lo, hi), lvl = ("better" if c.delta < 0 else "worse"), c.interval(1 - a), 1 - a
            elif equiv:
                v, (lo, hi), lvl = "equivalent", (lo90, hi90), 1 - 2 * a
            else:
                # the level whose interval excludes 0 exactly when Holm p < alpha (p nan: 95%)
                v, lvl = "inconclusive", 1 - (a * p_ / ph_ if p_ > 0 else a)
                lo, hi = c.interval(lvl)
            need = SeedsNeeded(math.nan, "")
            if v == "inconclusive" and c.n >= 2:
                need = seeds_needed(c.delta, c.sd, self.delta, a / m)
                need = SeedsNeeded(max(need.n, c.n + 1), need.goal)  # unresolved at n: more than n
            out.append(Judgement(name, c, p_, ph_, pt, th_, lo90, hi90, v, lo, hi, lvl,
                                 v in ("better", "worse") and equiv, need, self.delta))
        return out


def judge(comparisons: Sequence[tuple[str, Paired]], delta: float = DELTA, alpha: float = ALPHA) -> list[Judgement]:
    """Family([names]).judge(dict(comparisons)): the declared, ordered list and its results in one call."""
    return Family(tuple(k for k, _ in comparisons), delta, alpha).judge(dict(comparisons))


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

def fmt_level(level: float) -> str:
    """0.95 -> '95%', 0.9833 -> '98.3%'."""
    return f"{100 * level:.3g}%"


def _num(x: float, spec: str) -> str:
    return "∞" if x == math.inf else "-∞" if x == -math.inf else "n/a" if math.isnan(x) else format(x, spec)


def fmt_ci(est: float, lo: float, hi: float, level: float | None = None, digits: int = 4, signed: bool = True) -> str:
    """'-0.0092 [-0.0151, -0.0033] (95%)' (signed, fixed digits); without level no '(..%)'."""
    spec = f"{'+' if signed else ''}.{digits}f"
    s = f"{_num(est, spec)} [{_num(lo, spec)}, {_num(hi, spec)}]"
    return s + (f" ({fmt_level(level)})" if level is not None else "")


def fmt_paired(c: Paired, digits: int = 4) -> str:
    """An exploratory row (no verdict words): '-0.0092 [-0.0151, -0.0033] (95%)'."""
    if c.n == 0:
        return "not measured"
    if c.n == 1:
        return f"{c.delta:+.{digits}f} (1 seed, no interval)"
    return fmt_ci(c.delta, c.lo, c.hi, 1 - ALPHA, digits)


def fmt_judgement(j: Judgement, digits: int = 4) -> str:
    """Δ with the interval at the level its verdict uses: '-0.0092 [-0.0151, -0.0033] (95%)'."""
    return fmt_ci(j.delta, j.lo_v, j.hi_v, j.level, digits) if j.n >= 2 else fmt_paired(j.c, digits)


def fmt_seeds_needed(s: SeedsNeeded) -> str:
    """'~14 (to exclude 0)' | '~9 (to fit inside ±δ)' | '> 1000' | '' (resolved or spread unknown)."""
    if math.isnan(s.n):
        return ""
    if math.isinf(s.n):
        return f"> {SEEDS_CAP}"
    return f"~{int(s.n)} (to {'exclude 0' if s.goal == 'exclude 0' else 'fit inside ±δ'})"


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
