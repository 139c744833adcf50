"""The per-user candidate sources and their merge, on hand-made tables with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batch.spark import candidate_sources as cs
from batch.spark.candidates import overfetch_buckets


def _tables() -> cs.SourceTables:
    # item 0 -> 2 (0.5), 3 (0.25); item 1 -> 3 (1.0), 0 (0.5); items 2, 3 -> none
    return cs.SourceTables(
        neighbor_indptr=np.array([0, 2, 4, 4, 4]),
        neighbor_indices=np.array([2, 3, 3, 0]),
        neighbor_sims=np.array([0.5, 0.25, 1.0, 0.5], np.float32),
        popular={"EU": (np.array([3, 2, 1]), np.array([9.0, 8.0, 7.0], np.float32)),
                 "__global__": (np.array([0, 1]), np.array([5.0, 4.0], np.float32))},
    )


def test_cooc_weights_newer_items_more_and_drops_seen() -> None:
    # history newest first: item 1 (pos 1, weight 1), item 0 (pos 2, weight 1/log2 3)
    got = cs.cooc_list(np.array([1, 0]), np.array([1, 0]), _tables(), k=10)
    expected_3 = 1.0 / math.log2(2) + 0.25 / math.log2(3)
    expected_2 = 0.5 / math.log2(3)
    assert got.items.tolist() == [3, 2]
    assert got.scores.tolist() == pytest.approx([expected_3, expected_2], rel=1e-6)


def test_cooc_breaks_ties_by_lower_id_and_cuts_at_k() -> None:
    tables = cs.SourceTables(np.array([0, 3]), np.array([7, 5, 6]),
                             np.array([0.5, 0.5, 0.5], np.float32), {})
    assert cs.cooc_list(np.array([0]), np.array([0]), tables, k=2).items.tolist() == [5, 6]


def test_cooc_with_no_history_or_no_neighbours_is_empty() -> None:
    assert cs.cooc_list(np.array([], np.int64), np.array([], np.int64), _tables(), 5).items.size == 0
    assert cs.cooc_list(np.array([3]), np.array([3]), _tables(), 5).items.size == 0


def test_popular_uses_the_segment_list_minus_seen() -> None:
    assert cs.popular_list("EU", np.array([2]), _tables(), 5).items.tolist() == [3, 1]
    assert cs.popular_list("nowhere", np.array([2]), _tables(), 5).items.size == 0


def test_ann_skips_seen_and_padding_and_ranks_the_rest() -> None:
    got = cs.ann_list(np.array([4, -1, 2, 9, 7]), np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32),
                      seen=np.array([2]), k=2)
    assert got.items.tolist() == [4, 9]


def test_merge_records_each_source_rank_and_fuses_them() -> None:
    lists = {
        "ann": cs.SourceList(np.array([5, 3]), np.array([0.9, 0.8], np.float32)),
        "cooc": cs.SourceList(np.array([3]), np.array([2.0], np.float32)),
        "ease": cs.EMPTY,
        "popular": cs.SourceList(np.array([8, 5]), np.array([7.0, 6.0], np.float32)),
    }
    merged = cs.merge(lists, {"ann": 1.0, "cooc": 1.0, "ease": 1.0, "popular": 0.5})
    assert merged.items.tolist() == [3, 5, 8]
    assert cs.sources_of(merged) == [["ann", "cooc"], ["ann", "popular"], ["popular"]]
    assert merged.ranks["ann"].tolist() == [2, 1, 0]
    assert merged.scores["popular"][1] == pytest.approx(6.0)
    assert merged.fused[0] == pytest.approx(1 / 62 + 1 / 61, rel=1e-6)
    assert merged.fused[2] == pytest.approx(0.5 / 61, rel=1e-6)


def test_overfetch_is_per_user_and_rounded_to_a_power_of_two() -> None:
    got = overfetch_buckets(np.array([0, 10, 64, 65, 5000]), k=100, ntotal=1500)
    assert got.tolist() == [164, 164, 164, 228, 1500]


def test_source_tables_span_the_catalogue_past_the_last_item_with_neighbours(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batch.spark.candidates import source_tables

    pq.write_table(pa.table({"item_idx": [0, 0, 1], "neighbor_idx": [1, 2, 0],
                             "sim": pa.array([0.5, 0.9, 0.5], pa.float32())}), tmp_path / "nb.parquet")
    pq.write_table(pa.table({"segment": ["__global__", "__global__"], "item_idx": [4, 3],
                             "score": pa.array([2.0, 2.0], pa.float32()), "rank": [1, 2]}),
                   tmp_path / "pop.parquet")
    tables = source_tables(tmp_path / "nb.parquet", tmp_path / "pop.parquet", n_items=6)
    assert tables.neighbor_indptr.tolist() == [0, 2, 3, 3, 3, 3, 3]
    assert tables.neighbor_indices.tolist() == [2, 1, 0]  # most similar first
    # item 5 has no neighbours: its user still gets item 0's neighbours, at position 2
    got = cs.cooc_list(np.array([5, 0]), np.array([5, 0]), tables, k=5)
    assert got.items.tolist() == [2, 1]
    # equal float scores: the lower id first
    assert tables.popular["__global__"][0].tolist() == [3, 4]


def test_ease_list_scores_by_the_users_covered_items_and_skips_seen(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from shared import ease

    # Catalogue of 8 items; EASE covers 1, 3, 4, 6 (columns 0..3).
    covered = np.array([1, 3, 4, 6])
    weights = np.array([[0, 2.0, 0.5, 1.0],
                        [0.1, 0, 3.0, 0.2],
                        [0.0, 0.0, 0, 0.0],
                        [0.0, 0.0, 0.0, 0]], np.float32)
    np.save(tmp_path / "w.npy", weights)
    np.save(tmp_path / "i.npy", covered)
    table = cs.EaseTable.load(str(tmp_path / "w.npy"), str(tmp_path / "i.npy"), 8)
    assert isinstance(table.weights, np.memmap)
    # seen: 1 (column 0) and 7 (not covered, ignored), newest first
    got = cs.ease_list(np.array([7, 1]), table, k=2)
    assert got.items.tolist() == [3, 6] and got.scores.tolist() == [2.0, 1.0]
    # two covered items: scores add up; seen ones never come back
    got = cs.ease_list(np.array([3, 1]), table, k=5)
    want = ease.user_scores(weights, np.array([0, 1]))
    assert got.items.tolist() == [4, 6] and got.scores.tolist() == [want[2], want[3]]
    assert cs.ease_list(np.array([0, 2]), table, k=5).items.size == 0  # nothing covered
    assert cs.ease_list(np.array([1]), None, k=5).items.size == 0  # no EASE this run
