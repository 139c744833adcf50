"""Runs one stage or the whole pipeline, with a progress line and timing per stage.

Spark stages share one session when the whole pipeline runs in one process; a single
stage (Airflow, spark-submit) builds its own. Spark's checkpoint files (ALS) live in
`ART/work/<run_date>/_checkpoints/` only while a stage runs: each stage's end, failed or
not, removes them.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from batch import stages
from batch.context import RunContext
from shared.progress import StageTimings

log = logging.getLogger(__name__)


def _local_path(uri: str | None) -> Path | None:
    """A checkpoint directory as a local path (None for hdfs:// and the like)."""
    if not uri:
        return None
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None


class PipelineRunner:
    def __init__(self, ctx: RunContext, spark: Any = None) -> None:
        """spark: an existing session to use (tests); otherwise one is built on demand and
        stopped by close()."""
        self.ctx = ctx
        self.timings = StageTimings()
        self._spark: Any = spark
        self._owns_session = spark is None
        self._work: Any = None
        self._checkpoints: Path | None = None  # this session's directory, while set
        if spark is not None:
            from batch.spark.session import SparkWorkSummary

            self._work = SparkWorkSummary(spark)

    @property
    def checkpoint_root(self) -> Path:
        return self.ctx.work / "_checkpoints"

    def _session(self) -> Any:
        if self._spark is None:
            from batch.spark.session import SparkWorkSummary, build_session

            self._spark = build_session(
                self.ctx.config, self.checkpoint_root, f"recsys-{self.ctx.run_date}"
            )
            self._work = SparkWorkSummary(self._spark)
            self._checkpoints = _local_path(self._spark.sparkContext.getCheckpointDir())
        if self._checkpoints is None:
            self.checkpoint_root.mkdir(parents=True, exist_ok=True)
            self._spark.sparkContext.setCheckpointDir(str(self.checkpoint_root))
            self._checkpoints = _local_path(self._spark.sparkContext.getCheckpointDir())
        return self._spark

    def _remove_checkpoints(self) -> None:
        """Delete this session's checkpoint directory (Spark makes a fresh uuid directory
        under `_checkpoints/` each time it is set) and `_checkpoints/` once empty; another
        process's directory there is left alone."""
        if self._checkpoints is not None:
            shutil.rmtree(self._checkpoints, ignore_errors=True)
            self._checkpoints = None
        try:
            self.checkpoint_root.rmdir()
        except OSError:  # absent, or another run's checkpoints are in it
            pass

    def _callable(self, name: str) -> Callable[[], dict[str, object]]:
        spec = stages.get(name)
        fn = spec.entry()
        ctx = self.ctx.for_stage(name)  # reads only the outputs of the stages it needs
        if spec.needs_session:
            return lambda: fn(ctx, self._session())
        return lambda: fn(ctx)

    def run_stage(self, name: str, index: int | None = None) -> dict[str, object]:
        fn = self._callable(name)
        try:
            with self.timings.stage(name, index, len(stages.STAGES) if index else None):
                result = fn()
        finally:
            self._remove_checkpoints()
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
        self._remove_checkpoints()
        if self._spark is not None and self._owns_session:
            self._spark.stop()
            self._spark = None


def summary_line(results: dict[str, dict[str, object]]) -> str:
    lists = results.get("evaluate", {}).get("lists", {})
    brief = {name: round(float(v.get("ndcg@10", 0.0)), 4)
             for name, v in (lists.items() if isinstance(lists, dict) else ())
             if isinstance(v, dict)}  # fmt: skip
    return json.dumps({"published": results.get("publish", {}).get("run_id"), "ndcg@10": brief})
