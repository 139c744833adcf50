"""The bounded background queue the shadow runner and the skew monitor hand work to."""

from __future__ import annotations

import threading
import time

from online.background import BackgroundQueue


def _queue(handle, size=4, threads=1, **kw) -> tuple[BackgroundQueue[int], list]:
    errors: list = []
    work: BackgroundQueue[int] = BackgroundQueue(
        "t", size, threads, handle, lambda item, exc: errors.append((item, str(exc))), **kw)
    return work, errors


def test_items_are_handled_on_threads_started_by_the_first_offer() -> None:
    seen: list[tuple[int, str]] = []
    work, _ = _queue(lambda i: seen.append((i, threading.current_thread().name)), threads=2)
    assert not any(t.name.startswith("t-") for t in threading.enumerate())  # none before
    assert all(work.offer(i) for i in range(3))
    assert work.wait_idle(5)
    assert sorted(i for i, _ in seen) == [0, 1, 2]
    assert {name for _, name in seen} <= {"t-0", "t-1"}
    work.close()


def test_a_full_queue_refuses_at_once_instead_of_blocking() -> None:
    release = threading.Event()
    work, _ = _queue(lambda i: release.wait(5), size=1)
    assert work.offer(1)  # taken by the thread, which then blocks
    deadline = time.monotonic() + 5
    while work.offer(2) is False and time.monotonic() < deadline:  # until the thread took 1
        time.sleep(0.01)
    started = time.perf_counter()
    assert work.offer(3) is False  # the one slot holds 2
    assert time.perf_counter() - started < 0.1
    release.set()
    assert work.wait_idle(5)
    work.close()


def test_a_failing_item_is_reported_and_the_thread_goes_on() -> None:
    handled: list[int] = []

    def handle(i: int) -> None:
        if i == 2:
            raise ValueError("bad item")
        handled.append(i)

    work, errors = _queue(handle)
    for i in (1, 2, 3):
        assert work.offer(i)
    assert work.wait_idle(5)
    assert handled == [1, 3]
    assert errors == [(2, "bad item")]
    work.close()


def test_on_idle_runs_when_no_item_came_for_idle_seconds() -> None:
    idle = threading.Event()
    work, _ = _queue(lambda i: None, idle_seconds=0.05, on_idle=idle.set)
    assert work.offer(1)
    assert idle.wait(5)
    work.close()


def test_close_drops_what_is_queued_stops_the_threads_and_refuses_more() -> None:
    busy, release = threading.Event(), threading.Event()

    def handle(i: int) -> None:
        busy.set()
        release.wait(5)

    work, _ = _queue(handle, size=3)
    assert work.offer(1)
    assert busy.wait(5)  # the thread holds 1: 2 and 3 stay queued
    assert work.offer(2) and work.offer(3)
    dropped: list[int] = []
    closer = threading.Thread(target=lambda: dropped.append(work.close()))
    closer.start()
    deadline = time.monotonic() + 5
    while not work.closed and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # close drains the queue right after marking itself closed
    release.set()
    closer.join(10)
    assert dropped == [2]
    assert work.offer(4) is False
    assert not any(t.name.startswith("t-") and t.is_alive() for t in threading.enumerate())
