"""The worker's garbage-collector settings: a frozen start-up heap, GC pauses on /metrics
without ever waiting on a metric's lock, and a replaced bundle freed without the collector
(frozen objects are only ever freed by reference counting)."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from online import gc_tuning, metrics
from tests.online.bundle_factory import build_bundle
from tests.online.conftest import ADMIN_TOKEN, make_app, recommend


@pytest.fixture
def timed_gc() -> Iterator[None]:
    gc_tuning.observe_pauses()
    try:
        yield
    finally:
        gc.callbacks.remove(gc_tuning._on_gc)
        gc_tuning.export_pauses()


def _pause_count(generation: str) -> float:
    for family in metrics.REGISTRY.collect():
        if family.name == "recsys_gc_pause_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count") and sample.labels["generation"] == generation:
                    return sample.value
    return 0.0


def test_freeze_heap_leaves_full_passes_nothing_to_walk() -> None:
    keep = [[i] for i in range(10_000)]  # long-lived, tracked objects, as a loaded worker has
    try:
        frozen = gc_tuning.freeze_heap()
        assert frozen >= len(keep)
        assert len(gc.get_objects()) < 5_000  # what a full pass still visits
    finally:
        gc.unfreeze()
    assert len(gc.get_objects()) > len(keep)


def test_gc_pauses_reach_the_histogram(timed_gc: None) -> None:
    gc_tuning.export_pauses()
    before = _pause_count("2")
    gc.collect()
    gc.collect()
    gc_tuning.export_pauses()
    assert _pause_count("2") == before + 2


def test_a_collection_while_a_metric_lock_is_held_does_not_deadlock(timed_gc: None) -> None:
    """A pass can start inside any allocation, e.g. one made while prometheus_client holds
    the very lock the pause histogram needs: the callback must not wait for it."""
    gc_tuning.export_pauses()
    before = _pause_count("0")
    lock = metrics.GC_PAUSE_SECONDS.labels("0")._sum._lock
    done = threading.Event()

    def collect() -> None:
        gc.collect(0)
        done.set()

    with lock:
        worker = threading.Thread(target=collect, daemon=True)
        worker.start()
        assert done.wait(5), "GC callback blocked on a metric lock"
    gc_tuning.export_pauses()
    assert _pause_count("0") >= before + 1


def test_a_replaced_bundle_is_freed_without_the_collector(artifacts: Path) -> None:
    app = make_app(artifacts)
    client: FlaskClient = app.test_client()
    recommend(client, user_id="u1", k=5)  # fill its caches, as serving does
    store = app.extensions["recsys"].store
    old = weakref.ref(store.current)
    build_bundle(artifacts, "run-b", seed=1)
    gc.disable()
    try:
        resp = client.post("/admin/reload", headers={"X-Admin-Token": ADMIN_TOKEN})
        assert resp.get_json()["serving"] == "run-b"
        assert old() is None  # no reference cycle keeps it: freezing cannot leak bundles
    finally:
        gc.enable()
