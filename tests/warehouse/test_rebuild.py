"""`rebuild()` (what publish and rollback call) on bundles made without Spark: both files,
the served log, the history across pruning, and the per-artifacts pseudonym key."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.publish.warehouse_build import rebuild
from shared.bundle import run_dir, write_current
from shared.privacy import pseudonym
from shared.request_log import RequestLogWriter, ServedRequest, log_dir
from shared.warehouse import connect_analyst, connect_read_only
from tests.conftest import use_development_key
from tests.online.bundle_factory import build_bundle


def clean(tmp: Path) -> Path:
    out = tmp / "clean.parquet"
    out.mkdir()
    pq.write_table(pa.table({"user_id": ["u0", "u1", "u1"], "item_id": ["m1", "m2", "m3"],
                             "ts": [1767225600, 1767229200, 1767232800],
                             "event_type": ["view"] * 3, "weight": [1.0] * 3}),
                   out / "part-0.parquet")  # fmt: skip
    return out


def test_rebuild_publishes_both_files_and_keeps_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_development_key(monkeypatch)
    art = tmp_path / "art"
    build_bundle(art, "run-a")
    build_bundle(art, "run-b", seed=1)
    with RequestLogWriter(log_dir(art)) as writer:
        writer.log(ServedRequest("q1", dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "u0", "run-b",
                                 "precomputed", "timeout", [("m1", 1, 0.5)], 3.0))
    interactions = clean(tmp_path)
    rebuild(art, "run-b", interactions)
    key = (art / "state" / "pseudonym.key").read_bytes().strip()
    with connect_analyst(art) as con:
        assert con.execute("SELECT user_key FROM served_requests").fetchall() == [
            (pseudonym(key, "u0"),)]  # fmt: skip
        assert con.execute("SELECT count(*) FROM interactions").fetchone() == (3,)
        assert con.execute("SELECT run_id FROM runs WHERE is_current").fetchone() == ("run-b",)
        assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
    # Prune run-a, roll forward: its history rows stay.
    shutil.rmtree(run_dir(art, "run-a"))
    write_current(art, "run-b")
    rebuild(art, "run-b", tmp_path / "pruned")  # work partition gone: empty interactions
    with connect_read_only(art) as con:
        assert sorted(r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()) == [
            "run-a", "run-b"]  # fmt: skip
        assert con.execute("SELECT count(*) FROM interactions").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM metrics WHERE run_id = 'run-a'").fetchone()[0] > 0


def test_rebuild_loads_the_event_log_with_the_configured_window(tmp_path: Path) -> None:
    from shared.events import EVENT_LOG_DIR
    from tests.warehouse.feedback_fixture import event_table

    art = tmp_path / "art"
    build_bundle(art, "run-b")
    with RequestLogWriter(log_dir(art)) as writer:
        writer.log(ServedRequest("q1", dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "u0", "run-b",
                                 "precomputed", None, [("m1", 1, 0.5)], 3.0))  # fmt: skip
    folder = art / EVENT_LOG_DIR / "date=2026-01-02"
    folder.mkdir(parents=True)
    pq.write_table(event_table([  # 10 minutes after q1, no request_id; an organic play
        ("e1", "click", "u0", "m1", "2026-01-02", "00:10", None),
        ("e2", "play", "viewer-7f3a9", "m2", "2026-01-02", "00:20", None),
    ]), folder / "part-1-000001.parquet")  # fmt: skip
    interactions = clean(tmp_path)
    rebuild(art, "run-b", interactions)  # default window: 30 minutes
    with connect_read_only(art) as con:
        assert con.execute("SELECT event_id, attributed_request_id FROM events ORDER BY 1"
                           ).fetchall() == [("e1", "q1"), ("e2", None)]  # fmt: skip
        assert con.execute("SELECT clicked FROM exposures").fetchall() == [(True,)]
    assert b"viewer-7f3a9" not in (art / "warehouse_analyst.duckdb").read_bytes()
    rebuild(art, "run-b", interactions, attribution_window_minutes=5)
    with connect_read_only(art) as con:
        assert con.execute("SELECT count(*) FROM events WHERE attribution IS NOT NULL"
                           ).fetchone() == (0,)  # fmt: skip


def test_rollback_rebuilds_with_the_window_the_restored_run_was_published_with(
    tmp_path: Path,
) -> None:

    from batch.publish.release import rollback
    from shared import bundle_layout as layout
    from shared.events import EVENT_LOG_DIR
    from tests.warehouse.feedback_fixture import event_table

    art = tmp_path / "art"
    build_bundle(art, "run-a")
    build_bundle(art, "run-b", seed=1)
    manifest = run_dir(art, "run-a") / layout.MANIFEST  # not in the checksums
    data = json.loads(manifest.read_text())
    data["extra"] = {"config": {"publish": {"attribution_window_minutes": 5}}}
    manifest.write_text(json.dumps(data))
    with RequestLogWriter(log_dir(art)) as writer:
        writer.log(ServedRequest("q1", dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "u0", "run-b",
                                 "precomputed", None, [("m1", 1, 0.5)], 3.0))  # fmt: skip
    folder = art / EVENT_LOG_DIR / "date=2026-01-02"
    folder.mkdir(parents=True)
    pq.write_table(event_table([("e1", "click", "u0", "m1", "2026-01-02", "00:10", None)]),
                   folder / "part-1-000001.parquet")  # fmt: skip
    write_current(art, "run-b")
    rollback(art, "run-a")  # 10 minutes is outside run-a's 5-minute window
    with connect_read_only(art) as con:
        assert con.execute("SELECT attribution FROM events").fetchall() == [(None,)]
    rollback(art, "run-b")  # no setting in its manifest: the default 30 minutes
    with connect_read_only(art) as con:
        assert con.execute("SELECT attribution FROM events").fetchall() == [("window",)]


def test_rebuild_recovers_the_spools_of_killed_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed with its events flushed only to its spool: the warehouse build
    turns the spool into part files and loads them (no later worker start needed)."""
    from shared.events import EVENT_LOG_DIR
    from tests.warehouse.test_parquet_log import _killed_writer

    use_development_key(monkeypatch)
    art = tmp_path / "art"
    build_bundle(art, "run-a")
    _killed_writer(art / EVENT_LOG_DIR)  # 300 flushed events, then SIGKILL
    rebuild(art, "run-a", clean(tmp_path))
    with connect_read_only(art) as con:
        assert con.execute("SELECT count(DISTINCT event_id) FROM events").fetchone() == (300,)


