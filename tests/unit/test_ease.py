"""shared/ease.py: the closed form, the item choice, the per-user top list, the λ search."""

from __future__ import annotations

import numpy as np
import pytest

from shared import ease


def _users(seed: int = 0, n_users: int = 50, n_items: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(n_items, size=int(rng.integers(1, 8)), replace=False) for _ in range(n_users)]


def test_gram_is_x_transpose_x() -> None:
    users = _users()
    x = np.zeros((len(users), 12))
    for r, cols in enumerate(users):
        x[r, cols] = 1
    assert np.array_equal(ease.gram_matrix(users, 12), (x.T @ x).astype(np.int32))


def test_solve_is_steck_closed_form() -> None:
    users = _users()
    gram = ease.gram_matrix(users, 12).astype(np.float64)
    lam = 5.0
    p = np.linalg.inv(gram + lam * np.eye(12))
    expected = np.eye(12) - p @ np.diag(1.0 / np.diag(p))
    np.fill_diagonal(expected, 0.0)
    got = ease.solve(gram, lam)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.all(np.diag(got) == 0)
    # B minimises ||X - XB||² + λ||B||² under diag(B) = 0: its gradient vanishes off the diagonal
    x = np.zeros((len(users), 12))
    for r, cols in enumerate(users):
        x[r, cols] = 1
    grad = -x.T @ (x - x @ expected) + lam * expected
    off = ~np.eye(12, dtype=bool)
    assert np.abs(grad[off]).max() < 1e-8
    with pytest.raises(ValueError):
        ease.solve(gram, 0.0)


def test_select_items_most_interacted_with_a_floor() -> None:
    counts = np.array([5, 1, 9, 5, 0, 7, 2])
    assert ease.select_items(counts, max_items=3, min_count=2).tolist() == [0, 2, 5]
    assert ease.select_items(counts, max_items=10, min_count=2).tolist() == [0, 2, 3, 5, 6]
    cols = ease.column_map(np.array([0, 2, 5]), 7)
    assert cols.tolist() == [0, -1, 1, -1, -1, 2, -1]


def test_top_unseen_orders_by_score_and_skips_known() -> None:
    weights = np.array([[0, 3, 1, 1], [0, 0, 2, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    top = ease.top_unseen(weights, np.array([0]), k=3)
    assert top.cols.tolist() == [1, 2, 3]  # 3, then 1 and 1: the lower column first
    assert top.scores.tolist() == [3.0, 1.0, 1.0]
    top = ease.top_unseen(weights, np.array([0, 1]), k=5, exclude=np.array([3]))
    assert top.cols.tolist() == [2] and top.scores.tolist() == [3.0]
    assert ease.top_unseen(weights, np.empty(0, np.int64), k=3).cols.size == 0


def test_tune_lambda_picks_the_best_of_the_grid() -> None:
    train = _users(1, 200)
    held = [np.setdiff1d(np.random.default_rng(i).choice(12, 2, replace=False), t)
            for i, t in enumerate(train)]
    n_rel = [max(len(h), 1) for h in held]
    gram = ease.gram_matrix(train, 12)
    grid = (0.5, 5.0, 500.0)
    got = ease.tune_lambda(gram, train, held, n_rel, grid)
    for lam in grid:
        assert got.by_lambda[lam] == pytest.approx(
            ease.mean_ndcg(ease.solve(gram, lam), train, held, n_rel))
    assert got.ndcg == max(got.by_lambda.values())
    assert got.lam == max(grid, key=lambda lam: got.by_lambda[lam])
