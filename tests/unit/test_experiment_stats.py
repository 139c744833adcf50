"""The experiment statistics are right in the numbers: exact small cases, coverage of the
delta-method intervals on data with a known truth, p-values uniform under the null, the SRM
check and the power calculation against statsmodels and the textbook formula."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower

from batch.experiments.stats import (
    RatioEstimate,
    analyse,
    compare,
    detectable_effect,
    guardrails,
    ratio_estimate,
    sample_size_per_arm,
    srm_check,
)

# Users whose click propensity differs (Beta(0.5, 9.5), mean 0.05) and who see very
# different numbers of items: one user's exposures are far from independent trials.
A, B = 0.5, 9.5
TRUE_RATE = A / (A + B)


def clustered_users(rng: np.random.Generator, n: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    exposures = 1 + rng.poisson(rng.gamma(0.8, 25.0, n))
    clicks = rng.binomial(exposures, np.minimum(rng.beta(A, B, n) * scale, 1.0))
    return clicks, exposures


def test_delta_variance_matches_the_hand_computed_case() -> None:
    # clicks [1, 0, 3] over exposures [2, 2, 4]: R = 0.5, s_y^2 = 7/3, s_x^2 = 4/3,
    # s_xy = 5/3, linearised variance 7/3 - 2*0.5*5/3 + 0.25*4/3 = 1, / (3 * (8/3)^2).
    est = ratio_estimate(np.array([1, 0, 3]), np.array([2, 2, 4]))
    assert est.value == pytest.approx(0.5)
    assert est.variance == pytest.approx(9 / 192)
    assert est.user_sd == pytest.approx(math.sqrt(9 / 64))
    lo, hi = est.ci
    assert (lo + hi) / 2 == pytest.approx(0.5)
    assert hi - lo == pytest.approx(2 * 1.959964 * math.sqrt(9 / 192), rel=1e-5)


def test_degenerate_inputs_give_nan_variance_not_a_crash() -> None:
    assert math.isnan(ratio_estimate(np.array([1]), np.array([3])).variance)
    assert math.isnan(ratio_estimate(np.array([0, 0]), np.array([0, 0])).value)
    # Every user with the same ratio: no variance at all.
    assert ratio_estimate(np.array([1, 2, 3]), np.array([10, 20, 30])).variance == pytest.approx(0.0)


def test_ratio_ci_covers_the_truth_95_percent_and_the_per_exposure_ci_does_not() -> None:
    rng = np.random.default_rng(2026)
    reps, covered, naive_covered = 500, 0, 0
    for _ in range(reps):
        clicks, exposures = clustered_users(rng, 1000)
        est = ratio_estimate(clicks, exposures)
        lo, hi = est.ci
        covered += lo <= TRUE_RATE <= hi
        # The wrong unit: every exposure an independent Bernoulli trial.
        r, total = clicks.sum() / exposures.sum(), exposures.sum()
        half = 1.96 * math.sqrt(r * (1 - r) / total)
        naive_covered += r - half <= TRUE_RATE <= r + half
    assert sps.binomtest(covered, reps, 0.95).pvalue > 0.001, covered
    assert 0.92 <= covered / reps <= 0.98
    # Clustering of ~20 exposures per user with ICC ~0.09 inflates the variance ~2.5x.
    assert naive_covered / reps < 0.85, naive_covered


def test_lift_ci_covers_a_known_lift() -> None:
    rng = np.random.default_rng(7)
    reps, covered = 500, 0
    for _ in range(reps):
        c = ratio_estimate(*clustered_users(rng, 1500))
        t = ratio_estimate(*clustered_users(rng, 1500, scale=1.2))
        lo, hi = compare(t, c).lift_ci
        covered += lo <= 0.2 <= hi
    assert sps.binomtest(covered, reps, 0.95).pvalue > 0.001, covered


def per_user_frame(rng: np.random.Generator, n: int, treatment_scale: float = 1.0) -> pd.DataFrame:
    arm = np.where(rng.random(n) < 0.5, "control", "treatment")
    scale = np.where(arm == "treatment", treatment_scale, 1.0)
    exposures = 1 + rng.poisson(rng.gamma(0.8, 25.0, n))
    p = np.minimum(rng.beta(A, B, n) * scale, 1.0)
    clicks = rng.binomial(exposures, p)
    plays = rng.binomial(clicks, 0.6)
    return pd.DataFrame({"user": np.arange(n), "arm": arm, "exposures": exposures,
                         "clicks": clicks, "plays": plays})  # fmt: skip


def test_p_values_are_uniform_under_the_null() -> None:
    shares = {"control": 0.5, "treatment": 0.5}
    p_values = []
    for seed in range(300):
        result = analyse(per_user_frame(np.random.default_rng(seed), 2000), shares, "control")
        p_values.append(result.arm("treatment").vs_control["ctr"].p_value)  # type: ignore[index]
    ks = sps.kstest(p_values, "uniform")
    assert ks.pvalue > 0.001, ks
    share = np.mean(np.array(p_values) < 0.05)
    assert sps.binomtest(int(share * 300), 300, 0.05).pvalue > 0.001, share


def test_a_real_effect_gives_small_p_values_and_the_right_sign() -> None:
    result = analyse(per_user_frame(np.random.default_rng(1), 20_000, 1.3),
                     {"control": 1, "treatment": 1}, "control")  # fmt: skip
    ctr = result.arm("treatment").vs_control["ctr"]  # type: ignore[index]
    assert ctr.p_value < 1e-6
    assert ctr.lift_ci[0] < 0.3 < ctr.lift_ci[1]
    assert ctr.difference > 0


def test_srm_flags_52_48_at_20k_users_and_not_50_50() -> None:
    shares = {"control": 50, "treatment": 50}  # percent: normalised
    skewed = srm_check({"control": 10_400, "treatment": 9_600}, shares)
    assert skewed.flagged
    # chi2 = 2 * 400^2 / 10000 = 32 on 1 df
    assert skewed.statistic == pytest.approx(32.0)
    assert skewed.p_value == pytest.approx(float(sps.chi2.sf(32.0, 1)))
    even = srm_check({"control": 10_000, "treatment": 10_000}, shares)
    assert not even.flagged and even.p_value == pytest.approx(1.0)
    # A hashed 50/50 split of 20k users (binomial noise only) is not flagged either.
    hashed = np.random.default_rng(3).random(20_000) < 0.5
    fair = srm_check({"control": int(hashed.sum()), "treatment": int((~hashed).sum())}, shares)
    assert not fair.flagged
    # Declared 52/48 and observed 52/48: no mismatch.
    assert not srm_check({"a": 10_400, "b": 9_600}, {"a": 0.52, "b": 0.48}).flagged


def test_srm_refuses_an_arm_that_was_never_declared() -> None:
    with pytest.raises(ValueError, match="no declared share"):
        srm_check({"control": 10, "rogue": 3}, {"control": 0.5, "treatment": 0.5})


def test_sample_size_matches_statsmodels_and_the_textbook_formula() -> None:
    # A control CTR of 0.10 with a per-user sd of 0.10: a 20% relative MDE is d = 0.2.
    control = RatioEstimate(value=0.10, variance=0.10**2 / 100, users=100, numerator=0, denominator=0)
    n = sample_size_per_arm(control, 0.20, power=0.8, alpha=0.05)
    textbook = 2 * (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) ** 2 / 0.2**2  # 392.4
    assert n == pytest.approx(textbook, rel=1e-3)
    assert n == pytest.approx(NormalIndPower().solve_power(0.2, power=0.8, alpha=0.05))
    assert 392 < n < 393
    # Unequal arms: the control needs (1 + 1/ratio)/2 of the equal-split size.
    n2 = sample_size_per_arm(control, 0.20, ratio=2.0)
    assert n2 == pytest.approx(textbook * 0.75, rel=1e-3)
    # And the inverse: 392.4 users detect 20%.
    assert detectable_effect(control, round(textbook)) == pytest.approx(0.20, rel=2e-3)


def test_analyse_counts_and_compares_per_arm() -> None:
    frame = pd.DataFrame({
        "user": ["u1", "u2", "u3", "u4"], "arm": ["A", "A", "B", "B"],
        "exposures": [10, 10, 10, 30], "clicks": [1, 3, 0, 4], "plays": [1, 1, 0, 2],
    })  # fmt: skip
    result = analyse(frame, {"A": 0.5, "B": 0.5}, "A")
    a, b = result.arm("A"), result.arm("B")
    assert (a.users, a.exposures, a.clicks, a.plays) == (2, 20, 4, 2)
    assert b.metrics["ctr"].value == pytest.approx(4 / 40)
    assert b.metrics["play_rate"].value == pytest.approx(2 / 40)
    assert b.vs_control is not None and a.vs_control is None
    assert b.vs_control["ctr"].lift == pytest.approx((4 / 40) / (4 / 20) - 1)
    assert result.srm.observed == {"A": 2, "B": 2}
    with pytest.raises(ValueError, match="more than one row"):
        analyse(pd.concat([frame, frame.iloc[:1]]), {"A": 1, "B": 1}, "A")


def test_guardrails_summarise_latency_fallbacks_and_coverage() -> None:
    g = guardrails(np.arange(1, 101, dtype=float), np.array([True] * 5 + [False] * 95),
                   distinct_items=40, catalogue_size=200)  # fmt: skip
    assert g.requests == 100
    assert g.p99_latency_ms == pytest.approx(99.01)
    assert g.fallback_rate == pytest.approx(0.05)
    assert g.coverage == pytest.approx(0.2)
    empty = guardrails()
    assert empty.p99_latency_ms is None and empty.fallback_rate is None and empty.coverage is None
