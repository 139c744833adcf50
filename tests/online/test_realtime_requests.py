"""Real-time state on the request path: a real SqliteStore behind the Flask app."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from online.realtime.sqlite_store import SqliteStore
from shared.events import FeedbackEvent
from tests.online.conftest import recommend


def _event(user: str, item: str, type_: str) -> FeedbackEvent:
    ts = dt.datetime.now(dt.UTC)
    return FeedbackEvent(uuid.uuid4().hex, type_, user, item, ts, ts)


@pytest.fixture
def store(app: Flask, tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "rt" / "realtime.sqlite3")
    app.extensions["recsys"].realtime = store
    return store


def _ids(data: dict) -> list[str]:
    return [it["item_id"] for it in data["items"]]


def test_a_play_is_excluded_from_the_next_answer_and_changes_it(
    client: FlaskClient, store: SqliteStore
) -> None:
    before = _ids(recommend(client, user_id="u2", k=10))
    store.record([_event("u2", before[0], "play")])
    after = recommend(client, user_id="u2", k=10)
    assert after["served_by"] == "rerank"
    assert before[0] not in _ids(after)
    assert _ids(after) != before
    # The play is now a recent item: the answer is the one the request would get by
    # naming it itself (not the cached answer of the first request).
    explicit = recommend(client, user_id="u2", k=10, context={"recent_item_ids": [before[0]]})
    assert _ids(after) == _ids(explicit)


def test_a_dislike_is_excluded(client: FlaskClient, store: SqliteStore) -> None:
    before = _ids(recommend(client, user_id="u3", k=10))
    store.record([_event("u3", before[2], "dislike")])
    after = _ids(recommend(client, user_id="u3", k=10))
    assert before[2] not in after
    assert [i for i in before if i != before[2]] == after[:9]


def test_recent_items_the_request_brings_are_kept(
    client: FlaskClient, store: SqliteStore, app: Flask
) -> None:
    store.record([_event("u4", "m7", "play")])
    mine = recommend(client, user_id="u4", k=10, context={"recent_item_ids": ["m3"]})
    app.extensions["recsys"].realtime = None
    expected = recommend(client, user_id="u4", k=10, context={"recent_item_ids": ["m3"]},
                         exclude_item_ids=["m7"])  # fmt: skip
    assert _ids(mine) == _ids(expected)
    assert "m7" not in _ids(mine) and "m3" not in _ids(mine)


def test_an_unknown_user_is_served_from_its_recent_plays(
    client: FlaskClient, store: SqliteStore
) -> None:
    assert recommend(client, user_id="newcomer", k=5)["fallback_reason"] == "unknown_user"
    store.record([_event("newcomer", "m5", "play")])
    data = recommend(client, user_id="newcomer", k=5)
    assert data["served_by"] == "rerank" and data["fallback_reason"] is None
    assert "m5" not in _ids(data)


def test_a_broken_store_never_fails_a_request(
    client: FlaskClient, app: Flask, tmp_path: Path
) -> None:
    # A directory where the database file should be: every open fails, for real.
    app.extensions["recsys"].realtime = SqliteStore(tmp_path)
    labels = {"store": "SqliteStore", "op": "state"}
    errors = REGISTRY.get_sample_value("recsys_realtime_errors_total", labels) or 0.0
    data = recommend(client, user_id="u2", k=10)
    assert data["served_by"] == "rerank" and len(data["items"]) == 10
    assert REGISTRY.get_sample_value("recsys_realtime_errors_total", labels) == errors + 1


def test_lookup_time_is_measured(client: FlaskClient, store: SqliteStore) -> None:
    labels = {"store": "SqliteStore"}

    def sample(suffix: str) -> float:
        return REGISTRY.get_sample_value(f"recsys_realtime_lookup_seconds_{suffix}", labels) or 0.0

    n, spent = sample("count"), sample("sum")
    t0 = time.perf_counter()
    recommend(client, user_id="u2", k=10)
    took = time.perf_counter() - t0
    assert sample("count") == n + 1
    assert 0 < sample("sum") - spent < took  # a part of the request, measured
