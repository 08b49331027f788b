"""lab.stats against independent references: scipy on known data, float64 re-derivations (numerical integration of
the t-test's power, np.polyfit, np.interp), and simulations of size, power and coverage."""
import math

import numpy as np
import pytest
from scipy import integrate, stats

from lab import stats as S
from lab.stats import DELTA, Family, Paired, holm, interaction, judge, paired, tost, verdict

B = {0: 2.00, 1: 2.05, 2: 1.98, 3: 2.06, 9: 1.0}  # seeds differ a lot; seed 9 has no partner: left out
A = {0: 1.97, 1: 2.021, 2: 1.948, 3: 2.032}     # each about 0.03 below its own seed's baseline


def arm(d) -> Paired:
    """A Paired whose per-seed differences are d (baseline 0)."""
    return paired({s: float(x) for s, x in enumerate(d)}, {s: 0.0 for s in range(len(d))})


def power_by_integration(effect, sd, n, alpha=0.05):
    """Power of the two-sided one-sample t-test, integrated over the chi-square of the variance (no nct)."""
    df, nc = n - 1, effect / sd * math.sqrt(n)
    tc = stats.t.ppf(1 - alpha / 2, df)
    f = lambda v: (stats.norm.sf(tc * math.sqrt(v / df) - nc) + stats.norm.cdf(-tc * math.sqrt(v / df) - nc)) \
        * stats.chi2.pdf(v, df)
    return integrate.quad(f, 0, np.inf, epsabs=1e-12, epsrel=1e-10, limit=200)[0]


# ---- paired differences --------------------------------------------------------------------------------------

def test_paired_matches_scipy():
    c = paired(A, B)
    a, b = np.array([A[s] for s in range(4)]), np.array([B[s] for s in range(4)])
    d = a - b
    assert c.seeds == [0, 1, 2, 3] and c.d == pytest.approx(tuple(d))
    assert c.delta == pytest.approx(d.mean()) and c.sd == pytest.approx(d.std(ddof=1))
    ref = stats.ttest_rel(a, b)
    assert c.p == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval(0.95)  # scipy's own t-interval of the mean difference
    assert (c.lo, c.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert c.interval(0.90) == pytest.approx(ref.confidence_interval(0.90))
    assert power_by_integration(c.mde, c.sd, 4) == pytest.approx(0.8, abs=1e-7)  # MDE: 80% power, exactly
    assert c.fmt() == f"{d.mean():+.4f} ± {(hi - lo) / 2:.4f}"
    # a seed shifts both arms alike: the paired test sees the effect, Welch's unpaired test drowns it in seed noise
    assert c.p < stats.ttest_ind(a, b, equal_var=False).pvalue


def test_paired_edge_cases():
    one = paired({0: 1.0}, {0: 1.5})
    assert one.n == 1 and one.delta == -0.5 and math.isnan(one.lo) and math.isnan(one.p) and "1 seed" in one.fmt()
    assert math.isnan(one.sd) and one.interval(0.9) == (pytest.approx(math.nan, nan_ok=True),) * 2
    assert paired({0: 1.0}, {1: 1.0}).fmt() == "n/a"
    same = paired({0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.5})  # identical differences: a CI of zero width, scipy's p
    assert same.delta == 0.5 and same.lo == same.hi == 0.5 and same.mde == 0.0
    np.testing.assert_equal(same.p, stats.ttest_rel([1.0, 2.0], [0.5, 1.5]).pvalue)
    assert math.isnan(paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}).p)  # no difference at all: no test
    assert paired({0: float("nan"), 1: 1.0}, {0: 1.0, 1: 1.0}).seeds == [1]


