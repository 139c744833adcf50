"""The EASE source's Spark side: its Gram equals XᵀX computed in numpy; the mixed hold-out
of the ranker window is half newest, half random, per user."""

from __future__ import annotations

import numpy as np
import pytest

from batch.spark import ease as ease_model
from batch.spark import split
from shared import ease
from shared.config import SplitConfig


def _interactions(seed: int = 1, users: int = 60, items: int = 40) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        chosen = rng.choice(items, size=int(rng.integers(2, 25)), replace=False)
        rows += [(u, int(i), 1000 * t + u) for t, i in enumerate(chosen)]
    return rows


@pytest.mark.spark
def test_spark_gram_is_numpy_gram_over_the_most_interacted_items(spark) -> None:
    rows = _interactions()
    # a repeated event must not count twice: X is binary
    rows.append((0, rows[0][1], 999_999))
    train = spark.createDataFrame(rows, "user_idx int, item_idx int, ts long").repartition(3)
    model = ease_model.fit_gram(spark, train, n_items=45, max_items=25, min_count=3)
    counts = np.zeros(45, np.int64)
    pairs = {(u, i) for u, i, _ in rows}
    for _, i in pairs:
        counts[i] += 1
    assert model.items.tolist() == ease.select_items(counts, 25, 3).tolist()
    cols = ease.column_map(model.items, 45)
    per_user: dict[int, list[int]] = {}
    for u, i in pairs:
        if cols[i] >= 0:
            per_user.setdefault(u, []).append(int(cols[i]))
    want = ease.gram_matrix([np.array(v) for v in per_user.values()], model.items.size)
    assert np.array_equal(model.gram, want)
    assert model.interaction_share == pytest.approx(counts[model.items].sum() / counts.sum())


@pytest.mark.spark
def test_mixed_hold_out_is_half_newest_half_random(spark) -> None:
    rows = _interactions(seed=2)
    frame = spark.createDataFrame(rows, "user_idx int, item_idx int, ts long")
    cfg = SplitConfig(test_share=0.4, seed=5)
    train, test = split.split_mixed(frame, cfg)
    train_rows = {(r[0], r[1]) for r in train.select("user_idx", "item_idx").collect()}
    test_rows = {(r[0], r[1]) for r in test.collect()}
    assert not train_rows & test_rows
    assert len(train_rows) + len(test_rows) == len(rows)
    random_picks = 0
    for u in {r[0] for r in rows}:
        own = sorted((ts, i) for uu, i, ts in rows if uu == u)
        n = len(own)
        held = [i for _, i in own if (u, i) in test_rows]
        n_test, n_tail = n - int(np.floor(n * 0.6)), n - int(np.floor(n * 0.8))
        assert len(held) == n_test
        newest = [i for _, i in own[n - n_tail:]]
        assert set(newest) <= set(held)  # the newest share is always held out
        older = set(held) - set(newest)
        assert len(older) == n_test - n_tail
        next_newest = {i for _, i in own[n - n_test: n - n_tail]}
        random_picks += len(older - next_newest)
    # the older picks are not simply the next-newest ones: a random draw from the rest
    assert random_picks > 0
    again = {(r[0], r[1]) for r in split.split_mixed(frame, cfg)[1].collect()}
    assert again == test_rows
