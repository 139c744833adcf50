"""Prometheus metrics and the /metrics endpoint.

Under gunicorn every worker writes its samples to PROMETHEUS_MULTIPROC_DIR (set by
gunicorn_conf before any worker imports prometheus_client) and /metrics aggregates them, so
a scrape that lands on any worker sees the whole server. Without that variable (tests, the
Flask dev server) the default in-process registry is used.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

# Sub-millisecond buckets: the whole request budget is tens of milliseconds.
_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

REQUEST_SECONDS = Histogram(
    "recsys_request_seconds", "Request latency by endpoint", ["endpoint"], buckets=_BUCKETS
)
STAGE_SECONDS = Histogram(
    "recsys_stage_seconds", "Latency of each request stage", ["stage"], buckets=_BUCKETS
)
SERVED = Counter("recsys_served_total", "Answers by endpoint and path", ["endpoint", "served_by"])
FALLBACKS = Counter("recsys_fallback_total", "Fallbacks taken, by reason", ["reason"])
SCORED = Counter("recsys_scored_total", "Re-rank calls by scorer", ["scorer"])
CACHE_REQUESTS = Counter("recsys_cache_requests_total", "LRU cache lookups", ["cache", "result"])
# The real-time store on the request path (online/realtime): lookup time and failures
# (a failure serves an empty state, so this counter is the only sign of one).
REALTIME_LOOKUP_SECONDS = Histogram(
    "recsys_realtime_lookup_seconds", "Real-time store state() per request", ["store"],
    buckets=_BUCKETS,
)
REALTIME_ERRORS = Counter(
    "recsys_realtime_errors_total", "Real-time store failures, by operation", ["store", "op"]
)
# Cyclic GC passes by generation (online/gc_tuning.py): a full pass over an unfrozen heap
# stalls the worker's requests for tens of milliseconds.
GC_PAUSE_SECONDS = Histogram(
    "recsys_gc_pause_seconds", "Garbage collector pauses by generation", ["generation"],
    buckets=_BUCKETS,
)
ERRORS = Counter("recsys_errors_total", "Errors answered, by kind", ["kind"])
RELOADS = Counter("recsys_bundle_reloads_total", "Bundle load attempts", ["result"])
# The Parquet logs (shared/parquet_log.py), label log = served | events: records lost
# (buffer full, or a write failure that outlasted the buffer), failed write attempts (each
# is retried) and records written as Parquet.
LOG_DROPPED = Counter("recsys_log_dropped_total", "Log records lost", ["log"])
LOG_WRITE_ERRORS = Counter(
    "recsys_log_write_errors_total", "Log write attempts that failed (retried)", ["log"]
)
LOG_WRITTEN = Counter("recsys_log_records_written_total", "Log records written", ["log"])
# POST /v1/events by event type (configured types, 'other', 'invalid' for a batch refused
# by schema validation) and outcome: accepted, duplicate, refused.
EVENTS = Counter("recsys_events_total", "Feedback events by type and outcome",
                 ["type", "outcome"])  # fmt: skip
ADMIN_AUTH = Counter(
    "recsys_admin_auth_total",
    "X-Admin-Token checks by outcome: accepted, missing, invalid, rate_limited",
    ["outcome"],
)
# Experiments (online/experiments.py): file reloads (loaded, refused, removed), the served
# file's version per worker, arms assigned (live SRM watch), arm treatments that could not
# apply (a scorer the bundle cannot run, an arm bundle not held) and so served the default.
EXPERIMENT_RELOADS = Counter(
    "recsys_experiment_reloads_total", "Experiments file reads that changed it", ["result"]
)
EXPERIMENTS_VERSION = Gauge(
    "recsys_experiments_version", "Version of the experiments file served (0: none)",
    multiprocess_mode="liveall",
)
EXPERIMENT_ASSIGNED = Counter(
    "recsys_experiment_assigned_total", "Requests per experiment arm", ["experiment", "arm"]
)
EXPERIMENT_UNAPPLIED = Counter(
    "recsys_experiment_unapplied_total", "Arm settings served with the default instead",
    ["setting"],
)
# Shadow scoring (online/shadow.py): per sampled request, ranked by the shadow (scored),
# dropped because the worker's shadow queue was full or the request had used most of its
# budget, or the shadow raised (error). Never on the response path.
SHADOW = Counter("recsys_shadow_total", "Shadow-sampled requests by outcome", ["outcome"])
SHADOW_SECONDS = Histogram(
    "recsys_shadow_seconds", "Shadow ranking time (off the request path)", buckets=_BUCKETS
)
# Train/serve skew (online/skew.py): per feature (and "score"), the PSI of the sampled live
# values against the bundle's batch-side statistics, above the sampling noise floor.
# liveall: one series per live worker (pid label), so a replaced worker's value disappears
# with it (mode "max" would keep a dead worker's files in the maximum); the alert takes
# max() over the workers itself.
FEATURE_SKEW_PSI = Gauge(
    "recsys_feature_skew_psi", "PSI of live features vs the bundle's statistics, above noise",
    ["feature"], multiprocess_mode="liveall",
)
SKEW_SAMPLES = Counter(
    "recsys_skew_samples_total", "Skew samples by outcome: sampled, dropped (queue full)",
    ["outcome"],
)
# Scores of served items by scorer: the ONNX rankers' logits, ALS dot products and fused
# reciprocal-rank sums all fall in [-10, 10] in practice, the fused ones in [0, 1].
SERVED_SCORE = Histogram(
    "recsys_served_score", "Scores of the items served, by scorer", ["scorer"],
    buckets=(-10.0, -5.0, -2.0, -1.0, -0.5, -0.25, 0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0,
             10.0),
)
# The served bundle's publish time (manifest created_at) per live worker; /metrics derives
# recsys_bundle_age_seconds = now - this at scrape time (render), so the age grows between
# requests and works under multiprocess mode, where a callback gauge would not.
BUNDLE_PUBLISHED = Gauge(
    "recsys_bundle_published_timestamp_seconds", "Publish time of the bundle each worker serves",
    multiprocess_mode="liveall",
)
BUNDLE_INFO = Gauge(
    "recsys_bundle_info",
    "1 for the bundle (and scorer) each live worker serves",
    ["run_id", "scorer"],
    multiprocess_mode="liveall",
)
BUNDLE_LOAD_SECONDS = Gauge(
    "recsys_bundle_load_seconds",
    "Seconds the last successful bundle load took",
    multiprocess_mode="liveall",
)


_bundle_info_lock = threading.Lock()
_bundle_info_shown: set[tuple[str, str]] = set()


def set_bundle_info(
    run_id: str, scorer: str, previous: tuple[str, str] | None = None
) -> None:
    """1 for the bundle this worker serves now, 0 for every one it served before.

    In multiprocess mode a series cannot be removed (prometheus_client only forgets it in
    memory; the value stays in the worker's file, so after A -> B -> A each worker still
    reported both run ids). So the old series are set to 0, and `render` leaves the zeros
    out: one `recsys_bundle_info` line per live worker, for what it serves.
    """
    current = (run_id, scorer)
    with _bundle_info_lock:
        stale = _bundle_info_shown | ({previous} if previous is not None else set())
        for labels in stale - {current}:
            BUNDLE_INFO.labels(*labels).set(0)
        BUNDLE_INFO.labels(*current).set(1)
        _bundle_info_shown.add(current)


class _Snapshot:
    """A registry-like object: the collected families plus derived cache hit ratios."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            if family.name == "recsys_bundle_info":  # bundles no longer served: set_bundle_info
                family.samples = [s for s in family.samples if s.value != 0]
            yield family
            if family.name == "recsys_bundle_published_timestamp_seconds":
                yield _bundle_age(family)
        yield _hit_ratio(self._families)