@pytest.mark.parametrize("n", [2, 3, 6, 12])
def test_mde_is_the_noncentral_t_power_point(n):
    """MDE: the effect with 80% power, checked by integrating the t statistic's law without scipy's nct; it sits
    above the old normal-style (t + t) approximation, which under-states it at few seeds."""
    sd = 0.013
    m = S.mde(sd, n)
    assert power_by_integration(m, sd, n) == pytest.approx(0.8, abs=1e-6)
    assert S.power(m, sd, n) == pytest.approx(0.8, abs=1e-9)
    assert m > (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n) * 0.999
    assert math.isnan(S.mde(sd, 1)) and S.mde(0.0, 5) == 0.0


def test_mde_power_by_simulation():
    rng = np.random.default_rng(0)
    n, sd = 6, 0.01
    x = rng.normal(S.mde(sd, n), sd, (20000, n))
    rejected = (stats.ttest_1samp(x, 0.0, axis=1).pvalue < 0.05).mean()
    assert rejected == pytest.approx(0.8, abs=0.01)  # binomial se 0.003


def test_interaction_is_the_paired_difference_of_differences():
    rng = np.random.default_rng(1)
    a, b, c, d = ({s: 2 + 0.1 * rng.standard_normal() for s in range(7)} for _ in range(4))
    del a[6]            # seed 6 is missing from one arm: left out
    c[5] = math.nan     # seed 5 is not finite in one arm: left out
    i = interaction(a, b, c, d)
    x = np.array([(a[s] - b[s]) - (c[s] - d[s]) for s in range(5)])  # float64 re-derivation
    ref = stats.ttest_1samp(x, 0.0)
    assert i.seeds == [0, 1, 2, 3, 4] and i.delta == pytest.approx(x.mean())
    assert i.p == pytest.approx(ref.pvalue) and (i.lo, i.hi) == pytest.approx(ref.confidence_interval(0.95))


# ---- Holm, TOST and the four verdicts --------------------------------------------------------------------------

def test_holm_against_a_hand_computation():
    ps = [0.01, 0.04, 0.03, float("nan"), 0.5]
    # sorted: 0.01 (x4) 0.03 (x3) 0.04 (x2) 0.5 (x1), monotone
    assert holm(ps)[:3] == pytest.approx([0.04, 0.09, 0.09]) and math.isnan(holm(ps)[3])
    assert holm(ps)[4] == pytest.approx(0.5)
    assert holm([0.2]) == [0.2] and holm([]) == []
    assert holm([0.6, 0.6]) == [1.0, 1.0]


def test_verdict():
    c = paired(A, B)
    assert verdict(c, c.p) == "wins" and verdict(paired(B, A), c.p) == "loses"
    assert verdict(c, 0.2) == "no significant difference"
    assert verdict(paired({0: 1.0}, {0: 2.0}), 0.0) == "not enough seeds"


@pytest.mark.parametrize("d", [[0.001, -0.002, 0.003, 0.0005, -0.001, 0.002],   # inside: equivalent
                               [0.006, 0.012, 0.004, 0.009, 0.011, 0.007],      # straddles +δ
                               [-0.03, 0.02, 0.01, -0.015, 0.025, 0.0]])        # wide
def test_tost_is_two_one_sided_scipy_tests(d):
    c = arm(d)
    p, lo, hi = tost(c)
    x = np.array(d)
    p_lower = stats.ttest_1samp(x, -DELTA, alternative="greater").pvalue  # H0: Δ <= -δ
    p_upper = stats.ttest_1samp(x, DELTA, alternative="less").pvalue      # H0: Δ >= +δ
    assert p == pytest.approx(max(p_lower, p_upper))
    assert (lo, hi) == pytest.approx(stats.ttest_1samp(x, 0.0).confidence_interval(0.90))
    assert (p < 0.05) == (-DELTA < lo and hi < DELTA)  # TOST at 5% <=> the 90% interval inside ±δ


def test_tost_size_at_the_equivalence_bound_by_simulation():
    """With the true Δ on the bound +δ, TOST declares equivalence at most 5% of the time (here ~5%)."""
    rng = np.random.default_rng(2)
    n, sims = 6, 4000
    x = rng.normal(DELTA, 0.004, (sims, n))
    hits = sum(tost(Paired(list(range(n)), float(r.mean()), 0, 0, 0, 0, tuple(r)))[0] < 0.05 for r in x)
    assert 0.04 < hits / sims < 0.06  # binomial se 0.0035


