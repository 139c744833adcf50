"""The driver ALS engine (batch/spark/als_driver.py, the `implicit` library) without Spark:
the confidence it is given, factor shapes and ids, determinism across runs and thread
counts, that it learns the matrix's structure, and the `auto` engine choice by budget."""

from __future__ import annotations

import numpy as np
import pytest

from batch.spark import als_driver
from shared.config import AlsConfig

pytest.importorskip("implicit")


def _blocks(seed: int = 3, users: int = 120, items: int = 60, groups: int = 3,
            per_user: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Users of group g interact only with items of group g (some of them twice); ids have
    gaps (every 7th user and the last item never occur) as stable ids do. Returns
    (user_idx, item_idx, count, group of each user index)."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, int, float]] = []
    group_of = np.full(users, -1)
    for u in range(users):
        if u % 7 == 3:
            continue
        g = u % groups
        group_of[u] = g
        pool = np.arange(g, items - 1, groups)
        for i in rng.choice(pool, size=per_user, replace=False):
            rows.append((u, int(i), float(rng.integers(1, 3))))
    arr = np.array(rows)
    order = rng.permutation(len(arr))  # the collected rows come in no particular order
    return (arr[order, 0].astype(np.int32), arr[order, 1].astype(np.int32),
            arr[order, 2].astype(np.float32), group_of)  # fmt: skip


CONFIG = AlsConfig(rank=8, max_iter=8, seed=11, alpha=20.0, driver_reg_param=1.0)


def test_the_matrix_holds_spark_s_confidence_one_per_pair_in_canonical_order() -> None:
    users = np.array([2, 0, 2, 0], dtype=np.int32)
    items = np.array([1, 3, 0, 1], dtype=np.int32)
    counts = np.array([1.0, 2.0, 3.0, 1.0], dtype=np.float32)
    m = als_driver.confidence_matrix(users, items, counts, alpha=20.0)
    assert m.shape == (3, 4)
    assert m.has_canonical_format
    assert m.toarray().tolist() == [[0, 21, 0, 41], [0, 0, 0, 0], [61, 21, 0, 0]]


def test_factors_cover_exactly_the_ids_with_ratings() -> None:
    u, i, c, _ = _blocks()
    f = als_driver.fit(u, i, c, CONFIG, threads=1)
    assert f.user_idx.tolist() == sorted(set(u.tolist()))
    assert f.item_idx.tolist() == sorted(set(i.tolist()))
    assert 59 not in f.item_idx and 3 not in f.user_idx  # the gaps get no factor
    assert f.user_vectors.shape == (len(f.user_idx), 8) and f.user_vectors.dtype == np.float32
    assert f.item_vectors.shape == (len(f.item_idx), 8) and f.item_vectors.dtype == np.float32
    assert np.isfinite(f.user_vectors).all() and np.isfinite(f.item_vectors).all()
    assert np.abs(f.user_vectors).max() > 0.1  # trained, not the 0.01-scale initial values


def test_a_rerun_and_another_thread_count_give_identical_factors() -> None:
    u, i, c, _ = _blocks()
    first = als_driver.fit(u, i, c, CONFIG, threads=1)
    again = als_driver.fit(u, i, c, CONFIG, threads=1)
    two = als_driver.fit(u, i, c, CONFIG, threads=2)
    # the same rows shuffled: the matrix is canonical whatever order Spark collects in
    perm = np.random.default_rng(0).permutation(len(u))
    shuffled = als_driver.fit(u[perm], i[perm], c[perm], CONFIG, threads=2)
    for other in (again, two, shuffled):
        assert other.user_vectors.tobytes() == first.user_vectors.tobytes()
        assert other.item_vectors.tobytes() == first.item_vectors.tobytes()
    other_seed = als_driver.fit(u, i, c, CONFIG.model_copy(update={"seed": 12}), threads=1)
    assert other_seed.user_vectors.tobytes() != first.user_vectors.tobytes()


def test_it_learns_the_groups_each_user_s_unseen_own_group_items_score_highest() -> None:
    u, i, c, group_of = _blocks()
    f = als_driver.fit(u, i, c, CONFIG, threads=1)
    scores = f.user_vectors @ f.item_vectors.T
    item_group = f.item_idx % 3
    hits = 0
    for row, user in enumerate(f.user_idx):
        seen = set(i[u == user].tolist())
        unseen = [k for k, item in enumerate(f.item_idx) if int(item) not in seen]
        top = sorted(unseen, key=lambda k: -scores[row, k])[:5]
        hits += sum(item_group[k] == group_of[user] for k in top)
    assert hits / (5 * len(f.user_idx)) > 0.95


def test_memory_estimate_grows_with_ratings_and_factors() -> None:
    base = als_driver.memory_bytes(1_000_000, 20_000, 10_000, 64)
    assert base == 1_000_000 * 48 + 30_000 * 64 * 12
    assert als_driver.memory_bytes(2_000_000, 20_000, 10_000, 64) > base
    assert als_driver.memory_bytes(1_000_000, 20_000, 10_000, 128) > base
