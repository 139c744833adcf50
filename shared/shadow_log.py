"""The shadow log: per shadow-ranked request, how the shadow's list compared with the
served one (docs/experiments.md, Shadow scoring), as Parquet for the warehouse.

Layout: `ART/shadow_log/date=YYYY-MM-DD/part-<pid>-<token>-<seq>.parquet`, written by the
same spooled writer as the served-request log (shared/parquet_log.py: buffering, kill -9,
orphan recovery). No user id: `request_id` joins the row to `served_requests` when the
user is needed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from shared.parquet_log import ParquetLogWriter, tuple_rows_table

SHADOW_LOG_DIR = "shadow_log"

SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")),  # when the served request was answered
        ("shadow", pa.string()),  # the declared shadow: "bundle=<run|served>,scorer=<name|served>"
        ("bundle", pa.string()),  # run id that served the request
        ("scorer", pa.string()),  # scorer that served it (None: no re-rank)
        ("shadow_bundle", pa.string()),  # run id the shadow ranked with
        ("shadow_scorer", pa.string()),  # scorer that ran (None: no re-rank, or it fell back)
        ("shadow_served_by", pa.string()),  # rerank | precomputed | popular...: the shadow's path
        ("shadow_fallback_reason", pa.string()),
        ("k", pa.int32()),  # items asked for
        ("n_served", pa.int32()),
        ("n_shadow", pa.int32()),
        ("common", pa.int32()),  # items in both lists
        ("jaccard", pa.float64()),  # Jaccard@k of the two lists
        ("kendall_tau", pa.float64()),  # on the common items; None with fewer than 2
        ("spearman", pa.float64()),
        ("shadow_latency_ms", pa.float64()),  # the shadow's ranking time, off the request path
        ("queue_ms", pa.float64()),  # from the answer to the shadow's start (its queueing)
    ]
)


@dataclass(frozen=True, slots=True)
class ShadowRecord:
    request_id: str
    ts: dt.datetime  # timezone-aware UTC
    shadow: str
    bundle: str
    scorer: str | None
    shadow_bundle: str
    shadow_scorer: str | None
    shadow_served_by: str
    shadow_fallback_reason: str | None
    k: int
    n_served: int
    n_shadow: int
    common: int
    jaccard: float
    kendall_tau: float | None
    spearman: float | None
    shadow_latency_ms: float
    queue_ms: float


Row = tuple[Any, ...]  # ShadowRecord's fields in SCHEMA order: atomic values only


def rows_table(rows: Sequence[Row]) -> pa.Table:
    return tuple_rows_table(rows, SCHEMA)


def empty_table() -> pa.Table:
    return SCHEMA.empty_table()


def log_dir(artifacts: Path) -> Path:
    return artifacts / SHADOW_LOG_DIR


class ShadowLogWriter(ParquetLogWriter[Row]):
    """The shadow log's writer: `log(ShadowRecord)`; see shared/parquet_log.py."""

    def __init__(self, root: Path, **kwargs: Any) -> None:
        super().__init__(root, schema=SCHEMA, rows_table=rows_table, name="shadow log", **kwargs)

    def log(self, record: ShadowRecord) -> None:
        """Append one record; never blocks on I/O, never raises."""
        self.append(astuple(record))

    def __enter__(self) -> ShadowLogWriter:
        return self
