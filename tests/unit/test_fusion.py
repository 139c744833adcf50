"""shared/fusion.py: the fused score on hand-computed cases, the merge of the candidate
task using it, and the weight search."""

from __future__ import annotations

import numpy as np
import pytest

from batch.spark import candidate_sources as cs
from shared import fusion
from shared.metrics import grouped_ndcg
from shared.sources import SOURCES


def test_weights_follow_the_sources_order() -> None:
    assert fusion.weight_vector({"popular": 0.5, "ann": 2.0, "other": 9.0}).tolist() == [2.0, 0.0, 0.0, 0.5]
    assert fusion.weight_dict(np.array([1.0, 0.25, 0.5, 0.0])) == dict(
        zip(SOURCES, [1.0, 0.25, 0.5, 0.0], strict=True))


def test_fused_score_sums_weighted_reciprocal_ranks() -> None:
    ranks = np.array([[1, 2, np.nan, np.nan], [0, 0, 4, 3], [np.nan, np.nan, np.nan, np.nan]])
    got = fusion.fused_scores(ranks, np.array([1.0, 0.5, 0.25, 2.0]))
    assert got[0] == pytest.approx(1 / 61 + 0.5 / 62)
    assert got[1] == pytest.approx(0.25 / 64 + 2 / 63)  # 0 and NaN both mean "not proposed"
    assert got[2] == 0.0
    assert fusion.RRF_K == 60.0


def test_fused_score_refuses_ranks_of_another_width() -> None:
    with pytest.raises(ValueError, match="ranks must be"):
        fusion.fused_scores(np.ones((2, len(SOURCES) + 1)), np.ones(len(SOURCES)))


def test_the_candidate_merge_fuses_with_the_shared_formula() -> None:
    rng = np.random.default_rng(4)
    lists = {s: cs.SourceList(rng.permutation(50)[:k], np.zeros(k, np.float32))
             for s, k in zip(SOURCES, (30, 20, 25, 40), strict=True)}
    weights = {"ann": 1.0, "cooc": 0.25, "ease": 2.0, "popular": 0.3}
    merged = cs.merge(lists, weights)
    ranks = np.stack([merged.ranks[s] for s in SOURCES], axis=1)
    want = fusion.fused_scores(ranks, fusion.weight_vector(weights)).astype(np.float32)
    assert merged.fused.tobytes() == want.tobytes()


def _planted(n_users: int = 40, per_user: int = 30, seed: int = 0):  # type: ignore[no-untyped-def]
    """Candidates where only the second source's order finds the relevant items."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    relevant = np.zeros(users.size, bool)
    relevant[::per_user] = True  # each user's first row
    ranks = np.full((users.size, len(SOURCES)), np.nan)
    for u in range(n_users):
        rows = slice(u * per_user, (u + 1) * per_user)
        ranks[rows, 0] = rng.permutation(per_user) + 1  # noise
        good = rng.permutation(per_user) + 1
        good[good == 1] = good[0]
        good[0] = 1  # the relevant row is the source's first
        ranks[rows, 1] = good
    n_rel = np.ones(users.size, np.int64)
    return users, ranks, relevant, n_rel


def test_tuning_moves_weight_to_the_source_that_finds_the_relevant_items() -> None:
    users, ranks, relevant, n_rel = _planted()
    start = np.array([1.0, 0.25, 0.0, 0.0])
    weights, best = fusion.tune_weights(users, ranks, relevant, n_rel, 40, start)
    assert best == pytest.approx(1.0)
    assert weights[1] > 0 and weights[0] == 0.0
    assert set(weights.tolist()) <= set(fusion.GRID)
    before = fusion.fused_scores(ranks, start)
    assert grouped_ndcg(users, before, relevant, n_rel, 10, 40) < best


def test_tuning_counts_users_without_candidates_as_zero() -> None:
    users, ranks, relevant, n_rel = _planted(n_users=10)
    _, best = fusion.tune_weights(users, ranks, relevant, n_rel, 20, np.array([0.0, 1.0, 0.0, 0.0]))
    assert best == pytest.approx(0.5)


def test_tuning_keeps_the_start_when_nothing_beats_it() -> None:
    users, ranks, relevant, n_rel = _planted(n_users=10)
    start = np.array([0.0, 1.0, 0.0, 0.0])
    weights, _ = fusion.tune_weights(users, ranks, relevant, n_rel, 10, start)
    assert weights.tolist() == start.tolist()
