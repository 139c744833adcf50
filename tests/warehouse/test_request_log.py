"""The request log writer rotates files by size and age, never leaves partial files under a
name the warehouse reads, and its files load into served_requests / served_impressions."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batch.publish.warehouse_build import WarehouseInputs, build
from shared.request_log import SCHEMA, RequestLogWriter, ServedRequest, part_files
from shared.warehouse import analyst_warehouse_path, connect_analyst, warehouse_path
from tests.warehouse.conftest import KEY, inputs


def record(n: int, day: int = 21, reason: str | None = None) -> ServedRequest:
    return ServedRequest(
        request_id=f"r{n}", ts=dt.datetime(2026, 2, day, 12, 0, n % 60, tzinfo=dt.UTC),
        user_id=f"u{n % 3}", bundle="run-1", served_by="precomputed" if reason else "rerank",
        fallback_reason=reason,
        items=[(f"m{j}", j + 1, 1.0 - j / 10, ("precomputed", "ann")[: j + 1]) for j in range(3)],
        latency_ms=5.0 + n,
    )  # fmt: skip


def test_rotates_by_rows_and_splits_days(tmp_path: Path) -> None:
    with RequestLogWriter(tmp_path, rotate_rows=10, rotate_seconds=3600) as writer:
        for n in range(25):
            writer.log(record(n))
        writer.log(record(99, day=22))
    files = part_files(tmp_path)
    assert sum(pq.read_metadata(f).num_rows for f in files) == 26
    assert len(files) >= 3  # 25 rows at 10 per file, plus the other day's file
    assert {f.parent.name for f in files} == {"date=2026-02-21", "date=2026-02-22"}
    assert all(pq.read_schema(f).equals(SCHEMA) for f in files)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert writer.dropped == 0 and writer.files_written == len(files)


def test_rotates_by_age_without_close(tmp_path: Path) -> None:
    writer = RequestLogWriter(tmp_path, rotate_rows=1000, rotate_seconds=0.2)
    try:
        writer.log(record(1))
        deadline = time.monotonic() + 5
        while not part_files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(part_files(tmp_path)) == 1
    finally:
        writer.close()


def test_log_is_cheap_and_bounded(tmp_path: Path) -> None:
    writer = RequestLogWriter(tmp_path, rotate_rows=10**6, rotate_seconds=3600,
                              max_buffer_rows=100)  # fmt: skip
    started = time.perf_counter()
    for n in range(150):
        writer.log(record(n))
    per_call = (time.perf_counter() - started) / 150
    writer.close()
    assert writer.dropped == 50
    assert per_call < 0.001  # no I/O on the request path
    writer.log(record(1))  # after close: dropped, not raised
    assert writer.dropped == 51


def test_log_files_load_into_the_warehouse(tmp_path: Path) -> None:
    log_root = tmp_path / "served_log"
    with RequestLogWriter(log_root, rotate_rows=4) as writer:
        for n in range(10):
            writer.log(record(n, reason="timeout" if n % 5 == 0 else None))
    base = inputs(tmp_path / "unused")
    art = tmp_path / "art"
    art.mkdir()
    fresh = WarehouseInputs(**{**base.__dict__, "served": part_files(log_root)})
    build(fresh, warehouse_path(art), analyst_warehouse_path(art), KEY)
    con = connect_analyst(art)
    try:
        assert con.execute("SELECT count(*), sum(is_fallback::INT), sum(n_items) "
                           "FROM served_requests").fetchone() == (10, 2, 30)  # fmt: skip
        assert con.execute("SELECT count(*), min(rank), max(rank) FROM served_impressions"
                           ).fetchone() == (30, 1, 3)  # fmt: skip
    finally:
        con.close()


def test_no_served_log_gives_empty_tables(tmp_path: Path) -> None:
    base = inputs(tmp_path / "unused")
    fresh = WarehouseInputs(**{**base.__dict__, "served": None})
    build(fresh, warehouse_path(tmp_path), analyst_warehouse_path(tmp_path), KEY)
    con = connect_analyst(tmp_path)
    try:
        assert con.execute("SELECT count(*) FROM served_requests").fetchone() == (0,)
        cols = [r[0] for r in con.execute("DESCRIBE served_impressions").fetchall()]
        assert cols[:3] == ["request_id", "ts", "user_key"] and "item_id" in cols
    finally:
        con.close()


def test_shared_warehouse_modules_import_no_server_or_batch_code() -> None:
    import subprocess
    import sys

    code = (
        "import sys, shared.request_log, shared.privacy, shared.warehouse, "
        "shared.canned_queries, shared.warehouse_cli; print(','.join(m for m in "
        "('flask', 'pyspark', 'torch', 'batch', 'online', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    assert out.stdout.strip() == ""


def test_prune_keeps_recent_days_relative_to_the_newest(tmp_path: Path) -> None:
    from shared.request_log import prune

    with RequestLogWriter(tmp_path) as writer:
        for day in (1, 10, 20, 21):
            writer.log(record(day, day=day))
    assert prune(tmp_path, retention_days=11) == ["2026-02-01"]  # 02-10 is 11 days old: kept
    assert sorted(p.parent.name for p in part_files(tmp_path)) == [
        "date=2026-02-10", "date=2026-02-20", "date=2026-02-21"]  # fmt: skip


def test_buffered_records_are_not_tracked_by_the_gc(tmp_path: Path) -> None:
    """A full buffer must not add to what every full collection walks (GIL held)."""
    import gc

    with RequestLogWriter(tmp_path, rotate_rows=10**6, rotate_seconds=3600,
                          flush_seconds=3600, flush_rows=10**6) as writer:  # kept in the buffer
        for n in range(500):
            writer.log(record(n))
        # The collector untracks a tuple once everything in it is untracked: a level of
        # nesting per pass at worst (a served record sees dozens of young passes first).
        # Four levels here: record, items, item, sources.
        for _ in range(4):
            gc.collect()
        assert not [r for r in writer._buffer if gc.is_tracked(r)]
    assert sum(pq.read_metadata(f).num_rows for f in part_files(tmp_path)) == 500


def test_sliced_conversion_gives_the_same_table() -> None:
    from shared.request_log import _SLICE_ROWS, _row, _sliced_table, to_table

    records = [record(n, reason="timeout" if n % 7 == 0 else None)
               for n in range(2 * _SLICE_ROWS + 3)]  # fmt: skip
    sliced = _sliced_table([_row(r) for r in records])
    assert sliced.num_rows == len(records)
    assert sliced.equals(to_table(records).combine_chunks())
    assert sliced.column("items").to_pylist()[5] == [
        {"item_id": f"m{j}", "rank": j + 1, "score": pytest.approx(1.0 - j / 10),
         "sources": ["precomputed", "ann"][: j + 1]} for j in range(3)
    ]  # fmt: skip


def _logged_ids(root: Path) -> list[str]:
    return [rid for f in part_files(root) for rid in pq.read_table(f).column("request_id").to_pylist()]


def _wait(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


def test_a_failed_write_is_retried_once_the_directory_is_back(tmp_path: Path) -> None:
    """A flush that fails keeps its records and writes them when it can, once each."""
    root = tmp_path / "served_log"
    root.write_text("not a directory")  # every mkdir under it fails, even for root
    errors: list[int] = []
    dropped: list[int] = []
    writer = RequestLogWriter(root, rotate_rows=1000, rotate_seconds=0.05,
                              max_retry_seconds=0.2, on_write_error=lambda: errors.append(1),
                              on_dropped=dropped.append)  # fmt: skip
    try:
        for n in range(30):
            writer.log(record(n))
        _wait(lambda: writer.write_errors >= 2)
        assert writer.write_errors >= 2 and len(errors) == writer.write_errors
        for n in range(30, 40):  # served while the directory is unusable
            writer.log(record(n))
        root.unlink()
        _wait(lambda: len(_logged_ids(root)) >= 40)
    finally:
        writer.close()
    ids = _logged_ids(root)
    assert sorted(ids) == sorted(f"r{n}" for n in range(40))  # every record, none twice
    assert writer.dropped == 0 and not dropped
    assert not [p for p in root.rglob(".tmp-*")]


def test_a_half_failed_flush_does_not_write_its_first_files_twice(tmp_path: Path) -> None:
    root = tmp_path / "served_log"
    root.mkdir()
    (root / "date=2026-02-22").write_text("blocks the second day's folder")
    # 8 records make one flush: 5 of day 21 (written), 3 of day 22 (refused, retried).
    writer = RequestLogWriter(root, rotate_rows=8, rotate_seconds=3600, max_retry_seconds=0.2)
    try:
        for n in range(5):
            writer.log(record(n, day=21))
        for n in range(5, 8):
            writer.log(record(n, day=22))
        _wait(lambda: writer.write_errors >= 1)
        (root / "date=2026-02-22").unlink()
        _wait(lambda: len(_logged_ids(root)) >= 8)
    finally:
        writer.close()
    assert sorted(_logged_ids(root)) == sorted(f"r{n}" for n in range(8))


def test_a_failure_longer_than_the_buffer_drops_the_newest_and_counts_them(tmp_path: Path) -> None:
    root = tmp_path / "served_log"
    root.write_text("not a directory")
    dropped: list[int] = []
    writer = RequestLogWriter(root, rotate_rows=1000, rotate_seconds=0.05, max_buffer_rows=20,
                              max_retry_seconds=0.1, on_dropped=dropped.append)  # fmt: skip
    try:
        for n in range(50):
            writer.log(record(n))
        _wait(lambda: writer.write_errors >= 1)
        root.unlink()
        _wait(lambda: len(_logged_ids(root)) >= 20)
    finally:
        writer.close()
    ids = _logged_ids(root)
    assert writer.dropped == 30 == sum(dropped)
    assert sorted(ids) == sorted(f"r{n}" for n in range(20))  # the oldest are kept


def test_records_lost_at_exit_are_counted(tmp_path: Path) -> None:
    root = tmp_path / "served_log"
    root.write_text("not a directory")
    writer = RequestLogWriter(root, rotate_rows=1000, rotate_seconds=3600)
    for n in range(7):
        writer.log(record(n))
    writer.close()
    assert writer.dropped == 7 and writer.write_errors == 1
