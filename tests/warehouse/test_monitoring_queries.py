"""The monitoring canned analyses (drift_trend, freshness_by_run, run_changes) on the
hand-built warehouse (tests/warehouse/conftest.py: runs 1-3 published, run-4 stopped by
volume_drop), with the answers worked out by hand; also through `recsys sql --query`."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from batch.drift.store import DRIFT_SCHEMA
from batch.publish.warehouse_build import WarehouseInputs, build
from shared import canned_queries
from shared.warehouse import analyst_warehouse_path, run_query, warehouse_path
from tests.warehouse.conftest import KEY, inputs


def run(art: Path, name: str, **params: str) -> list[dict[str, Any]]:
    query = canned_queries.get(name)
    columns, rows = run_query(art, query.sql, query.bind(params))
    return [dict(zip(columns, r, strict=True)) for r in rows]


def test_drift_trend_one_row_per_check(warehouse_art: Path) -> None:
    rows = {r["check"]: r for r in run(warehouse_art, "drift_trend")}
    assert list(rows) == ["volume_drop", "item_psi_prev"]  # nearest its threshold first
    vol, psi = rows["volume_drop"], rows["item_psi_prev"]
    assert (vol["last_run_id"], vol["last_value"], vol["threshold"], vol["of_threshold"],
            vol["last_status"]) == ("run-4", 0.5, 0.4, 1.25, "fail")  # fmt: skip
    assert (vol["runs"], vol["mean"], vol["max"], vol["breaches"]) == (4, 0.1625, 0.5, 1)
    # least squares over 0, 0.1, 0.05, 0.5: 0.725 / 5; already above: no runs left
    assert vol["slope_per_run"] == 0.145 and vol["runs_to_threshold"] is None
    # run-1 skipped (NULL): mean and slope over 0.01, 0.08, 0.02 -> 0.005 per run; 0.03 to go
    assert (psi["mean"], psi["max"], psi["breaches"], psi["last_breach"]) == (
        0.036667, 0.08, 1, dt.date(2026, 1, 3))
    assert psi["slope_per_run"] == 0.005 and psi["runs_to_threshold"] == 6
    # the newest two runs only: 0.08 then 0.02, falling
    last2 = run(warehouse_art, "drift_trend", last="2", check="item_psi_prev")
    assert [(r["runs"], r["slope_per_run"], r["runs_to_threshold"]) for r in last2] == [
        (2, -0.06, None)]


def test_freshness_by_run(warehouse_art: Path) -> None:
    rows = run(warehouse_art, "freshness_by_run")
    assert [(r["run_id"], r["published"], r["is_current"]) for r in rows] == [
        ("run-1", True, False), ("run-2", True, False), ("run-3", True, True),
        ("run-4", False, False)]  # fmt: skip
    run3 = rows[2]
    assert run3["newest_event"] == dt.datetime(2026, 1, 3, 18)
    assert run3["published_at"] == dt.datetime(2026, 1, 4, 3, 15)
    assert [r["event_lag_hours"] for r in rows] == [2.0, 0.5, 6.0, None]
    assert [r["event_age_at_publish_hours"] for r in rows] == [5.0, 5.0, 9.25, None]
    assert [r["publish_delay_hours"] for r in rows] == [3.0, 4.5, 3.25, None]
    assert [r["hours_since_previous_publish"] for r in rows] == [None, 25.5, 22.75, None]
    assert [r["run_id"] for r in run(warehouse_art, "freshness_by_run", last="2")] == [
        "run-3", "run-4"]


def test_freshness_by_run_reads_the_drift_freshness_checks(tmp_path: Path) -> None:
    base = inputs(tmp_path / "unused")
    extra = pa.Table.from_pylist([
        {"run_id": "run-3", "run_date": dt.date(2026, 1, 3), "check": "freshness_hours",
         "value": 6.0, "threshold": 24.0, "action": "warn", "status": "ok", "detail": ""},
        {"run_id": "run-4", "run_date": dt.date(2026, 1, 4), "check": "freshness_hours",
         "value": 30.0, "threshold": 24.0, "action": "warn", "status": "warn", "detail": ""},
        {"run_id": "run-4", "run_date": dt.date(2026, 1, 4), "check": "input_age_at_run_hours",
         "value": 33.5, "threshold": 48.0, "action": "off", "status": "off", "detail": ""},
    ], schema=DRIFT_SCHEMA)  # fmt: skip
    build(WarehouseInputs(**{**base.__dict__, "drift": pa.concat_tables([base.drift, extra])}),
          warehouse_path(tmp_path), analyst_warehouse_path(tmp_path), KEY)  # fmt: skip
    rows = {r["run_id"]: r for r in run(tmp_path, "freshness_by_run")}
    assert (rows["run-3"]["freshness_hours"], rows["run-3"]["freshness_status"]) == (6.0, "ok")
    assert (rows["run-4"]["freshness_hours"], rows["run-4"]["freshness_threshold"],
            rows["run-4"]["freshness_status"], rows["run-4"]["input_age_at_run_hours"]) == (
        30.0, 24.0, "warn", 33.5)  # fmt: skip
    assert rows["run-1"]["freshness_hours"] is None


def changes(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["aspect"], r["name"], r["previous"], r["current"], r["change"]) for r in rows]


def test_run_changes_of_the_stopped_night(warehouse_art: Path) -> None:
    """The default run is the newest, run-4, stopped by volume_drop: drift rows only."""
    rows = run(warehouse_art, "run_changes")
    assert {(r["run_id"], r["previous_run_id"]) for r in rows} == {("run-4", "run-3")}
    assert changes(rows) == [
        ("drift", "item_psi_prev", "0.08", "0.02", -0.06),
        ("drift", "item_psi_prev status", "warn", "ok", None),
        ("drift", "volume_drop", "0.05", "0.5", 0.45),
        ("drift", "volume_drop status", "ok", "fail", None),
    ]
    assert rows[2]["relative_change"] == 9.0


def test_run_changes_names_config_inputs_drift_and_metrics(warehouse_art: Path) -> None:
    rows = run(warehouse_art, "run_changes", run="run-3")
    assert {r["previous_run_id"] for r in rows} == {"run-2"}
    assert changes(rows) == [
        ("config", "code_version", "test", "test-2", None),
        ("config", "config_fingerprint", "f1", "f2", None),
        ("config", "publish.keep_runs", "3", "5", None),
        ("input", "interactions_clean", "1100", "900", -200.0),
        ("input", "items", "20", "21", 1.0),
        ("input", "users", "52", "55", 3.0),
        ("drift", "item_psi_prev", "0.01", "0.08", 0.07),
        ("drift", "item_psi_prev status", "ok", "warn", None),
        ("drift", "volume_drop", "0.1", "0.05", -0.05),
        ("metric", "merged ndcg@10", "0.12", "0.11", -0.01),
    ]
    assert rows[3]["relative_change"] == pytest.approx(-0.1818)
    every = run(warehouse_art, "run_changes", run="run-3", changed_only="false")
    unchanged = [r for r in every if r["previous"] == r["current"]]
    assert ("config", "publish.mode", "switch", "switch", None) in changes(unchanged)
    assert ("metric", "popularity ndcg@10", "0.05", "0.05", 0.0) in changes(unchanged)
    # the first run has nothing to compare with: every value, previous NULL
    first = run(warehouse_art, "run_changes", run="run-1")
    assert first and all(r["previous_run_id"] is None and r["previous"] is None for r in first)


def test_monitoring_queries_through_the_cli(warehouse_art: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shared.cli", "sql", "--artifacts", str(warehouse_art),
         "--format", "csv", "--query", "run_changes", "--param", "run=run-3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "run_id,previous_run_id,aspect,name,previous,current,change,relative_change"
    assert "run-3,run-2,config,code_version,test,test-2,," in lines
