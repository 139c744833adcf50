"""What one run's input looks like, cheaply: the numbers the drift checks compare.

Computed with DuckDB over the validate stage's Parquet outputs (or over Arrow tables: the
false-alarm bench and the tests), a handful of GROUP BYs, no Spark. A published run's
profile is kept (batch/drift/store.py) as the reference of the runs after it.

"Recent" is the last `drift.recent_days` days up to the end of the run date: the window whose
item mix and user activity are compared across runs and whose active ids are checked
against the previous run's. Volumes cover the run date and the `drift.volume_days` before it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch.drift.stats import activity_buckets
from shared.config import DriftConfig

DAY = 86_400
NO_TYPE = "(none)"  # interactions given without an event_type
# A table, a Parquet file, a Spark output directory (its *.parquet parts) or a list of files.
Source: TypeAlias = "pa.Table | Path | list[Path]"

META, ITEMS_RECENT, USERS_SEEN, ITEMS_SEEN = ("meta.json", "items_recent.parquet",
                                              "users_seen.parquet", "items_seen.parquet")


@dataclass
class Profile:
    run_id: str
    run_date: str
    run_end: int  # epoch s, exclusive end of the run date
    newest_ts: int | None  # the newest valid event, interaction or feedback
    first_day: str | None  # the day of the oldest valid event
    volume: dict[str, dict[str, int]]  # day (ISO) -> event type -> valid events
    recent_events: int
    item_counts: dict[str, int]  # item -> interactions in the recent window
    activity: list[int]  # users per activity bucket (stats.ACTIVITY_EDGES), recent window
    recent_users: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    recent_items: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    users_seen: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    items_seen: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {k: getattr(self, k) for k in ("run_id", "run_date", "run_end", "newest_ts",
                                               "first_day", "volume", "recent_events", "activity")}
        (directory / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
        items = sorted(self.item_counts.items())
        pq.write_table(pa.table({"item_id": [k for k, _ in items],
                                 "events": pa.array([v for _, v in items], pa.int64())}),
                       directory / ITEMS_RECENT)
        pq.write_table(pa.table({"user_id": self.users_seen}), directory / USERS_SEEN)
        pq.write_table(pa.table({"item_id": self.items_seen}), directory / ITEMS_SEEN)

    @classmethod
    def load(cls, directory: Path, seen: bool = True) -> Profile:
        """seen=False leaves out the id sets (only the previous run's are ever needed)."""
        meta = json.loads((directory / META).read_text())
        items = pq.read_table(directory / ITEMS_RECENT).to_pydict()
        profile = cls(**meta, item_counts=dict(zip(items["item_id"], items["events"], strict=True)))
        if seen:
            profile.users_seen = pq.read_table(directory / USERS_SEEN)["user_id"].combine_chunks()
            profile.items_seen = pq.read_table(directory / ITEMS_SEEN)["item_id"].combine_chunks()
        return profile


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("*.parquet"))
    return [path] if path.exists() else []


def relation(con: duckdb.DuckDBPyConnection, name: str, src: Source | None,
             columns: str) -> str:  # fmt: skip
    """A FROM expression for a source; an empty source reads as no rows of `columns`."""
    if isinstance(src, pa.Table):
        con.register(f"src_{name}", src)
        return f"src_{name}"
    files = [] if src is None else ([f for p in src for f in _files(p)] if isinstance(src, list)
                                    else _files(src))
    if not files:
        con.execute(f"CREATE OR REPLACE TEMP TABLE empty_{name} ({columns})")
        return f"empty_{name}"
    quoted = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    return f"read_parquet([{quoted}])"


def _day(epoch_day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=epoch_day)).isoformat()


def build(clean: Source, feedback: Source | None, run_id: str, run_date: dt.date,
          cfg: DriftConfig) -> Profile:  # fmt: skip
    """The profile of a run whose valid interactions are `clean` and whose valid
    impressions/dislikes are `feedback` (columns user_id, item_id, ts, event_type)."""
    run_end = int(dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(),
                                      dt.UTC).timestamp())
    recent_start = run_end - cfg.recent_days * DAY
    volume_start = run_end - (cfg.volume_days + 1) * DAY
    con = duckdb.connect()
    try:
        cols = "user_id VARCHAR, item_id VARCHAR, ts BIGINT, event_type VARCHAR"
        c = relation(con, "clean", clean, cols)
        f = relation(con, "feedback", feedback, cols)
        con.execute(f"CREATE TEMP VIEW ev AS SELECT ts, event_type FROM {c} "
                    f"UNION ALL SELECT ts, event_type FROM {f}")
        newest, oldest = con.execute("SELECT max(ts), min(ts) FROM ev").fetchone() or (None, None)
        volume: dict[str, dict[str, int]] = {}
        for day, etype, n in con.execute(
            f"SELECT ts // {DAY} AS day, coalesce(event_type, '{NO_TYPE}'), count(*) FROM ev "
            "WHERE ts >= $lo AND ts < $hi GROUP BY ALL ORDER BY ALL",
            {"lo": volume_start, "hi": run_end},
        ).fetchall():
            volume.setdefault(_day(int(day)), {})[str(etype)] = int(n)
        recent = f"FROM {c} WHERE ts >= {recent_start} AND ts < {run_end}"
        items = con.execute(f"SELECT item_id, count(*) {recent} GROUP BY 1").fetchall()
        users = con.sql(f"SELECT user_id, count(*) {recent} GROUP BY 1").to_arrow_table()
        users_seen = con.sql(f"SELECT DISTINCT user_id FROM {c} ORDER BY 1").to_arrow_table()
        items_seen = con.sql(f"SELECT DISTINCT item_id FROM {c} ORDER BY 1").to_arrow_table()
    finally:
        con.close()
    users_tbl = users
    per_user = np.asarray(users_tbl.column(1).to_numpy(), dtype=np.int64)
    return Profile(
        run_id=run_id, run_date=run_date.isoformat(), run_end=run_end,
        newest_ts=None if newest is None else int(newest),
        first_day=None if oldest is None else _day(int(oldest) // DAY),
        volume=volume, recent_events=int(per_user.sum()),
        item_counts={str(k): int(n) for k, n in items},
        activity=[int(v) for v in activity_buckets(per_user)],
        recent_users=users_tbl.column(0).combine_chunks(),
        recent_items=pa.array([str(k) for k, _ in items], pa.string()),
        users_seen=_column(users_seen), items_seen=_column(items_seen),
    )


def _column(table: pa.Table) -> pa.Array:
    return table.column(0).combine_chunks()
