"""The proof that the experiment statistics hold, on the offline replay (replay.py):

* A/A: both arms one policy, many seeds: p < 0.05 about 5% of the time (with its binomial
  interval), p-values uniform (KS), SRM at p < 0.001 no more often than chance.
* A/B: arm B popular-only, arm A personalised (really better). A pilot seed measures the
  effect and the per-user variance; the power calculation gives the users per arm for 80%
  power at that effect; at that size, over many fresh seeds, the test should detect the
  effect about 80% of the time, and the lift's 95% CI should cover the true lift ~95%.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower

from batch.experiments.replay import (
    SHARES,
    ReplayConfig,
    World,
    binomial_interval,
    build_world,
    ceil,
    run_seed,
)
from batch.experiments.stats import (
    SRM_ALPHA,
    ExperimentStats,
    analyse,
    planning_sd,
    sample_size_per_arm,
)

PILOT_SEED = 1_000_000  # apart from every proof seed, so the pilot's draws are not reused


@dataclass(frozen=True)
class ProofConfig:
    replay: ReplayConfig = ReplayConfig()
    aa_seeds: int = 200
    ab_seeds: int = 100
    aa_policies: tuple[str, ...] = ("personalised", "popular")
    power: float = 0.8
    alpha: float = 0.05


def _treatment(result: ExperimentStats, metric: str) -> tuple[float, float, tuple[float, float]]:
    vs = result.arm("B").vs_control
    assert vs is not None
    c = vs[metric]
    return c.p_value, c.lift, c.lift_ci


def aa_study(world: World, policy: str, seeds: int, alpha: float) -> dict[str, Any]:
    p_ctr, p_play, p_srm, lift_covered = [], [], [], 0
    for seed in range(seeds):
        result = analyse(run_seed(world, policy, policy, seed), SHARES, "A")
        p, _, (lo, hi) = _treatment(result, "ctr")
        p_ctr.append(p)
        lift_covered += lo <= 0.0 <= hi
        p_play.append(_treatment(result, "play_rate")[0])
        p_srm.append(result.srm.p_value)
    fp = int(np.sum(np.array(p_ctr) < alpha))
    fp_play = int(np.sum(np.array(p_play) < alpha))
    srm_fired = int(np.sum(np.array(p_srm) < SRM_ALPHA))
    return {
        "policy": policy, "seeds": seeds,
        "ctr_false_positive_share": round(fp / seeds, 4),
        "ctr_false_positive_ci95": binomial_interval(fp, seeds),
        "play_rate_false_positive_share": round(fp_play / seeds, 4),
        "play_rate_false_positive_ci95": binomial_interval(fp_play, seeds),
        "ctr_p_value_ks_uniform_p": round(float(sps.kstest(p_ctr, "uniform").pvalue), 4),
        "ctr_lift_ci_covers_zero_share": round(lift_covered / seeds, 4),
        "srm_fired": srm_fired,
        "srm_expected_by_chance": seeds * SRM_ALPHA,
        # P(at least this many | each seed fires with 0.001): small means beyond chance.
        "srm_fired_p_value": round(float(sps.binom.sf(srm_fired - 1, seeds, SRM_ALPHA)), 4),
        "srm_p_value_ks_uniform_p": round(float(sps.kstest(p_srm, "uniform").pvalue), 4),
        "mean_users_per_seed": None,  # filled below
    }


def ab_study(world: World, seeds: int, power: float, alpha: float) -> dict[str, Any]:
    control, treatment = "personalised", "popular"
    pilot = analyse(run_seed(world, control, treatment, PILOT_SEED), SHARES, "A")
    _, pilot_lift, _ = _treatment(pilot, "ctr")
    control_ctr = pilot.arm("A").metrics["ctr"]
    treated_ctr = pilot.arm("B").metrics["ctr"]
    # Both arms' observed per-user variances: the pilot has measured the treatment's too.
    n_per_arm = ceil(sample_size_per_arm(control_ctr, pilot_lift, power, alpha, treatment=treated_ctr))
    sd = planning_sd(control_ctr, treated_ctr)
    true_lift = world.true_rate(treatment, "ctr") / world.true_rate(control, "ctr") - 1
    detected, covered, lifts = 0, 0, []
    for seed in range(seeds):
        result = analyse(run_seed(world, control, treatment, seed, n_users=2 * n_per_arm),
                         SHARES, "A", alpha=alpha)  # fmt: skip
        p, lift, (lo, hi) = _treatment(result, "ctr")
        detected += p < alpha and np.sign(lift) == np.sign(pilot_lift)
        covered += lo <= true_lift <= hi
        lifts.append(lift)
    # What the calculation promises at the true effect (the pilot's is an estimate of it).
    effect_true = abs(true_lift * world.true_rate(control, "ctr")) / sd
    power_at_truth = NormalIndPower().power(effect_true, n_per_arm, alpha)
    return {
        "control": control, "treatment": treatment, "metric": "ctr", "seeds": seeds,
        "true_ctr": {control: round(world.true_rate(control, "ctr"), 5),
                     treatment: round(world.true_rate(treatment, "ctr"), 5)},
        "true_lift": round(true_lift, 4),
        "pilot": {"seed": PILOT_SEED, "users": sum(a.users for a in pilot.arms),
                  "lift": round(pilot_lift, 4), "control_ctr": round(control_ctr.value, 5),
                  "control_user_sd": round(control_ctr.user_sd, 5),
                  "treatment_user_sd": round(treated_ctr.user_sd, 5), "planning_sd": round(sd, 5)},
        "users_per_arm_for_80pct_power": n_per_arm,
        "power_at_true_lift": round(float(power_at_truth), 4),
        "detected": int(detected),
        "detection_rate": round(int(detected) / seeds, 4),
        "detection_rate_ci95": binomial_interval(int(detected), seeds),
        "lift_ci_covers_true_lift_share": round(covered / seeds, 4),
        "lift_ci_coverage_ci95": binomial_interval(covered, seeds),
        "mean_observed_lift": round(float(np.mean(lifts)), 4),
    }


def run_proof(cfg: ProofConfig) -> dict[str, Any]:
    started = time.perf_counter()
    world = build_world(cfg.replay)
    visitors = float((1 - np.exp(-world.visit_rate)).sum())
    aa = []
    for policy in cfg.aa_policies:
        row = aa_study(world, policy, cfg.aa_seeds, cfg.alpha)
        row["mean_users_per_seed"] = round(visitors)
        aa.append(row)
    ab = ab_study(world, cfg.ab_seeds, cfg.power, cfg.alpha)
    r = cfg.replay
    return {
        "what": "offline replay of the traffic simulator's click model (batch/simulate/behaviour.py) "
                "on its ground-truth world; not traffic through the service",
        "world": {"users": r.users, "items": r.items, "events": r.users * r.events_per_user,
                  "world_seed": r.world_seed, "k": r.k, "mean_visits": r.mean_visits,
                  "personalised_noise_sd": r.noise},
        "aa": aa,
        "ab": ab,
        "seconds": round(time.perf_counter() - started, 1),
    }
