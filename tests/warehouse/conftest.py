"""A small hand-built warehouse with known answers (no Spark): see the docstring of
`warehouse_art` for the data every test relies on."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from batch.drift.store import DRIFT_SCHEMA
from batch.publish.warehouse_build import (
    METRICS_SCHEMA,
    RUNS_SCHEMA,
    WarehouseInputs,
    build,
)
from shared.request_log import RequestLogWriter, ServedRequest, log_dir, part_files
from shared.warehouse import analyst_warehouse_path, warehouse_path

KEY = b"test-pseudonym-key"

ITEMS = {"m1": "A|B", "m2": "C", "m3": "D|E", "m4": "A", "m5": "B|C", "m6": "F"}
USERS = {"u1": "eu", "u2": "eu", "u3": "us", "u4": "us", "u5": "us"}
# (user, day, item); several events of a user on one day get increasing times.
EVENTS = [
    ("u1", "2026-01-05", "m1"), ("u1", "2026-01-05", "m2"), ("u1", "2026-01-05", "m3"),
    ("u1", "2026-01-12", "m1"), ("u1", "2026-02-20", "m4"),
    ("u2", "2026-01-05", "m1"), ("u2", "2026-01-06", "m2"), ("u2", "2026-01-19", "m2"),
    ("u2", "2026-01-19", "m1"),
    ("u3", "2026-01-12", "m2"), ("u3", "2026-01-12", "m5"), ("u3", "2026-01-12", "m2"),
    ("u4", "2026-01-12", "m3"), ("u4", "2026-01-13", "m1"),
    ("u5", "2026-02-20", "m2"), ("u5", "2026-02-20", "m3"),
]  # fmt: skip
RECS = {"u1": ["m5", "m6", "m2"], "u2": ["m5", "m3"], "u3": ["m5", "m1"]}
SERVED = [  # (request_id, hour, user, fallback_reason)
    ("r1", 10, "u1", None), ("r2", 10, "u3", "timeout"), ("r3", 10, None, "unknown_user"),
    ("r4", 10, "ghost", "cold_start"), ("r5", 11, "u2", None), ("r6", 11, "u2", "timeout"),
]  # fmt: skip
METRIC_TREND = [("run-1", "2026-01-01", 0.10), ("run-2", "2026-01-02", 0.12),
                ("run-3", "2026-01-03", 0.11)]  # fmt: skip
# What each run recorded (runs table): published the morning after its date; run-3's newest
# event is 6 hours before the end of its day, it changed the code and one setting.
RUN_RECORDS = {
    "run-1": ("2026-01-02T03:00:00", "2026-01-01T22:00:00+00:00", "test", "f1",
              {"interactions_clean": 1000, "users": 50, "items": 20}, 3),
    "run-2": ("2026-01-03T04:30:00", "2026-01-02T23:30:00+00:00", "test", "f1",
              {"interactions_clean": 1100, "users": 52, "items": 20}, 3),
    "run-3": ("2026-01-04T03:15:00", "2026-01-03T18:00:00+00:00", "test-2", "f2",
              {"interactions_clean": 900, "users": 55, "items": 21}, 5),
}  # fmt: skip
# Input drift checks: three published runs, then run-4 stopped by volume_drop (fail).
DRIFT_ROWS = [
    ("run-1", "2026-01-01", "item_psi_prev", None, 0.05, "warn", "skipped"),
    ("run-1", "2026-01-01", "volume_drop", 0.0, 0.4, "fail", "ok"),
    ("run-2", "2026-01-02", "item_psi_prev", 0.01, 0.05, "warn", "ok"),
    ("run-2", "2026-01-02", "volume_drop", 0.1, 0.4, "fail", "ok"),
    ("run-3", "2026-01-03", "item_psi_prev", 0.08, 0.05, "warn", "warn"),
    ("run-3", "2026-01-03", "volume_drop", 0.05, 0.4, "fail", "ok"),
    ("run-4", "2026-01-04", "item_psi_prev", 0.02, 0.05, "warn", "ok"),
    ("run-4", "2026-01-04", "volume_drop", 0.5, 0.4, "fail", "fail"),
]  # fmt: skip


def epoch(day: str, seconds: int = 36_000) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()) + seconds


def data_window(run_date: str, newest: str) -> str:
    """The manifest's data_window: newest event, end of the run date (exclusive)."""
    end = dt.date.fromisoformat(run_date) + dt.timedelta(days=1)
    return json.dumps({"min": "2026-01-01T00:00:00+00:00", "max": newest,
                       "end_exclusive": f"{end}T00:00:00+00:00"})  # fmt: skip


def interactions() -> pa.Table:
    rows = []
    for n, (user, day, item) in enumerate(EVENTS):
        rows.append({"user_id": user, "item_id": item, "ts": epoch(day, 36_000 + n * 60),
                     "event_type": "view", "weight": 1.0})  # fmt: skip
    return pa.Table.from_pylist(rows)


