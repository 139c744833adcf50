"""Train/serve skew: compare the features the service computes with the bundle's batch-side
statistics (docs/monitoring.md, "Train/serve skew").

The request thread only draws and hands over: for a sampled share (`skew_sample_rate`) of
re-ranked requests the scorer returns the feature matrix it built anyway, and `offer` puts
it, with the scores, in a bounded queue (put_nowait: a full queue drops the sample and
counts it, `recsys_skew_samples_total{outcome="dropped"}`). One background thread per
worker bins every sampled row on the bundle's training bin edges, per feature
(shared/feature_stats.py), and once `skew_min_rows` rows of `skew_min_requests` requests
are in, sets `recsys_feature_skew_psi{feature}` to the PSI against the bundle's reference
sample minus the sampling noise floor, like the input drift checks (a healthy service then
reads ~0 whatever its volume). It also logs a few rows per sample to ART/skew_log
(shared/skew_log.py, the warehouse's `feature_skew`).

The reference is the bundle's `candidates` sample (`skew_reference`): the same features,
computed by the same code, on the candidates the batch run scored, so a difference is skew
(code, arrays or inputs that differ between batch and service), not the training sample's
own population (sampled negatives and positives). `training` compares with that sample.

Noise floor: a user-level feature (user_log_n_events) is the same for every candidate of a
request, so its effective sample is the number of requests, not of rows; the floor uses the
requests for a feature that never varied within a request, the rows otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online import metrics
from online.background import BackgroundQueue
from online.config import ServiceConfig
from shared import feature_stats as fs
from shared.features import FEATURE_NAMES
from shared.skew_log import SkewLogWriter

log = logging.getLogger(__name__)

SAMPLED, DROPPED = "sampled", "dropped"
MAX_BUNDLES = 4  # bundles tracked per worker (CURRENT, arms, a canary); the oldest is dropped
# The PSI of every feature is recomputed at most this often (and this long after the last
# sample at the latest): per sample, at 100 % sampling, it would cost as much as the binning.
_EXPORT_SECONDS = 1.0
_COLUMN = {name: j for j, name in enumerate(FEATURE_NAMES)}


@dataclass(frozen=True)
class SkewSample:
    """What one sampled request hands over: the matrix the model read and its scores."""

    bundle: str
    scorer: str
    stats: Mapping[str, Any]  # the bundle's feature_stats.json
    names: tuple[str, ...]  # the columns of x (the model's features)
    x: np.ndarray  # float32 [candidates, len(names)]
    scores: np.ndarray  # float32 [candidates]
    ts: dt.datetime


@dataclass
class FeatureHistogram:
    """One feature's live counts over the reference's bins."""

    edges: np.ndarray
    reference: np.ndarray  # the reference sample's counts
    reference_rows: float
    counts: np.ndarray = field(init=False)
    varies: bool = False  # differed within one request at least once

    def __post_init__(self) -> None:
        self.counts = np.zeros(len(self.reference), dtype=np.float64)

    def add(self, values: np.ndarray) -> None:
        self.counts += fs.bin_counts(values, self.edges)
        if not self.varies and len(values) > 1:
            finite = values[np.isfinite(values)]
            self.varies = len(finite) > 1 and bool(finite.max() > finite.min())

    def excess_psi(self, rows: float, requests: float) -> float:
        """PSI against the reference above its noise floor, clamped at 0."""
        raw = fs.psi(self.counts, self.reference)
        floor = fs.noise_floor(len(self.counts), rows if self.varies else requests,
                               self.reference_rows)  # fmt: skip
        return max(0.0, raw - floor)


class BundleSkew:
    """The live histograms of one bundle's features (and score) in one worker."""

    def __init__(self, stats: Mapping[str, Any], names: tuple[str, ...], reference: str) -> None:
        samples = stats["samples"]
        ref = samples.get(reference) or samples[fs.TRAINING]
        self.names = names
        self.histograms: dict[str, FeatureHistogram] = {}
        for name in (*names, fs.SCORE):
            summary = ref.get(fs.SCORE) if name == fs.SCORE else ref["features"].get(name)
            edges = stats["edges"].get(name)
            if summary is None or edges is None:
                continue  # a feature (or score) the stats do not cover
            counts = np.asarray(summary["counts"], dtype=np.float64)
            self.histograms[name] = FeatureHistogram(np.asarray(edges, np.float64), counts,
                                                     float(counts.sum()))  # fmt: skip
        self.rows = 0.0
        self.requests = 0.0

    def add(self, x: np.ndarray, scores: np.ndarray) -> None:
        for j, name in enumerate(self.names):
            h = self.histograms.get(name)
            if h is not None:
                h.add(np.asarray(x[:, j], dtype=np.float64))
        if fs.SCORE in self.histograms:
            self.histograms[fs.SCORE].add(np.asarray(scores, dtype=np.float64))
        self.rows += len(x)
        self.requests += 1

    def decay(self, window_rows: int) -> None:
        """Halve every count past window_rows rows: the PSI follows recent traffic."""
        if self.rows > window_rows:
            for h in self.histograms.values():
                h.counts *= 0.5
            self.rows *= 0.5
            self.requests *= 0.5

    def psi(self) -> dict[str, float]:
        return {n: h.excess_psi(self.rows, self.requests) for n, h in self.histograms.items()}


