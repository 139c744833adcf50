"""Feedback events in the warehouse: loading and dedupe, attribution of each event to a
served item (by request_id, else by time window), the exposures table, pseudonymisation,
a mix of old and new served-log files, and the online-outcome canned analyses on the data
of tests/warehouse/feedback_fixture.py (every number worked out by hand from its table)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pytest

from batch.publish.warehouse_build import WarehouseInputs, build
from shared import canned_queries
from shared.events import EVENT_LOG_DIR
from shared.privacy import pseudonym
from shared.request_log import part_files
from shared.warehouse import (
    analyst_warehouse_path,
    connect_analyst,
    connect_read_only,
    run_query,
    warehouse_path,
)
from tests.warehouse import feedback_fixture as fx
from tests.warehouse.conftest import KEY, inputs

# event -> (request it is credited to, how); None: unattributed
ATTRIBUTED = {
    "e1": ("q1", "request_id"), "e2": ("q1", "request_id"), "e3": ("q1", "request_id"),
    "e4": ("q1", "window"), "e5": None, "e6": ("q2", "request_id"), "e7": None,
    "e8": ("q4", "window"), "e9": ("q4", "request_id"), "e10": ("q4", "request_id"),
    "e11": ("q3", "request_id"), "e12": ("q3", "window"), "e13": None, "e14": ("q3", "window"),
}  # fmt: skip


def build_art(art: Path, window: int = fx.WINDOW_MINUTES, events: bool = True) -> Path:
    art.mkdir(parents=True, exist_ok=True)
    base = inputs(art / "unused")
    fresh = WarehouseInputs(**{
        **base.__dict__, "served": fx.write_served(art),
        "events": fx.write_events(art) if events else None,
        "attribution_window_minutes": window,
    })  # fmt: skip
    build(fresh, warehouse_path(art), analyst_warehouse_path(art), KEY)
    return art


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_art(tmp_path_factory.mktemp("feedback-art"))


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return con.execute(sql).fetchall()


def restricted(art: Path, sql: str) -> list[tuple[Any, ...]]:
    con = connect_read_only(art)
    try:
        return rows(con, sql)
    finally:
        con.close()


def canned(art: Path, name: str, **params: str) -> list[tuple[Any, ...]]:
    query = canned_queries.get(name)
    return run_query(art, query.sql, query.bind(params))[1]


def attribution(art: Path) -> dict[str, tuple[str, str] | None]:
    got = restricted(art, "SELECT event_id, attributed_request_id, attribution FROM events")
    return {e: (r, how) if r else None for e, r, how in got}


def test_event_files_are_found_by_the_served_log_glob(tmp_path: Path) -> None:
    written = fx.write_events(tmp_path)
    (tmp_path / EVENT_LOG_DIR / f"date={fx.DAY1}" / ".tmp-9-1.parquet").write_bytes(b"partial")
    assert part_files(tmp_path / EVENT_LOG_DIR) == written  # what rebuild() loads


def test_events_are_loaded_once_per_event_id(art: Path) -> None:
    assert restricted(art, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(14, 14)]
    # The repeated copy was received an hour later: the first acknowledged copy is kept.
    assert restricted(art, f"SELECT received_at FROM events WHERE event_id = '{fx.REPEATED}'"
                      ) == [(dt.datetime(2026, 2, 21, 10, 2, 1),)]  # fmt: skip


def test_attribution_by_request_id_then_window(art: Path) -> None:
    # Includes: outside the window (e5), before any request (e7), a request_id naming no
    # served request (e8, falls back to the window), the latest of two requests (e14).
    assert attribution(art) == ATTRIBUTED


def test_window_is_a_build_setting(tmp_path: Path) -> None:
    narrow = attribution(build_art(tmp_path / "narrow", window=5))
    # Only the direct ones survive a 5-minute window (e4/e14 came 10 min, e8 20, e12 6 after).
    assert narrow == {e: a if a and a[1] == "request_id" else None for e, a in ATTRIBUTED.items()}
    # The bound is inclusive: e4 and e14 came exactly 10 minutes after their request.
    ten = attribution(build_art(tmp_path / "ten", window=10))
    assert ten == {**ATTRIBUTED, "e8": None}
    wide = attribution(build_art(tmp_path / "wide", window=60))
    assert wide == {**ATTRIBUTED, "e5": ("q1", "window")}  # 45 min after q1


def test_exposures_one_row_per_served_item_with_outcomes(art: Path) -> None:
    got = restricted(art, """
        SELECT request_id, position, item_id, sources, impressed, clicked, played, completed,
               disliked, first_outcome_ts
        FROM exposures ORDER BY request_id, position""")
    t = dt.datetime
    assert got == [
        ("q1", 1, "m1", ["ann"], False, True, True, False, False, t(2026, 2, 21, 10, 1)),
        ("q1", 2, "m2", ["ann", "cooc"], True, True, False, False, False, t(2026, 2, 21, 10, 10)),
        ("q1", 3, "m3", ["cooc"], False, False, False, False, False, None),
        ("q2", 1, "m1", ["popular"], False, True, False, False, False, t(2026, 2, 21, 10, 5)),
        ("q2", 2, "m2", ["popular"], False, False, False, False, False, None),
        ("q3", 1, "m4", [], False, True, True, False, False, t(2026, 2, 21, 12, 5)),
        ("q3", 2, "m1", [], False, True, False, False, False, t(2026, 2, 21, 12, 10)),
        ("q4", 1, "m3", ["ann"], False, False, True, True, False, t(2026, 2, 22, 9, 20)),
        ("q4", 2, "m1", ["cooc"], False, False, False, False, True, t(2026, 2, 22, 9, 1)),
        ("q5", 1, "m1", ["popular"], False, False, False, False, False, None),
        ("q5", 2, "m2", ["popular"], False, False, False, False, False, None),
    ]  # fmt: skip
    # Request columns come along; the anonymous request has no user.
    assert restricted(art, "SELECT DISTINCT request_id, user_id, bundle, served_by, "
                           "fallback_reason, endpoint FROM exposures WHERE request_id IN "
                           "('q2', 'q5') ORDER BY 1") == [  # fmt: skip
        ("q2", "u2", "run-2", "popular_global", "timeout", "recommend"),
        ("q5", None, "run-3", "popular_global", "unknown_user", "recommend"),
    ]


def test_old_and_new_served_files_load_together(art: Path) -> None:
    assert restricted(art, "SELECT request_id, count(*), list(sources ORDER BY rank) FROM "
                           "served_impressions GROUP BY 1 ORDER BY 1") == [  # fmt: skip
        ("q1", 3, [["ann"], ["ann", "cooc"], ["cooc"]]), ("q2", 2, [["popular"], ["popular"]]),
        ("q3", 2, [[], []]), ("q4", 2, [["ann"], ["cooc"]]), ("q5", 2, [["popular"], ["popular"]]),
    ]  # fmt: skip


def test_only_old_served_files_give_empty_sources(tmp_path: Path) -> None:
    fx.write_served(tmp_path)
    old = sorted((tmp_path / "served_log").glob("*/part-old-*.parquet"))
    base = inputs(tmp_path / "unused")
    build(WarehouseInputs(**{**base.__dict__, "served": old}), warehouse_path(tmp_path),
          analyst_warehouse_path(tmp_path), KEY)  # fmt: skip
    assert restricted(tmp_path, "SELECT item_id, sources FROM exposures ORDER BY position"
                      ) == [("m4", []), ("m1", [])]  # fmt: skip


def test_analyst_file_has_pseudonyms_only(art: Path) -> None:
    con = connect_analyst(art)
    try:
        for table in ("events", "exposures"):
            columns = [r[0] for r in rows(con, f"DESCRIBE {table}")]
            assert "user_id" not in columns and "user_key" in columns
            for column in columns:  # no raw id in any column
                found = con.execute(
                    f'SELECT count(*) FROM analyst.{table} WHERE CAST("{column}" AS VARCHAR) '
                    "IN ('u1', 'u2', 'u3')").fetchone()  # fmt: skip
                assert found == (0,), (table, column)
        assert rows(con, "SELECT DISTINCT user_key FROM events ORDER BY 1") == sorted(
            [(pseudonym(KEY, u),) for u in ("u1", "u2", "u3")])  # fmt: skip
        assert con.execute("SELECT count(*) FROM exposures WHERE user_key = $k",
                           {"k": pseudonym(KEY, "u1")}).fetchall() == [(5,)]  # fmt: skip
        # request_id is kept, as in served_requests, so analysts can join the two.
        assert rows(con, "SELECT count(*) FROM events e JOIN served_requests s ON "
                         "s.request_id = e.attributed_request_id") == [(11,)]  # fmt: skip
    finally:
        con.close()


def test_outcomes_by_position(art: Path) -> None:
    # position, exposures, clicked, played, completed, disliked, ctr, play_rate
    assert canned(art, "outcomes_by_position") == [
        (1, 5, 3, 3, 1, 0, 0.6, 0.6), (2, 5, 2, 0, 0, 1, 0.4, 0.0), (3, 1, 0, 0, 0, 0, 0.0, 0.0),
    ]  # fmt: skip
    # Only q1/m2 was reported seen by an impression event.
    assert canned(art, "outcomes_by_position", impressed_only="true") == [
        (2, 1, 1, 0, 0, 0, 1.0, 0.0)]


def test_outcomes_by_served_by(art: Path) -> None:
    assert canned(art, "outcomes_by_served_by") == [
        ("popular_global", 4, 1, 0, 0, 0, 0.25, 0.0),
        ("rerank", 7, 4, 3, 1, 1, 0.5714, 0.4286),
    ]


def test_outcomes_by_source(art: Path) -> None:
    assert canned(art, "outcomes_by_source") == [
        ("popular", 4, 1, 0, 0, 0, 0.25, 0.0),
        ("ann", 3, 2, 2, 1, 0, 0.6667, 0.6667),
        ("cooc", 3, 1, 0, 0, 1, 0.3333, 0.0),
        ("untagged", 2, 2, 1, 0, 0, 1.0, 0.5),  # q3: logged before sources existed
    ]


def test_outcomes_by_bundle_and_day(art: Path) -> None:
    assert canned(art, "outcomes_by_bundle") == [
        ("run-2", 7, 5, 2, 0, 0, 0.7143, 0.2857), ("run-3", 4, 0, 1, 1, 1, 0.0, 0.25),
    ]  # fmt: skip
    d = dt.date.fromisoformat
    assert canned(art, "outcomes_by_day") == [
        (d(fx.DAY1), "run-2", 7, 5, 2, 0, 0, 0.7143, 0.2857),
        (d(fx.DAY2), "run-3", 4, 0, 1, 1, 1, 0.0, 0.25),
    ]


def test_watched_coverage(art: Path) -> None:
    # 6 catalogue items; served m1-m4; plays e2 e5 e7 e8 e12 e13 (the repeat counted once) on
    # m1 m3 m4 m6; e2, e8 and e12 attributed to a served item.
    assert canned(art, "watched_coverage") == [(6, 4, 4, 0.6667, 0.6667, 6, 3, 0.5)]


def test_no_events_yet(tmp_path: Path) -> None:
    art = build_art(tmp_path, events=False)
    assert restricted(art, "SELECT count(*) FROM events") == [(0,)]
    assert restricted(art, "SELECT count(*), count(*) FILTER (WHERE clicked OR played OR "
                           "impressed) FROM exposures") == [(11, 0)]  # fmt: skip
    assert canned(art, "outcomes_by_position")[0] == (1, 5, 0, 0, 0, 0, 0.0, 0.0)
    assert canned(art, "watched_coverage") == [(6, 4, 0, 0.6667, 0.0, 0, 0, None)]
