"""The served-request log: what the online service answered, as Parquet for the warehouse.

Layout: `ART/served_log/date=YYYY-MM-DD/part-<pid>-<token>-<seq>.parquet`, written by the
generic spooled writer in shared/parquet_log.py (read its docstring for buffering,
durability under kill -9, orphan recovery, retries and the GIL); this module is the served
log's schema and its record -> columns conversion.

Each served item carries its `sources` (precomputed, ann, ...). Files written before that
column existed have items of (item_id, rank, score) only; readers must treat a missing
`sources` as unknown, never fail on it.

Each request carries its experiment `assignments` (experiment, arm), an empty list when it
was in none. Files written before that column existed have no such column: readers read
them as no assignment (the warehouse does, with union_by_name), never fail on them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from shared import parquet_log
from shared.parquet_log import PART_GLOB, ParquetLogWriter, part_files, prune, recover_orphans

__all__ = ["ASSIGNMENT_TYPE", "ITEM_TYPE", "PART_GLOB", "SCHEMA", "SERVED_LOG_DIR", "RequestLogWriter",
           "ServedRequest", "empty_table", "log_dir", "part_files", "prune",
           "recover_orphans", "to_table"]  # fmt: skip

SERVED_LOG_DIR = "served_log"

ITEM_TYPE = pa.struct(
    [
        ("item_id", pa.string()),
        ("rank", pa.int32()),
        ("score", pa.float32()),
        ("sources", pa.list_(pa.string())),  # candidate sources that proposed the item
    ]
)
ASSIGNMENT_TYPE = pa.struct([("experiment", pa.string()), ("arm", pa.string())])
SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("user_id", pa.string()),  # None for anonymous requests
        ("bundle", pa.string()),  # run id of the bundle that answered
        ("served_by", pa.string()),  # rerank | precomputed | popular_segment | popular_global
        ("fallback_reason", pa.string()),  # None when the full path answered
        ("items", pa.list_(ITEM_TYPE)),
        ("latency_ms", pa.float64()),
        ("endpoint", pa.string()),
        ("assignments", pa.list_(ASSIGNMENT_TYPE)),  # [] when in no experiment
    ]
)

# (item_id, rank, score, sources); (item_id, rank, score) is read as sources unknown (empty).
ServedItem = tuple[str, int, float, tuple[str, ...]] | tuple[str, int, float]


@dataclass(slots=True)
class ServedRequest:
    request_id: str
    ts: dt.datetime  # timezone-aware UTC
    user_id: str | None
    bundle: str | None
    served_by: str
    fallback_reason: str | None
    items: Sequence[ServedItem]
    latency_ms: float
    endpoint: str = "recommend"
    assignments: Sequence[tuple[str, str]] = ()  # (experiment, arm) per running experiment


# A record as the buffer holds it: ServedRequest's fields in order, items as a tuple of
# (item_id, rank, score, sources tuple): atomic values only, untracked by the GC.
_Row = tuple[str, dt.datetime, str | None, str | None, str, str | None,
             tuple[tuple[str, int, float, tuple[str, ...]], ...], float, str,
             tuple[tuple[str, str], ...]]  # fmt: skip
_SLICE_ROWS = parquet_log._SLICE_ROWS


def _item(it: ServedItem) -> tuple[str, int, float, tuple[str, ...]]:
    if len(it) == 4:
        return (it[0], it[1], it[2], tuple(it[3]))  # type: ignore[misc]
    return (it[0], it[1], it[2], ())


def _row(r: ServedRequest) -> _Row:
    """The record as a tuple of atomic values only: untracked by the GC after one pass."""
    return (r.request_id, r.ts, r.user_id, r.bundle, r.served_by, r.fallback_reason,
            tuple(_item(it) for it in r.items), float(r.latency_ms), r.endpoint,
            tuple((str(e), str(a)) for e, a in r.assignments))  # fmt: skip


def to_table(records: Sequence[ServedRequest]) -> pa.Table:
    """The records as one Arrow table of SCHEMA."""
    return _rows_table([_row(r) for r in records])


def _list_of_structs(nested: Iterable[Sequence[tuple[Any, ...]]], struct: pa.StructType) -> pa.ListArray:
    """A list<struct> column from each row's tuple of element tuples: one flat child column
    per field plus list offsets, no per-element Python dicts (the dict-per-item version held
    the GIL ~40 µs per request); one C-level transpose per row."""
    offsets = [0]
    children: list[list[Any]] = [[] for _ in range(struct.num_fields)]
    for elements in nested:
        if elements:
            for child, values in zip(children, zip(*elements, strict=True), strict=True):
                child.extend(values)
        offsets.append(offsets[-1] + len(elements))
    fields = list(struct)
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array(child, field.type) for child, field in zip(children, fields, strict=True)],
            fields=fields,
        ),
    )


def _rows_table(rows: Sequence[_Row]) -> pa.Table:
    """Columnar build of SCHEMA from buffered rows."""
    items = _list_of_structs((r[6] for r in rows), ITEM_TYPE)
    assignments = _list_of_structs((r[9] for r in rows), ASSIGNMENT_TYPE)
    request_id, ts, user_id, bundle, served_by, reason, _, latency, endpoint, _ = (
        zip(*rows, strict=True) if rows else ((),) * 10
    )
    columns = [
        pa.array(request_id, pa.string()),
        pa.array(ts, SCHEMA.field("ts").type),
        pa.array(user_id, pa.string()),
        pa.array(bundle, pa.string()),
        pa.array(served_by, pa.string()),
        pa.array(reason, pa.string()),
        items,
        pa.array(latency, pa.float64()),
        pa.array(endpoint, pa.string()),
        assignments,
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _sliced_table(rows: Sequence[_Row]) -> pa.Table:
    return parquet_log.sliced_table(rows, _rows_table, SCHEMA)


def empty_table() -> pa.Table:
    return SCHEMA.empty_table()


def log_dir(artifacts: Path) -> Path:
    return artifacts / SERVED_LOG_DIR


_WARM = _row(ServedRequest("warm-up", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), None, None, "",
                           None, [("", 1, 0.0, ("warm",))], 0.0))  # fmt: skip


class RequestLogWriter(ParquetLogWriter[_Row]):
    """The served-request log's writer: `log(ServedRequest)`; see shared/parquet_log.py."""

    def __init__(self, root: Path, **kwargs: Any) -> None:
        super().__init__(root, schema=SCHEMA, rows_table=_rows_table, name="request log",
                         warm_rows=[_WARM], **kwargs)  # fmt: skip

    def log(self, record: ServedRequest) -> None:
        """Append one record; never blocks on I/O, never raises."""
        self.append(_row(record))

    def __enter__(self) -> RequestLogWriter:
        return self
