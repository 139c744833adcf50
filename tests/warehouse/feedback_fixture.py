"""Served requests and feedback events with hand-worked outcomes, written as the service
writes them (Parquet under ART/served_log/ and ART/event_log/), for tests/warehouse.

Two UTC days, five requests (q3 in an old-format file without `sources`), fourteen events
plus one repeated copy. What each event is attributed to is in its comment; the numbers the
tests assert follow from that table (see test_feedback.py).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shared.events import EVENT_LOG_DIR, EVENT_SCHEMA
from shared.request_log import SERVED_LOG_DIR

DAY1, DAY2 = "2026-02-21", "2026-02-22"
WINDOW_MINUTES = 30

OLD_ITEM = pa.struct([("item_id", pa.string()), ("rank", pa.int32()), ("score", pa.float32())])
NEW_ITEM = pa.struct([*OLD_ITEM, ("sources", pa.list_(pa.string()))])


def at(day: str, hhmm: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hhmm}:00+00:00")


# request_id, day, time, user, bundle, served_by, fallback_reason, items (item, sources)
REQUESTS: list[tuple[Any, ...]] = [
    ("q1", DAY1, "10:00", "u1", "run-2", "rerank", None,
     [("m1", ["ann"]), ("m2", ["ann", "cooc"]), ("m3", ["cooc"])]),
    ("q2", DAY1, "10:00", "u2", "run-2", "popular_global", "timeout",
     [("m1", ["popular"]), ("m2", ["popular"])]),
    ("q3", DAY1, "12:00", "u1", "run-2", "rerank", None,  # written before sources existed
     [("m4", None), ("m1", None)]),
    ("q4", DAY2, "09:00", "u2", "run-3", "rerank", None, [("m3", ["ann"]), ("m1", ["cooc"])]),
    ("q5", DAY2, "09:00", None, "run-3", "popular_global", "unknown_user",
     [("m1", ["popular"]), ("m2", ["popular"])]),
]  # fmt: skip
OLD_FORMAT = {"q3"}

# event_id, type, user, item, day, time, request_id
EVENTS: list[tuple[Any, ...]] = [
    ("e1", "click", "u1", "m1", DAY1, "10:01", "q1"),  # (a) q1/m1
    ("e2", "play", "u1", "m1", DAY1, "10:02", "q1"),  # (a) q1/m1 (repeated below)
    ("e3", "impression", "u1", "m2", DAY1, "10:00", "q1"),  # (a) q1/m2 seen
    ("e4", "click", "u1", "m2", DAY1, "10:10", None),  # (b) q1/m2, 10 min after
    ("e5", "play", "u1", "m3", DAY1, "10:45", None),  # 45 min after q1: unattributed
    ("e6", "click", "u2", "m1", DAY1, "10:05", "q2"),  # (a) q2/m1
    ("e7", "play", "u2", "m1", DAY1, "09:00", None),  # before any request: unattributed
    ("e8", "play", "u2", "m3", DAY2, "09:20", "q-gone"),  # unknown request -> (b) q4/m3
    ("e9", "complete", "u2", "m3", DAY2, "09:40", "q4"),  # (a) q4/m3
    ("e10", "dislike", "u2", "m1", DAY2, "09:01", "q4"),  # (a) q4/m1
    ("e11", "click", "u1", "m4", DAY1, "12:05", "q3"),  # (a) q3/m4 (old-format file)
    ("e12", "play", "u1", "m4", DAY1, "12:06", None),  # (b) q3/m4
    ("e13", "play", "u3", "m6", DAY2, "20:00", None),  # never served to u3: unattributed
    ("e14", "click", "u1", "m1", DAY1, "12:10", None),  # (b) the latest request: q3, not q1
]  # fmt: skip
REPEATED = "e2"  # written twice (a recovered spool), received later the second time


def _items(items: list[tuple[str, list[str] | None]], new: bool) -> list[dict[str, Any]]:
    out = []
    for rank, (item, sources) in enumerate(items, start=1):
        row: dict[str, Any] = {"item_id": item, "rank": rank, "score": 1.0 / rank}
        if new:
            row["sources"] = sources
        out.append(row)
    return out


def _served_table(rows: list[tuple[Any, ...]], new: bool) -> pa.Table:
    item_type = NEW_ITEM if new else OLD_ITEM
    return pa.table({
        "request_id": [r[0] for r in rows],
        "ts": pa.array([at(r[1], r[2]) for r in rows], pa.timestamp("ms", tz="UTC")),
        "user_id": pa.array([r[3] for r in rows], pa.string()),
        "bundle": [r[4] for r in rows],
        "served_by": [r[5] for r in rows],
        "fallback_reason": pa.array([r[6] for r in rows], pa.string()),
        "items": pa.array([_items(r[7], new) for r in rows], pa.list_(item_type)),
        "latency_ms": [10.0] * len(rows),
        "endpoint": ["recommend"] * len(rows),
    })  # fmt: skip


def write_served(art: Path) -> list[Path]:
    """One file per (day, format): the new files have items.sources, q3's file does not."""
    paths = []
    for day in (DAY1, DAY2):
        for new in (True, False):
            rows = [r for r in REQUESTS if r[1] == day and (r[0] in OLD_FORMAT) != new]
            if rows:
                folder = art / SERVED_LOG_DIR / f"date={day}"
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"part-{'new' if new else 'old'}-000001.parquet"
                pq.write_table(_served_table(rows, new), path)
                paths.append(path)
    return sorted(paths)


def event_table(events: list[tuple[Any, ...]], received_delay_s: int = 1) -> pa.Table:
    rows = [
        {"event_id": e[0], "type": e[1], "user_id": e[2], "item_id": e[3],
         "ts": at(e[4], e[5]), "received_at": at(e[4], e[5]) + dt.timedelta(
             seconds=received_delay_s), "request_id": e[6], "value": None}
        for e in events
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)


def write_events(art: Path) -> list[Path]:
    """Each day's events in one file, plus the repeated copy of REPEATED in a second one."""
    paths = []
    for day in (DAY1, DAY2):
        folder = art / EVENT_LOG_DIR / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "part-1-000001.parquet"
        pq.write_table(event_table([e for e in EVENTS if e[4] == day]), path)
        paths.append(path)
    again = [e for e in EVENTS if e[0] == REPEATED]
    path = art / EVENT_LOG_DIR / f"date={DAY1}" / "part-2-000001.parquet"
    pq.write_table(event_table(again, received_delay_s=3600), path)
    paths.append(path)
    return sorted(paths)
