"""The published lists as per-user arrays: round trip, source bitmasks, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shared.bundle_layout import REC_INDPTR, REC_SOURCE_NAMES, REC_SOURCES
from shared.errors import BundleError
from shared.recommendation_arrays import (
    RecommendationArrays,
    source_bitmasks,
    write_recommendation_arrays,
)
from shared.sources import SOURCES, names_of


def _lists(rows: list[tuple[int, int, int, float, list[str]]]) -> pa.Table:
    users, ranks, items, scores, sources = (list(c) for c in zip(*rows, strict=True))
    return pa.table(
        {
            "user_idx": pa.array(users, pa.int32()),
            "rank": pa.array(ranks, pa.int32()),
            "item_idx": pa.array(items, pa.int32()),
            "score": pa.array(scores, pa.float32()),
            "sources": pa.array(sources, pa.list_(pa.string())),
        }
    )


def test_lists_round_trip_per_user_with_their_sources(tmp_path: Path) -> None:
    table = _lists(
        [
            (0, 1, 7, 0.9, ["cooc"]),
            (0, 2, 3, 0.5, ["ann", "popular"]),
            (2, 1, 4, 0.8, ["popular", "ann", "cooc"]),
        ]
    )
    write_recommendation_arrays(table, tmp_path, n_users=3)
    lists = RecommendationArrays.load(tmp_path, n_users=5)  # two users after the last list
    assert json.loads((tmp_path / REC_SOURCE_NAMES).read_text()) == list(SOURCES)
    assert lists.indptr.tolist() == [0, 2, 2, 3, 3, 3]
    assert lists.items.tolist() == [7, 3, 4]
    assert lists.scores.tolist() == pytest.approx([0.9, 0.5, 0.8])
    assert lists.sources.tolist() == [0b0010, 0b1001, 0b1011]  # ann, cooc, ease, popular
    assert type(lists.items) is np.ndarray  # a plain view of the map: serialisable as is


def test_bitmasks_follow_the_one_scheme_ignore_nulls_and_refuse_unknown_tags() -> None:
    # bit b = SOURCES[b] whichever sources the lists happen to hold (no "cooc" here).
    masks = source_bitmasks(pa.array([["popular", None], [], ["ann"]], pa.list_(pa.string())))
    assert masks.tolist() == [0b1000, 0, 0b0001]
    with pytest.raises(ValueError, match=r"\['mystery'\] are not batch sources"):
        source_bitmasks(pa.array([["ann", "mystery"]], pa.list_(pa.string())))


def test_lists_of_older_bundles_load_with_their_bits_read_by_name(tmp_path: Path) -> None:
    write_recommendation_arrays(_lists([(0, 1, 7, 0.9, ["ann"])]), tmp_path, n_users=1)
    (tmp_path / REC_SOURCE_NAMES).write_text(json.dumps(["ann", "cooc"]))  # a prefix: as is
    loaded = RecommendationArrays.load(tmp_path, n_users=1)
    assert loaded.bit_map is None and loaded.sources_of(slice(0, 1)).tolist() == [0b001]
    np.save(tmp_path / REC_SOURCES, np.array([0b011], dtype=np.load(tmp_path / REC_SOURCES).dtype))
    (tmp_path / REC_SOURCE_NAMES).write_text(json.dumps(["ann", "popular"]))  # popular = bit 1
    loaded = RecommendationArrays.load(tmp_path, n_users=1)
    assert loaded.sources.tolist() == [0b011]  # as written...
    assert names_of(int(loaded.sources_of(slice(0, 1))[0])) == ("ann", "popular")  # ...as named
    (tmp_path / REC_SOURCE_NAMES).write_text(json.dumps(["ann", "graph"]))  # unknown: refused
    with pytest.raises(BundleError, match="this code knows"):
        RecommendationArrays.load(tmp_path, n_users=1)


def test_unsorted_lists_are_refused(tmp_path: Path) -> None:
    table = _lists([(1, 1, 7, 0.9, ["ann"]), (0, 1, 3, 0.5, ["ann"])])
    with pytest.raises(ValueError, match="sorted by user_idx"):
        write_recommendation_arrays(table, tmp_path, n_users=2)


def test_load_refuses_inconsistent_or_missing_arrays(tmp_path: Path) -> None:
    write_recommendation_arrays(_lists([(0, 1, 7, 0.9, ["ann"])]), tmp_path, n_users=1)
    np.save(tmp_path / REC_INDPTR, np.array([0, 4], dtype=np.int64))
    with pytest.raises(BundleError, match="disagree"):
        RecommendationArrays.load(tmp_path, n_users=1)
    (tmp_path / REC_SOURCE_NAMES).write_text(json.dumps({"ann": 0}))
    with pytest.raises(BundleError, match="list of source names"):
        RecommendationArrays.load(tmp_path, n_users=1)
    (tmp_path / REC_SOURCE_NAMES).unlink()
    with pytest.raises(BundleError, match="unreadable"):
        RecommendationArrays.load(tmp_path, n_users=1)