def test_tost_with_identical_differences():
    assert tost(arm([0.003, 0.003, 0.003]))[0] < 1e-12 and tost(arm([0.02, 0.02]))[0] == pytest.approx(1.0)
    assert tost(arm([0.5, 0.5]))[0] == 1.0  # exactly zero spread: t = ±inf
    assert all(math.isnan(x) for x in tost(arm([0.003])))


def test_family_against_a_hand_computation():
    d = {"worse": np.array([0.031, 0.027, 0.034, 0.029, 0.025, 0.033]),         # clearly worse
         "better": np.array([-0.021, -0.014, -0.026, -0.019, -0.023, -0.017]),  # clearly better
         "null, small spread": np.array([0.001, -0.002, 0.0025, 0.0005, -0.001, 0.002]),
         "null, large spread": np.array([0.03, -0.025, 0.01, -0.02, 0.028, -0.018])}
    fam = Family(tuple(d))
    js = fam.judge({k: arm(v) for k, v in d.items()})
    assert [j.name for j in js] == list(d)  # declared order
    p = [stats.ttest_1samp(v, 0.0).pvalue for v in d.values()]
    pt = [max(stats.ttest_1samp(v, -DELTA, alternative="greater").pvalue,
              stats.ttest_1samp(v, DELTA, alternative="less").pvalue) for v in d.values()]

    def by_hand(ps):  # Holm: sort, multiply by m, m-1, ..., running max, cap at 1
        order, out, run = np.argsort(ps), [0.0] * len(ps), 0.0
        for r, i in enumerate(order):
            run = max(run, min(1.0, (len(ps) - r) * ps[i]))
            out[i] = run
        return out
    assert [j.p for j in js] == pytest.approx(p) and [j.p_tost for j in js] == pytest.approx(pt)
    assert [j.p_holm for j in js] == pytest.approx(by_hand(p))
    assert [j.p_tost_holm for j in js] == pytest.approx(by_hand(pt))
    assert [j.verdict for j in js] == ["worse", "better", "equivalent", "inconclusive"]

    w, b, eq, inc = js
    # better / worse: the 95% interval, which excludes 0; equivalent: the 90% interval, inside ±δ
    assert w.interval == pytest.approx((*stats.ttest_1samp(d["worse"], 0).confidence_interval(0.95), 0.95))
    assert w.lo_v > 0 and b.hi_v < 0 and not w.within_delta
    assert eq.level == pytest.approx(0.90) and -DELTA < eq.lo_v < eq.hi_v < DELTA
    assert (eq.lo_v, eq.hi_v) == pytest.approx(stats.ttest_1samp(d["null, small spread"], 0).confidence_interval(0.9))
    # inconclusive: the large-spread null is neither; the seeds that would fit it inside ±δ at Holm's strictest
    # level (alpha/m) with the observed spread, and one fewer would not
    assert inc.lo_v < 0 < inc.hi_v and inc.needed.goal == "inside ±δ" and inc.needed.n > 6
    n, sd, dl = inc.needed.n, inc.c.sd, abs(inc.delta)
    t = lambda k: stats.t.ppf(1 - 0.05 / 4, k - 1) * sd / math.sqrt(k)
    assert dl + t(n) < DELTA <= dl + t(n - 1)
    assert all(math.isnan(j.needed.n) for j in (w, b, eq))


