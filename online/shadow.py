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
import random
import time
from dataclasses import dataclass

from online import metrics
from online.background import BackgroundQueue
from online.bundle_loader import LoadedBundle
from online.config import ServiceConfig
from online.recommend import Query, Recommender
from shared.experiments import Shadow
from shared.rank_overlap import overlap
from shared.shadow_log import ShadowLogWriter, ShadowRecord

log = logging.getLogger(__name__)

SCORED, DROPPED_QUEUE, DROPPED_BUDGET, ERROR = "scored", "dropped_queue", "dropped_budget", "error"
_ERROR_LOG_INTERVAL = 30.0  # a shadow that always fails: one log line per interval


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
        self._work: BackgroundQueue[ShadowJob] = BackgroundQueue(
            "shadow", config.shadow_queue_size, config.shadow_threads, self._score, self._failed)
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
        if not self._work.offer(job):  # closed or full
            metrics.SHADOW.labels(DROPPED_QUEUE).inc()
            return DROPPED_QUEUE
        return SCORED

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once every queued job has finished (tests, drains)."""
        return self._work.wait_idle(timeout, poll=0.005)

    def close(self) -> None:
        """Stop the threads (jobs still queued are dropped: a worker exit must not wait on
        shadows), then write what the shadow log holds."""
        dropped = self._work.close()
        if dropped:
            metrics.SHADOW.labels(DROPPED_QUEUE).inc(dropped)
        if self.log is not None:
            self.log.close()

    def _failed(self, job: ShadowJob, exc: Exception) -> None:
        """A failing shadow is counted, never fatal; logged once per interval."""
        metrics.SHADOW.labels(ERROR).inc()
        now = time.monotonic()
        if now - self._error_logged_at >= _ERROR_LOG_INTERVAL:
            self._error_logged_at = now
            log.error("shadow ranking failed", extra={"error": f"{type(exc).__name__}: {exc}",
                                                      "shadow": label(job.shadow)})  # fmt: skip

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
