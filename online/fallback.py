"""The latency budget and the cheap lists the fallback chain ends on.

A budgeted stage runs only if the time spent so far plus what the stage usually costs (the
median of its recent durations, per worker) fits in the budget; otherwise it is skipped and the
answer falls back: rerank -> precomputed list (LoadedBundle.precomputed_list) -> popular in
segment -> global popular. The fallback lists are array slices, so they are never skipped.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online import metrics
from online.bundle_loader import LoadedBundle
from shared.bundle import GLOBAL_SEGMENT
from shared.bundle_reader import ItemList

_WINDOW = 32  # samples per stage behind the cost estimate
_DECAY = 0.8  # shrink factor applied to a stage's samples each time it is skipped


class StageCosts:
    """Per-worker estimate of each stage's duration: the median of its recent samples.

    The median ignores the odd sample inflated by CPU preemption. A skipped stage yields no
    new sample, so each skip shrinks its samples: an estimate that once exceeded the budget
    decays until the stage is tried again, instead of locking the worker into the fallback.
    """

    def __init__(self, observe: bool = True) -> None:
        # observe=False: estimates only, no histogram (the shadow's own costs must not show
        # as the service's stages).
        self._observe = observe
        self._samples: dict[str, deque[float]] = {}
        self._estimate: dict[str, float] = {}
        self._lock = threading.Lock()
        self._histograms: dict[str, Any] = {}  # labelled children, looked up once

    def estimate(self, stage: str) -> float:
        return self._estimate.get(stage, 0.0)

    def record(self, stage: str, seconds: float) -> None:
        with self._lock:
            window = self._samples.setdefault(stage, deque(maxlen=_WINDOW))
            window.append(seconds)
            # statistics.median on <= 32 floats: ~2 µs, where np.median costs ~50 µs.
            self._estimate[stage] = statistics.median(window)
            if not self._observe:
                return
            histogram = self._histograms.get(stage)
            if histogram is None:
                histogram = self._histograms[stage] = metrics.STAGE_SECONDS.labels(stage)
        histogram.observe(seconds)

    def skipped(self, stage: str) -> None:
        with self._lock:
            window = self._samples.get(stage)
            if window:
                shrunk = [s * _DECAY for s in window]
                window.clear()
                window.extend(shrunk)
                self._estimate[stage] = statistics.median(window)


@dataclass
class Budget:
    budget_ms: float
    costs: StageCosts
    forced: bool = False
    started: float = field(default_factory=time.perf_counter)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def allows(self, stage: str) -> bool:
        """False when the stage would overrun; budget 0 or forced always says no."""
        if self.forced or self.budget_ms <= 0:
            return False
        if self.elapsed_ms() + self.costs.estimate(stage) * 1000.0 <= self.budget_ms:
            return True
        self.costs.skipped(stage)
        return False


class Stage:
    """`with Stage(costs, "rerank"):` records the stage's duration in metrics and the estimate."""

    def __init__(self, costs: StageCosts, name: str) -> None:
        self.costs, self.name = costs, name

    def __enter__(self) -> Stage:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.costs.record(self.name, time.perf_counter() - self._t0)


def popular(bundle: LoadedBundle, region: str | None) -> tuple[ItemList, str]:
    """The region's popular list when the bundle has one, else the global list."""
    if region is not None and region in bundle.popular:
        return bundle.popular[region], "popular_segment"
    return bundle.popular[GLOBAL_SEGMENT], "popular"


def topup(bundle: LoadedBundle, region: str | None) -> ItemList:
    """Items used to fill a row that the rules left short: segment then global popular."""
    lists = [bundle.popular[GLOBAL_SEGMENT]]
    if region is not None and region in bundle.popular:
        lists.insert(0, bundle.popular[region])
    if len(lists) == 1:
        return lists[0]
    return ItemList(
        np.concatenate([n.items for n in lists]),
        np.concatenate([n.scores for n in lists]),
        np.concatenate([n.sources for n in lists]),
    )
