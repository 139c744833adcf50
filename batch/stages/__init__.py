"""The nightly pipeline's stages: one module per stage, listed once, in order, here.

Everything that needs to know the stages reads this registry: the runner
(`batch/pipeline/runner.py`), the CLI (`recsys batch stage NAME`), the Airflow DAG
(`dags/recsys_nightly.py`: one task per stage, Spark-submitted or CLI, with its timeout),
the run context (`ctx.outputs.<stage>`: the typed paths of batch/stages/outputs.py) and the
tests. Adding a stage means: a module here with `run(ctx[, spark])`, its outputs class in
outputs.py, one `StageSpec` line below. Nothing else lists stages (docs/stages.md).

This module is import-light on purpose (no pyspark, no torch, no file access): the DAG
processor imports it on every parse. A stage's module is imported only when it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from batch.stages.outputs import (
    CandidatesOutputs,
    DriftOutputs,
    EmbeddingsOutputs,
    EvaluateOutputs,
    FeaturesOutputs,
    GateOutputs,
    IndexOutputs,
    PublishOutputs,
    RankOutputs,
    StageOutputs,
    TrainRankerOutputs,
    ValidateOutputs,
)
from shared.errors import UsageError


@dataclass(frozen=True)
class StageSpec:
    """One stage of the nightly run.

    name: the stage's name (CLI argument, Airflow task id, `ART/work/<date>/<name>/`).
    spark: "session" needs a SparkSession; "submit" needs none but is Spark-submitted by the
        DAG so that on a cluster it runs where the Spark stages' outputs are; "driver" is a
        plain CLI task (torch, gate, publish).
    timeout: the Airflow task's execution_timeout (sized for ~100x ml-latest-small).
    needs: the stages whose outputs it reads; each is listed before it (a test checks, and
        in a run `ctx.outputs` refuses any other stage's outputs).
    outputs: what it writes, as typed paths (`ctx.outputs.<name>` is one of these).
    """

    name: str
    spark: str
    timeout: timedelta
    needs: tuple[str, ...]
    outputs: type[StageOutputs]
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
    StageSpec("validate", "session", 30 * _M, (), ValidateOutputs,
              "clean rows and the quarantine, each bad row with its reason"),
    StageSpec("drift", "driver", 15 * _M, ("validate",), DriftOutputs,
              "input drift checks against the last published runs"),
    StageSpec("embeddings", "session", 2 * _H, ("validate",), EmbeddingsOutputs,
              "stable id maps, evaluation and ranker splits, ALS factors per variant"),
    StageSpec("index", "submit", 45 * _M, ("embeddings",), IndexOutputs,
              "a FAISS index per variant and its recall@100"),
    StageSpec("candidates", "session", 2 * _H, ("embeddings", "index"), CandidatesOutputs,
              "per-user candidates from every source, merged; popular lists; recall"),
    StageSpec("features", "session", 1 * _H, ("embeddings", "candidates"), FeaturesOutputs,
              "the re-ranker's feature arrays per variant and its training sample"),
    StageSpec("train_ranker", "driver", 2 * _H, ("features",), TrainRankerOutputs,
              "torch training, ONNX export, int8 quantization"),
    StageSpec("rank", "session", 1 * _H, ("validate", "drift", "embeddings", "candidates", "features",
                                          "train_ranker"),
              RankOutputs,
              "re-ranked (int8 or fp32) or fused lists; the popularity baseline"),
    StageSpec("evaluate", "session", 45 * _M, ("embeddings", "candidates", "index", "rank"),
              EvaluateOutputs, "metrics of every list on the held-out split"),
    StageSpec("gate", "driver", 10 * _M, ("evaluate",), GateOutputs,
              "the quality gate: publish or not"),
    StageSpec("publish", "driver", 15 * _M, ("validate", "drift", "embeddings", "index",
                                             "candidates", "features", "train_ranker", "rank",
                                             "evaluate", "gate"),
              PublishOutputs, "the bundle, switched to atomically; the warehouse rebuilt"),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
BY_NAME: dict[str, StageSpec] = {s.name: s for s in STAGES}


class UndeclaredStageInput(RuntimeError):
    """A stage read the outputs of a stage its StageSpec does not list in `needs` (a bug in
    the stage or in the registry: the DAG's order would not guarantee those outputs)."""


def get(name: str) -> StageSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}") from None


def check_readable(reader: str, stage: str) -> None:
    """Raise UndeclaredStageInput unless stage `reader` may read `stage`'s outputs."""
    if stage != reader and stage not in get(reader).needs:
        raise UndeclaredStageInput(
            f"stage {reader} reads the outputs of {stage}, which its StageSpec does not need "
            f"(needs: {', '.join(get(reader).needs) or 'nothing'}): add it in batch/stages/__init__.py"
        )


def last_session_stage() -> str:
    """After it the runner stops Spark: the driver-only stages need the JVM's memory."""
    return [s.name for s in STAGES if s.needs_session][-1]


def describe() -> str:
    return "|".join(STAGE_NAMES)


def overview() -> str:
    """Two lines per stage, in order: number, name and kind; what it does (the CLI's help)."""
    return "\n".join(f"{i:>2}. {s.name} ({s.spark})\n      {s.doc}"
                     for i, s in enumerate(STAGES, start=1))


class RunOutputs:
    """One run's stage outputs by stage name: `RunOutputs(work).embeddings.train` is a Path
    (work: `ART/work/<run_date>`, see outputs.work_dir). With `reader` set (a stage's
    context) only the outputs of the stages that stage needs, and its own, are reachable."""

    def __init__(self, work: Path, reader: str | None = None) -> None:
        self._work, self._reader = work, reader

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in BY_NAME:
            raise AttributeError(f"no stage {name!r}; stages are {describe()}")
        if self._reader is not None:
            check_readable(self._reader, name)
        return BY_NAME[name].outputs(self._work / name)

    def __dir__(self) -> list[str]:
        return list(STAGE_NAMES)


__all__ = ["BY_NAME", "STAGES", "STAGE_NAMES", "RunOutputs", "StageSpec", "UndeclaredStageInput",
           "check_readable", "describe", "get", "last_session_stage", "overview"]

