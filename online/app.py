"""The Flask app factory. Importing this module builds nothing; `create_app()` does.

Under gunicorn each worker calls `create_app()` after the fork (no --preload), and the
bundle (FAISS index, ONNX session) is loaded in `post_worker_init` or, outside gunicorn,
on the first request; so nothing that dislikes fork is ever touched in the master.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from flask import Flask, Response, g, request

from online import admin, api, errors, events, gc_tuning, health, metrics, openapi, ui
from online.bundle_store import BundleStore
from online.config import ServiceConfig
from online.experiments import ExperimentStore
from online.json_provider import OrjsonProvider
from online.realtime import open_store
from online.recommend import Recommender
from online.service import EXTENSION, Service
from online.shadow import ShadowRunner
from online.skew import SkewMonitor
from shared.events import EventLogWriter, event_log_dir
from shared.parquet_log import ParquetLogWriter
from shared.request_log import RequestLogWriter, log_dir
from shared.shadow_log import ShadowLogWriter
from shared.shadow_log import log_dir as shadow_log_dir
from shared.skew_log import SkewLogWriter
from shared.skew_log import log_dir as skew_log_dir

log = logging.getLogger(__name__)

W = TypeVar("W", bound=ParquetLogWriter[Any])

# Endpoints that must answer even before (or without) a bundle.
_NO_BUNDLE_NEEDED = {
    "health.healthz",
    "metrics.metrics_endpoint",
    "api.ping",
    "ui.index",
    "openapi.openapi",
    "events.post_events",  # events are taken whether or not a bundle is loaded
}


def _log_writer(
    writer: Callable[..., W], root: Path, name: str, config: ServiceConfig, enabled: bool
) -> W | None:
    """One log's writer (None when that log is off), counting into /metrics under log=<name>."""
    if not enabled:
        return None
    return writer(
        root,
        rotate_seconds=config.request_log_rotate_seconds,
        flush_seconds=config.log_flush_seconds,
        on_dropped=metrics.LOG_DROPPED.labels(name).inc,
        on_write_error=metrics.LOG_WRITE_ERRORS.labels(name).inc,
        on_written=metrics.LOG_WRITTEN.labels(name).inc,
    )


def create_app(config: ServiceConfig | Mapping[str, Any] | None = None) -> Flask:
    """Build the app from a config object, overrides of the RECSYS_* env, or the env alone."""
    if not isinstance(config, ServiceConfig):
        config = ServiceConfig.from_env(**dict(config or {}))
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=config.max_content_length)
    app.json = OrjsonProvider(app)  # keeps keys in insertion order, as the API documents
    request_log = _log_writer(RequestLogWriter, log_dir(config.artifacts), "served", config,
                              config.request_log)  # fmt: skip
    event_log = _log_writer(EventLogWriter, event_log_dir(config.artifacts), "events", config,
                            config.event_log)  # fmt: skip
    shadow_log = _log_writer(ShadowLogWriter, shadow_log_dir(config.artifacts), "shadow", config,
                             config.shadow_log)  # fmt: skip
    skew_log = _log_writer(SkewLogWriter, skew_log_dir(config.artifacts), "skew", config,
                           config.skew_log and config.skew_sample_rate > 0)  # fmt: skip
    skew = SkewMonitor(config, skew_log) if config.skew_sample_rate > 0 else None
    store = BundleStore(config)
    experiments = ExperimentStore(config, store)
    store.add_reload_hook(experiments.refresh)  # same cadence as CURRENT (docs/experiments.md)
    service = Service(config, store, Recommender(config, skew=skew), request_log,
                      realtime=open_store(config), event_log=event_log,
                      experiments=experiments,
                      shadow=ShadowRunner(config, shadow_log), skew=skew)  # fmt: skip
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
