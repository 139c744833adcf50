"""The per-user candidate arrays: streamed writes in any user order, lookups, refusals."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.bundle_layout import CANDIDATE_FILES
from shared.candidate_arrays import (
    CandidateArrays,
    CandidateArrayWriter,
    rows_per_user,
    write_candidate_arrays,
)
from shared.errors import BundleError
from shared.features import SOURCES


def _table(rows: list[tuple[int, int, float | None, int | None]]) -> pa.Table:
    """(user, item, ann score, ann rank) rows; cooc and popular get score = item, rank 1."""
    users, items, ann_scores, ann_ranks = (
        (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [])
    )
    columns: dict[str, pa.Array] = {
        "user_idx": pa.array(users, pa.int32()),
        "item_idx": pa.array(items, pa.int32()),
    }
    for source in SOURCES:
        own = source == "ann"
        columns[f"score_{source}"] = pa.array(
            ann_scores if own else [float(i) for i in items], pa.float32()
        )
        columns[f"rank_{source}"] = pa.array(ann_ranks if own else [1] * len(items), pa.int32())
    return pa.table(columns)


def _write_chunks(chunks: list[pa.Table], target: Path, n_users: int) -> CandidateArrays:
    counts = rows_per_user([c.column("user_idx").to_numpy() for c in chunks], n_users)
    writer = CandidateArrayWriter(target, counts)
    for chunk in chunks:
        writer.add(chunk)
    writer.close()
    return CandidateArrays.load(target)


def test_chunks_in_any_user_order_land_in_user_order(tmp_path: Path) -> None:
    # User 2 first, user 0 split across two chunks, user 1 without candidates.
    chunks = [
        _table([(2, 5, 0.5, 1), (2, 9, None, None), (0, 1, 0.9, 1)]),
        _table([(0, 4, 0.7, 2), (0, 8, None, None)]),
    ]
    arrays = _write_chunks(chunks, tmp_path, n_users=4)
    assert arrays.indptr.tolist() == [0, 3, 3, 5, 5]
    assert arrays.items.tolist() == [1, 4, 8, 5, 9]
    scores, ranks = arrays.lookup(0, np.array([8, 4, 3]))
    assert scores is not None and ranks is not None
    assert scores[0, 0] != scores[0, 0] and scores[1, 0] == pytest.approx(0.7)  # NaN: no ann
    assert ranks[1].tolist() == [2.0] + [1.0] * (len(SOURCES) - 1) and np.isnan(ranks[2]).all()  # 3: not stored
    empty_scores, _ = arrays.lookup(1, np.array([1, 5]))
    assert empty_scores is not None and np.isnan(empty_scores).all()
    assert arrays.lookup(None, np.array([1])) == (None, None)
    assert arrays.lookup(4, np.array([1])) == (None, None)  # beyond the bundle's users


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    per_user=st.lists(st.sets(st.integers(0, 40), max_size=8), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
    n_chunks=st.integers(1, 5),
)
def test_lookup_matches_the_rows_written(
    tmp_path: Path, per_user: list[set[int]], seed: int, n_chunks: int
) -> None:
    rng = np.random.default_rng(seed)
    reference = {
        (u, i): (float(rng.random()), int(rng.integers(1, 100)))
        for u, items in enumerate(per_user)
        for i in items
    }
    # Users in a shuffled order, each user's rows item-sorted, cut into chunks anywhere.
    rows = [
        (u, i, *reference[(u, i)])
        for u in rng.permutation(len(per_user)).tolist()
        for i in sorted(per_user[u])
    ]
    cuts = sorted(rng.integers(0, len(rows) + 1, size=n_chunks - 1).tolist())
    bounds = [0, *cuts, len(rows)]
    chunks = [_table(rows[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    target = Path(tempfile.mkdtemp(dir=tmp_path))
    arrays = _write_chunks(chunks, target, n_users=len(per_user))
    queries = np.arange(0, 42)
    for u in range(len(per_user)):
        scores, ranks = arrays.lookup(u, queries)
        assert scores is not None and ranks is not None
        for q, item in enumerate(queries.tolist()):
            if (u, item) in reference:
                score, rank = reference[(u, item)]
                assert scores[q, 0] == pytest.approx(score) and ranks[q, 0] == rank
                assert scores[q, 1] == item  # the other columns travel with the row
            else:
                assert np.isnan(scores[q]).all() and np.isnan(ranks[q]).all()


def test_rows_out_of_item_order_are_refused_naming_the_user(tmp_path: Path) -> None:
    chunks = [_table([(0, 1, 0.1, 1), (1, 7, 0.2, 1), (1, 3, 0.3, 2)])]
    with pytest.raises(ValueError, match="user_idx 1 are not sorted"):
        _write_chunks(chunks, tmp_path, n_users=2)


def test_chunks_that_disagree_with_the_first_pass_are_refused(tmp_path: Path) -> None:
    writer = CandidateArrayWriter(tmp_path, np.array([1, 1]))
    with pytest.raises(ValueError, match="more rows than the first pass"):
        writer.add(_table([(0, 1, 0.1, 1), (0, 2, 0.1, 2)]))
    writer = CandidateArrayWriter(tmp_path, np.array([1, 1]))
    writer.add(_table([(0, 1, 0.1, 1)]))
    with pytest.raises(ValueError, match="fewer rows than the first pass"):
        writer.close()
    writer = CandidateArrayWriter(tmp_path, np.array([1]))
    with pytest.raises(ValueError, match="did not count"):
        writer.add(_table([(3, 1, 0.1, 1)]))


def test_first_pass_grows_to_the_largest_user(tmp_path: Path) -> None:
    counts = rows_per_user([np.array([0, 0, 5]), np.array([2])], n_users=3)
    assert counts.tolist() == [2, 0, 1, 0, 0, 1]


def test_an_empty_table_gives_empty_arrays(tmp_path: Path) -> None:
    write_candidate_arrays(_table([]), tmp_path, n_users=3)
    arrays = CandidateArrays.load(tmp_path)
    assert arrays.indptr.tolist() == [0, 0, 0, 0] and arrays.items.shape == (0,)
    scores, _ = arrays.lookup(2, np.array([1, 2]))
    assert scores is not None and np.isnan(scores).all()


def test_load_refuses_missing_or_inconsistent_arrays(tmp_path: Path) -> None:
    write_candidate_arrays(_table([(0, 1, 0.5, 1), (1, 2, 0.5, 1)]), tmp_path, n_users=2)
    np.save(tmp_path / CANDIDATE_FILES[0], np.array([0, 1, 5], dtype=np.int64))  # indptr past the rows
    with pytest.raises(BundleError, match="disagree"):
        CandidateArrays.load(tmp_path)
    (tmp_path / CANDIDATE_FILES[1]).unlink()
    with pytest.raises(BundleError, match="unreadable"):
        CandidateArrays.load(tmp_path)
