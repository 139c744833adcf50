"""RedisStore: the real-time store shared by several replicas (`RECSYS_REDIS_URL`).

Keys (all under `prefix`, default "recsys:rt:"):
  <prefix>seen:<event_id>     claim time, EX dedup_seconds: the first claim wins (a Lua script
                              per batch: atomic, one round trip, and it judges the window by
                              the caller's `now` as the other stores do; EX only frees memory)
  <prefix>recent:<user_id>    sorted set item -> ts (engaged), newest kept, EXPIRE ttl
  <prefix>excluded:<user_id>  sorted set item -> ts (disliked), likewise
A sorted set keeps one entry per item (a repeat moves it to the front: ZADD GT keeps the
newest ts), ZREMRANGEBYRANK bounds it to `max_recent`, and entries past the TTL are
filtered by score at read time (the key's EXPIRE drops users who went quiet).
`state` is one pipelined round trip (two ZREVRANGEBYSCORE).

Failures: every Redis error (down, timeout, refused) is raised as
`online.realtime.StoreUnavailable`. The request path catches it from `state` and serves
an empty state (a metric and a rate-limited log line); the events endpoint maps it from
`claim`/`record` to 503, and the client retries (claim is idempotent). Socket timeouts
are short (`socket_timeout`, default 50 ms) so a dead Redis costs a request tens of
milliseconds, not seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis

from online.realtime import StoreUnavailable, UserState
from shared.events import ENGAGED_TYPES, NEGATIVE_TYPES, FeedbackEvent

if TYPE_CHECKING:
    from online.config import ServiceConfig

__all__ = ["RedisStore", "StoreUnavailable"]

DEFAULT_PREFIX = "recsys:rt:"

# KEYS: the batch's seen keys; ARGV: now, now - window, EX seconds. A key already holding
# a claim inside the window is a duplicate (0); absent or older, it is claimed (1). A
# repeated key in one batch sees the first one's claim.
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
    local at = redis.call('GET', key)
    if at and tonumber(at) >= tonumber(ARGV[2]) then
        out[i] = 0
    else
        redis.call('SET', key, ARGV[1], 'EX', ARGV[3])
        out[i] = 1
    end
end
return out
"""


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_recent: int = 50,
        ttl_seconds: float = 3 * 86400.0,
        dedup_seconds: float = 86400.0,
        socket_timeout: float = 0.05,
    ) -> None:
        self.prefix = prefix
        self.max_recent = max_recent
        self.ttl_seconds = ttl_seconds
        self.dedup_seconds = dedup_seconds
        # redis-py's pool is fork-aware (it checks the pid and drops inherited sockets) and
        # thread-safe, so one client serves every gthread thread of a worker.
        self._client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            decode_responses=True,
        )
        self._claim = self._client.register_script(_CLAIM)

    @classmethod
    def from_config(cls, config: ServiceConfig) -> RedisStore:
        if not config.redis_url:
            raise ValueError("realtime=redis needs redis_url (RECSYS_REDIS_URL)")
        return cls(
            config.redis_url,
            max_recent=config.realtime_max_recent,
            ttl_seconds=config.realtime_ttl_seconds,
            dedup_seconds=config.events_dedup_seconds,
        )

    def claim(self, event_ids: Sequence[str], now: float) -> list[bool]:
        if not event_ids:
            return []
        keys = [f"{self.prefix}seen:{event_id}" for event_id in event_ids]
        ttl = max(1, round(self.dedup_seconds))
        try:
            flags = self._claim(keys=keys, args=[repr(now), repr(now - self.dedup_seconds), ttl])
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis claim failed: {exc}") from exc
        return [bool(flag) for flag in flags]

    def record(self, events: Sequence[FeedbackEvent]) -> None:
        recent: dict[str, dict[str, float]] = {}
        excluded: dict[str, dict[str, float]] = {}
        for e in events:
            ts = e.ts.timestamp()
            for table, types in ((recent, ENGAGED_TYPES), (excluded, NEGATIVE_TYPES)):
                if e.type in types:
                    items = table.setdefault(e.user_id, {})
                    items[e.item_id] = max(ts, items.get(e.item_id, ts))
        if not recent and not excluded:
            return
        ttl = max(1, round(self.ttl_seconds))
        try:
            pipe = self._client.pipeline(transaction=True)
            for name, table in (("recent", recent), ("excluded", excluded)):
                for user_id, items in table.items():
                    key = f"{self.prefix}{name}:{user_id}"
                    pipe.zadd(key, items, gt=True)  # new members, or a newer ts for old ones
                    pipe.zremrangebyrank(key, 0, -self.max_recent - 1)
                    pipe.expire(key, ttl)
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis record failed: {exc}") from exc

    def state(self, user_id: str, now: float) -> UserState:
        cutoff = now - self.ttl_seconds
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.zrevrangebyscore(f"{self.prefix}recent:{user_id}", "+inf", cutoff)
            pipe.zrevrangebyscore(f"{self.prefix}excluded:{user_id}", "+inf", cutoff)
            recent, excluded = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis state failed: {exc}") from exc
        return UserState(tuple(recent), tuple(excluded))

    def close(self) -> None:
        self._client.close()