def test_the_warehouse_reads_the_event_log_the_night_was_configured_with(tmp_path: Path) -> None:
    """events.path points outside ART: publish (event_log=) and a rollback to that bundle
    (its manifest's events.path) load that log, not an empty ART/event_log."""
    from batch.publish.release import rollback
    from shared import bundle_layout as layout
    from tests.warehouse.feedback_fixture import event_table

    art = tmp_path / "art"
    build_bundle(art, "run-a")
    build_bundle(art, "run-b", seed=1)
    elsewhere = tmp_path / "feedback-log"
    folder = elsewhere / "date=2026-01-02"
    folder.mkdir(parents=True)
    pq.write_table(event_table([("e1", "click", "u0", "m1", "2026-01-02", "00:10", None),
                                ("e2", "play", "u0", "m1", "2026-01-02", "00:11", None)]),
                   folder / "part-1-000001.parquet")  # fmt: skip
    interactions = clean(tmp_path)
    rebuild(art, "run-b", interactions, event_log=elsewhere)
    with connect_read_only(art) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (2,)
    rebuild(art, "run-b", interactions)  # the default ART/event_log has nothing
    with connect_read_only(art) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (0,)
    manifest = run_dir(art, "run-a") / layout.MANIFEST  # not in the checksums
    data = json.loads(manifest.read_text())
    data["extra"] = {"config": {"events": {"path": str(elsewhere)}}}
    manifest.write_text(json.dumps(data))
    write_current(art, "run-b")
    rollback(art, "run-a")
    with connect_read_only(art) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (2,)
