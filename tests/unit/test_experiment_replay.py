"""The offline replay draws what the simulator's BehaviourModel would, and a reduced proof
(fewer seeds, a smaller world) holds: A/A false positives near 5%, no SRM beyond chance,
A/B at the calculated sample size detected near 80% of the time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from batch.data.generate import GenerateConfig
from batch.experiments.proof import ProofConfig, run_proof
from batch.experiments.replay import (
    ReplayConfig,
    build_world,
    draw_reactions,
    hash_arm_b,
    relevance_rows,
    run_seed,
)
from batch.experiments.stats import sample_size_per_arm
from batch.simulate.behaviour import BehaviourModel
from batch.simulate.truth import GroundTruth

SMALL = ReplayConfig(users=6000, items=800)


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return build_world(SMALL)


def test_relevance_matrix_is_the_ground_truths() -> None:
    truth = GroundTruth.from_config(GenerateConfig(Path("/nonexistent"), 300, 200, 6000, 3))
    rel = relevance_rows(truth, slice(10, 20))
    for row, user in enumerate(truth.user_ids[10:20]):
        np.testing.assert_allclose(rel[row], truth.relevance(user, truth.item_ids), rtol=1e-12)


def test_vectorised_draws_match_behaviour_model_react(world) -> None:  # type: ignore[no-untyped-def]
    """Many rows for one user through BehaviourModel.react vs the replay's binomial draws."""
    model = BehaviourModel()
    policy = world.policies["personalised"]
    user = int(np.argmax(policy.p_click.sum(axis=1)))  # a user who clicks a lot
    truth_rel = (policy.p_play[user] - model.play_given_click[0]) / (
        model.play_given_click[1] - model.play_given_click[0])
    rng = np.random.default_rng(0)
    visits = 40_000
    reacts = [model.react(truth_rel, rng) for _ in range(visits)]
    clicks_react = np.sum([r.clicked for r in reacts], axis=0)
    plays_react = np.sum([r.played for r in reacts], axis=0)
    clicks, plays = draw_reactions(policy, np.array([user]), np.array([visits]), np.random.default_rng(1))
    # Totals over the row: two independent draws of the same Binomial sums.
    for ours, theirs, p in ((clicks[0], clicks_react.sum(), policy.p_click[user].sum()),
                            (plays[0], plays_react.sum(), (policy.p_click[user] * policy.p_play[user]).sum())):
        se = np.sqrt(2 * visits * p)
        assert abs(int(ours) - int(theirs)) < 4 * se, (ours, theirs)
    # Per position, react's click rate is the replay's probability.
    np.testing.assert_allclose(clicks_react / visits, policy.p_click[user], atol=4 * np.sqrt(0.3 / visits))


def test_hashed_split_is_stable_per_user_and_changes_with_the_salt(world) -> None:  # type: ignore[no-untyped-def]
    ids = world.user_ids
    a, b = hash_arm_b(ids, 1), hash_arm_b(ids, 1)
    np.testing.assert_array_equal(a, b)
    other = hash_arm_b(ids, 2)
    assert 0.4 < np.mean(a != other) < 0.6  # an independent split
    assert sps.binomtest(int(a.sum()), len(a), 0.5).pvalue > 0.001


def test_run_seed_gives_one_row_per_visiting_user(world) -> None:  # type: ignore[no-untyped-def]
    df = run_seed(world, "personalised", "popular", 5)
    assert df["user"].is_unique and (df["exposures"] % 10 == 0).all() and (df["exposures"] > 0).all()
    assert (df["plays"] <= df["clicks"]).all() and (df["clicks"] <= df["exposures"]).all()
    small = run_seed(world, "personalised", "popular", 5, n_users=500)
    assert len(small) == 500
    with pytest.raises(ValueError, match="grow the world"):
        run_seed(world, "personalised", "popular", 5, n_users=10**6)


def test_reduced_proof_holds() -> None:
    result = run_proof(ProofConfig(SMALL, aa_seeds=100, ab_seeds=60, aa_policies=("personalised",)))
    aa, ab = result["aa"][0], result["ab"]
    fp = round(aa["ctr_false_positive_share"] * aa["seeds"])
    assert sps.binomtest(fp, aa["seeds"], 0.05).pvalue > 0.001, aa
    assert aa["ctr_p_value_ks_uniform_p"] > 0.001
    assert aa["srm_fired_p_value"] > 0.001  # SRM never fires beyond chance on a hashed split
    # The popular list really is worse, and the power calculation sized the test for it.
    assert ab["true_lift"] < -0.15 and ab["pilot"]["lift"] < 0
    assert 100 < ab["users_per_arm_for_80pct_power"] < 3000
    assert sps.binomtest(ab["detected"], ab["seeds"], 0.8).pvalue > 0.001, ab
    assert ab["detection_rate"] >= 0.6
    assert result["seconds"] < 30


def test_sample_size_from_both_arms_is_smaller_when_the_worse_arm_varies_less(world) -> None:  # type: ignore[no-untyped-def]
    from batch.experiments.replay import SHARES
    from batch.experiments.stats import analyse

    r = analyse(run_seed(world, "personalised", "popular", 77), SHARES, "A")
    c, t = r.arm("A").metrics["ctr"], r.arm("B").metrics["ctr"]
    assert t.user_sd < c.user_sd
    both = sample_size_per_arm(c, -0.25, treatment=t)
    control_only = sample_size_per_arm(c, -0.25)
    assert both == pytest.approx(control_only * (c.user_sd**2 + t.user_sd**2) / (2 * c.user_sd**2))