def test_inconclusive_never_sits_beside_an_interval_that_excludes_zero():
    """The lazy-projection case: raw p 0.005, Holm p >= 0.05 in a family of weak comparisons. The raw 95% interval
    excludes 0; the interval returned with 'inconclusive' is at the Holm-matched level and includes 0."""
    rng = np.random.default_rng(4)
    lazy = np.array([-0.0086, -0.0060, -0.0112])  # p ~ 0.03 on 3 seeds
    others = [0.03 * rng.standard_normal(3) + 0.01 for _ in range(14)]
    js = judge([("lazy", arm(lazy))] + [(f"other {i}", arm(o)) for i, o in enumerate(others)])
    j = js[0]
    assert j.p < 0.05 and j.c.hi < 0 and j.p_holm >= 0.05  # the raw 95% interval excludes 0
    assert j.verdict == "inconclusive" and j.lo_v < 0 < j.hi_v
    assert j.level == pytest.approx(1 - 0.05 * j.p / j.p_holm)
    assert (j.lo_v, j.hi_v) == pytest.approx(stats.ttest_1samp(lazy, 0).confidence_interval(j.level))
    # the same numbers judged alone are a finding: better, with the 95% interval (its 90% interval reaches past -δ,
    # so it is not also within ±δ)
    alone = judge([("lazy", arm(lazy))])[0]
    assert alone.verdict == "better" and alone.level == 0.95 and not alone.within_delta


def test_a_real_effect_smaller_than_delta_is_better_and_flagged():
    j = judge([("tiny", arm([-0.004, -0.0042, -0.0038, -0.0041, -0.0039, -0.004]))])[0]
    assert j.verdict == "better" and j.within_delta and "|Δ| < 0.01" in j.row()["verdict"]


def test_equivalence_is_declared_for_a_small_spread_null_and_not_a_large_one():
    """Simulated nulls (true Δ = 0) on 6 seeds: sd 0.002 is equivalent nearly always, sd 0.03 essentially never
    (and a null is almost never called better / worse)."""
    rng = np.random.default_rng(5)
    small = [judge([("x", arm(rng.normal(0, 0.002, 6)))])[0].verdict for _ in range(200)]
    large = [judge([("x", arm(rng.normal(0, 0.03, 6)))])[0].verdict for _ in range(200)]
    assert small.count("equivalent") / 200 > 0.95
    assert large.count("equivalent") / 200 < 0.02
    assert (large.count("better") + large.count("worse")) / 200 < 0.1  # size 5% (binomial se 0.015)


def test_family_declares_its_size():
    """A declared comparison without data still counts in Holm (p = 1): the family never shrinks after the fact."""
    c = paired(A, B)
    js = Family(("a", "b", "c")).judge({"a": c})
    assert js[0].p_holm == pytest.approx(min(1.0, 3 * c.p))
    assert [j.verdict for j in js[1:]] == ["inconclusive"] * 2 and js[1].row()["Δ [interval]"] == "not measured"
    with pytest.raises(ValueError, match="not declared.*'zz'"):
        Family(("a",)).judge({"zz": c})
    with pytest.raises(ValueError, match="repeated"):
        Family(("a", "a"))
    with pytest.raises(ValueError, match="at least one"):
        Family(())


def test_seeds_needed_to_exclude_zero_has_80_percent_power():
    n, goal = S.seeds_needed(0.02, 0.03)  # |Δ| > δ: equivalence impossible, only a difference can resolve it
    assert goal == "exclude 0"
    assert power_by_integration(0.02, 0.03, int(n)) >= 0.8 > power_by_integration(0.02, 0.03, int(n) - 1)
    rng = np.random.default_rng(6)  # and by simulation
    x = rng.normal(0.02, 0.03, (20000, int(n)))
    assert (stats.ttest_1samp(x, 0.0, axis=1).pvalue < 0.05).mean() == pytest.approx(0.8, abs=0.02)
    assert S.seeds_needed(0.0, 0.5) == (math.inf, "")
    assert S.seeds_needed(0.01, 0.0) == (2, "exclude 0") and math.isnan(S.seeds_needed(0.01, math.nan).n)


# ---- optimal lr and its exponent -------------------------------------------------------------------------------

LR0 = 0.02
LRS = LR0 * np.sqrt(2.0) ** np.arange(-3, 4)  # √2 spacing around the optimum, 7 points


