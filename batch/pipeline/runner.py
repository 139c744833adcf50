"""Runs one stage or the whole pipeline, with a progress line and timing per stage.

Spark stages share one session when the whole pipeline runs in one process; a single
stage (Airflow, spark-submit) builds its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from batch import stages
from batch.context import RunContext
from shared.progress import StageTimings

log = logging.getLogger(__name__)


class PipelineRunner:
    def __init__(self, ctx: RunContext, spark: Any = None) -> None:
        """spark: an existing session to use (tests); otherwise one is built on demand and
        stopped by close()."""
        self.ctx = ctx
        self.timings = StageTimings()
        self._spark: Any = spark
        self._owns_session = spark is None
        self._work: Any = None
        if spark is not None:
            from batch.spark.session import SparkWorkSummary

            spark.sparkContext.setCheckpointDir(str(ctx.work / "_checkpoints"))
            self._work = SparkWorkSummary(spark)

    def _session(self) -> Any:
        if self._spark is None:
            from batch.spark.session import SparkWorkSummary, build_session

            self._spark = build_session(
                self.ctx.config, self.ctx.work / "_checkpoints", f"recsys-{self.ctx.run_date}"
            )
            self._work = SparkWorkSummary(self._spark)
        return self._spark

    def _callable(self, name: str) -> Callable[[], dict[str, object]]:
        spec = stages.get(name)
        fn = spec.entry()
        ctx = self.ctx.for_stage(name)  # reads only the outputs of the stages it needs
        if spec.needs_session:
            return lambda: fn(ctx, self._session())
        return lambda: fn(ctx)

    def run_stage(self, name: str, index: int | None = None) -> dict[str, object]:
        fn = self._callable(name)
        with self.timings.stage(name, index, len(stages.STAGES) if index else None):
            result = fn()
        if self._work is not None and stages.get(name).needs_session:
            log.info("%s: %s", name, self._work.since_last())
        return result

    def run_all(self, stop_after: str | None = None) -> dict[str, dict[str, object]]:
        results: dict[str, dict[str, object]] = {}
        try:
            for i, name in enumerate(stages.STAGE_NAMES, start=1):
                results[name] = self.run_stage(name, i)
                if name == stop_after:
                    break
                if name == stages.last_session_stage():
                    # The driver-only stages after it (gate, publish) need the memory the
                    # Spark JVM holds: at 20M events its heap plus the bundle writer's
                    # tables would not fit in 24 GB together.
                    self.close()
        finally:
            log.info("%s", self.timings.summary())
            self.close()
        return results

    def close(self) -> None:
        if self._spark is not None and self._owns_session:
            self._spark.stop()
            self._spark = None


def summary_line(results: dict[str, dict[str, object]]) -> str:
    metrics = results.get("evaluate", {})
    lists = metrics.get("lists", {}) if isinstance(metrics, dict) else {}
    brief = {name: round(v.get("ndcg@10", 0.0), 4) for name, v in lists.items()}  # type: ignore[union-attr]
    return json.dumps({"published": results.get("publish", {}).get("run_id"), "ndcg@10": brief})
