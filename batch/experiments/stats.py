"""The statistics of an A/B experiment, from per-user aggregates. Pure numpy/scipy/statsmodels.

The unit of randomisation is the user, so the unit of analysis is the user too: CTR is the
ratio of two per-user sums (clicks / exposures), not a mean over exposures. One user's
exposures are correlated (the same tastes, the same list), so counting exposures as
independent trials understates the variance; the delta method on the ratio of per-user
means gives the right one (Deng et al., "Applying the Delta Method in Metric Analytics", 2018).

    Var(R) ~= (s_y^2 - 2 R s_xy + R^2 s_x^2) / (n mean_x^2),   R = sum y / sum x

with the per-user sample (co)variances of the numerator y and denominator x.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower

Z95 = float(sps.norm.ppf(0.975))
# SRM is checked before anything else and must almost never fire by chance: with many
# experiments and daily looks, 0.05 would raise false alarms all the time.
SRM_ALPHA = 1e-3


@dataclass(frozen=True)
class RatioEstimate:
    """sum(numerator) / sum(denominator) over users, with its delta-method variance."""

    value: float
    variance: float
    users: int
    numerator: float
    denominator: float

    @property
    def se(self) -> float:
        return math.sqrt(self.variance) if self.variance >= 0 else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return (self.value - Z95 * self.se, self.value + Z95 * self.se)

    @property
    def user_sd(self) -> float:
        """Standard deviation of one user's linearised contribution: what the power
        calculation needs (variance = user_sd^2 / users)."""
        return math.sqrt(self.variance * self.users) if self.variance >= 0 else math.nan


def ratio_estimate(numerator: np.ndarray, denominator: np.ndarray) -> RatioEstimate:
    y = np.asarray(numerator, dtype=np.float64)
    x = np.asarray(denominator, dtype=np.float64)
    n = len(x)
    total_x, total_y = float(x.sum()), float(y.sum())
    if n < 2 or total_x == 0:
        value = total_y / total_x if total_x else math.nan
        return RatioEstimate(value, math.nan, n, total_y, total_x)
    r = total_y / total_x
    mean_x = total_x / n
    cov = np.cov(y, x, ddof=1)  # [[s_y^2, s_xy], [s_xy, s_x^2]]
    linearised = cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]
    # Rounding can leave a tiny negative number when every user has the same ratio.
    variance = max(float(linearised), 0.0) / (n * mean_x * mean_x)
    return RatioEstimate(r, variance, n, total_y, total_x)


@dataclass(frozen=True)
class Comparison:
    """A treatment arm's metric against the control's: difference, relative lift, p-value."""

    difference: float
    difference_ci: tuple[float, float]
    lift: float  # treatment / control - 1
    lift_ci: tuple[float, float]
    z: float
    p_value: float


def compare(treatment: RatioEstimate, control: RatioEstimate) -> Comparison:
    """z test on the difference of two independent ratio estimates, and the lift's CI by the
    delta method on the ratio of the two: Var(t/c) ~= Var(t)/c^2 + t^2 Var(c)/c^4."""
    t, c = treatment.value, control.value
    diff = t - c
    se_diff = math.sqrt(treatment.variance + control.variance)
    z = diff / se_diff if se_diff > 0 else math.nan
    p = float(2 * sps.norm.sf(abs(z))) if not math.isnan(z) else math.nan
    if c == 0 or math.isnan(c):
        lift, se_lift = math.nan, math.nan
    else:
        lift = t / c - 1
        se_lift = math.sqrt(treatment.variance / c**2 + t**2 * control.variance / c**4)
    return Comparison(
        difference=diff,
        difference_ci=(diff - Z95 * se_diff, diff + Z95 * se_diff),
        lift=lift,
        lift_ci=(lift - Z95 * se_lift, lift + Z95 * se_lift),
        z=z,
        p_value=p,
    )


@dataclass(frozen=True)
class SrmCheck:
    """Sample-ratio mismatch: are the users per arm what the declared shares predict?"""

    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    p_value: float
    flagged: bool


def srm_check(counts: Mapping[str, int], shares: Mapping[str, float],
              alpha: float = SRM_ALPHA) -> SrmCheck:  # fmt: skip
    """Pearson chi-square of the users per arm against the declared shares (normalised, so
    shares may be given as 50/50 or 0.5/0.5). An arm with users but no declared share is an
    assignment bug, not a statistical question: it raises."""
    unknown = sorted(set(counts) - set(shares))
    if unknown:
        raise ValueError(f"arms {unknown} have users but no declared share")
    arms = sorted(shares)
    total_share = float(sum(shares[a] for a in arms))
    observed = np.array([counts.get(a, 0) for a in arms], dtype=np.float64)
    expected = observed.sum() * np.array([shares[a] / total_share for a in arms])
    if observed.sum() == 0 or len(arms) < 2:
        return SrmCheck({a: int(o) for a, o in zip(arms, observed, strict=True)},
                        dict(zip(arms, expected.tolist(), strict=True)), math.nan, math.nan, False)  # fmt: skip
    result = sps.chisquare(observed, expected)
    p = float(result.pvalue)
    return SrmCheck(
        observed={a: int(o) for a, o in zip(arms, observed, strict=True)},
        expected=dict(zip(arms, expected.tolist(), strict=True)),
        statistic=float(result.statistic),
        p_value=p,
        flagged=p < alpha,
    )


def planning_sd(control: RatioEstimate, treatment: RatioEstimate | None = None,
                ratio: float = 1.0) -> float:
    """The per-user sd that NormalIndPower's effect size divides by. Before an experiment
    only the control's is known and both arms are assumed alike. With an observed treatment
    arm, the one sd that gives the z test's own variance, sd_c^2/n + sd_t^2/(ratio n):
    sd^2 = (sd_c^2 + sd_t^2/ratio) / (1 + 1/ratio). (A worse arm with a lower rate has a
    lower variance: the control's alone would overstate the users needed.)"""
    if treatment is None:
        return control.user_sd
    return math.sqrt((control.user_sd**2 + treatment.user_sd**2 / ratio) / (1 + 1 / ratio))


def sample_size_per_arm(control: RatioEstimate, relative_mde: float, power: float = 0.8,
                        alpha: float = 0.05, ratio: float = 1.0,
                        treatment: RatioEstimate | None = None) -> float:  # fmt: skip
    """Users in the control arm to detect a relative change of `relative_mde` with the given
    power (two-sided z test); the treatment arm needs `ratio` times as many. The effect size
    is the absolute change over the per-user standard deviation of the metric (planning_sd)."""
    sd = planning_sd(control, treatment, ratio)
    if not (sd > 0) or relative_mde == 0 or math.isnan(control.value):
        return math.nan
    effect = abs(relative_mde * control.value) / sd
    n = NormalIndPower().solve_power(effect_size=effect, alpha=alpha, power=power,
                                     ratio=ratio, alternative="two-sided")  # fmt: skip
    return float(n)


def detectable_effect(control: RatioEstimate, users_control: int, power: float = 0.8,
                      alpha: float = 0.05, ratio: float = 1.0) -> float:  # fmt: skip
    """The relative change this many users detect with the given power (the inverse of
    sample_size_per_arm): what a null result can still hide."""
    sd = control.user_sd
    if not (sd > 0) or users_control < 2 or not control.value:
        return math.nan
    effect = NormalIndPower().solve_power(effect_size=None, nobs1=users_control, alpha=alpha,
                                          power=power, ratio=ratio, alternative="two-sided")  # fmt: skip
    return float(effect) * sd / abs(control.value)


@dataclass(frozen=True)
class Guardrails:
    """Per-arm health of what was served: none of these is the metric being tested, each can
    veto a launch. A field is None when the input had nothing to compute it from."""

    requests: int
    p99_latency_ms: float | None
    fallback_rate: float | None
    distinct_items: int | None
    coverage: float | None  # distinct items served / catalogue size


def guardrails(latency_ms: np.ndarray | None = None, is_fallback: np.ndarray | None = None,
               distinct_items: int | None = None, catalogue_size: int | None = None,
               requests: int | None = None) -> Guardrails:  # fmt: skip
    lat = None if latency_ms is None else np.asarray(latency_ms, dtype=np.float64)
    lat = None if lat is None else lat[~np.isnan(lat)]
    fb = None if is_fallback is None else np.asarray(is_fallback, dtype=bool)
    n = requests if requests is not None else (len(fb) if fb is not None else (len(lat) if lat is not None else 0))
    return Guardrails(
        requests=int(n),
        p99_latency_ms=float(np.percentile(lat, 99)) if lat is not None and len(lat) else None,
        fallback_rate=float(fb.mean()) if fb is not None and len(fb) else None,
        distinct_items=distinct_items,
        coverage=(distinct_items / catalogue_size
                  if distinct_items is not None and catalogue_size else None),  # fmt: skip
    )


# ---- one experiment, from its per-user table -------------------------------------------

# metric -> (numerator, denominator) columns of the per-user table.
METRICS: dict[str, tuple[str, str]] = {"ctr": ("clicks", "exposures"),
                                       "play_rate": ("plays", "exposures")}  # fmt: skip
PER_USER_COLUMNS = ("user", "arm", "exposures", "clicks", "plays")


@dataclass(frozen=True)
class ArmStats:
    arm: str
    users: int
    exposures: int
    clicks: int
    plays: int
    metrics: dict[str, RatioEstimate]
    vs_control: dict[str, Comparison] | None  # None for the control arm


@dataclass(frozen=True)
class ExperimentStats:
    control: str
    arms: list[ArmStats]
    srm: SrmCheck
    relative_mde: float
    power: float
    alpha: float
    # Per metric: control-arm users needed for relative_mde at `power` (the treatment arm
    # needs its share ratio times that), and the relative effect the current users detect.
    sample_size_per_arm: dict[str, float]
    detectable_effect: dict[str, float]

    def arm(self, name: str) -> ArmStats:
        return next(a for a in self.arms if a.arm == name)


def analyse(per_user: pd.DataFrame, shares: Mapping[str, float], control: str,
            relative_mde: float = 0.05, power: float = 0.8,
            alpha: float = 0.05) -> ExperimentStats:  # fmt: skip
    """Every number of the report from one row per (user, arm): exposures, clicks, plays.
    A user must be in one arm only (report.py drops and counts the others)."""
    missing = sorted(set(PER_USER_COLUMNS) - set(per_user.columns))
    if missing:
        raise ValueError(f"per-user table lacks columns {missing}")
    if per_user["user"].duplicated().any():
        raise ValueError("a user appears in more than one row: aggregate per user and arm first")
    groups = {str(a): g for a, g in per_user.groupby("arm", sort=True)}
    if control not in groups:
        raise ValueError(f"control arm {control!r} has no users (arms: {sorted(groups)})")
    srm = srm_check({a: len(g) for a, g in groups.items()}, shares)
    estimates = {
        arm: {m: ratio_estimate(g[num].to_numpy(), g[den].to_numpy())
              for m, (num, den) in METRICS.items()}
        for arm, g in groups.items()
    }  # fmt: skip
    arms = []
    for arm, g in groups.items():
        vs = None if arm == control else {
            m: compare(est, estimates[control][m]) for m, est in estimates[arm].items()
        }  # fmt: skip
        arms.append(ArmStats(arm, len(g), int(g["exposures"].sum()), int(g["clicks"].sum()),
                             int(g["plays"].sum()), estimates[arm], vs))  # fmt: skip
    # Power for the first treatment arm's share against the control's (two-arm experiments
    # are the norm; with more arms each comparison has its own ratio, the first is shown).
    others = [a for a in sorted(shares) if a != control]
    ratio = shares[others[0]] / shares[control] if others and shares.get(control) else 1.0
    n_control = len(groups[control])
    sizes = {m: sample_size_per_arm(est, relative_mde, power, alpha, ratio)
             for m, est in estimates[control].items()}  # fmt: skip
    mdes = {m: detectable_effect(est, n_control, power, alpha, ratio)
            for m, est in estimates[control].items()}  # fmt: skip
    return ExperimentStats(control, arms, srm, relative_mde, power, alpha, sizes, mdes)