def _bundle_age(published: Metric) -> Metric:
    """recsys_bundle_age_seconds, one sample per published-time sample (per worker)."""
    now = time.time()
    labels = sorted({k for s in published.samples for k in s.labels})
    age = GaugeMetricFamily("recsys_bundle_age_seconds",
                            "Seconds since the served bundle was published (scrape time)",
                            labels=labels)  # fmt: skip
    for sample in published.samples:
        if sample.value > 0:  # 0: a worker that has not loaded a bundle yet
            age.add_metric([sample.labels[k] for k in labels], max(0.0, now - sample.value))
    return age


def _hit_ratio(families: Iterable[Metric]) -> Metric:
    counts: dict[tuple[str, str], float] = {}
    for family in families:
        if family.name != "recsys_cache_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["cache"], sample.labels["result"])
                counts[key] = counts.get(key, 0.0) + sample.value
    ratio = GaugeMetricFamily(
        "recsys_cache_hit_ratio", "hits / lookups per cache since start", labels=["cache"]
    )
    for cache in sorted({c for c, _ in counts}):
        hits, misses = counts.get((cache, "hit"), 0.0), counts.get((cache, "miss"), 0.0)
        ratio.add_metric([cache], hits / (hits + misses) if hits + misses else 0.0)
    return ratio


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        families = list(registry.collect())
    else:
        families = list(REGISTRY.collect())
    return generate_latest(_Snapshot(families))  # type: ignore[arg-type]


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    # The text format prometheus_client's own server answers by default, charset once
    # (Flask's `mimetype=` appended a second one to CONTENT_TYPE_LATEST).
    return Response(render(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