class SkewMonitor:
    """One per worker: the sampling draw, a bounded queue and one daemon thread (started on
    the first sample, after gunicorn's fork)."""

    def __init__(self, config: ServiceConfig, skew_log: SkewLogWriter | None = None) -> None:
        self.config = config
        self.log = skew_log
        self.rate = config.skew_sample_rate
        self._work: BackgroundQueue[SkewSample] = BackgroundQueue(
            # process is looked up per sample: tests stand a slow one in for it
            "skew", config.skew_queue_size, 1, lambda sample: self.process(sample), self._failed,
            idle_seconds=_EXPORT_SECONDS, on_idle=self._export_if_dirty,  # the last samples' PSI
        )
        self._random = random.Random()
        self._bundles: dict[str, BundleSkew] = {}  # run id -> state, oldest first
        self._seq = 0
        self._exported_at = float("-inf")
        self._dirty = False  # samples binned since the last export
        self._lock = threading.Lock()  # the thread's binning vs wait_idle's export
        self.psi: dict[str, float] = {}  # last exported values (tests, the bench)

    def sampled(self) -> bool:
        """This request's draw (a fresh one per re-ranked request)."""
        return self.rate > 0 and (self.rate >= 1 or self._random.random() < self.rate)

    def offer(self, sample: SkewSample) -> str:
        """Queue the sample, or drop it when the queue is full; never blocks."""
        outcome = SAMPLED if self._work.offer(sample) else DROPPED
        metrics.SKEW_SAMPLES.labels(outcome).inc()
        return outcome

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once every queued sample has been processed (tests, the bench)."""
        if not self._work.wait_idle(timeout):
            return False
        self._export_if_dirty()
        return True

    def close(self) -> None:
        """Stop the thread (samples still queued are dropped), then write the log."""
        self._work.close()
        if self.log is not None:
            self.log.close()

    @staticmethod
    def _failed(sample: SkewSample, exc: Exception) -> None:  # skew never takes a worker down
        log.error("skew sample could not be processed", exc_info=exc)

    def process(self, sample: SkewSample) -> None:
        """Bin one sample, export the PSI (at most every _EXPORT_SECONDS), log a few rows."""
        with self._lock:
            self._bin(sample)
        if self.log is not None:
            self._log(sample)

    def _bin(self, sample: SkewSample) -> None:
        state = self._bundles.pop(sample.bundle, None)
        if state is None:
            state = BundleSkew(sample.stats, sample.names, self.config.skew_reference)
        self._bundles[sample.bundle] = state  # most recent last
        while len(self._bundles) > MAX_BUNDLES:
            self._bundles.pop(next(iter(self._bundles)))
        state.add(sample.x, sample.scores)
        state.decay(self.config.skew_window_rows)
        self._dirty = True
        if time.monotonic() - self._exported_at >= _EXPORT_SECONDS:
            self._export()

    def _export_if_dirty(self) -> None:
        with self._lock:
            if self._dirty:
                self._export()

    def _export(self) -> None:
        """Per feature, the worst PSI over this worker's bundles with enough rows in."""
        worst: dict[str, float] = {}
        for state in self._bundles.values():
            if state.rows < self.config.skew_min_rows or state.requests < self.config.skew_min_requests:
                continue
            for name, value in state.psi().items():
                worst[name] = max(value, worst.get(name, 0.0))
        for name, value in worst.items():
            metrics.FEATURE_SKEW_PSI.labels(name).set(round(value, 6))
        self.psi = worst
        self._exported_at = time.monotonic()
        self._dirty = False

    def _log(self, sample: SkewSample) -> None:
        assert self.log is not None
        self._seq += 1
        sample_id = f"{os.getpid()}-{self._seq}"
        n = len(sample.x)
        picked = sorted(self._random.sample(range(n), min(n, self.config.skew_log_rows)))
        columns = [_COLUMN[name] for name in sample.names]
        for i in picked:
            values = [float("nan")] * len(FEATURE_NAMES)
            for j, col in enumerate(columns):
                values[col] = float(sample.x[i, j])
            self.log.log_row(sample.ts, sample.bundle, sample.scorer, sample_id, n,
                             float(sample.scores[i]), values)  # fmt: skip
