"""The whole pipeline on a tiny generated set: bundle contents, idempotent reruns, the
quality gate, rollback and the warehouse."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from batch.publish.release import rollback
from shared import bundle_layout as layout
from shared.bundle import current_bundle, load_manifest, read_current, verify_bundle
from shared.candidate_arrays import RANK_COLUMNS, SCORE_COLUMNS, CandidateArrays
from shared.errors import QualityGateFailed
from shared.recommendation_arrays import RecommendationArrays
from shared.sources import SOURCES, names_of
from shared.warehouse import connect_read_only
from tests.conftest import run_pipeline, tiny_config

pytestmark = pytest.mark.spark


def native_blas_installed() -> bool:
    return any(Path(d, "libblas.so.3").exists()
               for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"))  # fmt: skip


def test_published_bundle_is_complete_and_consistent(pipeline_artifacts: Path) -> None:
    bundle = current_bundle(pipeline_artifacts)
    manifest = verify_bundle(bundle)
    assert manifest.run_id.startswith("2025-12-31-")
    recs = pq.read_table(bundle / layout.RECOMMENDATIONS).to_pandas()
    per_user = recs.groupby("user_id")["rank"].agg(["min", "max", "count"])
    assert (per_user["min"] == 1).all() and (per_user["max"] == per_user["count"]).all()
    assert per_user["count"].max() == 100
    assert recs["sources"].map(len).min() >= 1
    # Nothing a user has seen is recommended to them.
    indptr = np.load(bundle / layout.SEEN_INDPTR)
    indices = np.load(bundle / layout.SEEN_INDICES)
    for user_idx, group in recs.groupby("user_idx"):
        seen = set(indices[indptr[user_idx] : indptr[user_idx + 1]].tolist())
        assert not seen & set(group["item_idx"].tolist())
    lists = manifest.metrics["lists"]
    assert set(lists) == {"merged", "popularity", *SOURCES}
    assert lists["merged"]["ndcg@10"] > lists["popularity"]["ndcg@10"]
    assert set(manifest.metrics["candidate_recall"]) == {*SOURCES, "merged"}
    ease = manifest.metrics["ease"]  # the EASE source's λ and coverage reach the manifest
    assert ease["lambda"] > 0 and 0 < ease["variants"]["full"]["interaction_share"] <= 1
    assert manifest.index.recall_at_100 == pytest.approx(1.0)  # flat index: exact
    assert manifest.row_counts["recommendations"] == len(recs)
    # Which BLAS ALS ran on is recorded; where a native libblas.so.3 is installed (make
    # setup installs Debian's OpenBLAS as root) it must be the one Spark loaded.
    blas = manifest.extra["blas"]
    assert blas["blas"] in {"JNIBLAS", "VectorBLAS", "JavaBLAS"} and blas["lapack"]
    if native_blas_installed():
        assert blas == {"blas": "JNIBLAS", "lapack": blas["lapack"], "native": True}
    # Which ALS engine fitted each variant: the default, Spark MLlib.
    engines = manifest.extra["als"]
    assert set(engines) == {"ranker", "eval", "full"}
    assert {(e["engine"], e["why"]) for e in engines.values()} == {("spark", "als.engine=spark")}
    assert engines["full"]["ratings"] > engines["eval"]["ratings"] > 0


def test_candidate_arrays_hold_the_published_candidate_table(pipeline_artifacts: Path) -> None:
    bundle = current_bundle(pipeline_artifacts)
    arrays = CandidateArrays.load(bundle)
    table = pq.read_table(bundle / layout.CANDIDATES).to_pandas()
    table = table.sort_values(["user_idx", "item_idx"], kind="stable")
    n_users = len(pq.read_table(bundle / layout.USERS))
    assert arrays.n_users == n_users and int(arrays.indptr[-1]) == len(table) > 0
    counts = np.bincount(table["user_idx"].to_numpy(), minlength=n_users)
    assert np.array_equal(np.diff(arrays.indptr), counts)
    assert np.array_equal(arrays.items, table["item_idx"].to_numpy())
    for got, columns in ((arrays.scores, SCORE_COLUMNS), (arrays.ranks, RANK_COLUMNS)):
        expected = table[list(columns)].astype("float64").to_numpy(np.float32, na_value=np.nan)
        np.testing.assert_array_equal(got, expected)  # NaN where the source did not propose


def test_recommendation_arrays_hold_the_published_lists(pipeline_artifacts: Path) -> None:
    bundle = current_bundle(pipeline_artifacts)
    n_users = len(pq.read_table(bundle / layout.USERS))
    lists = RecommendationArrays.load(bundle, n_users)
    recs = pq.read_table(bundle / layout.RECOMMENDATIONS).to_pandas()
    assert int(lists.indptr[-1]) == len(recs) > 0
    for user_idx, group in recs.groupby("user_idx"):
        lo, hi = lists.indptr[user_idx], lists.indptr[user_idx + 1]
        group = group.sort_values("rank")
        assert lists.items[lo:hi].tolist() == group["item_idx"].tolist()
        assert np.allclose(lists.scores[lo:hi], group["score"].to_numpy())
        decoded = [sorted(names_of(int(mask))) for mask in lists.sources[lo:hi]]
        assert decoded == [sorted(s) for s in group["sources"]]


def test_unchanged_rerun_gives_identical_outputs(spark, tiny_data: Path, pipeline_artifacts: Path,
                                                 tmp_path: Path) -> None:
    artifacts = tmp_path / "art"
    shutil.copytree(pipeline_artifacts, artifacts)
    before = load_manifest(current_bundle(artifacts))
    shutil.rmtree(artifacts / "work")  # recompute every stage from scratch
    run_pipeline(spark, tiny_data, artifacts)
    after = load_manifest(current_bundle(artifacts))
    assert after.run_id == before.run_id
    for name in (layout.RECOMMENDATIONS, layout.CANDIDATES, layout.POPULAR,
                 *layout.CANDIDATE_FILES, *layout.REC_FILES, layout.ITEM_FACTORS,
                 layout.USER_FACTORS, layout.SEEN_INDICES, layout.ITEMS):
        assert after.files[name] == before.files[name], name
    assert after.metrics == before.metrics


def test_failed_gate_leaves_current_untouched(spark, tiny_data: Path, pipeline_artifacts: Path,
                                              tmp_path: Path) -> None:
    artifacts = tmp_path / "art"
    shutil.copytree(pipeline_artifacts, artifacts)
    before = read_current(artifacts)
    strict = tiny_config(publish={"min_value": 0.99})
    with pytest.raises(QualityGateFailed, match="below the configured floor"):
        run_pipeline(spark, tiny_data, artifacts, strict, run_date=dt.date(2026, 1, 5))
    assert read_current(artifacts) == before
    assert [p.name for p in (artifacts / "runs").iterdir() if p.name.startswith("2026-01-05")] == []


def test_second_night_then_rollback(spark, tiny_data: Path, pipeline_artifacts: Path,
                                    tmp_path: Path) -> None:
    artifacts = tmp_path / "art"
    shutil.copytree(pipeline_artifacts, artifacts)
    first = read_current(artifacts)
    items_map = pq.read_table(artifacts / "state/idmaps/items").to_pydict()
    run_pipeline(spark, tiny_data, artifacts, run_date=dt.date(2026, 1, 2))
    second = read_current(artifacts)
    assert second != first and second is not None and second.startswith("2026-01-02-")
    # Stable id maps: the second night numbers every item exactly as the first did.
    assert pq.read_table(artifacts / "state/idmaps/items").to_pydict() == items_map
    assert rollback(artifacts) == first
    assert read_current(artifacts) == first
    with connect_read_only(artifacts) as con:  # the warehouse follows the rollback
        assert con.execute("SELECT run_id FROM runs WHERE is_current").fetchone() == (first,)
    cli = [sys.executable, "-m", "shared.cli", "batch", "rollback", "--artifacts", str(artifacts),
           "--to", second]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert read_current(artifacts) == second


def test_warehouse_answers_read_only(pipeline_artifacts: Path) -> None:
    con = connect_read_only(pipeline_artifacts)
    try:
        rows = con.execute(
            "SELECT count(DISTINCT user_id), min(rank), max(rank) FROM recommendations"
        ).fetchone()
        assert rows is not None and rows[0] > 0 and rows[1] == 1 and rows[2] == 100
        tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        assert {"recommendations", "candidates", "popular", "items", "runs", "metrics",
                "quarantine", "interactions", "users"} <= tables
        assert con.execute("SELECT count(*) FROM runs WHERE is_current").fetchone() == (1,)
        assert {"served_requests", "served_impressions"} <= tables
        assert con.execute("SELECT count(*) FROM analyst.recommendations").fetchone() == (
            con.execute("SELECT count(*) FROM recommendations").fetchone())
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TABLE evil AS SELECT 1")
        with pytest.raises(duckdb.Error):
            con.execute("SELECT * FROM read_csv('/etc/passwd')")
        with pytest.raises(duckdb.Error):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


def test_sql_command_formats(pipeline_artifacts: Path) -> None:
    base = [sys.executable, "-m", "shared.cli", "sql", "--artifacts", str(pipeline_artifacts)]
    # The default connection is the analysts' file: pseudonymous user_key, no user_id.
    out = subprocess.run([*base, "--format", "csv", "SELECT rank, item_id FROM recommendations "
                          "ORDER BY user_key, rank LIMIT 2"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "rank,item_id" and lines[1].startswith("1,")
    bad = subprocess.run([*base, "DROP TABLE items"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "read-only" in bad.stderr.lower()
    raw = subprocess.run([*base, "SELECT user_id FROM recommendations"], capture_output=True,
                         text=True, timeout=60)
    assert raw.returncode == 2 and "user_id" in raw.stderr
    restricted = subprocess.run([*base, "--restricted", "--format", "csv",
                                 "SELECT count(DISTINCT user_id) FROM recommendations"],
                                capture_output=True, text=True, timeout=60)
    assert restricted.returncode == 0 and int(restricted.stdout.splitlines()[1]) > 0
    trend = subprocess.run([*base, "--format", "csv", "--query", "metric_trend"],
                           capture_output=True, text=True, timeout=60)
    assert trend.returncode == 0 and len(trend.stdout.splitlines()) == 2, trend.stderr


def test_bundle_ships_feature_stats_their_checks_and_freshness(pipeline_artifacts: Path) -> None:
    from shared import feature_stats as fs
    from shared.features import FEATURE_NAMES

    bundle = current_bundle(pipeline_artifacts)
    manifest = verify_bundle(bundle)  # the stats file is checksummed with the rest
    assert layout.FEATURE_STATS in manifest.files
    stats = fs.load(bundle / layout.FEATURE_STATS)
    summary = manifest.extra["feature_stats"]
    assert summary["file"] == layout.FEATURE_STATS and summary["compared_with"] is None
    for sample, rows in ((fs.TRAINING, summary["training_rows"]),
                         (fs.CANDIDATES, summary["candidate_rows"])):  # fmt: skip
        body = stats["samples"][sample]
        assert body["rows"] == rows > 0
        for name in (*FEATURE_NAMES, fs.SCORE):
            s = body[fs.SCORE] if name == fs.SCORE else body["features"][name]
            assert len(s["counts"]) == len(stats["edges"][name]) + 2 and sum(s["counts"]) == rows
            assert s["p01"] <= s["p50"] <= s["p99"] and 0.0 <= s["null_share"] <= 1.0
    checks = {c["check"]: c for c in manifest.extra["drift"]["checks"]}
    assert {checks[f"feature_psi_prev:{n}"]["status"] for n in FEATURE_NAMES} == {"skipped"}
    assert checks["score_psi_prev"]["status"] == "skipped"  # the first run: nothing to compare
    assert {checks[f"feature_psi_train:{n}"]["status"] for n in FEATURE_NAMES} == {"off"}
    fresh = manifest.extra["freshness"]
    assert fresh["published_at"] == manifest.created_at
    assert fresh["newest_event_age_at_publish_seconds"] >= fresh["newest_event_age_at_run_seconds"] > 0
    assert fresh["newest_event_at"] == manifest.data_window["max"]
