"""Ranking metrics: hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.metrics import (
    catalog_coverage,
    discounts,
    grouped_ndcg,
    ideal_dcg,
    mean_metrics,
    user_metrics,
)


def test_perfect_list_scores_one() -> None:
    m = user_metrics([1, 2, 3], {1, 2, 3}, k=3)
    assert m.ndcg == pytest.approx(1.0)
    assert m.precision == pytest.approx(1.0)
    assert m.recall == pytest.approx(1.0)
    assert m.map == pytest.approx(1.0)


def test_hits_at_ranks_two_and_four() -> None:
    m = user_metrics([9, 1, 8, 2], {1, 2, 3}, k=4)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m.ndcg == pytest.approx(dcg / idcg)
    assert m.precision == pytest.approx(0.5)
    assert m.recall == pytest.approx(2 / 3)
    assert m.map == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_ideal_dcg_is_capped_at_k() -> None:
    assert user_metrics([1, 2], set(range(1, 20)), k=2).ndcg == pytest.approx(1.0)


def test_empty_relevant_set_is_an_error() -> None:
    with pytest.raises(ValueError, match="relevant"):
        user_metrics([1], set(), k=10)


def test_mean_and_coverage() -> None:
    a = user_metrics([1], {1}, k=1)
    b = user_metrics([2], {1}, k=1)
    assert mean_metrics([a, b], k=1)["ndcg@1"] == pytest.approx(0.5)
    assert catalog_coverage([1, 2, 2, 3], 10) == pytest.approx(0.3)


def test_ideal_dcg_table() -> None:
    assert ideal_dcg(3).tolist() == pytest.approx([1.0, 1 + 1 / math.log2(3),
                                                   1 + 1 / math.log2(3) + 0.5])
    assert discounts(2).tolist() == pytest.approx([1.0, 1 / math.log2(3)])


def test_grouped_ndcg_is_the_mean_of_user_metrics() -> None:
    """The vectorised form (trainer, fusion search) against the per-user reference."""
    rng = np.random.default_rng(5)
    users, scores, relevant, n_rel, per_user = [], [], [], [], []
    for user in range(30):
        n = int(rng.integers(1, 40))
        items = np.arange(n)
        s = rng.random(n)
        rel = rng.random(n) < 0.2
        held_out = int(rel.sum()) + int(rng.integers(0, 3))  # some relevant items not in the rows
        if held_out == 0:
            continue
        ranked = items[np.lexsort((items, -s))]
        relevant_items = set(items[rel].tolist()) | {1000 + i for i in range(held_out - int(rel.sum()))}
        per_user.append(user_metrics(ranked.tolist(), relevant_items, 10))
        users += [user] * n
        scores += s.tolist()
        relevant += rel.tolist()
        n_rel += [held_out] * n
    got = grouped_ndcg(np.array(users), np.array(scores), np.array(relevant), np.array(n_rel), 10)
    assert got == pytest.approx(mean_metrics(per_user, 10)["ndcg@10"], abs=1e-12)
    # Users without rows count zero when n_users says how many there are.
    with_absent = grouped_ndcg(np.array(users), np.array(scores), np.array(relevant),
                               np.array(n_rel), 10, n_users=2 * len(per_user))
    assert with_absent == pytest.approx(got / 2, abs=1e-12)
    assert grouped_ndcg(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)) == 0.0
