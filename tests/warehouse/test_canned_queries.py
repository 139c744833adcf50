"""Every canned analysis on the hand-built warehouse (tests/warehouse/conftest.py) returns
the answer worked out by hand from that data; also through `recsys sql --query`."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared import canned_queries
from shared.errors import RecsysError
from shared.privacy import pseudonym
from shared.warehouse import run_query
from tests.warehouse.conftest import KEY


def k(user: str) -> str:
    return pseudonym(KEY, user)


def run(art: Path, name: str, restricted: bool = False, **params: str) -> list[tuple[Any, ...]]:
    query = canned_queries.get(name)
    _, rows = run_query(art, query.sql, query.bind(params), restricted=restricted)
    return rows


def d(s: str) -> dt.date:
    return dt.date.fromisoformat(s)


def test_every_query_file_has_a_valid_header() -> None:
    queries = canned_queries.load_all()
    assert len(queries) >= 11
    for q in queries.values():
        assert q.version >= 1 and q.description
        assert "$" not in q.description
        for p in q.params:  # every declared param is used as a prepared parameter
            assert f"${p.name}" in q.sql, (q.name, p.name)


def test_shared_fragments_are_expanded_into_every_query_that_includes_them() -> None:
    queries = canned_queries.load_all()
    outcome_queries = [q for name, q in queries.items() if name.startswith("outcomes_by_")]
    assert len(outcome_queries) == 5
    for q in queries.values():
        assert "--@include" not in q.sql, q.name
    for q in outcome_queries:
        assert "round(count(*) FILTER (WHERE played) / count(*), 4) AS play_rate" in q.sql
    with pytest.raises(RecsysError, match="no shared/queries/fragments/nope.sql"):
        canned_queries.parse("-- name: x\n-- version: 1\n-- description: y\nSELECT\n"
                             "    --@include nope\nFROM t")  # fmt: skip


def test_top_titles(warehouse_art: Path) -> None:
    rows = run(warehouse_art, "top_titles", start="2026-01-05", end="2026-01-12")
    assert [(r[0], r[2], r[3]) for r in rows] == [("m2", 4, 3), ("m1", 3, 2), ("m3", 2, 2),
                                                  ("m5", 1, 1)]  # fmt: skip
    rows = run(warehouse_art, "top_titles", start="2026-01-05", end="2026-01-12", limit="2")
    assert [r[0] for r in rows] == ["m2", "m1"]


def test_second_title_per_region(warehouse_art: Path) -> None:
    rows = run(warehouse_art, "second_title_per_region")
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [("eu", "m2", 2, 3), ("us", "m3", 2, 2)]


def test_multi_genre_days(warehouse_art: Path) -> None:
    assert run(warehouse_art, "multi_genre_days") == [(k("u1"), d("2026-01-05"), 5, 3)]
    # u5 touched exactly 3 genres on 2026-02-20: in with "more than 2", out with "more than 3".
    rows = run(warehouse_art, "multi_genre_days", min_genres="2")
    assert (k("u5"), d("2026-02-20"), 3, 2) in rows


def test_weekly_retention(warehouse_art: Path) -> None:
    assert run(warehouse_art, "weekly_retention") == [
        (d("2026-01-05"), 0, 2, 2, 1.0), (d("2026-01-05"), 1, 2, 1, 0.5),
        (d("2026-01-05"), 2, 2, 1, 0.5), (d("2026-01-05"), 6, 2, 1, 0.5),
        (d("2026-01-12"), 0, 2, 2, 1.0), (d("2026-02-16"), 0, 1, 1, 1.0),
    ]  # fmt: skip


def test_inactive_users_default_as_of_is_the_data_max_date(warehouse_art: Path) -> None:
    rows = run(warehouse_art, "inactive_users")
    assert [(r[0], r[3]) for r in rows] == [(k("u3"), 39), (k("u4"), 38), (k("u2"), 32)]
    assert {r[2] for r in rows} == {d("2026-02-20")}
    rows = run(warehouse_art, "inactive_users", as_of="2026-01-19", days="7")
    # u5 had not appeared yet; u4 was last active on 2026-01-13, inside the window.
    assert sorted(r[0] for r in rows) == sorted([k("u1"), k("u3")])


def test_duplicate_interactions(warehouse_art: Path) -> None:
    assert run(warehouse_art, "duplicate_interactions") == [
        (k("u1"), "m1", "1767607200", "view", 2), (k("u2"), "m2", "1767700000", "view", 1),
    ]  # fmt: skip


def test_cumulative_activity(warehouse_art: Path) -> None:
    rows = run(warehouse_art, "cumulative_activity", user_key=k("u1"))
    assert rows == [(k("u1"), d("2026-01-05"), 3, 3), (k("u1"), d("2026-01-12"), 1, 4),
                    (k("u1"), d("2026-02-20"), 1, 5)]  # fmt: skip
    assert len(run(warehouse_art, "cumulative_activity")) == 10  # active (user, day) pairs


def test_catalog_coverage_and_gini(warehouse_art: Path) -> None:
    # Ranks 1-2: exposures m5=3, m6=1, m3=1, m1=1, m2=0, m4=0 -> coverage 4/6;
    # Gini over (0,0,1,1,1,3) = sum((2i-7) x_i) / (6 * 6) = 18 / 36.
    assert run(warehouse_art, "catalog_coverage", k="2") == [(2, 6, 4, 0.6667, 6, 0.5)]


def test_drift_by_run_lists_every_check_with_its_trend(warehouse_art: Path) -> None:
    rows = run(warehouse_art, "drift_by_run")
    # run_date, run_id, check, value, threshold, of_threshold, action, status, change,
    # trailing_mean, published, detail
    assert [(r[1], r[2], r[7]) for r in rows][:2] == [("run-1", "item_psi_prev", "skipped"),
                                                     ("run-1", "volume_drop", "ok")]
    volume = [r for r in rows if r[2] == "volume_drop"]
    assert [r[3] for r in volume] == [0.0, 0.1, 0.05, 0.5]
    assert [r[8] for r in volume] == [None, 0.1, -0.05, 0.45]  # change from the run before
    assert volume[3][9] == pytest.approx(0.05)  # mean of the three runs before run-4
    assert volume[3][5] == 1.25 and volume[3][7] == "fail"  # 0.5 is 1.25x the threshold
    # run-4 was stopped by the check: recorded, never published
    assert [r[10] for r in volume] == [True, True, True, False]


def test_drift_by_run_filters_on_check_and_status(warehouse_art: Path) -> None:
    rows = run(warehouse_art, "drift_by_run", status="warn")
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [("run-3", "item_psi_prev", 0.08, 0.05)]
    psi = run(warehouse_art, "drift_by_run", check="item_psi_prev")
    assert [r[3] for r in psi] == [None, 0.01, 0.08, 0.02]


def test_metric_trend(warehouse_art: Path) -> None:
    rows = run(warehouse_art, "metric_trend")
    assert [r[1] for r in rows] == ["run-1", "run-2", "run-3"]
    assert [r[2] for r in rows] == [0.10, 0.12, 0.11]
    assert rows[0][3] is None and rows[1][3] == pytest.approx(0.02)
    assert [r[4] for r in rows] == [False, False, True]
    assert [r[2] for r in run(warehouse_art, "metric_trend", list="popularity")] == [0.05] * 3


def test_fallback_rate_by_hour_and_reason(warehouse_art: Path) -> None:
    rows = run(warehouse_art, "fallback_rate")
    ten, eleven = dt.datetime(2026, 2, 21, 10), dt.datetime(2026, 2, 21, 11)
    assert rows == [
        (ten, "cold_start", 1, 0.25), (ten, "none", 1, 0.25), (ten, "timeout", 1, 0.25),
        (ten, "unknown_user", 1, 0.25), (eleven, "none", 1, 0.5), (eleven, "timeout", 1, 0.5),
    ]  # fmt: skip


def test_fallback_by_segment(warehouse_art: Path) -> None:
    assert run(warehouse_art, "fallback_by_segment") == [
        ("eu", 3, 0.3333, "timeout"), ("anonymous", 1, 1.0, "unknown_user"),
        ("unknown user", 1, 1.0, "cold_start"), ("us", 1, 1.0, "timeout"),
    ]  # fmt: skip


def test_queries_give_the_same_answer_on_the_restricted_file(warehouse_art: Path) -> None:
    for name in ("weekly_retention", "fallback_by_segment", "duplicate_interactions"):
        assert run(warehouse_art, name) == run(warehouse_art, name, restricted=True), name


def test_params_are_checked() -> None:
    query = canned_queries.get("top_titles")
    with pytest.raises(RecsysError, match="required"):
        query.bind({"start": "2026-01-01"})
    with pytest.raises(RecsysError, match="unknown param"):
        query.bind({"start": "a", "end": "b", "evil": "1; DROP TABLE items"})
    with pytest.raises(RecsysError, match="no canned query"):
        canned_queries.get("nope")


def test_param_values_are_data_not_sql(warehouse_art: Path) -> None:
    assert run(warehouse_art, "cumulative_activity", user_key="x' OR '1'='1") == []


def test_cli_runs_and_lists_canned_queries(warehouse_art: Path) -> None:
    base = [sys.executable, "-m", "shared.cli", "sql"]
    listed = subprocess.run([*base, "--list-queries"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "top_titles (v1)" in listed.stdout and "--param start" in listed.stdout
    out = subprocess.run(
        [*base, "--artifacts", str(warehouse_art), "--format", "csv", "--query", "top_titles",
         "--param", "start=2026-01-05", "--param", "end=2026-01-12", "--param", "limit=1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["item_id,title,interactions,users", "m2,Title m2,4,3"]
    raw = subprocess.run(
        [*base, "--artifacts", str(warehouse_art), "--format", "csv",
         "SELECT item_id FROM items ORDER BY item_id LIMIT 1"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    # Shell scripts do `| tail -1`: a csv-module "\r\n" would end up inside their variables.
    assert raw.returncode == 0 and raw.stdout == b"item_id\nm1\n"
    bad = subprocess.run([*base, "--artifacts", str(warehouse_art), "--query", "top_titles"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "required" in bad.stderr
