"""Every error leaves as JSON `{"error", "field"}`; a stack trace never reaches a caller."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from online import metrics
from shared.errors import ApiError

log = logging.getLogger(__name__)


def error_response(status: int, error: str, field: str | None = None) -> tuple[Response, int]:
    return jsonify({"error": error, "field": field}), status


def validation_error(exc: ValidationError) -> ApiError:
    """The first problem, naming the field as a dotted path (context.region, k, ...)."""
    err = exc.errors()[0]
    if err["type"] == "json_invalid":
        return ApiError(400, "request body is not valid JSON", None)
    field = ".".join(str(p) for p in err["loc"]) or None
    return ApiError(422, err["msg"], field)


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> tuple[Response, int]:
        metrics.ERRORS.labels(f"http_{exc.status}").inc()
        return error_response(exc.status, exc.error, exc.field)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        metrics.ERRORS.labels(f"http_{status}").inc()
        messages = {404: "not found", 405: "method not allowed", 413: "request body too large"}
        return error_response(status, messages.get(status, exc.name.lower()))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        metrics.ERRORS.labels("internal").inc()
        return error_response(500, "internal error")
