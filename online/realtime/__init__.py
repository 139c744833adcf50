"""The real-time store: what users did in the last hours, shared by every worker and replica.

The events endpoint writes to it (`claim` for idempotency, then `record`); the request
path reads it (`state`) for a user's recent items (used as `recent_item_ids` when the
request brings none) and exclusions (just watched, disliked). One machine: SQLite in WAL
mode under the artifact root (no server to run). Several replicas: Redis, when
`RECSYS_REDIS_URL` is set. `open_store` picks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from shared.events import ENGAGED_TYPES, NEGATIVE_TYPES, FeedbackEvent

if TYPE_CHECKING:
    from online.config import ServiceConfig


@dataclass(frozen=True, slots=True)
class UserState:
    """A user's recent activity: item ids newest first (engaged), and items not to show."""

    recent_item_ids: tuple[str, ...] = ()
    excluded_item_ids: tuple[str, ...] = ()


EMPTY = UserState()


class StoreUnavailable(Exception):
    """The store could not be read or written (Redis down, SQLite file unusable).

    The request path answers with an empty state instead (recommendations never fail for
    it); the events endpoint maps it to 503 so the client retries the batch (`claim` is
    idempotent, so a retry after a partial failure does not double count).
    """


class RealtimeStore(Protocol):
    def claim(self, event_ids: Sequence[str], now: float) -> list[bool]:
        """For each id, True if it was not seen within the idempotency window (and now is
        remembered), False for a duplicate. One call per batch, atomic per id."""

    def record(self, events: Sequence[FeedbackEvent]) -> None:
        """Fold accepted events into their users' state."""

    def state(self, user_id: str, now: float) -> UserState:
        """The user's state as of `now` (entries past their TTL are gone)."""

    def close(self) -> None: ...


@dataclass
class MemoryStore:
    """One process only: for unit tests and `realtime=memory`; not shared between workers."""

    max_recent: int = 50
    ttl_seconds: float = 7 * 86400.0
    dedup_seconds: float = 86400.0
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _recent: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    _excluded: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, event_ids: Sequence[str], now: float) -> list[bool]:
        out = []
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - self.dedup_seconds:
                self._seen.popitem(last=False)
            for event_id in event_ids:
                fresh = event_id not in self._seen
                if fresh:
                    self._seen[event_id] = now
                out.append(fresh)
        return out

    def record(self, events: Sequence[FeedbackEvent]) -> None:
        with self._lock:
            for e in events:
                if e.type in ENGAGED_TYPES:
                    self._push(self._recent, e)
                if e.type in NEGATIVE_TYPES:
                    self._push(self._excluded, e)

    def _push(self, table: dict[str, list[tuple[float, str]]], e: FeedbackEvent) -> None:
        rows = [r for r in table.get(e.user_id, []) if r[1] != e.item_id]
        rows.append((e.ts.timestamp(), e.item_id))
        rows.sort(reverse=True)
        table[e.user_id] = rows[: self.max_recent]

    def state(self, user_id: str, now: float) -> UserState:
        cutoff = now - self.ttl_seconds
        with self._lock:
            recent = tuple(i for t, i in self._recent.get(user_id, []) if t >= cutoff)
            excluded = tuple(i for t, i in self._excluded.get(user_id, []) if t >= cutoff)
        return UserState(recent, excluded)

    def close(self) -> None:
        return None


def open_store(config: ServiceConfig) -> RealtimeStore | None:
    """The store the config names (None when real-time personalisation is off).

    `redis_url` set means Redis whatever `realtime` says: several replicas must share one
    store, and a URL in the environment is the operator saying so.
    """
    kind = "redis" if config.redis_url else config.realtime
    if kind == "off":
        return None
    if kind == "memory":
        return MemoryStore(
            max_recent=config.realtime_max_recent,
            ttl_seconds=config.realtime_ttl_seconds,
            dedup_seconds=config.events_dedup_seconds,
        )
    if kind == "redis":
        from online.realtime.redis_store import RedisStore  # only where Redis is asked for

        return RedisStore.from_config(config)
    from online.realtime.sqlite_store import SqliteStore

    return SqliteStore.from_config(config)
