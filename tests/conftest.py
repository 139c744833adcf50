"""Fixtures shared by the whole suite: paths, one local Spark session, a tiny generated
data set, and artifacts published by the real pipeline on it."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# py4j logs from __del__ at interpreter exit, after pytest closed the streams.
logging.getLogger("py4j").setLevel(logging.WARNING)

REPO = Path(__file__).resolve().parents[1]
ML_LATEST_SMALL = REPO.parent / "shared" / "datasets" / "ml-latest-small"
TINY_RUN_DATE = dt.date(2025, 12, 31)

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that starts Spark carries the `spark` marker, so `make test-fast`
    (-m "not spark and not e2e") never does: one using the session fixture, directly or
    through another fixture (pipeline_artifacts), gets it here even if its file forgot."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()) and item.get_closest_marker("spark") is None:
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ml_latest_small() -> Path:
    if not (ML_LATEST_SMALL / "ratings.csv").exists():
        pytest.skip(f"MovieLens ml-latest-small not found at {ML_LATEST_SMALL}")
    return ML_LATEST_SMALL


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local[2] session for every Spark test (startup costs ~6 s)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("recsys-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def use_development_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pseudonymisation key nor `required` mode from the calling shell: the warehouse
    build falls back to ART's development key, as on a fresh checkout."""
    from shared.privacy import KEY_ENV, MODE_ENV

    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(MODE_ENV, raising=False)


def generate_tiny(out: Path, seed: int = 7, events: int = 15_000, bad_share: float = 0.0) -> Path:
    from batch.data.generate import GenerateConfig, generate

    generate(
        GenerateConfig(
            out_dir=out, n_users=300, n_items=400, n_events=events, seed=seed,
            end_date=TINY_RUN_DATE, days=120, n_regions=3, bad_share=bad_share,
        )
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_tiny(tmp_path_factory.mktemp("tiny-data"))


def tiny_config(**overrides: object) -> object:
    from shared.config import PipelineConfig

    base: dict[str, object] = {
        "shuffle_partitions": 2,
        "als": {"rank": 16, "max_iter": 6},
        "candidates": {"ann_k": 100, "cooc_k": 100, "popular_k": 100},
    }
    base.update(overrides)
    return PipelineConfig.model_validate(base)


def run_pipeline(spark: object, data: Path, artifacts: Path, config: object | None = None,
                 run_date: dt.date = TINY_RUN_DATE) -> dict[str, dict[str, object]]:
    from batch.context import RunContext
    from batch.pipeline.runner import PipelineRunner

    ctx = RunContext(data_dir=data, artifacts=artifacts, run_date=run_date,
                     config=config or tiny_config())  # type: ignore[arg-type]
    return PipelineRunner(ctx, spark=spark).run_all()


@pytest.fixture(scope="session")
def pipeline_artifacts(spark: object, tiny_data: Path,
                       tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ART with one bundle published by the real Spark pipeline from the tiny data set."""
    artifacts = tmp_path_factory.mktemp("pipeline-artifacts")
    run_pipeline(spark, tiny_data, artifacts)
    return artifacts