def bowl(rng, lrs=LRS, lr0=LR0, seeds=6, noise=0.004, curv=0.05):
    """Final loss = 1.5 + curv (ln lr/lr0)^2 + a per-seed offset + noise."""
    off = 0.02 * rng.standard_normal(seeds)
    return {float(lr): {s: 1.5 + curv * math.log(lr / lr0) ** 2 + off[s] + noise * rng.standard_normal()
                        for s in range(seeds)} for lr in lrs}


def test_lr_opt_recovers_a_known_vertex():
    g = bowl(np.random.default_rng(7))
    f = S.lr_opt(g)
    means = [np.mean(list(g[lr].values())) for lr in sorted(g)]
    a, b, _ = np.polyfit(np.log(sorted(g)), means, 2)  # float64 re-derivation
    assert f.lr == pytest.approx(math.exp(-b / (2 * a)), rel=1e-9) and f.coef[:2] == pytest.approx((a, b))
    assert f.convex and f.inside and not f.note and f.boot_valid == 1.0
    assert f.lo < LR0 < f.hi and f.lr == pytest.approx(LR0, rel=0.1)
    again = S.lr_opt(g)  # fixed RNG seed: reproducible
    assert again == f and np.array_equal(again.boot, f.boot)


def test_lr_opt_bootstrap_coverage_by_simulation():
    """Coverage of the nominal 95% interval over 150 synthetic 6-seed grids (the plain percentile interval gives
    ~88% here; the expanded one ~94%)."""
    rng = np.random.default_rng(8)
    cover = [(f.lo < LR0 < f.hi) for f in (S.lr_opt(bowl(rng, noise=0.01), n_boot=1000, seed=i) for i in range(150))]
    assert np.mean(cover) >= 0.88


def test_lr_opt_says_when_the_fit_has_no_interior_optimum():
    rng = np.random.default_rng(9)
    edge = S.lr_opt(bowl(rng, lrs=LRS[:4], lr0=LR0 * 4))  # the optimum lies past the grid's top: a caveat, printed
    assert not (edge.convex and edge.inside) and edge.note and S.fmt_lr(edge).endswith(edge.note)
    cap = {lr: {s: 2.0 - 0.05 * math.log(lr / LR0) ** 2 for s in range(3)} for lr in LRS}  # concave
    f = S.lr_opt(cap)
    assert not f.convex and math.isnan(f.lr) and "not convex" in f.note and S.fmt_lr(f).startswith("n/a; not convex")
    out = S.lr_opt({lr: {s: 1.5 + 0.05 * math.log(lr / 0.2) ** 2 for s in range(3)} for lr in LRS})
    assert out.convex and not out.inside and out.lr == pytest.approx(0.2) and "extend the grid" in out.note


def test_lr_opt_inputs():
    g = bowl(np.random.default_rng(10))
    g[float(LRS[-1])][2] = math.nan  # a diverged seed at the top lr: that grid point is left out and listed
    f = S.lr_opt(g)
    assert f.dropped == (float(LRS[-1]),) and len(f.grid) == 6
    with pytest.raises(ValueError, match=">= 3 grid lrs"):
        S.lr_opt({0.01: {0: 1.0}, 0.02: {0: 0.9}})
    with pytest.raises(ValueError, match="positive"):
        S.lr_opt({-0.01: {0: 1.0}, 0.02: {0: 0.9}, 0.04: {0: 1.0}})


