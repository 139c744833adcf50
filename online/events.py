"""POST /v1/events: feedback from product services, all-or-nothing per batch.

A batch is refused whole (422 naming `events[i].field`) if any event is invalid, so a
client never has to work out which part of a batch was taken. Each accepted event is
claimed in the real-time store (idempotency within `events_dedup_seconds`; a repeated
`event_id`, in an earlier batch or earlier in the same one, is acknowledged as a duplicate
and not logged again), appended to the event log (ART/event_log) and folded into the
store (`realtime_applied` in the answer says whether that last step worked). Without a store (`realtime=off`) dedup is a per-worker memory: best effort only.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any

from flask import Blueprint, current_app

from online import metrics
from online.api import _parse as _parse_json
from online.errors import indexed_field
from online.event_schemas import EventsRequest
from online.realtime import MemoryStore, RealtimeStore, StoreUnavailable
from online.service import get_service
from shared.errors import ApiError
from shared.events import FeedbackEvent

bp = Blueprint("events", __name__, url_prefix="/v1")
log = logging.getLogger(__name__)

_LOCAL_DEDUP = "recsys.events_dedup"


def _parse() -> EventsRequest:
    try:
        return _parse_json(EventsRequest, indexed_field)
    except ApiError as exc:
        if exc.status == 422:  # a body that is JSON but not a valid batch
            metrics.EVENTS.labels("invalid", "refused").inc()
        raise


def _dedup_store() -> RealtimeStore:
    """The real-time store, or (realtime=off) this worker's own memory of event ids."""
    service = get_service()
    if service.realtime is not None:
        return service.realtime
    store = current_app.extensions.get(_LOCAL_DEDUP)
    if store is None:
        store = MemoryStore(dedup_seconds=service.config.events_dedup_seconds)
        current_app.extensions[_LOCAL_DEDUP] = store
    return store


def _type_label(kind: str, known: frozenset[str]) -> str:
    return kind if kind in known else "other"  # bounded label values


@bp.post("/events")
def post_events() -> tuple[dict[str, Any], int]:
    body = _parse()
    service = get_service()
    config = service.config
    known = frozenset(config.event_types)
    now = time.time()
    received = dt.datetime.fromtimestamp(now, dt.UTC)
    oldest = received - dt.timedelta(seconds=config.events_max_age_seconds)
    latest = received + dt.timedelta(seconds=config.events_max_future_seconds)

    def refuse(i: int, field: str, error: str) -> ApiError:
        for e in body.events:
            metrics.EVENTS.labels(_type_label(e.type, known), "refused").inc()
        return ApiError(422, error, f"events[{i}].{field}")

    events: list[FeedbackEvent] = []
    for i, e in enumerate(body.events):
        if e.type not in known:
            raise refuse(i, "type", f"unknown event type {e.type!r}; accepted: "
                         + ", ".join(config.event_types))  # fmt: skip
        ts = e.ts or received
        if ts < oldest:
            raise refuse(i, "ts", f"ts is older than events_max_age_seconds "
                         f"({config.events_max_age_seconds:g} s)")  # fmt: skip
        if ts > latest:
            raise refuse(i, "ts", f"ts is more than events_max_future_seconds "
                         f"({config.events_max_future_seconds:g} s) ahead of the server")  # fmt: skip
        events.append(FeedbackEvent(
            event_id=e.event_id or f"srv-{uuid.uuid4().hex}", type=e.type, user_id=e.user_id,
            item_id=e.item_id, ts=ts, received_at=received, request_id=e.request_id,
            value=e.value,
        ))  # fmt: skip

    # Never acknowledge what the log cannot take: a claimed id would make the client's
    # retry a "duplicate", and the events would be lost. 503 before claiming anything.
    if service.event_log is not None and not service.event_log.has_room(len(events)):
        raise ApiError(503, "event log buffer full (disk failing?); retry later", None)

    # A repeated id inside the batch: the first occurrence is the one claimed.
    first: dict[str, int] = {}
    for i, ev in enumerate(events):
        first.setdefault(ev.event_id, i)
    claimed = _dedup_store().claim(list(first), now)
    fresh = {eid for eid, ok in zip(first, claimed, strict=True) if ok}
    accepted = [ev for i, ev in enumerate(events)
                if ev.event_id in fresh and first[ev.event_id] == i]  # fmt: skip

    realtime_applied = service.realtime is not None
    if accepted:
        if service.event_log is not None:
            service.event_log.log_events(accepted)
        if service.realtime is not None:
            realtime_applied = _record(service.realtime, accepted)
    counts: dict[tuple[str, str], int] = {}
    taken = {id(ev) for ev in accepted}
    for ev in events:
        key = (_type_label(ev.type, known), "accepted" if id(ev) in taken else "duplicate")
        counts[key] = counts.get(key, 0) + 1
    for (kind, outcome), n in counts.items():
        metrics.EVENTS.labels(kind, outcome).inc(n)
    return {
        "accepted": len(accepted),
        "duplicates": len(events) - len(accepted),
        "event_ids": [ev.event_id for ev in events],
        "realtime_applied": realtime_applied,
    }, 202


def _record(store: RealtimeStore, accepted: list[FeedbackEvent]) -> bool:
    """Fold accepted events into the real-time state; False when the store fails.

    By now the ids are claimed and the events are in the log's buffer: a 503 would make
    the client's retry a duplicate that reaches neither the state nor the log twice, so
    the batch is acknowledged (it is durable and feeds the night) with
    realtime_applied=false, counted in recsys_realtime_errors_total{op="record"}."""
    try:
        store.record(accepted)
    except StoreUnavailable as exc:
        metrics.REALTIME_ERRORS.labels(type(store).__name__, "record").inc()
        log.warning("real-time store failed after the batch was logged; acknowledged "
                    "without real-time update: %s", exc)  # fmt: skip
        return False
    return True
