"""The `assignments` table: one row per served request per experiment, from the served log's
`assignments` column, loading beside log files written before that column existed, and
pseudonymised in the analysts' file like served_requests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from batch.publish.warehouse_build import WarehouseInputs, build
from shared.privacy import pseudonym
from shared.request_log import RequestLogWriter, ServedRequest, log_dir, part_files
from shared.warehouse import (
    analyst_warehouse_path,
    connect_analyst,
    connect_read_only,
    warehouse_path,
)
from tests.warehouse import feedback_fixture as fx
from tests.warehouse.conftest import KEY, inputs

# request_id, user, (experiment, arm) pairs
NEW_REQUESTS: list[tuple[str, str | None, list[tuple[str, str]]]] = [
    ("n1", "u1", [("ranker", "control"), ("rules", "uncapped")]),
    ("n2", "u2", [("ranker", "noscore")]),
    ("n3", "u3", []),  # in no experiment
    ("n4", None, [("ranker", "control")]),  # an anonymous caller placed by assignment_id
]


def write_new(art: Path) -> list[Path]:
    """Served-log files as the service writes them now (with `assignments`)."""
    with RequestLogWriter(log_dir(art), rotate_seconds=3600) as writer:
        for n, (rid, user, arms) in enumerate(NEW_REQUESTS):
            writer.log(ServedRequest(
                request_id=rid, ts=dt.datetime(2026, 2, 23, 8, n, tzinfo=dt.UTC), user_id=user,
                bundle="run-4", served_by="rerank", fallback_reason=None,
                items=[("m1", 1, 0.5, ("ann",))], latency_ms=3.0, assignments=arms,
            ))  # fmt: skip
    return part_files(log_dir(art))


def build_with(art: Path, served: list[Path]) -> None:
    base = inputs(art / "unused")
    build(WarehouseInputs(**{**base.__dict__, "served": served}), warehouse_path(art),
          analyst_warehouse_path(art), KEY)  # fmt: skip


def restricted(art: Path, sql: str) -> list[tuple[Any, ...]]:
    con = connect_read_only(art)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    art = tmp_path_factory.mktemp("assignments-art")
    old = fx.write_served(art)  # files of before the column (q1..q5)
    assert all("assignments" not in pq.read_schema(p).names for p in old)
    new = [p for p in write_new(art) if p not in old]
    assert all("assignments" in pq.read_schema(p).names for p in new)
    build_with(art, sorted(old + new))
    return art


def test_one_row_per_request_per_experiment(art: Path) -> None:
    assert restricted(art, "SELECT request_id, user_id, bundle, experiment, arm FROM "
                           "assignments ORDER BY request_id, experiment") == [
        ("n1", "u1", "run-4", "ranker", "control"), ("n1", "u1", "run-4", "rules", "uncapped"),
        ("n2", "u2", "run-4", "ranker", "noscore"), ("n4", None, "run-4", "ranker", "control"),
    ]  # fmt: skip
    (ts,) = restricted(art, "SELECT ts FROM assignments WHERE request_id = 'n2'")[0]
    assert ts == dt.datetime(2026, 2, 23, 8, 1)  # naive UTC, as in served_requests


def test_logs_written_before_the_column_still_load(art: Path) -> None:
    served = restricted(art, "SELECT request_id FROM served_requests ORDER BY request_id")
    assert [r[0] for r in served] == ["n1", "n2", "n3", "n4", "q1", "q2", "q3", "q4", "q5"]
    assert restricted(art, "SELECT count(*) FROM assignments WHERE request_id LIKE 'q%'") == [(0,)]


def test_only_old_log_files_give_an_empty_table(tmp_path: Path) -> None:
    build_with(tmp_path, fx.write_served(tmp_path))
    assert restricted(tmp_path, "SELECT count(*) FROM served_requests") == [(5,)]
    assert restricted(tmp_path, "SELECT count(*) FROM assignments") == [(0,)]
    columns = restricted(tmp_path, "SELECT column_name FROM (DESCRIBE assignments)")
    assert [c[0] for c in columns] == ["request_id", "ts", "user_id", "bundle", "experiment",
                                       "arm"]  # fmt: skip


def test_the_analyst_file_has_user_keys_only(art: Path) -> None:
    con = connect_analyst(art)
    try:
        columns = [r[0] for r in con.execute("DESCRIBE assignments").fetchall()]
        assert columns == ["request_id", "ts", "user_key", "bundle", "experiment", "arm"]
        got = con.execute("SELECT request_id, user_key, arm FROM assignments "
                          "WHERE experiment = 'ranker' ORDER BY request_id").fetchall()  # fmt: skip
        assert got == [("n1", pseudonym(KEY, "u1"), "control"),
                       ("n2", pseudonym(KEY, "u2"), "noscore"), ("n4", None, "control")]
        # Joins to the exposures of the same requests, for per-arm outcomes.
        joined = con.execute("SELECT count(*) FROM assignments a JOIN served_requests s "
                             "USING (request_id)").fetchone()  # fmt: skip
        assert joined == (4,)
    finally:
        con.close()