def served_log(root: Path) -> list[Path]:
    with RequestLogWriter(root, rotate_rows=4, rotate_seconds=3600) as writer:
        for rid, hour, user, reason in SERVED:
            writer.log(ServedRequest(
                request_id=rid, ts=dt.datetime(2026, 2, 21, hour, 5, tzinfo=dt.UTC),
                user_id=user, bundle="run-3",
                served_by="popular_global" if reason else "rerank", fallback_reason=reason,
                items=[("m1", 1, 0.9), ("m2", 2, 0.8)], latency_ms=12.5 + hour,
            ))  # fmt: skip
    return part_files(root)


def inputs(art: Path) -> WarehouseInputs:
    item_ids = list(ITEMS)
    user_ids = list(USERS)
    items = pa.table({
        "item_idx": pa.array(range(len(item_ids)), pa.int32()), "item_id": item_ids,
        "title": [f"Title {i}" for i in item_ids], "genres": list(ITEMS.values()),
        "available_regions": pa.array([None] * len(item_ids), pa.string()),
    })  # fmt: skip
    users = pa.table({"user_idx": pa.array(range(len(user_ids)), pa.int32()),
                      "user_id": user_ids, "region": list(USERS.values())})  # fmt: skip
    rec_rows = [
        {"user_idx": user_ids.index(u), "user_id": u, "rank": r, "item_idx": item_ids.index(i),
         "item_id": i, "score": 1.0 / r, "sources": ["ann"] if r % 2 else ["ann", "cooc"]}
        for u, lst in RECS.items() for r, i in enumerate(lst, start=1)
    ]  # fmt: skip
    cands = pa.Table.from_pylist([
        {"user_idx": r["user_idx"], "item_idx": r["item_idx"], "sources": r["sources"],
         "score_ann": r["score"], "rank_ann": r["rank"]} for r in rec_rows
    ])  # fmt: skip
    popular = pa.table({"segment": ["__global__"] * 2, "rank": [1, 2],
                        "item_idx": [1, 0], "item_id": ["m2", "m1"], "score": [5.0, 4.0]})
    quarantine = pa.table({
        "row_number": [1, 2, 3, 4], "reason": ["duplicate", "duplicate", "duplicate",
                                               "missing_item_id"],
        "user_id": ["u1", "u1", "u2", "u3"], "item_id": ["m1", "m1", "m2", ""],
        "raw_timestamp": ["1767607200", "1767607200", "1767700000", "1767700000"],
        "event_type": ["view"] * 4, "raw_weight": ["1"] * 4,
    })  # fmt: skip
    runs = pa.Table.from_pylist([
        {"run_id": r, "run_date": dt.date.fromisoformat(d),
         "created_at": dt.datetime.fromisoformat(RUN_RECORDS[r][0]),
         "code_version": RUN_RECORDS[r][2], "protocol": "temporal",
         "row_counts": json.dumps(RUN_RECORDS[r][4]),
         "data_window": data_window(d, RUN_RECORDS[r][1]),
         "config_fingerprint": RUN_RECORDS[r][3],
         "config": json.dumps({"publish": {"keep_runs": RUN_RECORDS[r][5], "mode": "switch"},
                               "drift": {"window_runs": 7}})}
        for r, d, _ in METRIC_TREND
    ], schema=RUNS_SCHEMA)  # fmt: skip
    metrics = pa.Table.from_pylist(
        [{"run_id": r, "list": "merged", "metric": "ndcg@10", "value": v}
         for r, _, v in METRIC_TREND]
        + [{"run_id": r, "list": "popularity", "metric": "ndcg@10", "value": 0.05}
           for r, _, _ in METRIC_TREND], schema=METRICS_SCHEMA)  # fmt: skip
    return WarehouseInputs(
        items=items, users=users, recommendations=pa.Table.from_pylist(rec_rows),
        popular=popular, candidates=cands, quarantine=quarantine,
        interactions=interactions(), served=served_log(log_dir(art)) or None,
        runs=runs, metrics=metrics, current_run="run-3",
        drift=pa.Table.from_pylist([
            {"run_id": r, "run_date": dt.date.fromisoformat(d), "check": c, "value": v,
             "threshold": t, "action": a, "status": st, "detail": ""}
            for r, d, c, v, t, a, st in DRIFT_ROWS], schema=DRIFT_SCHEMA),
    )  # fmt: skip


@pytest.fixture(scope="session")
def warehouse_art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ART holding warehouse.duckdb and warehouse_analyst.duckdb built from the tables
    above (5 users, 6 items, 16 events from 2026-01-05 to 2026-02-20, 3 runs, 6 requests)."""
    art = tmp_path_factory.mktemp("warehouse-art")
    build(inputs(art), warehouse_path(art), analyst_warehouse_path(art), KEY)
    return art
