"""The feature skew log: sampled feature vectors of re-ranked requests, as the service
computed them (online/skew.py, docs/monitoring.md "Train/serve skew"), as Parquet for the
warehouse's `feature_skew` table.

Layout: `ART/skew_log/date=YYYY-MM-DD/part-<pid>-<token>-<seq>.parquet`, written by the
spooled writer of the other logs (shared/parquet_log.py). One row per logged candidate: a
few random candidates of each sampled request (`skew_log_rows`), one column per
shared.features.FEATURE_NAMES (NaN for a column the bundle's model does not read) and the
model's score. No user id, no item id: the rows are for distributions, not for people.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from shared.features import FEATURE_NAMES
from shared.parquet_log import ParquetLogWriter, tuple_rows_table

SKEW_LOG_DIR = "skew_log"

SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("ms", tz="UTC")),  # when the sampled request was scored
        ("bundle", pa.string()),  # run id whose features and model scored it
        ("scorer", pa.string()),
        ("sample_id", pa.string()),  # "<pid>-<n>": the rows of one sampled request
        ("candidates", pa.int32()),  # candidates the request scored (rows logged: fewer)
        ("score", pa.float64()),
        *[(name, pa.float64()) for name in FEATURE_NAMES],
    ]
)

Row = tuple[Any, ...]  # SCHEMA order: ts, bundle, scorer, sample_id, candidates, score, *features


def rows_table(rows: Sequence[Row]) -> pa.Table:
    return tuple_rows_table(rows, SCHEMA)


def empty_table() -> pa.Table:
    return SCHEMA.empty_table()


def log_dir(artifacts: Path) -> Path:
    return artifacts / SKEW_LOG_DIR


class SkewLogWriter(ParquetLogWriter[Row]):
    """The skew log's writer: `log_rows(...)`; see shared/parquet_log.py."""

    def __init__(self, root: Path, **kwargs: Any) -> None:
        super().__init__(root, schema=SCHEMA, rows_table=rows_table, name="skew log", **kwargs)

    def log_row(self, ts: dt.datetime, bundle: str, scorer: str, sample_id: str,
                candidates: int, score: float, values: Sequence[float]) -> None:  # fmt: skip
        """Append one candidate (values in FEATURE_NAMES order); never blocks, never raises."""
        self.append((ts, bundle, scorer, sample_id, candidates, score, *values))

    def __enter__(self) -> SkewLogWriter:
        return self
