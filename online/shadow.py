"""Shadow scoring: rank a sampled share of requests again with a candidate bundle and/or
scorer, off the response path, and log how far its list agrees with the served one
(docs/experiments.md, Shadow scoring).

The request thread only decides and enqueues (a random draw, a clock read, a put_nowait):
the ranking runs on this worker's own shadow threads, after the answer is built. Shadow
work is dropped first under load, never queued behind: a request that already used more
than `shadow_max_budget_share` of its budget is not shadowed (the worker is busy), and a
full queue drops the job rather than wait. Every sampled request is counted once in
`recsys_shadow_total{outcome}`. Nothing here raises into a request: a shadow that fails
is counted as `error` and logged (once per interval).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass

from online import metrics
from online.bundle_loader import LoadedBundle
from online.config import ServiceConfig
from online.recommend import Query, Recommender
from shared.experiments import Shadow
from shared.rank_overlap import overlap
from shared.shadow_log import ShadowLogWriter, ShadowRecord

log = logging.getLogger(__name__)

SCORED, DROPPED_QUEUE, DROPPED_BUDGET, ERROR = "scored", "dropped_queue", "dropped_budget", "error"
_ERROR_LOG_INTERVAL = 30.0  # a shadow that always fails: one log line per interval
_CLOSE_TIMEOUT = 5.0


def label(shadow: Shadow) -> str:
    """The declared shadow as one stable text, the warehouse's group key."""
    return f"bundle={shadow.bundle or 'served'},scorer={shadow.scorer or 'served'}"


@dataclass(frozen=True)
class ShadowJob:
    """What the shadow needs from the served request: its query (the served treatment
    already applied), the shadow's bundle and what was served."""

    request_id: str
    ts: dt.datetime
    shadow: Shadow
    query: Query
    bundle: LoadedBundle  # the shadow ranks with this one
    served_bundle: str
    served_scorer: str | None
    served_items: tuple[str, ...]
    answered_at: float  # perf_counter when the served answer was ready


class ShadowRunner:
    """One per worker: a bounded queue and `shadow_threads` daemon threads, started on the
    first job (after gunicorn's fork, like the log writers' threads)."""

    def __init__(self, config: ServiceConfig, shadow_log: ShadowLogWriter | None,
                 recommender: Recommender | None = None) -> None:  # fmt: skip
        self.config = config
        self.log = shadow_log
        # Its own recommender: shadow stages never move serving's budget estimates.
        self.recommender = recommender or Recommender(config, observe=False)
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(config.shadow_queue_size)
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        self._closed = False
        self._random = random.Random()
        self._error_logged_at = float("-inf")

    def sampled(self, shadow: Shadow | None) -> bool:
        """Whether this request is in the shadow's share (a fresh draw per request)."""
        return shadow is not None and shadow.share > 0 and self._random.random() < shadow.share

    def offer(self, job: ShadowJob, took_ms: float) -> str:
        """Queue the job unless the request was slow or the queue is full; never blocks.
        Returns the outcome so far (scored: queued; the thread counts scored or error)."""
        if took_ms > self.config.budget_ms * self.config.shadow_max_budget_share:
            metrics.SHADOW.labels(DROPPED_BUDGET).inc()
            return DROPPED_BUDGET
        if self._closed:
            metrics.SHADOW.labels(DROPPED_QUEUE).inc()
            return DROPPED_QUEUE
        self._ensure_threads()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            metrics.SHADOW.labels(DROPPED_QUEUE).inc()
            return DROPPED_QUEUE
        return SCORED

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once every queued job has finished (tests, drains)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Stop the threads (jobs still queued are dropped: a worker exit must not wait on
        shadows), then write what the shadow log holds."""
        self._closed = True
        while True:
            try:
                self._queue.get_nowait()
                self._queue.task_done()
                metrics.SHADOW.labels(DROPPED_QUEUE).inc()
            except queue.Empty:
                break
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=_CLOSE_TIMEOUT)
            except queue.Full:
                break
        for thread in self._threads:
            thread.join(_CLOSE_TIMEOUT)
        if self.log is not None:
            self.log.close()

    def _ensure_threads(self) -> None:
        if self._threads:
            return
        with self._start_lock:
            if self._threads:
                return
            threads = [threading.Thread(target=self._run, name=f"shadow-{n}", daemon=True)
                       for n in range(self.config.shadow_threads)]  # fmt: skip
            for thread in threads:
                thread.start()
            self._threads = threads

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._score(job)
            except Exception as exc:  # a failing shadow is counted, never fatal
                metrics.SHADOW.labels(ERROR).inc()
                now = time.monotonic()
                if now - self._error_logged_at >= _ERROR_LOG_INTERVAL:
                    self._error_logged_at = now
                    log.error("shadow ranking failed", extra={"error": f"{type(exc).__name__}: "
                              f"{exc}", "shadow": label(job.shadow) if job else None})  # fmt: skip
            finally:
                self._queue.task_done()

    def _score(self, job: ShadowJob) -> None:
        started = time.perf_counter()
        query = job.query
        if job.shadow.scorer is not None:
            query = dataclasses.replace(query, scorer=job.shadow.scorer)
        answer = self.recommender.recommend(job.bundle, query, started=started)
        took = time.perf_counter() - started
        metrics.SHADOW_SECONDS.observe(took)
        ranked = [str(it["item_id"]) for it in answer.items]
        agreement = overlap(job.served_items, ranked)
        if self.log is not None:
            self.log.log(ShadowRecord(
                request_id=job.request_id, ts=job.ts, shadow=label(job.shadow),
                bundle=job.served_bundle, scorer=job.served_scorer,
                shadow_bundle=job.bundle.run_id, shadow_scorer=answer.scorer,
                shadow_served_by=answer.served_by,
                shadow_fallback_reason=answer.fallback_reason, k=query.k,
                n_served=len(job.served_items), n_shadow=len(ranked), common=agreement.common,
                jaccard=agreement.jaccard, kendall_tau=agreement.kendall_tau,
                spearman=agreement.spearman, shadow_latency_ms=round(took * 1000.0, 3),
                queue_ms=round((started - job.answered_at) * 1000.0, 3),
            ))  # fmt: skip
        metrics.SHADOW.labels(SCORED).inc()