def test_lr_exponent_recovers_a_known_k():
    k, budgets = -0.5, [1e5, 2e5, 4e5, 8e5]
    exact = {T: {float(lr): {s: 1.5 + 0.05 * math.log(lr / (LR0 * (T / 1e5) ** k)) ** 2 + 0.01 * s
                             for s in range(4)} for lr in LR0 * (T / 1e5) ** k * np.sqrt(2) ** np.arange(-2, 3)}
             for T in budgets}
    e = S.lr_exponent(exact)
    assert e.k == pytest.approx(k, abs=1e-9) and e.lo == pytest.approx(k) and e.hi == pytest.approx(k)
    rng = np.random.default_rng(11)
    noisy = {T: bowl(rng, lrs=LR0 * (T / 1e5) ** k * np.sqrt(2) ** np.arange(-3, 4), lr0=LR0 * (T / 1e5) ** k,
                     noise=0.01) for T in budgets}
    e = S.lr_exponent(noisy)
    lrs = [f.lr for f in e.fits]
    assert e.k == pytest.approx(np.polyfit(np.log(budgets), np.log(lrs), 1)[0])  # float64 re-derivation
    assert e.lo < k < e.hi and e.hi - e.lo < 0.2 and e.boot_valid > 0.99
    assert e.xs == tuple(budgets) and (S.K_LR_T, S.K_HYPERP) == (-1.0, -0.32)
    with pytest.raises(ValueError, match=">= 2 positive"):
        S.lr_exponent({1e5: exact[1e5]})


def test_lr_ratio_recovers_a_known_ratio():
    rng = np.random.default_rng(14)
    exact = S.lr_ratio(bowl(rng, lrs=2 * LRS, lr0=2 * LR0, noise=0), bowl(rng, noise=0))
    assert exact.ratio == pytest.approx(2.0, rel=1e-9)  # seed offsets cancel in the means' vertex: exact
    r = S.lr_ratio(bowl(rng, lrs=2 * LRS, lr0=2 * LR0, noise=0.01), bowl(rng, noise=0.01))
    assert r.ratio == pytest.approx(r.a.lr / r.b.lr) and r.lo < 2.0 < r.hi
    v = r.verdict()
    assert v.verdict == "higher" and v.level == 0.95 and (math.exp(v.lo), math.exp(v.hi)) == pytest.approx((r.lo, r.hi))
    same = S.lr_ratio(bowl(rng, noise=0.002), bowl(rng, noise=0.002))
    eq = same.verdict()  # within one √2 grid step, at the 90% level
    assert eq.verdict == "equivalent" and eq.level == pytest.approx(0.9)
    assert -math.log(math.sqrt(2)) < eq.lo < 0 < eq.hi < math.log(math.sqrt(2))
    assert S.fmt_ratio(r) == f"{r.ratio:.2f}x [{r.lo:.2f}, {r.hi:.2f}] (95%)"


def test_lr_ratio_equivalence_size_at_the_bound_by_simulation():
    """True ratio √2, exactly the bound: 'equivalent' at most ~5% of the time (the bootstrap analogue of TOST)."""
    rng = np.random.default_rng(15)
    v = [S.lr_ratio(bowl(rng, lrs=math.sqrt(2) * LRS, lr0=math.sqrt(2) * LR0, noise=0.01), bowl(rng, noise=0.01),
                    n_boot=1000, seed=i).verdict().verdict for i in range(150)]
    assert v.count("equivalent") / 150 <= 0.08  # binomial se 0.018 at 5%


def test_boot_verdict_against_known_replicates():
    boot = stats.norm.ppf((np.arange(4000) + 0.5) / 4000, loc=0.3, scale=0.1)  # replicates of a N(0.3, 0.1)
    lvl = lambda n: 1 - 2 * stats.norm.sf(math.sqrt(n / (n - 1)) * stats.t.ppf(0.975, n - 1))  # expanded 95%
    v = S.boot_verdict(0.3, boot, 6, bound=0.5)
    assert v.verdict == "higher" and v.lo == pytest.approx(0.3 + 0.1 * stats.norm.ppf((1 - lvl(6)) / 2), abs=1e-3)
    assert S.boot_verdict(0.3, boot, 6, bound=0.5, ref=0.7).verdict == "lower"
    eq = S.boot_verdict(0.3, boot, 6, bound=0.7, ref=0.3)
    assert eq.verdict == "equivalent" and eq.level == pytest.approx(0.9)
    assert S.boot_verdict(0.3, boot, 6, bound=0.1, ref=0.3).verdict == "inconclusive"
    with pytest.raises(ValueError, match="positive equivalence bound"):
        S.boot_verdict(0.3, boot, 6, bound=0.0)


