"""Paired comparisons of arms that share seeds (a seed fixes the init and the batch order, so arms are paired).

    paired(treatment, baseline)   mean Δ = treatment - baseline over shared seeds, 95% t-interval, paired t-test p,
                                  minimum detectable effect at the seeds run
    holm(ps)                      Holm-Bonferroni adjusted p-values over a family of comparisons (one report)

All from scipy.stats; the tests check them against scipy on known data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05  # two-sided level of every interval and test
POWER = 0.8   # power at which the minimum detectable effect is quoted


@dataclass
class Paired:
    """treatment - baseline over the seeds both arms finished; lower (negative) Δ = the treatment wins."""
    seeds: list[int]
    delta: float          # mean of the per-seed differences (nan without seeds)
    lo: float             # 95% t-interval of the mean difference (nan below 2 seeds)
    hi: float
    p: float              # paired t-test p (nan below 2 seeds or with identical differences)
    mde: float            # the |Δ| this many seeds would detect with 80% power at 5% (nan below 2 seeds)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2

    def fmt(self, digits: int = 4) -> str:
        """'-0.0850 ± 0.0123' (Δ ± half-width of the 95% CI)."""
        if self.n == 0:
            return "n/a"
        if math.isnan(self.half):
            return f"{self.delta:+.{digits}f} (1 seed)"
        return f"{self.delta:+.{digits}f} ± {self.half:.{digits}f}"


def paired(treatment: dict[int, float], baseline: dict[int, float]) -> Paired:
    """Compare two arms on the seeds they share ({seed: final val loss}; missing or non-finite values dropped)."""
    seeds = sorted(s for s in treatment.keys() & baseline.keys()
                   if math.isfinite(treatment[s]) and math.isfinite(baseline[s]))
    d = np.array([treatment[s] - baseline[s] for s in seeds], dtype=float)
    nan = math.nan
    if len(d) == 0:
        return Paired(seeds, nan, nan, nan, nan, nan)
    if len(d) == 1:
        return Paired(seeds, float(d[0]), nan, nan, nan, nan)
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    t_crit = stats.t.ppf(1 - ALPHA / 2, n - 1)
    half = t_crit * sd / math.sqrt(n)
    p = float(stats.ttest_rel([treatment[s] for s in seeds], [baseline[s] for s in seeds]).pvalue)
    # normal-style approximation for the paired t-test: (t_{1-a/2} + t_{power}) sd / sqrt(n)
    mde = (t_crit + stats.t.ppf(POWER, n - 1)) * sd / math.sqrt(n)
    return Paired(seeds, mean, mean - half, mean + half, p, mde)


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
