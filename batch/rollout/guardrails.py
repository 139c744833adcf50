"""The canary's guardrails: is the canary arm worse than control? Pure functions of
per-arm counts and estimates, so the decision is tested on hand-computed numbers.

Operational guardrails (judged once each arm has `min_requests` requests):

* error rate: share of requests answered after a model error (a fallback reason naming an
  error); the canary may exceed control by `max_error_rate_increase` (absolute).
* fallback rate: share of requests answered by any fallback; `max_fallback_rate_increase`.
* p99 latency: canary / control at most `max_p99_ratio`, unless within `p99_slack_ms`.

Product guardrails (once each arm has `min_users` users): CTR and play rate must not be
significantly worse, by a one-sided z test of the delta-method ratio estimates
(batch/experiments/stats.py) at `alpha`: p = P(Z <= z), z = (canary - control) / se. One
sided because a canary better than control is no reason to stop it. A sample-ratio mismatch
(users per arm against the declared shares) breaches too: a canary whose requests go
missing from the log (crashes) would otherwise look like a healthy small arm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scipy import stats as sps

from batch.experiments.stats import SRM_ALPHA, RatioEstimate, compare
from shared.config import RolloutConfig

METRICS = ("ctr", "play_rate")
# Rates are ratios of counts: 35/500 - 50/1000 is 0.020000000000000004, and a canary exactly
# at its limit must not breach it.
_EPS = 1e-12


@dataclass(frozen=True)
class ArmHealth:
    """One arm's served requests, from served_requests joined to its assignments."""

    arm: str
    users: int
    requests: int
    errors: int
    fallbacks: int
    p99_latency_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else math.nan

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.requests if self.requests else math.nan


@dataclass(frozen=True)
class MetricTest:
    """Canary vs control on one ratio metric, one-sided toward 'canary worse'."""

    metric: str
    control: float
    canary: float
    lift: float
    z: float
    p_value: float  # P(Z <= z): small when the canary is lower


def worse_test(metric: str, canary: RatioEstimate, control: RatioEstimate) -> MetricTest:
    c = compare(canary, control)
    p = float(sps.norm.cdf(c.z)) if not math.isnan(c.z) else math.nan
    return MetricTest(metric, control.value, canary.value, c.lift, c.z, p)


@dataclass(frozen=True)
class Verdict:
    breaches: list[str]  # one sentence each: the metric, both values, the limit (or p-value)
    waiting: list[str]  # guardrails not judged yet, and why
    values: dict[str, Any] = field(default_factory=dict)  # every measured number

    @property
    def breached(self) -> bool:
        return bool(self.breaches)

    @property
    def complete(self) -> bool:
        """Every guardrail was judged (enough requests and users): a promotion may follow."""
        return not self.waiting


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def evaluate(control: ArmHealth, canary: ArmHealth, tests: dict[str, MetricTest] | None,
             srm_p_value: float | None, cfg: RolloutConfig) -> Verdict:  # fmt: skip
    """The breaches of the canary against control under `cfg`. `tests`: the metric tests
    (None when the arms have no exposures to test yet)."""
    breaches: list[str] = []
    waiting: list[str] = []
    values: dict[str, Any] = {
        "users": {control.arm: control.users, canary.arm: canary.users},
        "requests": {control.arm: control.requests, canary.arm: canary.requests},
        "error_rate": {control.arm: control.error_rate, canary.arm: canary.error_rate},
        "fallback_rate": {control.arm: control.fallback_rate, canary.arm: canary.fallback_rate},
        "p99_latency_ms": {control.arm: control.p99_latency_ms, canary.arm: canary.p99_latency_ms},
        "srm_p_value": srm_p_value,
    }
    fewest = min(control.requests, canary.requests)
    if fewest < cfg.min_requests:
        waiting.append(f"error/fallback rate and p99 wait for {cfg.min_requests} requests per "
                       f"arm (control {control.requests}, canary {canary.requests})")  # fmt: skip
    else:
        rise = canary.error_rate - control.error_rate
        if rise > cfg.max_error_rate_increase + _EPS:
            breaches.append(f"error rate {_pct(canary.error_rate)} vs control "
                            f"{_pct(control.error_rate)} (+{_pct(rise)} > "
                            f"max +{_pct(cfg.max_error_rate_increase)})")  # fmt: skip
        rise = canary.fallback_rate - control.fallback_rate
        if rise > cfg.max_fallback_rate_increase + _EPS:
            breaches.append(f"fallback rate {_pct(canary.fallback_rate)} vs control "
                            f"{_pct(control.fallback_rate)} (+{_pct(rise)} > "
                            f"max +{_pct(cfg.max_fallback_rate_increase)})")  # fmt: skip
        c99, k99 = control.p99_latency_ms, canary.p99_latency_ms
        if c99 is not None and k99 is not None and c99 > 0:
            ratio = k99 / c99
            values["p99_ratio"] = ratio
            if ratio > cfg.max_p99_ratio + _EPS and k99 - c99 > cfg.p99_slack_ms:
                breaches.append(f"p99 latency {k99:.1f} ms vs control {c99:.1f} ms (x{ratio:.2f} "
                                f"> max x{cfg.max_p99_ratio:g})")  # fmt: skip
    if srm_p_value is not None and not math.isnan(srm_p_value) and srm_p_value < SRM_ALPHA:
        breaches.append(f"sample ratio mismatch: users control {control.users}, canary "
                        f"{canary.users} against the declared shares (chi-square p = "
                        f"{srm_p_value:.2g} < {SRM_ALPHA:g})")  # fmt: skip
    fewest_users = min(control.users, canary.users)
    if fewest_users < cfg.min_users or not tests:
        waiting.append(f"CTR and play rate wait for {cfg.min_users} users per arm "
                       f"(control {control.users}, canary {canary.users})")  # fmt: skip
    else:
        for name in METRICS:
            t = tests.get(name)
            if t is None:
                continue
            values[name] = {"control": t.control, "canary": t.canary, "lift": t.lift,
                            "z": t.z, "p_value": t.p_value}  # fmt: skip
            if not math.isnan(t.p_value) and t.p_value < cfg.alpha:
                label = "CTR" if name == "ctr" else "play rate"
                breaches.append(f"{label} {t.canary:.4f} vs control {t.control:.4f} "
                                f"(lift {100 * t.lift:+.1f}%, one-sided p = {t.p_value:.2g} "
                                f"< alpha {cfg.alpha:g})")  # fmt: skip
    return Verdict(breaches, waiting, values)
