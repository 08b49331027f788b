"""lab.stats against scipy.stats on known data: paired t-interval and p, minimum detectable effect, Holm."""
import math

import numpy as np
import pytest
from scipy import stats

from lab.stats import holm, paired, verdict

B = {0: 2.00, 1: 2.05, 2: 1.98, 3: 2.06, 9: 1.0}  # seeds differ a lot; seed 9 has no partner: left out
A = {0: 1.97, 1: 2.021, 2: 1.948, 3: 2.032}     # each about 0.03 below its own seed's baseline


def test_paired_matches_scipy():
    c = paired(A, B)
    a, b = np.array([A[s] for s in range(4)]), np.array([B[s] for s in range(4)])
    d = a - b
    assert c.seeds == [0, 1, 2, 3]
    assert c.delta == pytest.approx(d.mean())
    ref = stats.ttest_rel(a, b)
    assert c.p == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval(0.95)  # scipy's own t-interval of the mean difference
    assert (c.lo, c.hi) == (pytest.approx(lo), pytest.approx(hi))
    sd = d.std(ddof=1)
    assert c.mde == pytest.approx((stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)) * sd / 2)
    assert c.fmt() == f"{d.mean():+.4f} ± {(hi - lo) / 2:.4f}"
    # a seed shifts both arms alike: the paired test sees the effect, Welch's unpaired test drowns it in seed noise
    assert c.p < stats.ttest_ind(a, b, equal_var=False).pvalue


def test_paired_edge_cases():
    one = paired({0: 1.0}, {0: 1.5})
    assert one.n == 1 and one.delta == -0.5 and math.isnan(one.lo) and math.isnan(one.p) and "1 seed" in one.fmt()
    assert paired({0: 1.0}, {1: 1.0}).fmt() == "n/a"
    same = paired({0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.5})  # identical differences: a CI of zero width, scipy's p
    assert same.delta == 0.5 and same.lo == same.hi == 0.5
    np.testing.assert_equal(same.p, stats.ttest_rel([1.0, 2.0], [0.5, 1.5]).pvalue)
    assert math.isnan(paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}).p)  # no difference at all: no test
    assert paired({0: float("nan"), 1: 1.0}, {0: 1.0, 1: 1.0}).seeds == [1]


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
