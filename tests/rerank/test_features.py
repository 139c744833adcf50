"""shared/features.py: the feature contract, its defaults, and one vector whatever the
layout the arrays are loaded from (batch work dir or bundle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared import bundle_layout as layout
from shared.bundle_writer import BundleWriter
from shared.feature_arrays import load_feature_arrays, save_feature_arrays
from shared.features import (
    DEFAULTS,
    FEATURE_NAMES,
    FEATURES,
    ITEM_STATS,
    N_FEATURES,
    SOURCES,
    USER_STATS,
    FeatureArrays,
    compute_features,
)

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def tiny_arrays(n_items: int = 6, n_users: int = 3, dim: int = 4, seed: int = 0) -> FeatureArrays:
    rng = np.random.default_rng(seed)
    # Item 0's neighbours: 1 (0.5) and 2 (0.25); item 3's: 1 (0.8). Others none.
    nb_indptr = np.array([0, 2, 2, 2, 3, 3, 3], dtype=np.int64)
    return FeatureArrays(
        item_stats=rng.integers(0, 50, (n_items, len(ITEM_STATS))).astype(np.float32),
        item_genres=(rng.random((n_items, 3)) < 0.5).astype(np.float32),
        user_stats=rng.random((n_users, len(USER_STATS))).astype(np.float32) * 10,
        user_genres=np.full((n_users, 3), 1 / 3, np.float32),
        neighbor_indptr=nb_indptr,
        neighbor_indices=np.array([1, 2, 1], dtype=np.int32),
        neighbor_sims=np.array([0.5, 0.25, 0.8], dtype=np.float32),
        recent_indptr=np.array([0, 2, 2, 2], dtype=np.int64),  # user 0: recent [3, 0]
        recent_indices=np.array([3, 0], dtype=np.int32),
        item_times=np.tile([1.0e9, 1.2e9], (n_items, 1)),
        user_times=np.tile([1.1e9, 1.15e9], (n_users, 1)),
        item_buckets=rng.integers(0, 5, (n_items, 4)).astype(np.float32),
        bucket_edges=np.linspace(1.0e9, 1.2e9, 5),
        bucket_totals=np.full(4, 20.0),
        item_factors=rng.normal(size=(n_items, dim)).astype(np.float32),
        user_factors=rng.normal(size=(n_users, dim)).astype(np.float32),
    )


def test_feature_contract_is_defined_once() -> None:
    assert len(set(FEATURE_NAMES)) == N_FEATURES == len(FEATURES) == len(DEFAULTS)
    assert DEFAULTS.dtype == np.float32 and np.isfinite(DEFAULTS).all()
    for source in SOURCES:
        assert f"score_{source}" in FEATURE_NAMES and f"rr_{source}" in FEATURE_NAMES


def test_shape_dtype_and_source_encoding() -> None:
    arrays = tiny_arrays()
    items = np.array([1, 2, 4])
    # columns: ann, cooc, ease, popular
    scores = np.array([[0.9, np.nan, np.nan, np.nan], [np.nan, 2.0, 0.5, 0.1],
                       [np.nan, np.nan, np.nan, np.nan]])
    ranks = np.array([[1, np.nan, np.nan, np.nan], [np.nan, 3, 2, 7], [np.nan, np.nan, np.nan, np.nan]])
    x = compute_features(arrays, 0, items, scores, ranks)
    assert x.shape == (3, N_FEATURES) and x.dtype == np.float32
    assert x[0, COL["score_ann"]] == pytest.approx(0.9) and x[0, COL["rr_ann"]] == 1.0
    assert x[1, COL["rr_cooc"]] == pytest.approx(1 / np.log2(4))
    assert x[1, COL["score_ease"]] == pytest.approx(0.5) and x[1, COL["rr_ease"]] == pytest.approx(1 / np.log2(3))
    assert list(x[:, COL["n_sources"]]) == [1, 3, 0]
    assert x[2, COL["score_ann"]:COL["rr_popular"] + 1].tolist() == [0.0] * 8
    dot = arrays.item_factors[items] @ arrays.user_factors[0]
    assert np.allclose(x[:, COL["als_dot"]], dot, atol=1e-5)


def test_cooccurrence_with_recent_items() -> None:
    x = compute_features(tiny_arrays(), 0, np.array([1, 2, 5]))
    # recent = [3 (position 1, weight 1), 0 (position 2, weight 1/log2(3))]
    assert x[0, COL["cooc_sum"]] == pytest.approx(0.8 + 0.5 / np.log2(3), rel=1e-6)
    assert x[0, COL["cooc_max"]] == pytest.approx(0.8)
    assert x[0, COL["cooc_hits"]] == pytest.approx(1.0)
    assert x[1, COL["cooc_sum"]] == pytest.approx(0.25 / np.log2(3), rel=1e-6)
    assert x[2, COL["cooc_sum"]:COL["cooc_hits"] + 1].tolist() == [0.0, 0.0, 0.0]


def test_unknown_user_and_item_take_the_defaults() -> None:
    arrays = tiny_arrays()
    x = compute_features(arrays, None, np.array([1, 99]))
    user_side = [c for c, n in enumerate(FEATURE_NAMES)
                 if n.startswith(("user_", "genre_", "cooc_", "als_", "recent_", "item_first", "item_last"))
                 or n.endswith("_at_user_time")]
    assert np.array_equal(x[:, user_side], np.tile(DEFAULTS[user_side], (2, 1)))
    assert np.array_equal(x[1, COL["als_dot"]:], DEFAULTS[COL["als_dot"]:])
    # A cold user with a request context still gets context features.
    x = compute_features(arrays, None, np.array([1]), recent_items=np.array([3]),
                         user_vector=np.ones(4, np.float32))
    assert x[0, COL["cooc_max"]] == pytest.approx(0.8)
    assert x[0, COL["als_dot"]] == pytest.approx(arrays.item_factors[1].sum(), rel=1e-5)


def test_batch_and_bundle_layouts_give_identical_vectors(tmp_path: Path) -> None:
    arrays = tiny_arrays()
    save_feature_arrays(arrays, tmp_path / "work")  # batch: factors beside the arrays
    writer = BundleWriter(tmp_path / "bundle")  # bundle: features/ and the factors at the root
    writer.feature_arrays(tmp_path / "work")
    writer.factors(arrays.item_factors, arrays.user_factors)
    batch = load_feature_arrays(tmp_path / "work")
    item_f, user_f = (np.load(tmp_path / "bundle" / f) for f in (layout.ITEM_FACTORS, layout.USER_FACTORS))
    online = load_feature_arrays(tmp_path / "bundle" / layout.FEATURES_DIR, factors=(item_f, user_f))
    items = np.arange(6)
    ranks = np.tile([1.0, np.nan, 2.0, 3.0], (6, 1))
    for user in (0, 1, None):
        a = compute_features(batch, user, items, ranks, ranks)
        b = compute_features(online, user, items, ranks, ranks)
        assert a.tobytes() == b.tobytes()
