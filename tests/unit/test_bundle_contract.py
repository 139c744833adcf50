"""The bundle contract: the layout names every file once, the writer's files read back equal
through the reader, the per-user accessors, and refusal of a bundle missing a file."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shared import bundle_layout as layout
from shared.bundle import GLOBAL_SEGMENT, IndexInfo, verify_bundle
from shared.bundle_reader import BundleData, read_bundle
from shared.bundle_writer import BundleWriter, CandidateChunks
from shared.errors import BundleError
from shared.features import ARRAY_NAMES, FeatureArrays
from shared.sources import PRECOMPUTED, RANK_COLUMNS, SCORE_COLUMNS, SOURCES, mask_of

N_USERS, N_ITEMS, DIM = 4, 6, 3


def _features(rng: np.random.Generator) -> FeatureArrays:
    return FeatureArrays(
        item_stats=rng.random((N_ITEMS, 6), np.float32), item_genres=np.ones((N_ITEMS, 2), np.float32),
        user_stats=rng.random((N_USERS, 4), np.float32), user_genres=np.ones((N_USERS, 2), np.float32),
        neighbor_indptr=np.zeros(N_ITEMS + 1, np.int64), neighbor_indices=np.zeros(0, np.int32),
        neighbor_sims=np.zeros(0, np.float32),
        recent_indptr=np.array([0, 2, 2, 3, 3], np.int64), recent_indices=np.array([5, 1, 0], np.int32),
        item_times=np.zeros((N_ITEMS, 2)), user_times=np.zeros((N_USERS, 2)),
        item_buckets=np.zeros((N_ITEMS, 1), np.float32), bucket_edges=np.array([0.0, 1.0]),
        bucket_totals=np.ones(1),
        item_factors=np.zeros((0, DIM), np.float32), user_factors=np.zeros((0, DIM), np.float32),
    )  # fmt: skip


def _candidates() -> pa.Table:
    """User 0: items 1 (ann, cooc) and 3 (popular); user 2: item 4 (ann); others none."""
    rows = [(2, 4, ["ann"], {"ann": (0.4, 1)}),
            (0, 3, ["popular"], {"popular": (7.0, 2)}),
            (0, 1, ["ann", "cooc"], {"ann": (0.9, 1), "cooc": (0.5, 3)})]  # fmt: skip
    columns: dict[str, pa.Array] = {
        "user_idx": pa.array([r[0] for r in rows], pa.int32()),
        "item_idx": pa.array([r[1] for r in rows], pa.int32()),
        "sources": pa.array([r[2] for r in rows], pa.list_(pa.string())),
    }
    for name, score, rank in zip(SOURCES, SCORE_COLUMNS, RANK_COLUMNS, strict=True):
        columns[score] = pa.array([r[3].get(name, (None, None))[0] for r in rows], pa.float32())
        columns[rank] = pa.array([r[3].get(name, (None, None))[1] for r in rows], pa.int32())
    return pa.table(columns)


def write_bundle(run: Path, *, ranker: bool = True) -> dict[str, object]:
    """A tiny bundle through the writer; returns what was written, to compare with."""
    rng = np.random.default_rng(3)
    writer = BundleWriter(run)
    written: dict[str, object] = {
        "item_factors": rng.random((N_ITEMS, DIM), np.float32),
        "user_factors": rng.random((N_USERS, DIM), np.float32),
        "features": _features(rng),
    }
    writer.items(pa.table({
        "item_idx": pa.array(range(N_ITEMS), pa.int32()), "item_id": [f"i{i}" for i in range(N_ITEMS)],
        "title": [f"T{i}" for i in range(N_ITEMS)], "genres": ["A|B", "B", None, "A", "B", "A"],
        "available_regions": pa.array(["eu", None, "eu|us", None, None, None], pa.string()),
    }))  # fmt: skip
    writer.users(pa.table({"user_idx": pa.array(range(N_USERS), pa.int32()),
                           "user_id": [f"u{u}" for u in range(N_USERS)],
                           "region": ["eu", "us", None, "eu"]}))  # fmt: skip
    writer.factors(written["item_factors"], written["user_factors"])  # type: ignore[arg-type]
    writer.index(b"not opened by the shared reader")
    writer.seen(np.array([0, 0, 2]), np.array([2, 5, 0]), N_USERS)
    writer.recommendations(pa.table({
        "user_idx": pa.array([0, 0, 2], pa.int32()), "user_id": ["u0", "u0", "u2"],
        "rank": pa.array([1, 2, 1], pa.int32()), "item_idx": pa.array([1, 3, 4], pa.int32()),
        "item_id": ["i1", "i3", "i4"], "score": pa.array([0.9, 0.2, 0.4], pa.float32()),
        "sources": pa.array([["ann", "cooc"], ["popular"], ["ann"]], pa.list_(pa.string())),
    }), N_USERS)  # fmt: skip
    assert writer.candidates(CandidateChunks.from_table(_candidates()), N_USERS) == 3
    writer.popular(pa.table({
        "segment": [GLOBAL_SEGMENT, GLOBAL_SEGMENT, "eu"], "rank": pa.array([1, 2, 1], pa.int32()),
        "item_idx": pa.array([3, 1, 0], pa.int32()), "item_id": ["i3", "i1", "i0"],
        "score": pa.array([9.0, 8.0, 5.0], pa.float32()),
    }))  # fmt: skip
    writer.quarantine(pa.table({"reason": pa.array([], pa.string())}))
    writer.metrics({"ndcg@10": 0.5})
    if ranker:
        writer.feature_arrays(written["features"])  # type: ignore[arg-type]
        spec = {"model": layout.MODEL_INT8, "features": ["x"]}
        writer.ranker(spec, {layout.MODEL_INT8: b"onnx bytes"})
        written["spec"] = spec
    writer.finish(
        run_id="r1", run_date="2026-01-01", created_at="now", code_version="t",
        config_fingerprint="x", data_window={}, row_counts={}, metrics={},
        index=IndexInfo(kind="flat", dim=DIM, n_items=N_ITEMS, built_on="cpu",
                        recall_at_100=1.0, build_seconds=0.0),
    )  # fmt: skip
    return written


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[BundleData, dict[str, object]]:
    written = write_bundle(tmp_path / "r1")
    return read_bundle(tmp_path / "r1"), written


def test_layout_names_each_file_once_and_the_writer_writes_only_those(tmp_path: Path) -> None:
    assert len(set(layout.ALL_FILES)) == len(layout.ALL_FILES)
    assert not set(layout.REQUIRED_FILES) & set(layout.OPTIONAL_FILES)
    assert [Path(f).stem for f in layout.FEATURE_FILES] == list(ARRAY_NAMES)
    assert all(f.startswith(layout.FEATURES_DIR + "/") for f in layout.FEATURE_FILES)
    assert all(f.startswith(layout.RANKER_DIR + "/") for f in layout.RANKER_FILES)
    write_bundle(tmp_path / "r1")
    on_disk = {p.relative_to(tmp_path / "r1").as_posix()
               for p in (tmp_path / "r1").rglob("*") if p.is_file()}  # fmt: skip
    assert on_disk <= set(layout.ALL_FILES)
    assert set(layout.REQUIRED_FILES) <= on_disk
    assert set(verify_bundle(tmp_path / "r1").files) == on_disk - {layout.MANIFEST}


def test_writer_round_trip_through_the_reader(bundle: tuple[BundleData, dict[str, object]]) -> None:
    data, written = bundle
    assert data.run_id == "r1" and (data.n_items, data.n_users) == (N_ITEMS, N_USERS)
    assert data.item_ids.tolist() == [f"i{i}" for i in range(N_ITEMS)]
    assert data.item_index["i4"] == 4 and data.user_index["u3"] == 3
    assert data.titles[2] == "T2" and data.user_region == ["eu", "us", None, "eu"]
    assert data.first_genre[0] == data.first_genre[3] != data.first_genre[1]
    eu = data.region_mask("eu")
    assert eu is not None and eu.tolist() == [True, True, True, True, True, True]
    assert data.region_mask("us").tolist() == [False, True, True, True, True, True]  # type: ignore[union-attr]
    np.testing.assert_array_equal(data.item_factors, written["item_factors"])  # type: ignore[arg-type]
    np.testing.assert_array_equal(data.user_factors, written["user_factors"])  # type: ignore[arg-type]
    assert data.lists.indptr.tolist() == [0, 2, 2, 3, 3]
    assert data.lists.sources.tolist() == [mask_of(["ann", "cooc"]), mask_of(["popular"]),
                                           mask_of(["ann"])]  # fmt: skip
    assert data.candidates.indptr.tolist() == [0, 2, 2, 3, 3]
    assert data.candidates.items.tolist() == [1, 3, 4]  # sorted by item within the user
    assert data.popular[GLOBAL_SEGMENT].items.tolist() == [3, 1]
    assert data.popular["eu"].scores.tolist() == [5.0]
    assert data.ranker is not None and data.ranker.spec == written["spec"]
    assert data.ranker.model == data.path / layout.ranker_file(layout.MODEL_INT8)
    assert data.features is not None and data.ranker_problem is None
    want: FeatureArrays = written["features"]  # type: ignore[assignment]
    for f in fields(FeatureArrays):
        if f.name not in ("item_factors", "user_factors"):
            np.testing.assert_array_equal(getattr(data.features, f.name), getattr(want, f.name))
    # The factors are loaded once: the features hold the bundle's own arrays.
    assert data.features.item_factors is data.item_factors
    assert data.features.user_factors is data.user_factors


def test_per_user_accessors(bundle: tuple[BundleData, dict[str, object]]) -> None:
    data, _ = bundle
    assert data.seen(0).tolist() == [2, 5] and data.seen(1).tolist() == []
    assert data.seen(None).tolist() == [] and data.seen(99).tolist() == []
    listed = data.precomputed_list(0)
    assert listed is not None and listed.items.tolist() == [1, 3]
    assert listed.scores.tolist() == pytest.approx([0.9, 0.2])
    assert listed.sources.tolist() == [mask_of(["ann", "cooc", "precomputed"]),
                                       mask_of(["popular"]) | PRECOMPUTED]  # fmt: skip
    assert data.precomputed_list(1) is None and data.precomputed_list(None) is None
    assert data.precomputed_list(N_USERS) is None
    scores, ranks = data.candidate_sources(0, np.array([3, 1, 2]))
    assert scores is not None and ranks is not None
    np.testing.assert_array_equal(scores[:, SOURCES.index("ann")], np.float32([np.nan, 0.9, np.nan]))
    np.testing.assert_array_equal(ranks[1], [1.0, 3.0, np.nan, np.nan])  # ann, cooc, ease, popular
    np.testing.assert_array_equal(ranks[0], [np.nan, np.nan, np.nan, 2.0])
    assert data.candidate_sources(None, np.array([1])) == (None, None)
    assert data.recent_items(0).tolist() == [5, 1] and data.recent_items(None).tolist() == []


def test_a_bundle_without_a_ranker_reads_without_features(tmp_path: Path) -> None:
    write_bundle(tmp_path / "r1", ranker=False)
    data = read_bundle(tmp_path / "r1")
    assert data.features is None and data.ranker is None and data.ranker_problem is None
    assert data.recent_items(0).tolist() == []


def test_a_missing_required_file_refuses_the_bundle(tmp_path: Path) -> None:
    run = tmp_path / "r1"
    write_bundle(run)
    for name in layout.REQUIRED_FILES:
        (run / name).rename(tmp_path / "aside")
        with pytest.raises(BundleError, match=f"missing files \\['{name}'\\]"):
            read_bundle(run, verify_checksums=False)
        (tmp_path / "aside").rename(run / name)
    read_bundle(run)  # whole again


def test_a_missing_optional_file_is_caught_by_its_checksum(tmp_path: Path) -> None:
    run = tmp_path / "r1"
    write_bundle(run)
    (run / layout.FEATURE_FILES[0]).unlink()
    with pytest.raises(BundleError, match=f"missing file {layout.FEATURE_FILES[0]}"):
        read_bundle(run)
    data = read_bundle(run, verify_checksums=False)  # an operator's override: ALS then
    assert data.ranker is None and data.ranker_problem and "item_stats" in data.ranker_problem


def test_unreadable_or_disagreeing_contents_are_refused_with_a_reason(tmp_path: Path) -> None:
    run = tmp_path / "r1"
    write_bundle(run)
    good = (run / layout.USER_FACTORS).read_bytes()
    np.save(run / layout.USER_FACTORS, np.zeros((N_USERS, DIM + 1), np.float32))
    with pytest.raises(BundleError, match="user_factors shape"):
        read_bundle(run, verify_checksums=False)
    (run / layout.USER_FACTORS).write_bytes(b"garbage")
    with pytest.raises(BundleError, match="unreadable array"):
        read_bundle(run, verify_checksums=False)
    (run / layout.USER_FACTORS).write_bytes(good)
    (run / layout.REC_SOURCE_NAMES).write_text(json.dumps(["popular", "ann", "graph", "x"]))
    with pytest.raises(BundleError, match=r"rec_sources.json names bits .* this code knows"):
        read_bundle(run, verify_checksums=False)
