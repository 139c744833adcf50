"""Runs one stage or the whole pipeline, with a progress line and timing per stage.

Spark stages share one session when the whole pipeline runs in one process; a single
stage (Airflow, spark-submit) builds its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from batch.pipeline.context import RunContext
from shared.progress import StageTimings

log = logging.getLogger(__name__)

STAGES = (
    "validate", "embeddings", "index", "candidates", "features", "train_ranker", "rank",
    "evaluate", "gate", "publish",
)
SPARK_STAGE_NAMES = frozenset({"validate", "embeddings", "candidates", "features", "rank", "evaluate"})
LAST_SPARK_STAGE = [name for name in STAGES if name in SPARK_STAGE_NAMES][-1]


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
            from batch.pipeline.spark import SparkWorkSummary

            spark.sparkContext.setCheckpointDir(str(ctx.work / "_checkpoints"))
            self._work = SparkWorkSummary(spark)

    def _session(self) -> Any:
        if self._spark is None:
            from batch.pipeline.spark import SparkWorkSummary, build_session

            self._spark = build_session(
                self.ctx.config, self.ctx.work / "_checkpoints", f"recsys-{self.ctx.run_date}"
            )
            self._work = SparkWorkSummary(self._spark)
        return self._spark

    def _callable(self, name: str) -> Callable[[], dict[str, object]]:
        if name in SPARK_STAGE_NAMES:
            from batch.pipeline.spark_stages import SPARK_STAGES

            return lambda: SPARK_STAGES[name](self.ctx, self._session())
        if name == "index":
            from batch.pipeline.index_stage import stage_index

            return lambda: stage_index(self.ctx)
        if name == "train_ranker":  # torch on the driver, no Spark
            from batch.ranker.stage import stage_train_ranker

            return lambda: stage_train_ranker(self.ctx)
        if name == "gate":
            from batch.pipeline.gate import stage_gate

            return lambda: stage_gate(self.ctx)
        if name == "publish":
            from batch.pipeline.publish import stage_publish

            return lambda: stage_publish(self.ctx)
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")

    def run_stage(self, name: str, index: int | None = None) -> dict[str, object]:
        fn = self._callable(name)
        with self.timings.stage(name, index, len(STAGES) if index else None):
            result = fn()
        if self._work is not None and name in SPARK_STAGE_NAMES:
            log.info("%s: %s", name, self._work.since_last())
        return result

    def run_all(self, stop_after: str | None = None) -> dict[str, dict[str, object]]:
        results: dict[str, dict[str, object]] = {}
        try:
            for i, name in enumerate(STAGES, start=1):
                results[name] = self.run_stage(name, i)
                if name == stop_after:
                    break
                if name == LAST_SPARK_STAGE:
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
