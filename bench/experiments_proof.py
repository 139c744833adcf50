"""Proof of the experiment statistics (batch/experiments) on an OFFLINE REPLAY of the traffic
simulator's click model: the simulator's ground-truth world and BehaviourModel, list policies
per user, hashed arms per seed. No service, no bundle, no warehouse: it checks the statistics,
not the serving path (docs/experiments-analysis.md).

    nice -n 19 env PYTHONPATH=. .venv/bin/python bench/experiments_proof.py \
        --out bench/results/experiments_proof.json

Writes the JSON and a Markdown summary beside it (same name, .md).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from batch.experiments.proof import ProofConfig, run_proof
from batch.experiments.replay import ReplayConfig


def markdown(result: dict[str, Any], command: str) -> str:
    w, ab = result["world"], result["ab"]
    lines = [
        "# Experiment statistics: proof on the simulator's click model", "",
        "**An offline replay of the traffic simulator's click model** (batch/simulate/behaviour.py) "
        "on its ground-truth world (batch/simulate/truth.py), not traffic through the service: "
        "each policy is a fixed list per user, reactions are drawn from the BehaviourModel's "
        "probabilities, users are split by a keyed hash with the seed as salt.", "",
        f"World: {w['users']:,} users, {w['items']} items, world seed {w['world_seed']}, k = {w['k']}, "
        f"~{w['mean_visits']} visits per user (Poisson by history activity, heavy users more); "
        f"personalised = true relevance + N(0, {w['personalised_noise_sd']}²) noise, top k; "
        "popular = the k most popular items for everyone.", "",
        f"Reproduce ({result['seconds']:.0f} s on 2 shared cores):", "", "```", command, "```", "",
        "## A/A (both arms one policy)", "",
        "| policy | seeds | users/seed | CTR p<0.05 | 95% CI | play rate p<0.05 | KS p (CTR p-values uniform) | lift CI covers 0 | SRM p<0.001 | expected by chance |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for a in result["aa"]:
        lo, hi = a["ctr_false_positive_ci95"]
        lines.append(f"| {a['policy']} | {a['seeds']} | {a['mean_users_per_seed']:,} | "
                     f"{a['ctr_false_positive_share']:.3f} | [{lo:.3f}, {hi:.3f}] | "
                     f"{a['play_rate_false_positive_share']:.3f} | {a['ctr_p_value_ks_uniform_p']:.3f} | "
                     f"{a['ctr_lift_ci_covers_zero_share']:.3f} | {a['srm_fired']} | "
                     f"{a['srm_expected_by_chance']:.2f} |")  # fmt: skip
    lo, hi = ab["detection_rate_ci95"]
    clo, chi = ab["lift_ci_coverage_ci95"]
    lines += [
        "", "The two policies' A/A rows share their seeds, hence their splits: the SRM column is one "
        "experiment's assignment, seen twice.", "",
        f"## A/B ({ab['treatment']} in arm B, really worse than {ab['control']})", "",
        f"- True CTR (expected clicks over exposures, no draws): {ab['control']} "
        f"{ab['true_ctr'][ab['control']]:.5f}, {ab['treatment']} {ab['true_ctr'][ab['treatment']]:.5f}: "
        f"true lift {100 * ab['true_lift']:+.1f}%.",
        f"- Pilot (seed {ab['pilot']['seed']}, {ab['pilot']['users']:,} users): lift "
        f"{100 * ab['pilot']['lift']:+.1f}%, control CTR {ab['pilot']['control_ctr']:.5f}, per-user sd "
        f"{ab['pilot']['control_user_sd']:.5f} (control), {ab['pilot']['treatment_user_sd']:.5f} (treatment), "
        f"{ab['pilot']['planning_sd']:.5f} (the two combined, as the z test's variance is).",
        f"- Power calculation (NormalIndPower, 80%, alpha 0.05, at the pilot's effect and variances): "
        f"**{ab['users_per_arm_for_80pct_power']:,} users per arm** "
        f"(the same size has {100 * ab['power_at_true_lift']:.1f}% power at the true lift).",
        f"- At that size, over {ab['seeds']} fresh seeds: detected (p < 0.05, right sign) "
        f"**{ab['detected']} / {ab['seeds']} = {ab['detection_rate']:.3f}** (95% CI [{lo:.3f}, {hi:.3f}]).",
        f"- The lift's 95% CI covered the true lift in {ab['lift_ci_covers_true_lift_share']:.3f} of "
        f"seeds (95% CI [{clo:.3f}, {chi:.3f}]); mean observed lift {100 * ab['mean_observed_lift']:+.1f}%.",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aa-seeds", type=int, default=500)
    parser.add_argument("--ab-seeds", type=int, default=300)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/experiments_proof.json"))
    args = parser.parse_args()
    cfg = ProofConfig(ReplayConfig(users=args.users), aa_seeds=args.aa_seeds, ab_seeds=args.ab_seeds)
    result = run_proof(cfg)
    command = "nice -n 19 env PYTHONPATH=. .venv/bin/python " + shlex.join(["bench/experiments_proof.py", *sys.argv[1:]])
    result["command"] = command
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result, command))
    ab = result["ab"]
    for a in result["aa"]:
        print(f"A/A {a['policy']}: p<0.05 in {a['ctr_false_positive_share']:.3f} "
              f"{a['ctr_false_positive_ci95']}, SRM fired {a['srm_fired']}/{a['seeds']}")  # fmt: skip
    print(f"A/B: n = {ab['users_per_arm_for_80pct_power']} per arm, detected {ab['detection_rate']:.3f} "
          f"{ab['detection_rate_ci95']} ({result['seconds']} s) -> {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
