"""A progress line per pipeline stage, with its duration, and a run summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger("recsys.progress")


@dataclass
class StageTimings:
    stages: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, index: int | None = None, total: int | None = None) -> Iterator[None]:
        prefix = f"[{index}/{total}] " if index and total else ""
        log.info("%s%s: started", prefix, name)
        start = time.perf_counter()
        try:
            yield
        except Exception:
            log.error("%s%s: FAILED after %.1fs", prefix, name, time.perf_counter() - start)
            raise
        elapsed = time.perf_counter() - start
        self.stages.append((name, elapsed))
        log.info("%s%s: done in %.1fs", prefix, name, elapsed)

    def summary(self) -> str:
        total = sum(t for _, t in self.stages)
        rows = [f"  {name:<14} {secs:8.1f}s" for name, secs in self.stages]
        return "\n".join(["stage timings:", *rows, f"  {'total':<14} {total:8.1f}s"])
