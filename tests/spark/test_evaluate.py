"""The Spark metric implementation agrees with shared/metrics.py on random lists."""

from __future__ import annotations

import random

import pytest

from batch.spark import evaluate
from shared.metrics import mean_metrics, user_metrics


@pytest.mark.spark
def test_spark_metrics_match_the_reference(spark) -> None:
    rng = random.Random(3)
    lists, test, per_user = [], [], []
    for user in range(40):
        ranked = rng.sample(range(60), 10)
        relevant = set(rng.sample(range(60), rng.randint(1, 15)))
        lists += [(user, item, rank + 1) for rank, item in enumerate(ranked)]
        test += [(user, item) for item in relevant]
        per_user.append(user_metrics(ranked, relevant, 10))
    # A test user without any list counts as zeros.
    test.append((99, 1))
    per_user.append(user_metrics([], {1}, 10))
    got = evaluate.ranking_metrics(
        spark.createDataFrame(lists, "user_idx int, item_idx int, rank int"),
        spark.createDataFrame(test, "user_idx int, item_idx int"),
        10,
    )
    want = mean_metrics(per_user, 10)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.spark
def test_candidate_recall(spark) -> None:
    ranked = spark.createDataFrame(
        [(1, 10, 1), (1, 11, 150), (2, 20, 600)], "user_idx int, item_idx int, rank_x int"
    )
    test = spark.createDataFrame([(1, 10), (1, 11), (2, 20), (2, 21)], "user_idx int, item_idx int")
    got = evaluate.candidate_recall(ranked, "rank_x", test, (100, 500))
    assert got[100] == pytest.approx((1 / 2 + 0) / 2)
    assert got[500] == pytest.approx((2 / 2 + 0) / 2)
