"""Every error leaves as JSON `{"error", "field"}`; a stack trace never reaches a caller.

This module covers what the Flask app answers; what gunicorn refuses before the app is
reached (414, 431, a malformed request, a request too slow to arrive: 408) gets the same
shape from the worker class, online/gworker.py.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from online import metrics
from online.realtime import StoreUnavailable
from shared.errors import ApiError

log = logging.getLogger(__name__)

_MESSAGES = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
    415: "unsupported media type",
}
# Headers of werkzeug's HTTP errors that belong in the JSON answer too (405 names the
# methods the route takes; RFC 9110 says it MUST).
_KEPT_HEADERS = {"allow", "retry-after", "www-authenticate"}


class TooManyAttempts(ApiError):
    """429 with a Retry-After: the caller made too many failed attempts."""

    def __init__(self, error: str, field: str | None, retry_after: float) -> None:
        super().__init__(429, error, field)
        self.retry_after = retry_after


def error_response(status: int, error: str, field: str | None = None) -> tuple[Response, int]:
    return jsonify({"error": error, "field": field}), status


Loc = tuple[int | str, ...]


def dotted_field(loc: Loc) -> str | None:
    """('context', 'region') -> 'context.region'."""
    return ".".join(str(p) for p in loc) or None


def indexed_field(loc: Loc) -> str | None:
    """('events', 3, 'ts') -> 'events[3].ts': list positions as indexes (batch endpoints)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


def validation_error(
    exc: ValidationError, name_field: Callable[[Loc], str | None] = dotted_field
) -> ApiError:
    """The first problem, naming the field by `name_field` (a dotted path by default:
    context.region, k, ...)."""
    err = exc.errors(include_url=False)[0]
    if err["type"] == "json_invalid":
        return ApiError(400, "request body is not valid JSON", None)
    return ApiError(422, err["msg"], name_field(tuple(err["loc"])))


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> tuple[Response, int]:
        metrics.ERRORS.labels(f"http_{exc.status}").inc()
        response, status = error_response(exc.status, exc.error, exc.field)
        if isinstance(exc, TooManyAttempts):
            response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return response, status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        metrics.ERRORS.labels(f"http_{status}").inc()
        response, _ = error_response(status, _MESSAGES.get(status, exc.name.lower()))
        for name, value in exc.get_headers():
            if name.lower() in _KEPT_HEADERS:
                response.headers[name] = value
        return response, status

    @app.errorhandler(StoreUnavailable)
    def _store(exc: StoreUnavailable) -> tuple[Response, int]:
        # Only the events endpoint's claim lets it out (the request path serves an empty
        # state, a failed record() is acknowledged): nothing is taken yet, a retry is safe.
        log.warning("real-time store unavailable: %s", exc)
        metrics.ERRORS.labels("http_503").inc()
        return error_response(503, "real-time store unavailable; retry the batch later")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        metrics.ERRORS.labels("internal").inc()
        return error_response(500, "internal error")
