"""Request and response models of POST /v1/events (also the source of /openapi.json).

`ts` is when the event happened: an ISO-8601 string with a UTC offset
("2026-12-03T07:00:00Z", "...+01:00") or an integer of epoch milliseconds; absent, the time
the service received it. Whether it falls in the accepted window, and whether `type` is
one the service takes, depend on the service's settings and are checked by the endpoint.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from online.schemas import Id

EventType = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_EVENTS = 1000
# Epoch ms beyond year 9999 (or before 1970) cannot be a real event time.
_MAX_EPOCH_MS = 253_402_300_799_999


def _timestamp(value: object) -> object:
    """ISO-8601 with an offset, or integer epoch ms, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("ts must be an ISO-8601 string or integer epoch milliseconds")
    if isinstance(value, int | float):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("ts in epoch milliseconds must be an integer")
        if not 0 <= value <= _MAX_EPOCH_MS:
            raise ValueError("ts in epoch milliseconds is out of range")
        return dt.datetime.fromtimestamp(int(value) / 1000.0, dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("ts is not an ISO-8601 date-time") from None
        if parsed.tzinfo is None:
            raise ValueError("ts needs a UTC offset (e.g. 'Z' or '+01:00')")
        return parsed.astimezone(dt.UTC)
    raise ValueError("ts must be an ISO-8601 string or integer epoch milliseconds")


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("value must be a finite number")
    return value


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: Id | None = Field(
        None, description="idempotency key; the server assigns srv-<uuid> when absent"
    )
    type: EventType = Field(description="one of the service's event_types (default: "
                            "impression, click, play, complete, rating, dislike)")  # fmt: skip
    user_id: Id
    item_id: Id
    ts: Annotated[dt.datetime | None, BeforeValidator(_timestamp)] = Field(
        None, description="ISO-8601 with offset, or integer epoch ms; default: receive time"
    )
    request_id: Id | None = Field(None, description="the served request this answers")
    value: Annotated[float | None, BeforeValidator(_finite)] = Field(
        None, description="rating, watch fraction...; type-specific"
    )


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    accepted: int = Field(description="events newly taken (logged and recorded)")
    duplicates: int = Field(description="events whose event_id was already taken")
    event_ids: list[str] = Field(description="each event's id, in request order")
    realtime_applied: bool = Field(
        description="the accepted events changed the users' real-time state; false when "
        "realtime is off or the store failed after logging (the events still feed the night)",
    )