def test_exponent_verdicts_transfer_and_reference():
    """Width transfer: k = 0 is equivalent within the bound 'lr* moves less than √2 across the widths'."""
    rng = np.random.default_rng(16)
    widths = [64, 128, 256]
    flat = S.lr_exponent({w: bowl(rng, noise=0.0) for w in widths})
    assert flat.transfer_bound == pytest.approx(math.log(math.sqrt(2)) / math.log(4))
    assert flat.k == pytest.approx(0, abs=1e-9) and flat.verdict().verdict == "equivalent"
    v = [S.lr_exponent({w: bowl(rng, noise=0.002) for w in widths}, n_boot=1000, seed=i).verdict().verdict
         for i in range(100)]  # true k = 0: equivalent nearly always, a difference about 5% of the time
    assert v.count("equivalent") >= 88 and v.count("higher") + v.count("lower") <= 10
    falls = S.lr_exponent({w: bowl(rng, lrs=LRS * (w / 64) ** -1, lr0=LR0 * (w / 64) ** -1, noise=0.002)
                           for w in widths})
    assert falls.verdict().verdict == "lower" and falls.verdict(ref=S.K_LR_T, bound=0.2).verdict == "equivalent"


# ---- token multiplier ------------------------------------------------------------------------------------------

ADAMW_T = [2e5, 4e5, 8e5, 1.6e6]
LOSS = lambda t: 2.0 * (t / 1e5) ** -0.1  # AdamW's final loss vs tokens: a power law


def test_token_multiplier_recovers_a_known_multiplier_and_refuses_to_extrapolate():
    adamw = {t: {s: LOSS(t) for s in range(6)} for t in ADAMW_T}
    muon = {t: {s: LOSS(1.6 * t) for s in range(6)} for t in [1e5, 2e5, 5e5, 8e5, 1.6e6]}
    ms = S.token_multiplier(muon, adamw)
    assert [m.budget for m in ms] == [1e5, 2e5, 5e5, 8e5, 1.6e6]
    # 1e5 x 1.6 = 160k is below AdamW's smallest budget; 1.6M x 1.6 is past its largest: both censored
    assert ms[0].censored == "<" and ms[0].bound == 2e5 and math.isnan(ms[0].ratio)
    assert ms[-1].censored == ">" and ms[-1].bound == 1.6e6 and math.isnan(ms[-1].tokens)
    assert S.fmt_multiplier(ms[-1]) == "> 1.6M tokens (> 1.00x)"
    assert S.fmt_multiplier(ms[0]) == "< 200k tokens (< 2.00x)"
    for m in ms[1:-1]:  # a power law is exactly piecewise linear in log-log: the multiplier comes back exactly
        assert m.ratio == pytest.approx(1.6, rel=1e-9) and m.tokens == pytest.approx(1.6 * m.budget, rel=1e-9)
        assert m.lo == pytest.approx(1.6) and m.hi == pytest.approx(1.6)


def test_token_multiplier_interpolates_like_np_interp_in_log_log():
    curve = {2e5: 1.9, 4e5: 1.75, 8e5: 1.66, 1.6e6: 1.62}  # curved in log-log
    ms = S.token_multiplier({5e5: {0: 1.70, 1: 1.72}, 1e6: {0: 1.63}},
                            {t: {0: v - 0.01, 1: v + 0.01} for t, v in curve.items()})
    lt, ll = np.log(list(curve)), np.log(list(curve.values()))
    for m in ms:
        ref = math.exp(np.interp(math.log(m.target), ll[::-1], lt[::-1]))  # float64 re-derivation (monotone curve)
        assert m.tokens == pytest.approx(ref, rel=1e-12) and m.ratio == pytest.approx(ref / m.budget)


