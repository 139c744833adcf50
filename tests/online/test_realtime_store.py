"""One behaviour suite for every real-time store: MemoryStore, SqliteStore, RedisStore.

Each store is a fresh, real one: a SQLite file in a temp dir, a key prefix of its own on a
real redis-server (tests/online/redis_server.py; skipped only when the binary is absent).
The cross-process cases fork real processes, which also checks that a store used before
a fork reopens its connection in the child (as a gunicorn worker does after preload).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from online.realtime import MemoryStore, RealtimeStore, UserState
from online.realtime.sqlite_store import SqliteStore
from shared.events import FeedbackEvent
from tests.online.redis_server import redis_server  # noqa: F401  (session fixture)

MAX_RECENT = 5
TTL = 3600.0
DEDUP = 600.0
SHARED = ("sqlite", "redis")  # the stores several processes share

Factory = Callable[[], RealtimeStore]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Stores of this kind over the same data (two calls: two handles on one store)."""
    opened: list[RealtimeStore] = []
    limits: dict[str, Any] = {"max_recent": MAX_RECENT, "ttl_seconds": TTL,
                              "dedup_seconds": DEDUP}  # fmt: skip
    memory = MemoryStore(**limits)
    prefix = f"t-{uuid.uuid4().hex[:8]}:"

    def make() -> RealtimeStore:
        store: RealtimeStore
        if kind == "memory":
            store = memory
        elif kind == "sqlite":
            store = SqliteStore(tmp_path / "rt.sqlite3", **limits)
        else:
            from online.realtime.redis_store import RedisStore

            url = request.getfixturevalue("redis_server")
            store = RedisStore(url, prefix=prefix, **limits)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def ev(user: str, item: str, type_: str = "play", at: float | None = None,
       event_id: str | None = None) -> FeedbackEvent:  # fmt: skip
    ts = dt.datetime.fromtimestamp(time.time() if at is None else at, dt.UTC)
    return FeedbackEvent(event_id or uuid.uuid4().hex, type_, user, item, ts, ts)


def test_claim_is_idempotent_within_the_window_and_fresh_after(make_store: Factory) -> None:
    store = make_store()
    now = time.time()
    assert store.claim(["e1", "e2"], now) == [True, True]
    assert store.claim(["e1", "e3", "e2"], now + 1) == [False, True, False]
    # The same id twice in one batch: the first is fresh, the second a duplicate.
    assert store.claim(["e4", "e4"], now + 2) == [True, False]
    assert store.claim(["e1"], now + DEDUP - 10) == [False]
    assert store.claim(["e1"], now + DEDUP + 5) == [True]
    assert store.claim([], now) == []


def test_recent_items_newest_first_bounded_and_deduplicated(make_store: Factory) -> None:
    store = make_store()
    t = time.time() - 100
    store.record([ev("u1", f"i{n}", at=t + n) for n in range(8)])
    assert store.state("u1", time.time()).recent_item_ids == ("i7", "i6", "i5", "i4", "i3")
    # Engaging with an item again moves it to the front, once.
    store.record([ev("u1", "i4", "complete", at=t + 20)])
    state = store.state("u1", time.time())
    assert state.recent_item_ids == ("i4", "i7", "i6", "i5", "i3")
    assert state.excluded_item_ids == ()
    # Impressions are not engagement; other users are untouched.
    store.record([ev("u1", "i99", "impression", at=t + 30), ev("u2", "x", at=t)])
    assert "i99" not in store.state("u1", time.time()).recent_item_ids
    assert store.state("u2", time.time()) == UserState(("x",), ())
    assert store.state("nobody", time.time()) == UserState()


def test_dislikes_are_exclusions_not_recents(make_store: Factory) -> None:
    store = make_store()
    t = time.time() - 50
    store.record([ev("u1", "a", "click", at=t), ev("u1", "b", "dislike", at=t + 1),
                  ev("u1", "c", "dislike", at=t + 2)])  # fmt: skip
    assert store.state("u1", time.time()) == UserState(("a",), ("c", "b"))


def test_entries_expire_after_the_ttl(make_store: Factory) -> None:
    store = make_store()
    now = time.time()
    store.record([ev("u1", "old", at=now - TTL - 60), ev("u1", "new", at=now - 60),
                  ev("u1", "bad", "dislike", at=now - TTL - 1)])  # fmt: skip
    assert store.state("u1", now) == UserState(("new",), ())
    assert store.state("u1", now + TTL) == UserState()


# Cross-process cases: forked children use the parent's store object (already connected),
# so a connection carried over the fork would show up here as an error or a hang.


def _record_in_child(store: RealtimeStore, user: str, items: list[str]) -> None:
    store.record([ev(user, i, at=time.time() - 10 + n) for n, i in enumerate(items)])


def _claim_in_child(store: RealtimeStore, ids: list[str], start: Any, out: Any) -> None:
    start.wait(10)
    out.put(store.claim(ids, time.time()))


@pytest.mark.parametrize("kind", SHARED, indirect=True)
def test_what_one_process_records_another_reads(make_store: Factory) -> None:
    store = make_store()
    assert store.state("u1", time.time()) == UserState()  # connected before the fork
    child = mp.get_context("fork").Process(target=_record_in_child,
                                           args=(store, "u1", ["a", "b"]))  # fmt: skip
    child.start()
    child.join(20)
    assert child.exitcode == 0
    assert store.state("u1", time.time()).recent_item_ids == ("b", "a")
    assert make_store().state("u1", time.time()).recent_item_ids == ("b", "a")


@pytest.mark.parametrize("kind", SHARED, indirect=True)
def test_concurrent_claims_of_one_id_give_exactly_one_winner(make_store: Factory) -> None:
    store = make_store()
    store.claim(["warm-up"], time.time())
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    ids = [f"dup-{n}" for n in range(20)]
    children = [ctx.Process(target=_claim_in_child, args=(store, ids, start, out))
                for _ in range(4)]  # fmt: skip
    for c in children:
        c.start()
    start.set()
    results = [out.get(timeout=20) for _ in children]
    for c in children:
        c.join(20)
        assert c.exitcode == 0
    winners = [sum(r[i] for r in results) for i in range(len(ids))]
    assert winners == [1] * len(ids)


def test_a_redis_that_is_down_raises_store_unavailable_quickly() -> None:
    import socket

    from online.realtime import StoreUnavailable
    from online.realtime.redis_store import RedisStore

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    t0 = time.perf_counter()
    for call in (lambda: store.state("u1", time.time()), lambda: store.claim(["e"], 0.0),
                 lambda: store.record([ev("u1", "a")])):  # fmt: skip
        with pytest.raises(StoreUnavailable):
            call()
    assert time.perf_counter() - t0 < 2.0
    store.close()


def test_open_store_defaults_to_sqlite_under_the_artifact_root(tmp_path: Path) -> None:
    from online.config import ServiceConfig
    from online.realtime import open_store

    store = open_store(ServiceConfig(artifacts=tmp_path, runtime_dir=tmp_path / "tmp-run"))
    assert isinstance(store, SqliteStore)
    store.record([ev("u1", "a")])
    assert (tmp_path / "runtime" / "realtime.sqlite3").is_file()  # outlives runtime_dir
    store.close()
    assert open_store(ServiceConfig(artifacts=tmp_path, realtime="off")) is None
    assert isinstance(open_store(ServiceConfig(artifacts=tmp_path, realtime="memory")),
                      MemoryStore)  # fmt: skip
