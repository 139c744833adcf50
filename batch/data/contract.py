"""The data contract both `recsys data` commands write, and helpers to write it safely.

A data directory holds:

    interactions.parquet  user_id:string, item_id:string, timestamp:int64 (unix seconds),
                          event_type:string, weight:float64
    items.parquet         item_id:string, title:string, genres:string ('|'-separated),
                          available_regions:string (nullable, '|'-separated; null = everywhere)
    users.parquet         user_id:string, region:string                         (optional)

The pipeline also reads CSV versions of these files; the commands here only write Parquet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

# The file names (and where the pipeline looks for them) are shared/inputs.py's.
from shared.inputs import CONTRACT_FILES as CONTRACT_FILES
from shared.inputs import FORMATS
from shared.inputs import INTERACTIONS as INTERACTIONS
from shared.inputs import ITEMS as ITEMS
from shared.inputs import USERS as USERS

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

# zstd: ~30% smaller than snappy on these id-heavy columns and still fast to decode.
COMPRESSION = "zstd"


def interactions_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("timestamp", pa.int64()),
            ("event_type", pa.string()),
            ("weight", pa.float64()),
        ]
    )


def items_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("item_id", pa.string()),
            ("title", pa.string()),
            ("genres", pa.string()),
            ("available_regions", pa.string()),
        ]
    )


def users_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("user_id", pa.string()), ("region", pa.string())])


def _tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


@contextmanager
def parquet_writer(out_dir: Path, name: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """Stream row groups into `out_dir/name.parquet`.

    The file appears under its final name only once complete, so a crash or Ctrl-C never
    leaves a truncated file that the pipeline would happily read.
    """
    import pyarrow.parquet as pq

    final = out_dir / f"{name}.parquet"
    tmp = _tmp_path(final)
    writer = pq.ParquetWriter(tmp, schema, compression=COMPRESSION)
    try:
        yield writer
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, final)


def write_table(out_dir: Path, name: str, table: pa.Table) -> None:
    """Write a whole (small) table atomically, e.g. items or users."""
    with parquet_writer(out_dir, name, table.schema) as writer:
        writer.write_table(table)


def remove_stale(out_dir: Path, keep: set[str]) -> list[Path]:
    """Delete contract files that this run does not write.

    Otherwise a users.parquet left over from an earlier import into the same directory would
    silently be joined with the new interactions.
    """
    removed = []
    for name in CONTRACT_FILES:
        if name in keep:
            continue
        for ext in FORMATS:
            path = out_dir / f"{name}.{ext}"
            if path.exists():
                path.unlink()
                removed.append(path)
    return removed


@dataclass
class InteractionStats:
    """Running totals over the interaction chunks, for the one-line summary."""

    rows: int = 0
    min_ts: int | None = None
    max_ts: int | None = None
    _users: set[str] = field(default_factory=set)
    _items: set[str] = field(default_factory=set)

    def update(self, user_ids: pa.Array, item_ids: pa.Array, timestamps: np.ndarray) -> None:
        import pyarrow.compute as pc

        self.rows += len(timestamps)
        if len(timestamps) == 0:
            return
        # Unique per chunk first: keeps the Python-level set work at O(distinct ids).
        self._users.update(pc.unique(user_ids).to_pylist())
        self._items.update(pc.unique(item_ids).to_pylist())
        lo, hi = int(timestamps.min()), int(timestamps.max())
        self.min_ts = lo if self.min_ts is None else min(self.min_ts, lo)
        self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)

    @property
    def n_users(self) -> int:
        return len(self._users)

    @property
    def n_items(self) -> int:
        return len(self._items)

    def summary(self) -> str:
        span = "no rows"
        if self.min_ts is not None and self.max_ts is not None:
            span = f"{_day(self.min_ts)}..{_day(self.max_ts)}"
        return (
            f"{self.rows:,} rows, {self.n_users:,} users, {self.n_items:,} items, time range {span}"
        )


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")
