"""Ranking metrics: hand-computed answers."""

from __future__ import annotations

import math

import pytest

from shared.metrics import catalog_coverage, mean_metrics, user_metrics


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
