"""What a worker holds: config, bundle store and recommender, reachable from any view."""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import current_app, g

from online.bundle_loader import LoadedBundle
from online.bundle_store import BundleStore
from online.config import ServiceConfig
from online.experiments import ExperimentStore
from online.realtime import RealtimeStore
from online.recommend import Recommender
from online.shadow import ShadowRunner
from online.skew import SkewMonitor
from shared.errors import ApiError
from shared.events import EventLogWriter
from shared.request_log import RequestLogWriter

EXTENSION = "recsys"


@dataclass
class Service:
    config: ServiceConfig
    store: BundleStore
    recommender: Recommender
    # One writer per worker, built after the fork (its thread would not survive one).
    request_log: RequestLogWriter | None = None
    # Recent items and exclusions from feedback events (None: realtime=off).
    realtime: RealtimeStore | None = None
    # The feedback event log (ART/event_log), one writer per worker like request_log.
    event_log: EventLogWriter | None = None
    # ART/experiments.json and its arms' bundles (None: no experiments on this app).
    experiments: ExperimentStore | None = None
    # Shadow scoring's threads, queue and log (online/shadow.py; None: off on this app).
    shadow: ShadowRunner | None = None
    # Train/serve skew sampling's thread, queue and log (online/skew.py; None: off).
    skew: SkewMonitor | None = None

    def close(self) -> None:
        """Write what the logs still hold and close the store (worker exit)."""
        if self.shadow is not None:
            self.shadow.close()  # its threads stop first, then its log is written
        if self.skew is not None:
            self.skew.close()
        for writer in (self.request_log, self.event_log):
            if writer is not None:
                writer.close()
        if self.realtime is not None:
            self.realtime.close()


def get_service() -> Service:
    service: Service = current_app.extensions[EXTENSION]
    return service


def require_bundle() -> LoadedBundle:
    """The bundle for this request, read once so a concurrent swap cannot split a request."""
    bundle = get_service().store.current
    if bundle is None:
        raise ApiError(503, "no bundle loaded yet")
    return bundle


def took_ms() -> float:
    return round((time.perf_counter() - g.t0) * 1000.0, 3)
