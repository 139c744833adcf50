"""The Flask app factory. Importing this module builds nothing; `create_app()` does.

Under gunicorn each worker calls `create_app()` after the fork (no --preload), and the
bundle (FAISS index, ONNX session) is loaded in `post_worker_init` or, outside gunicorn,
on the first request; so nothing that dislikes fork is ever touched in the master.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request

from online import admin, api, errors, events, gc_tuning, health, metrics, openapi, ui
from online.bundle_store import BundleStore
from online.config import ServiceConfig
from online.json_provider import OrjsonProvider
from online.realtime import open_store
from online.recommend import Recommender
from online.service import EXTENSION, Service
from shared.events import EventLogWriter, event_log_dir
from shared.request_log import RequestLogWriter, log_dir

log = logging.getLogger(__name__)

# Endpoints that must answer even before (or without) a bundle.
_NO_BUNDLE_NEEDED = {
    "health.healthz",
    "metrics.metrics_endpoint",
    "api.ping",
    "ui.index",
    "openapi.openapi",
    "events.post_events",  # events are taken whether or not a bundle is loaded
}


def _log_metrics(name: str) -> dict[str, Any]:
    """A log writer's callbacks, counting into /metrics under log=<name>."""
    return {
        "on_dropped": metrics.LOG_DROPPED.labels(name).inc,
        "on_write_error": metrics.LOG_WRITE_ERRORS.labels(name).inc,
        "on_written": metrics.LOG_WRITTEN.labels(name).inc,
    }


def create_app(config: ServiceConfig | Mapping[str, Any] | None = None) -> Flask:
    """Build the app from a config object, overrides of the RECSYS_* env, or the env alone."""
    if not isinstance(config, ServiceConfig):
        config = ServiceConfig.from_env(**dict(config or {}))
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=config.max_content_length)
    app.json = OrjsonProvider(app)  # keeps keys in insertion order, as the API documents
    request_log = (
        RequestLogWriter(
            log_dir(config.artifacts),
            rotate_seconds=config.request_log_rotate_seconds,
            flush_seconds=config.log_flush_seconds,
            **_log_metrics("served"),
        )
        if config.request_log
        else None
    )
    event_log = (
        EventLogWriter(
            event_log_dir(config.artifacts),
            rotate_seconds=config.request_log_rotate_seconds,
            flush_seconds=config.log_flush_seconds,
            **_log_metrics("events"),
        )
        if config.event_log
        else None
    )
    service = Service(config, BundleStore(config), Recommender(config), request_log,
                      realtime=open_store(config), event_log=event_log)  # fmt: skip
    app.extensions[EXTENSION] = service

    for module in (api, events, health, admin, metrics, openapi, ui):
        app.register_blueprint(module.bp)
    errors.register(app)

    @app.before_request
    def _start() -> None:
        if request.endpoint not in _NO_BUNDLE_NEEDED:
            service.store.ensure_started()  # a one-off load must not eat this request's budget
        g.t0 = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        if "t0" in g:
            metrics.REQUEST_SECONDS.labels(rule).observe(time.perf_counter() - g.t0)
        gc_tuning.export_pauses()  # collections timed since the last request, if any
        # Every answer, errors included: declared types are the only types, and nothing
        # here (per user, per bundle, per moment) is for a cache to keep.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
