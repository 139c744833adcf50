"""The nightly pipeline's stages: one module per stage, listed once, in order, here.

Everything that needs to know the stages reads this registry: the runner
(`batch/pipeline/runner.py`), the CLI (`recsys batch stage NAME`), the Airflow DAG
(`dags/recsys_nightly.py`: one task per stage, Spark-submitted or CLI, with its timeout)
and the tests. Adding a stage means: a module here with `run(ctx[, spark])`, one
`StageSpec` line below. Nothing else lists stages.

This module is import-light on purpose (no pyspark, no torch, no file access): the DAG
processor imports it on every parse. A stage's module is imported only when it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class StageSpec:
    """One stage of the nightly run.

    name: the stage's name (CLI argument, Airflow task id, `ART/work/<date>/<name>/`).
    spark: "session" needs a SparkSession; "submit" needs none but is Spark-submitted by the
        DAG so that on a cluster it runs where the Spark stages' outputs are; "driver" is a
        plain CLI task (torch, gate, publish).
    timeout: the Airflow task's execution_timeout (sized for ~100x ml-latest-small).
    needs: the stages whose outputs it reads.
    """

    name: str
    spark: str
    timeout: timedelta
    needs: tuple[str, ...] = ()
    doc: str = ""

    @property
    def needs_session(self) -> bool:
        return self.spark == "session"

    @property
    def spark_submitted(self) -> bool:
        return self.spark in ("session", "submit")

    def entry(self) -> Callable[..., dict[str, object]]:
        """The stage's `run` function (imports its module: heavy, call at run time only)."""
        module = importlib.import_module(f"batch.stages.{self.name}")
        fn: Callable[..., dict[str, object]] = module.run
        return fn


_H, _M = timedelta(hours=1), timedelta(minutes=1)

STAGES: tuple[StageSpec, ...] = (
    StageSpec("validate", "session", 30 * _M, (),
              "clean rows and the quarantine, each bad row with its reason"),
    StageSpec("embeddings", "session", 2 * _H, ("validate",),
              "stable id maps, evaluation and ranker splits, ALS factors per variant"),
    StageSpec("index", "submit", 45 * _M, ("embeddings",),
              "a FAISS index per variant and its recall@100"),
    StageSpec("candidates", "session", 2 * _H, ("embeddings", "index"),
              "per-user candidates from every source, merged; popular lists; recall"),
    StageSpec("features", "session", 1 * _H, ("embeddings", "candidates"),
              "the re-ranker's feature arrays per variant and its training sample"),
    StageSpec("train_ranker", "driver", 2 * _H, ("features",),
              "torch training, ONNX export, int8 quantization"),
    StageSpec("rank", "session", 1 * _H, ("candidates", "features", "train_ranker"),
              "the published lists: re-ranked (int8 or fp32) or fused; popularity baseline"),
    StageSpec("evaluate", "session", 45 * _M, ("embeddings", "candidates", "index", "rank"),
              "metrics of every list on the held-out split"),
    StageSpec("gate", "driver", 10 * _M, ("evaluate",),
              "the quality gate: publish or not"),
    StageSpec("publish", "driver", 15 * _M, ("validate", "embeddings", "index", "candidates",
                                             "features", "train_ranker", "rank", "evaluate",
                                             "gate"),
              "the bundle, switched to atomically; the warehouse rebuilt"),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
BY_NAME: dict[str, StageSpec] = {s.name: s for s in STAGES}


def get(name: str) -> StageSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}") from None


def last_session_stage() -> str:
    """After it the runner stops Spark: the driver-only stages need the JVM's memory."""
    return [s.name for s in STAGES if s.needs_session][-1]


def describe() -> str:
    return "|".join(STAGE_NAMES)


__all__ = ["BY_NAME", "STAGES", "STAGE_NAMES", "StageSpec", "describe", "get", "last_session_stage"]

