"""Inference for the lab's comparisons: paired tests, a declared Holm family with four verdicts, lr laws, speedups.

Arms that share a seed are paired (a seed fixes the init and the batch order). Lower loss is better, so Δ < 0 means
the treatment wins.

    paired(treatment, baseline)       mean Δ over shared seeds, 95% t-interval, paired t-test p, MDE (noncentral t)
    interaction(a, b, c, d)           per seed (a - b) - (c - d), as a Paired
    holm(ps)                          Holm-Bonferroni adjusted p-values
    tost(c)                           two one-sided tests of |Δ| < DELTA: (p, 90% interval)
    mde(sd, n), seeds_needed(...)     power of the paired t-test from scipy.stats.nct
    Family(names).judge(results)      better / worse / equivalent / inconclusive per declared comparison
    fmt_*, Judgement.row()            markdown-table strings, e.g. "-0.0092 [-0.0151, -0.0033] (95%)"
    lr_opt, lr_exponent, lr_ratio, token_multiplier   the bootstrap fits of lr laws and speedups: lab/fits.py

Tests check each against scipy on known data, a float64 re-derivation, or a simulation (tests/test_stats.py).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


# the fits live in lab/fits.py; their names stay importable from here (reports and campaigns import lab.stats)
from lab.fits import (  # noqa: E402, F401
    BootVerdict,
    Exponent,
    LrFit,
    LrRatio,
    Multiplier,
    boot_verdict,
    fmt_exponent,
    fmt_lr,
    fmt_multiplier,
    fmt_ratio,
    fmt_tokens,
    lr_exponent,
    lr_opt,
    lr_ratio,
    token_multiplier,
)
