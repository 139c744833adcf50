"""Spark session construction and a one-line summary of the Spark work per stage."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from batch.spark import blas
from batch.spark.code_shipping import ship_code
from shared.config import PipelineConfig

log = logging.getLogger(__name__)


def build_session(config: PipelineConfig, checkpoint_dir: Path, app_name: str) -> SparkSession:
    """A session on config.spark_master; the master set by spark-submit wins when present."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run the interpreter that has pandas/faiss (the project's venv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    blas.set_single_threaded()
    builder = SparkSession.builder
    if not os.environ.get("RECSYS_SPARK_SUBMITTED"):
        builder = builder.master(config.spark_master).appName(app_name)
    # else: spark-submit's --master and --name win. The DAG names each stage's application
    # (`recsys-<stage>`); overriding it here would give every stage of a night one name on
    # the cluster's master UI and history server.
    spark = (
        builder.config("spark.ui.enabled", os.environ.get("RECSYS_SPARK_UI", "false"))
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(config.shuffle_partitions))
        .config("spark.default.parallelism", str(config.shuffle_partitions))
        .config("spark.driver.memory", config.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1")  # see batch/spark/blas.py
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Adaptive execution re-plans partitions from runtime sizes; off so that reruns
        # of the same date produce byte-identical outputs.
        .config("spark.sql.adaptive.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel(os.environ.get("RECSYS_SPARK_LOG_LEVEL", "WARN"))
    ship_code(spark)  # a cluster's executors import batch/shared from the shipped zip
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    spark.sparkContext.setCheckpointDir(str(checkpoint_dir))
    return spark


class SparkWorkSummary:
    """Summarises Spark jobs/stages/tasks run since the last call (the 'stage log')."""

    def __init__(self, spark: SparkSession) -> None:
        self._tracker = spark.sparkContext.statusTracker()
        self._seen_jobs: set[int] = set()

    def since_last(self) -> str:
        jobs = [j for j in self._all_jobs() if j not in self._seen_jobs]
        self._seen_jobs.update(jobs)
        n_stages = n_tasks = 0
        for job_id in jobs:
            info = self._tracker.getJobInfo(job_id)
            if info is None:
                continue
            for stage_id in info.stageIds:
                stage = self._tracker.getStageInfo(stage_id)
                if stage is not None:
                    n_stages += 1
                    n_tasks += stage.numTasks
        return f"spark: {len(jobs)} jobs, {n_stages} stages, {n_tasks} tasks"

    def _all_jobs(self) -> list[int]:
        groups = [None]
        out: list[int] = []
        for group in groups:
            out.extend(self._tracker.getJobIdsForGroup(group))
        return out
