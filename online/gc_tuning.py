"""The cyclic garbage collector in a serving worker: freeze the start-up heap, time every pass.

A worker holds ~110 000 GC-tracked objects once its libraries (Flask, pydantic, pyarrow,
onnxruntime, FAISS's bindings) and its bundle are loaded; none of them ever becomes garbage.
CPython's full (generation 2) collection walks all of them: 50-70 ms on this machine, with
the GIL held, in whichever request thread happened to allocate at the wrong moment, every
few thousand requests (each request leaves a reference cycle behind in werkzeug's URL
matcher, so the young generations fill steadily). That was the full path's latency tail.

`freeze_heap()` moves everything alive at the end of start-up into the permanent generation
(`gc.freeze()`), which the collector never walks: a full pass then only visits what was
allocated since (a few thousand objects, well under a millisecond). Frozen objects are
still freed by reference counting; only a reference cycle among them would never be
reclaimed, which is why a replaced bundle must not be part of one (tests check that a
swapped-out bundle is freed without a collection).

`observe_pauses()` times each pass and `export_pauses()` (called at the end of every request)
hands the times to `recsys_gc_pause_seconds{generation}`, so a regression shows on /metrics,
not only in a profiler. The callback itself never touches prometheus_client: a collection
can start inside any allocation, including one made while a metric's lock is held, and
observing from there would wait on that lock forever.
"""

from __future__ import annotations

import gc
import time
from typing import Any

_started: list[float] = []  # one slot; a list so the callback needs no global statement
# Pause seconds per generation, not yet exported. Floats are not GC-tracked, and appending
# to a list allocates no tracked object, so the callback cannot feed the collector.
_pending: tuple[list[float], list[float], list[float]] = ([], [], [])


def freeze_heap() -> int:
    """Collect once, then freeze what is left; returns how many objects are now frozen.

    Call it once per process after start-up (libraries imported, bundle loaded), before the
    first request: what is alive then lives as long as the worker."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        _pending[int(info["generation"])].append(time.perf_counter() - _started[0])


def observe_pauses() -> None:
    """Start timing every collection (idempotent; well under a microsecond per pass)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def export_pauses() -> None:
    """Move the pauses timed so far into the histogram (never from inside a collection)."""
    if not (_pending[0] or _pending[1] or _pending[2]):
        return
    from online import metrics

    for generation, pauses in enumerate(_pending):
        # Swap the list out first: a pass may append while we observe.
        taken = pauses[:]
        del pauses[: len(taken)]
        if taken:
            child = metrics.GC_PAUSE_SECONDS.labels(str(generation))
            for seconds in taken:
                child.observe(seconds)
