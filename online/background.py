"""Work done off the response path: a bounded queue served by daemon threads.

The shadow runner and the skew monitor both hand work from the request thread to a few
threads of their own. What they share lives here: a request never blocks (a full queue
refuses the item at once, and the caller counts the drop), the threads start on the first
item (after gunicorn's fork: threads started before it would not exist in the workers), a
failing item never kills its thread, and `close` stops the threads without waiting on work
still queued (a worker exit must not wait on monitoring).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_CLOSE_TIMEOUT = 5.0


class BackgroundQueue(Generic[T]):
    """`size` queued items at most, `threads` daemon threads calling `handle(item)`.

    `on_error(item, exc)` is called when `handle` raises (the thread goes on). With
    `idle_seconds`, `on_idle()` runs on a thread whenever no item arrived for that long
    (e.g. export what the last items changed once traffic pauses).
    """

    def __init__(self, name: str, size: int, threads: int, handle: Callable[[T], None],
                 on_error: Callable[[T, Exception], None],
                 idle_seconds: float | None = None,
                 on_idle: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.name = name
        self._queue: queue.Queue[T | None] = queue.Queue(size)
        self._thread_count = threads
        self._handle = handle
        self._on_error = on_error
        self._idle_seconds = idle_seconds
        self._on_idle = on_idle
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        self.closed = False

    def offer(self, item: T) -> bool:
        """Queue the item; False (and nothing queued) when closed or full. Never blocks."""
        if self.closed:
            return False
        self._ensure_threads()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def wait_idle(self, timeout: float = 10.0, poll: float = 0.002) -> bool:
        """True once every queued item has been handled (tests, drains, the bench)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(poll)
        return True

    def close(self) -> int:
        """Drop what is still queued, stop the threads; returns how many items were dropped."""
        self.closed = True
        dropped = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            dropped += 1
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=_CLOSE_TIMEOUT)
            except queue.Full:
                break
        for thread in self._threads:
            thread.join(_CLOSE_TIMEOUT)
        return dropped

    def _ensure_threads(self) -> None:
        if self._threads:
            return
        with self._start_lock:
            if self._threads:
                return
            threads = [threading.Thread(target=self._run, name=f"{self.name}-{n}", daemon=True)
                       for n in range(self._thread_count)]  # fmt: skip
            for thread in threads:
                thread.start()
            self._threads = threads

    def _next(self) -> T | None:
        """The next item; runs `on_idle` each time `idle_seconds` pass without one."""
        while True:
            if self._idle_seconds is None:
                return self._queue.get()
            try:
                return self._queue.get(timeout=self._idle_seconds)
            except queue.Empty:
                if self._on_idle is not None:
                    self._on_idle()

    def _run(self) -> None:
        while True:
            item = self._next()
            try:
                if item is None:
                    return
                self._handle(item)
            except Exception as exc:  # background work never takes the worker down
                self._on_error(item, exc)  # type: ignore[arg-type]
            finally:
                self._queue.task_done()
