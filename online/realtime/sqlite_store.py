"""SqliteStore: the real-time store for one machine, one file shared by every worker.

Layout: ART/runtime/realtime.sqlite3 (not `runtime_dir`: `recsys serve` makes that a fresh
temp dir per server, and the state must outlive a restart and be shared by every server on
the machine that serves this artifact root), in WAL mode so readers (every request) never wait on the
writer (the events endpoint), `synchronous=NORMAL` (a power cut may lose the last
transactions, never corrupt the file: the state is hours of recency, not a ledger).

Processes: one connection per process, opened lazily on first use and reopened when the
pid changes, because an SQLite connection must never cross a fork (gunicorn preloads and
forks). Threads (gthread): the connection is shared behind a lock; a state() is a few µs,
so the lock is not where a request waits.

Tables:
  seen(event_id, ts)              idempotency; a row older than the window may be re-claimed
  items(user_id, kind, item_id, ts) kind 0 = recent (engaged), 1 = excluded (negative);
                                   bounded per (user, kind) at `max_recent`, TTL at read time
Old rows are pruned at most once a minute per process, by the writer paths (claim/record),
never by state().
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from online.realtime import StoreUnavailable, UserState
from shared.events import ENGAGED_TYPES, NEGATIVE_TYPES, FeedbackEvent

if TYPE_CHECKING:
    from online.config import ServiceConfig

RUNTIME_DIR = "runtime"
FILE_NAME = "realtime.sqlite3"
RECENT, EXCLUDED = 0, 1
PRUNE_EVERY_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY, ts REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_ts ON seen (ts);
CREATE TABLE IF NOT EXISTS items (
    user_id TEXT NOT NULL, kind INTEGER NOT NULL, item_id TEXT NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (user_id, kind, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_user_ts ON items (user_id, ts);
CREATE INDEX IF NOT EXISTS items_ts ON items (ts);
"""

# Re-claiming an id whose first claim is past the window counts as fresh: the upsert
# changes a row (rowcount 1) only when it inserts or refreshes an expired one.
_CLAIM = (
    "INSERT INTO seen (event_id, ts) VALUES (?, ?) "
    "ON CONFLICT (event_id) DO UPDATE SET ts = excluded.ts WHERE seen.ts < ?"
)
# An item seen again moves to the front; an out-of-order older event does not push it back.
_UPSERT = (
    "INSERT INTO items (user_id, kind, item_id, ts) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (user_id, kind, item_id) DO UPDATE SET ts = max(ts, excluded.ts)"
)
_BOUND = (
    "DELETE FROM items WHERE user_id = ? AND kind = ? AND item_id NOT IN ("
    " SELECT item_id FROM items WHERE user_id = ? AND kind = ?"
    " ORDER BY ts DESC, item_id DESC LIMIT ?)"
)
# One indexed range scan on (user_id, ts) serves both lists.
_STATE = (
    "SELECT kind, item_id FROM items WHERE user_id = ? AND ts >= ? "
    "ORDER BY ts DESC, item_id DESC"
)


class SqliteStore:
    def __init__(
        self,
        path: Path,
        *,
        max_recent: int = 50,
        ttl_seconds: float = 3 * 86400.0,
        dedup_seconds: float = 86400.0,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = Path(path)
        self.max_recent = max_recent
        self.ttl_seconds = ttl_seconds
        self.dedup_seconds = dedup_seconds
        self.busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._last_prune = 0.0
        # Connections inherited over a fork: kept referenced, never used or closed here
        # (closing one in the child could disturb the parent's locks and WAL index).
        self._inherited: list[sqlite3.Connection] = []

    @classmethod
    def from_config(cls, config: ServiceConfig) -> SqliteStore:
        return cls(
            config.artifacts / RUNTIME_DIR / FILE_NAME,
            max_recent=config.realtime_max_recent,
            ttl_seconds=config.realtime_ttl_seconds,
            dedup_seconds=config.events_dedup_seconds,
        )

    def _connection(self) -> sqlite3.Connection:
        # Called with self._lock held.
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            self._inherited.append(self._conn)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_ms / 1000.0, isolation_level=None,
            check_same_thread=False,  # shared by this process's threads, behind self._lock
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def claim(self, event_ids: Sequence[str], now: float) -> list[bool]:
        if not event_ids:
            return []
        expired = now - self.dedup_seconds
        try:
            with self._lock:
                conn = self._connection()
                # IMMEDIATE takes the write lock up front: two processes claiming the same
                # id serialise here, and exactly one sees its insert change a row.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    out = [conn.execute(_CLAIM, (e, now, expired)).rowcount == 1
                           for e in event_ids]  # fmt: skip
                    self._maybe_prune(conn, now)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            return out
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite claim failed: {exc}") from exc

    def record(self, events: Sequence[FeedbackEvent]) -> None:
        rows: list[tuple[str, int, str, float]] = []
        for e in events:
            ts = e.ts.timestamp()
            if e.type in ENGAGED_TYPES:
                rows.append((e.user_id, RECENT, e.item_id, ts))
            if e.type in NEGATIVE_TYPES:
                rows.append((e.user_id, EXCLUDED, e.item_id, ts))
        if not rows:
            return
        touched = sorted({(u, k) for u, k, _, _ in rows})
        try:
            with self._lock:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(_UPSERT, rows)
                    conn.executemany(
                        _BOUND, [(u, k, u, k, self.max_recent) for u, k in touched]
                    )
                    self._maybe_prune(conn, time.time())
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite record failed: {exc}") from exc

    def state(self, user_id: str, now: float) -> UserState:
        try:
            with self._lock:
                rows = self._connection().execute(
                    _STATE, (user_id, now - self.ttl_seconds)
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite state failed: {exc}") from exc
        recent = tuple(i for k, i in rows if k == RECENT)
        excluded = tuple(i for k, i in rows if k == EXCLUDED)
        return UserState(recent, excluded)

    def _maybe_prune(self, conn: sqlite3.Connection, now: float) -> None:
        """Drop expired rows, at most once a minute per process, inside the caller's
        write transaction (so it costs no extra fsync)."""
        if now - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = now
        conn.execute("DELETE FROM seen WHERE ts < ?", (now - self.dedup_seconds,))
        conn.execute("DELETE FROM items WHERE ts < ?", (now - self.ttl_seconds,))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
