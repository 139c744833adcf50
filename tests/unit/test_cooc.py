"""shared/cooc.py: the neighbour CSR and the one co-occurrence scoring, which the candidate
source and the re-ranker's cooc_* features both read."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batch.spark import candidate_sources as cs
from shared.cooc import cooc_scores, neighbor_csr
from tests.rerank.test_features import COL, tiny_arrays


def test_csr_orders_each_item_by_similarity_and_spans_the_catalogue() -> None:
    csr = neighbor_csr(np.array([1, 0, 0, 0]), np.array([0, 3, 1, 2]),
                       np.array([0.5, 0.2, 0.9, 0.2], np.float32), n_items=4)
    assert csr.n_items == 4
    assert csr.indptr.tolist() == [0, 3, 4, 4, 4]
    assert csr.indices.tolist() == [1, 2, 3, 0]  # sim descending, then neighbour id
    assert csr.indices.dtype == np.int32 and csr.sims.dtype == np.float32
    assert neighbor_csr(np.array([5]), np.array([0]), np.array([1.0]), n_items=2).n_items == 6
    assert neighbor_csr(np.zeros(0), np.zeros(0), np.zeros(0), n_items=3).indptr.tolist() == [0] * 4


def test_scores_weigh_newer_items_more() -> None:
    # item 0 -> 2 (0.5), 3 (0.25); item 1 -> 3 (1.0), 0 (0.5)
    indptr, indices = np.array([0, 2, 4, 4, 4]), np.array([2, 3, 3, 0], np.int32)
    sims = np.array([0.5, 0.25, 1.0, 0.5], np.float32)
    got = cooc_scores(indptr, indices, sims, np.array([1, 0]))  # 1 newest
    assert got.items.tolist() == [0, 2, 3]
    assert got.total.tolist() == pytest.approx([0.5, 0.5 / math.log2(3), 1.0 + 0.25 / math.log2(3)])
    assert got.best.tolist() == pytest.approx([0.5, 0.5, 1.0])
    assert got.hits.tolist() == [1, 1, 2]
    np.testing.assert_allclose(got.at(np.array([3, 9, 0])),
                               [[1.0 + 0.25 / math.log2(3), 1.0, 2.0], [0, 0, 0], [0.5, 0.5, 1.0]])
    none = cooc_scores(indptr, indices, sims, np.array([2, 3]))
    assert none.items.size == 0 and none.at(np.array([1, 2])).tolist() == [[0.0] * 3] * 2


def test_the_candidate_source_and_the_features_score_alike() -> None:
    """One kernel: the cooc source's score of an item is the cooc_sum feature of it."""
    from shared.features import compute_features

    arrays = tiny_arrays()
    recent = arrays.recent_items(0)  # [3, 0]
    tables = cs.SourceTables(arrays.neighbor_indptr, arrays.neighbor_indices,
                             arrays.neighbor_sims, {})
    got = cs.cooc_list(recent.astype(np.int64), np.zeros(0, np.int64), tables, k=10)
    x = compute_features(arrays, 0, got.items)
    assert x[:, COL["cooc_sum"]].tobytes() == got.scores.tobytes()