def test_token_multiplier_bootstrap_covers_the_truth():
    rng = np.random.default_rng(12)
    hits = []
    for i in range(60):
        adamw = {t: {s: LOSS(t) + 0.01 * rng.standard_normal() for s in range(6)} for t in ADAMW_T}
        muon = {4e5: {s: LOSS(1.6 * 4e5) + 0.01 * rng.standard_normal() for s in range(6)}}
        m = S.token_multiplier(muon, adamw, n_boot=1000, seed=i)[0]
        hits.append(m.lo < 1.6 < m.hi)
    assert np.mean(hits) >= 0.88


def test_token_multiplier_first_crossing_and_inputs():
    # a noisy non-monotone curve: the first budget at which AdamW reaches the target counts
    ms = S.token_multiplier({1e5: {0: 1.70}}, {1e5: {0: 1.8}, 2e5: {0: 1.65}, 4e5: {0: 1.72}, 8e5: {0: 1.6}})
    assert 1e5 < ms[0].tokens < 2e5
    with pytest.raises(ValueError, match=">= 2 budgets"):
        S.token_multiplier({1e5: {0: 1.7}}, {1e5: {0: 1.8}})
    with pytest.raises(ValueError, match="positive finite losses"):
        S.token_multiplier({1e5: {0: math.nan}}, {1e5: {0: 1.8}, 2e5: {0: 1.7}})


# ---- markdown ---------------------------------------------------------------------------------------------------

def test_formatting():
    assert S.fmt_ci(-0.0092, -0.0151, -0.0033, 0.95) == "-0.0092 [-0.0151, -0.0033] (95%)"
    assert S.fmt_ci(0.5, 0.25, math.inf, None, 2, signed=False) == "0.50 [0.25, ∞]"
    assert S.fmt_level(1 - 0.05 * 0.005 / 0.071) == "99.6%" and S.fmt_level(0.9) == "90%"
    assert [S.fmt_tokens(t) for t in (1.6e6, 2e5, 950, 1.28e6)] == ["1.6M", "200k", "950", "1.28M"]
    assert S.fmt_seeds_needed(S.SeedsNeeded(14, "exclude 0")) == "~14 (to exclude 0)"
    assert S.fmt_seeds_needed(S.SeedsNeeded(9, "inside ±δ")) == "~9 (to fit inside ±δ)"
    assert S.fmt_seeds_needed(S.SeedsNeeded(math.inf, "")) == "> 1000"
    assert S.fmt_seeds_needed(S.SeedsNeeded(math.nan, "")) == ""
    j = judge([("Muon vs AdamW", paired(A, B))])[0]
    lo, hi = stats.ttest_rel([A[s] for s in range(4)], [B[s] for s in range(4)]).confidence_interval(0.95)
    assert S.fmt_judgement(j) == S.fmt_paired(j.c) == f"{j.delta:+.4f} [{lo:+.4f}, {hi:+.4f}] (95%)"
    assert S.fmt_paired(paired({0: 1.0}, {0: 1.5})) == "-0.5000 (1 seed, no interval)"
    assert list(j.row()) == ["comparison", "seeds", "Δ [interval]", "p", "Holm p", "TOST p", "Holm TOST p", "MDE",
                             "verdict", "seeds to resolve"]
    f = S.lr_opt(bowl(np.random.default_rng(13)))
    assert S.fmt_lr(f) == f"{f.lr:.3g} [{f.lo:.3g}, {f.hi:.3g}] (95%)"
    e = S.Exponent(-0.48, -0.61, -0.35, 0.95, (), (), 1.0)
    assert S.fmt_exponent(e) == "-0.48 [-0.61, -0.35] (95%)"
    m = S.Multiplier(4e5, 1.7, 6.4e5, 1.6, 1.41, math.inf, 0.95, "", tuple(ADAMW_T))
    assert S.fmt_multiplier(m) == "1.60x [1.41, > 4.00] (95%)"
