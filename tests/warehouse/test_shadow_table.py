"""The warehouse's `shadow` table from ART/shadow_log (part files and the orphan spool of a
killed worker, through `rebuild()`), and the canned analysis `shadow_overlap`."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.publish.warehouse_build import rebuild
from shared import canned_queries
from shared.parquet_log import SPOOL_DIR, SPOOL_SUFFIX
from shared.privacy import KEY_ENV, MODE_ENV
from shared.shadow_log import SCHEMA, ShadowLogWriter, ShadowRecord, log_dir, rows_table
from shared.warehouse import connect_read_only, run_query
from tests.online.bundle_factory import build_bundle

A, B = "bundle=run-b,scorer=served", "bundle=served,scorer=none"


def record(rid: str, day: int, shadow: str, jaccard: float, tau: float | None,
           latency: float) -> ShadowRecord:  # fmt: skip
    return ShadowRecord(
        request_id=rid, ts=dt.datetime(2026, 3, day, 9, tzinfo=dt.UTC), shadow=shadow,
        bundle="run-a", scorer="als-dot",
        shadow_bundle="run-b" if shadow == A else "run-a",
        shadow_scorer="als-dot" if shadow == A else None,
        shadow_served_by="rerank" if shadow == A else "precomputed",
        shadow_fallback_reason=None, k=10, n_served=10, n_shadow=10,
        common=round(20 * jaccard / (1 + jaccard)), jaccard=jaccard, kendall_tau=tau,
        spearman=None if tau is None else tau, shadow_latency_ms=latency, queue_ms=0.1,
    )  # fmt: skip


WRITTEN = [record("s1", 1, A, 1.0, 1.0, 2.0), record("s2", 1, A, 0.5, 0.0, 4.0),
           record("s3", 1, B, 0.2, None, 1.0)]  # fmt: skip
# A killed worker's spool: a row of day 2, and s2 again (its owner linked it, then died).
SPOOLED = [record("s4", 2, A, 0.8, 0.5, 3.0), WRITTEN[1]]


def orphan_spool(root: Path, records: list[ShadowRecord]) -> Path:
    """What a worker killed between two rotations leaves: an Arrow stream nobody locks."""
    folder = root / SPOOL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"999999-dead-000001{SPOOL_SUFFIX}"

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
        writer.write_table(rows_table([astuple(r) for r in records]))
    return path


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for var in (KEY_ENV, MODE_ENV):
        os.environ.pop(var, None)
    tmp = tmp_path_factory.mktemp("shadow-wh")
    art = tmp / "art"
    build_bundle(art, "run-a")
    with ShadowLogWriter(log_dir(art), rotate_seconds=3600) as writer:
        for r in WRITTEN:
            writer.log(r)
    spool = orphan_spool(log_dir(art), SPOOLED)
    clean = tmp / "clean"
    clean.mkdir()
    pq.write_table(pa.table({"user_id": ["u0"], "item_id": ["m1"], "ts": [1767225600],
                             "event_type": ["view"], "weight": [1.0]}),
                   clean / "part-0.parquet")  # fmt: skip
    rebuild(art, "run-a", clean)
    assert not spool.exists()  # the build recovered it into part files
    return art


def query(art: Path, sql: str) -> list[tuple[Any, ...]]:
    with connect_read_only(art) as con:
        return con.execute(sql).fetchall()


def test_the_table_holds_every_logged_row_once(art: Path) -> None:
    assert query(art, "SELECT request_id, ts, shadow, bundle, shadow_bundle, jaccard, "
                      "kendall_tau FROM shadow ORDER BY request_id") == [
        ("s1", dt.datetime(2026, 3, 1, 9), A, "run-a", "run-b", 1.0, 1.0),
        ("s2", dt.datetime(2026, 3, 1, 9), A, "run-a", "run-b", 0.5, 0.0),
        ("s3", dt.datetime(2026, 3, 1, 9), B, "run-a", "run-a", 0.2, None),
        ("s4", dt.datetime(2026, 3, 2, 9), A, "run-a", "run-b", 0.8, 0.5),
    ]  # fmt: skip
    # The analysts' file has the same rows (no user id to pseudonymise).
    _, rows = run_query(art, "SELECT count(*) FROM shadow", {})
    assert rows == [(4,)]


def test_shadow_overlap_by_day_and_shadow(art: Path) -> None:
    q = canned_queries.get("shadow_overlap")
    columns, rows = run_query(art, q.sql, q.bind({}))
    got = [dict(zip(columns, r, strict=True)) for r in rows]
    assert [(g["day"], g["shadow"], g["requests"], g["mean_jaccard"], g["mean_kendall_tau"],
             g["mean_spearman"], g["p50_shadow_ms"]) for g in got] == [
        (dt.date(2026, 3, 1), A, 2, 0.75, 0.5, 0.5, 3.0),
        (dt.date(2026, 3, 1), B, 1, 0.2, None, None, 1.0),
        (dt.date(2026, 3, 2), A, 1, 0.8, 0.5, 0.5, 3.0),
    ]  # fmt: skip
    assert {g["served_bundles"] for g in got} == {"run-a"}
    assert {g["shadow_fallback_share"] for g in got} == {0.0}
    _, later = run_query(art, q.sql, q.bind({"start": "2026-03-02"}))
    assert len(later) == 1
