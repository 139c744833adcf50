"""POST /v1/events through the Flask test client: validation naming events[i].field,
all-or-nothing batches, idempotency, the ts window, and what reaches the event log."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from flask import Flask
from flask.testing import FlaskClient

from shared.events import EVENT_SCHEMA, event_log_dir
from shared.parquet_log import part_files
from tests.online.conftest import make_app


@pytest.fixture
def events_app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path, max_content_length=256 * 1024, events_max_age_seconds=3600,
                   events_max_future_seconds=60)  # fmt: skip
    yield app
    app.extensions["recsys"].close()


@pytest.fixture
def ev_client(events_app: Flask) -> FlaskClient:
    return events_app.test_client()


def ev(n: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"e{n}", "type": "click", "user_id": f"u{n % 3}", "item_id": f"m{n}"
            } | fields  # fmt: skip


def post(client: FlaskClient, events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    resp = client.post("/v1/events", json={"events": events})
    return resp.status_code, resp.get_json()


def logged(app: Flask) -> list[dict[str, Any]]:
    """Every event in the event log, after the writer wrote everything it holds."""
    service = app.extensions["recsys"]
    service.event_log.close()
    root = event_log_dir(service.config.artifacts)
    rows = [r for f in part_files(root) for r in pq.read_table(f).to_pylist()]
    assert all(pq.read_schema(f).equals(EVENT_SCHEMA) for f in part_files(root))
    return rows


def test_a_batch_is_accepted_logged_and_recorded(events_app: Flask, ev_client: FlaskClient) -> None:
    now_ms = int(time.time() * 1000)
    batch = [ev(0, ts=now_ms - 5000, request_id="r-1", value=0.5),
             ev(1, type="dislike", ts=dt.datetime.now(dt.UTC).isoformat()),
             {"type": "play", "user_id": "u0", "item_id": "m2"}]  # fmt: skip
    status, body = post(ev_client, batch)
    assert status == 202, body
    assert body["accepted"] == 3 and body["duplicates"] == 0
    assert body["event_ids"][:2] == ["e0", "e1"] and body["event_ids"][2].startswith("srv-")
    state = events_app.extensions["recsys"].realtime.state("u0", time.time())
    assert state.recent_item_ids == ("m2", "m0")  # play, then the click 5 s earlier
    assert events_app.extensions["recsys"].realtime.state("u1", time.time()).excluded_item_ids == ("m1",)
    rows = {r["event_id"]: r for r in logged(events_app)}
    assert set(rows) == set(body["event_ids"])
    assert rows["e0"]["request_id"] == "r-1" and rows["e0"]["value"] == 0.5
    assert int(rows["e0"]["ts"].timestamp() * 1000) == now_ms - 5000
    assert rows["e0"]["received_at"] > rows["e0"]["ts"]
    assert rows[body["event_ids"][2]]["ts"] == rows[body["event_ids"][2]]["received_at"]


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"item_id": None}, "events[2].item_id", "valid string"),
        ({"type": "purchase"}, "events[2].type", "unknown event type 'purchase'"),
        ({"ts": "2026-01-01T00:00:00"}, "events[2].ts", "UTC offset"),
        ({"ts": "yesterday"}, "events[2].ts", "ISO-8601"),
        ({"ts": 1.5}, "events[2].ts", "integer"),
        ({"ts": 0}, "events[2].ts", "older than events_max_age_seconds"),
        ({"ts": int((time.time() + 3600) * 1000)}, "events[2].ts", "ahead of the server"),
        ({"colour": "red"}, "events[2].colour", "Extra inputs"),
        ({"value": "a lot"}, "events[2].value", "valid number"),
        ({"user_id": ""}, "events[2].user_id", "at least 1"),
    ],
)
def test_one_bad_event_refuses_the_whole_batch_naming_it(
    events_app: Flask, ev_client: FlaskClient, bad: dict[str, Any], field: str, words: str
) -> None:
    batch = [ev(0), ev(1), ev(2, **bad), ev(3)]
    status, body = post(ev_client, batch)
    assert status == 422, body
    assert body["field"] == field and words in body["error"], body
    # Nothing of the batch was taken: the same ids, corrected, are all accepted now.
    status, body = post(ev_client, [ev(0), ev(1), ev(2), ev(3)])
    assert (status, body["accepted"], body["duplicates"]) == (202, 4, 0)
    assert sorted(r["event_id"] for r in logged(events_app)) == ["e0", "e1", "e2", "e3"]


def test_batch_size_bounds(ev_client: FlaskClient) -> None:
    status, body = post(ev_client, [])
    assert status == 422 and body["field"] == "events"
    status, body = post(ev_client, [ev(n) for n in range(1001)])
    assert status == 422 and body["field"] == "events" and "1000" in body["error"]
    resp = ev_client.post("/v1/events", json=[ev(0)])
    assert resp.status_code == 422
    resp = ev_client.post("/v1/events", data="{", content_type="application/json")
    assert resp.status_code == 400
    resp = ev_client.post("/v1/events", data="{}", content_type="text/plain")
    assert resp.status_code == 415 and resp.get_json()["field"] == "Content-Type"


def test_repeated_ids_are_acknowledged_not_logged_twice(
    events_app: Flask, ev_client: FlaskClient
) -> None:
    status, body = post(ev_client, [ev(0), ev(1), ev(0)])  # e0 twice in one batch
    assert (status, body["accepted"], body["duplicates"]) == (202, 2, 1)
    assert body["event_ids"] == ["e0", "e1", "e0"]
    status, body = post(ev_client, [ev(1), ev(2)])  # e1 again, a batch later
    assert (status, body["accepted"], body["duplicates"]) == (202, 1, 1)
    assert sorted(r["event_id"] for r in logged(events_app)) == ["e0", "e1", "e2"]


def test_events_without_a_store_dedup_per_worker(tmp_path: Path) -> None:
    app = make_app(tmp_path, realtime="off")
    try:
        client = app.test_client()
        assert post(client, [ev(0)])[1]["accepted"] == 1
        assert post(client, [ev(0)])[1]["duplicates"] == 1
    finally:
        app.extensions["recsys"].close()
    assert [r["event_id"] for r in logged(app)] == ["e0"]


def test_events_metrics_and_openapi(ev_client: FlaskClient) -> None:
    post(ev_client, [ev(0), ev(0), ev(1, type="play")])
    post(ev_client, [ev(5, type="nope")])
    text = ev_client.get("/metrics").get_data(as_text=True)

    def value(labels: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith(f"recsys_events_total{{{labels}}}"))
        return float(line.rsplit(" ", 1)[1])

    # The default registry is process-wide: other tests count too, so only lower bounds.
    assert value('outcome="accepted",type="click"') >= 1
    assert value('outcome="duplicate",type="click"') >= 1
    assert value('outcome="refused",type="other"') >= 1
    spec = ev_client.get("/openapi.json").get_json()
    assert "202" in spec["paths"]["/v1/events"]["post"]["responses"]
    assert "EventsRequest" in spec["components"]["schemas"]


def test_served_log_keeps_each_items_sources(app: Flask, client: FlaskClient) -> None:
    from shared.request_log import log_dir

    resp = client.post("/v1/recommendations", json={"user_id": "u1", "k": 5})
    assert resp.status_code == 200
    answered = [it["sources"] for it in resp.get_json()["items"]]
    service = app.extensions["recsys"]
    service.request_log.close()
    files = part_files(log_dir(service.config.artifacts))
    items = [r["items"] for f in files for r in pq.read_table(f).to_pylist()]
    assert [[it["sources"] for it in row] for row in items] == [answered]
    assert all(answered) and all(s for row in answered for s in row)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'recsys_log_records_written_total{log="served"}' in text


def test_a_full_event_log_refuses_before_claiming(events_app: Flask, ev_client: FlaskClient) -> None:
    writer = events_app.extensions["recsys"].event_log
    writer.max_buffer_rows, bound = 0, writer.max_buffer_rows  # as if the disk had failed long
    status, body = post(ev_client, [ev(0), ev(1)])
    assert status == 503 and "retry" in body["error"]
    writer.max_buffer_rows = bound
    status, body = post(ev_client, [ev(0), ev(1)])  # the retry is taken, not a duplicate
    assert (status, body["accepted"]) == (202, 2)
    assert sorted(r["event_id"] for r in logged(events_app)) == ["e0", "e1"]


def test_a_store_that_is_down_answers_503_naming_the_retry(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: a real Redis client, no server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = make_app(tmp_path, redis_url=f"redis://127.0.0.1:{port}/0")
    try:
        status, body = post(app.test_client(), [ev(1)])
        assert status == 503
        assert body == {"error": "real-time store unavailable; retry the batch later",
                        "field": None}  # fmt: skip
    finally:
        app.extensions["recsys"].close()


def test_a_store_failing_after_the_claim_acknowledges_the_logged_batch(
    events_app: Flask, ev_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ids are claimed and the events buffered for the log when record() fails: a 503
    would turn the client's retry into a duplicate that reaches nothing. The batch is
    acknowledged with realtime_applied false, counted in the metric, and logged once."""
    from online.realtime import StoreUnavailable

    store = events_app.extensions["recsys"].realtime

    def failing_record(events: object) -> None:
        raise StoreUnavailable("sqlite record failed: disk I/O error")

    monkeypatch.setattr(store, "record", failing_record)
    status, body = post(ev_client, [ev(0), ev(1)])
    assert (status, body["accepted"], body["realtime_applied"]) == (202, 2, False)
    metrics_text = ev_client.get("/metrics").get_data(as_text=True)
    assert 'recsys_realtime_errors_total{op="record",store="SqliteStore"}' in metrics_text
    monkeypatch.undo()
    status, body = post(ev_client, [ev(0), ev(2)])  # a retry: e0 is a duplicate
    assert (status, body["accepted"], body["duplicates"], body["realtime_applied"]) == (202, 1, 1, True)
    assert sorted(r["event_id"] for r in logged(events_app)) == ["e0", "e1", "e2"]
