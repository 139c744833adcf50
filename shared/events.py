"""Feedback events: what product services tell us users did with what was served.

The contract both sides read. The service validates `POST /v1/events` bodies and appends
each accepted event to the event log (`ART/event_log/date=YYYY-MM-DD/part-*.parquet`, the
same layout and durability rules as the served-request log); the warehouse loads that log
as `events` and joins it to the served log (`exposures`); the nightly run reads it as
interactions (type -> weight from the pipeline config, `dislike` kept as a negative).

Pure Python plus pyarrow: the service imports it, and so does the batch side.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from shared.parquet_log import ParquetLogWriter

EVENT_LOG_DIR = "event_log"

IMPRESSION = "impression"
CLICK = "click"
PLAY = "play"
COMPLETE = "complete"
RATING = "rating"
DISLIKE = "dislike"
# The default set; the service's `event_types` setting may narrow or extend it.
DEFAULT_EVENT_TYPES: tuple[str, ...] = (IMPRESSION, CLICK, PLAY, COMPLETE, RATING, DISLIKE)
# Types that mean "the user engaged with the item": they become the user's recent items.
ENGAGED_TYPES: frozenset[str] = frozenset({CLICK, PLAY, COMPLETE, RATING})
# Types that mean "do not show this again" (until the exclusion's TTL).
NEGATIVE_TYPES: frozenset[str] = frozenset({DISLIKE})

EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),  # the client's, or "srv-<uuid>" when it sent none
        ("type", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")),  # when it happened (client's, else received_at)
        ("received_at", pa.timestamp("ms", tz="UTC")),  # when the service acknowledged it
        ("request_id", pa.string()),  # the served request it answers, when the client knows
        ("value", pa.float64()),  # rating value, watch fraction...; null when not given
    ]
)


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One accepted event, as the event log and the real-time store take it."""

    event_id: str
    type: str
    user_id: str
    item_id: str
    ts: dt.datetime  # timezone-aware UTC
    received_at: dt.datetime  # timezone-aware UTC
    request_id: str | None = None
    value: float | None = None


# --- the event log's writer ------------------------------------------------------------

# An event as the writer's buffer holds it: FeedbackEvent's fields in EVENT_SCHEMA order
# (a flat tuple of atomic values: untracked by the GC, see shared/parquet_log.py).
EventRow = tuple[str, str, str, str, dt.datetime, dt.datetime, str | None, float | None]


def event_row(e: FeedbackEvent) -> EventRow:
    return (e.event_id, e.type, e.user_id, e.item_id, e.ts, e.received_at, e.request_id,
            e.value)  # fmt: skip


def event_rows_table(rows: Sequence[EventRow]) -> pa.Table:
    """Rows as one Arrow table of EVENT_SCHEMA (one transpose, one array per column)."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(EVENT_SCHEMA)
    return pa.Table.from_arrays(
        [pa.array(c, f.type) for c, f in zip(cols, EVENT_SCHEMA, strict=True)],
        schema=EVENT_SCHEMA,
    )


def event_log_dir(artifacts: Path) -> Path:
    return artifacts / EVENT_LOG_DIR


_WARM: EventRow = ("warm-up", CLICK, "u", "i", dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                   dt.datetime(2026, 1, 1, tzinfo=dt.UTC), None, 1.0)  # fmt: skip


class EventLogWriter(ParquetLogWriter[EventRow]):
    """The event log's writer (ART/event_log); durability as in shared/parquet_log.py.
    Partitioned by the event's `ts` (when it happened)."""

    def __init__(self, root: Path, **kwargs: Any) -> None:
        super().__init__(root, schema=EVENT_SCHEMA, rows_table=event_rows_table,
                         name="event log", warm_rows=[_WARM], **kwargs)  # fmt: skip

    def log_events(self, events: Sequence[FeedbackEvent]) -> int:
        """Append accepted events under one lock; returns how many were dropped."""
        return self.extend(event_row(e) for e in events)
