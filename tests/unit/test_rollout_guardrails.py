"""The canary's guardrail decision (batch/rollout/guardrails.py) on hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from batch.experiments.stats import RatioEstimate
from batch.rollout.guardrails import ArmHealth, evaluate, worse_test
from shared.config import RolloutConfig

CFG = RolloutConfig(min_requests=100, min_users=50, alpha=0.01)


def arm(name: str, requests: int = 1000, errors: int = 0, fallbacks: int = 0,
        p99: float | None = 40.0, users: int = 500) -> ArmHealth:  # fmt: skip
    return ArmHealth(name, users, requests, errors, fallbacks, p99)


def estimate(value: float, variance: float) -> RatioEstimate:
    return RatioEstimate(value, variance, 500, value * 5000, 5000)


def test_error_and_fallback_rates_breach_on_their_absolute_increase() -> None:
    # control 10/1000 errors = 1 %, 50/1000 fallbacks = 5 %; canary 8/400 = 2 %, 30/400 = 7.5 %
    v = evaluate(arm("control", errors=10, fallbacks=50), arm("canary", 400, 8, 30), None, None, CFG)
    assert v.breaches == [
        "error rate 2.00% vs control 1.00% (+1.00% > max +0.50%)",
        "fallback rate 7.50% vs control 5.00% (+2.50% > max +2.00%)",
    ]
    assert v.values["error_rate"] == {"control": 0.01, "canary": 0.02}
    assert v.values["fallback_rate"] == {"control": 0.05, "canary": 0.075}
    # +0.4 pp errors and +2.0 pp fallbacks: at the limits, not above them
    ok = evaluate(arm("control", errors=10, fallbacks=50), arm("canary", 500, 7, 35), None, None, CFG)
    assert ok.breaches == []


def test_p99_breaches_above_its_ratio_only_beyond_the_slack() -> None:
    v = evaluate(arm("control", p99=40.0), arm("canary", p99=70.0), None, None, CFG)
    assert v.breaches == ["p99 latency 70.0 ms vs control 40.0 ms (x1.75 > max x1.5)"]
    assert v.values["p99_ratio"] == pytest.approx(1.75)
    # x2.25, but 5 ms apart: within the 20 ms slack, a tail of noise
    assert evaluate(arm("control", p99=4.0), arm("canary", p99=9.0), None, None, CFG).breaches == []
    assert evaluate(arm("control", p99=40.0), arm("canary", p99=60.0), None, None, CFG).breaches == []


def test_too_few_requests_or_users_wait_instead_of_judging() -> None:
    v = evaluate(arm("control", 1000), arm("canary", 99, errors=99, fallbacks=99, users=40),
                 None, None, CFG)  # fmt: skip
    assert v.breaches == [] and not v.complete
    assert v.waiting == [
        "error/fallback rate and p99 wait for 100 requests per arm (control 1000, canary 99)",
        "CTR and play rate wait for 50 users per arm (control 500, canary 40)",
    ]


def test_the_one_sided_test_on_hand_computed_numbers() -> None:
    # 0.07 vs 0.10, each se 0.01: z = -0.03 / sqrt(2e-4) = -2.1213, P(Z <= z) = 0.016947
    t = worse_test("ctr", estimate(0.07, 1e-4), estimate(0.10, 1e-4))
    assert t.z == pytest.approx(-2.121320, abs=1e-6)
    assert t.p_value == pytest.approx(0.016947, abs=1e-6)
    assert t.lift == pytest.approx(-0.3)
    tests = {"ctr": t}
    assert evaluate(arm("control"), arm("canary"), tests, 0.5, CFG).breaches == []  # 0.017 > 0.01
    loose = CFG.model_copy(update={"alpha": 0.05})
    v = evaluate(arm("control"), arm("canary"), tests, 0.5, loose)
    assert v.breaches == ["CTR 0.0700 vs control 0.1000 (lift -30.0%, one-sided p = 0.017 < alpha 0.05)"]
    assert v.complete and v.values["ctr"]["p_value"] == pytest.approx(0.016947, abs=1e-6)
    # A better canary is never a breach, however significant: one-sided.
    better = worse_test("ctr", estimate(0.20, 1e-4), estimate(0.10, 1e-4))
    assert better.p_value == pytest.approx(1.0, abs=1e-12)
    assert evaluate(arm("control"), arm("canary"), {"ctr": better}, 0.5, loose).breaches == []


def test_a_sample_ratio_mismatch_breaches() -> None:
    v = evaluate(arm("control", users=600), arm("canary", users=400), None, 1e-4, CFG)
    assert v.breaches == ["sample ratio mismatch: users control 600, canary 400 against the "
                          "declared shares (chi-square p = 0.0001 < 0.001)"]  # fmt: skip
    assert evaluate(arm("control"), arm("canary"), None, 0.01, CFG).breaches == []
    assert evaluate(arm("control"), arm("canary"), None, math.nan, CFG).breaches == []
