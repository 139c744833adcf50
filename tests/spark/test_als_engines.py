"""ALS engines through Spark (batch/spark/als.py): `auto` picks the driver or Spark by the
budgets and says why; the driver's factor files have Spark's Parquet schema, the same ids,
rerun byte for byte; both engines learn the same structure."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from batch.spark import als
from batch.stages._spark import write
from shared.config import AlsConfig

pytestmark = pytest.mark.spark
pytest.importorskip("implicit")

SMALL = AlsConfig(rank=8, max_iter=6, seed=5, engine="auto")


def _interactions(spark, seed: int = 2, users: int = 90, items: int = 45):  # type: ignore[no-untyped-def]
    """Three taste groups (user u likes items i with i % 3 == u % 3), repeats included."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        pool = np.arange(u % 3, items, 3)
        for i in rng.choice(pool, size=8, replace=False):
            rows += [(u, int(i))] * int(rng.integers(1, 3))
    return spark.createDataFrame(rows, "user_idx int, item_idx int").repartition(3)


def _ratings_count(df) -> int:  # type: ignore[no-untyped-def]
    return als.ratings_of(df).count()


def test_auto_picks_the_driver_within_budget_and_spark_beyond_it(spark) -> None:
    df = _interactions(spark)
    n = _ratings_count(df)
    inside = als.train_als(df, SMALL)  # the defaults: 100M ratings, 4 GB
    assert inside.info["engine"] == "driver" and "within the driver budgets" in str(inside.info["why"])
    assert inside.info["ratings"] == n and inside.info["threads"] == 2  # local[2]

    too_many = als.train_als(df, SMALL.model_copy(update={"driver_max_ratings": n - 1}))
    assert too_many.info["engine"] == "spark"
    assert too_many.info["why"] == f"{n} ratings > driver_max_ratings {n - 1}"

    too_big = als.train_als(df, SMALL.model_copy(update={"driver_max_memory_mb": 0}))
    assert too_big.info["engine"] == "spark" and "driver_max_memory_mb 0" in str(too_big.info["why"])

    at_limit = als.train_als(df, SMALL.model_copy(update={"driver_max_ratings": n}))
    assert at_limit.info["engine"] == "driver"  # the budget is inclusive
    pinned = als.train_als(df, SMALL.model_copy(update={"engine": "spark"}))
    assert pinned.info == {**pinned.info, "engine": "spark", "why": "als.engine=spark"}


def test_choose_engine_is_the_budget_rule() -> None:
    size = als.MatrixSize(ratings=20_000_000, users=400_000, items=60_000)
    assert als.choose_engine(AlsConfig(), size) == ("spark", "als.engine=spark")  # the default
    auto = AlsConfig(engine="auto")
    assert als.choose_engine(auto, size)[0] == "driver"
    assert als.choose_engine(auto.model_copy(update={"driver_max_memory_mb": 500}), size)[0] == "spark"
    assert als.choose_engine(auto.model_copy(update={"driver_max_ratings": 10_000_000}), size)[0] == "spark"
    assert als.choose_engine(AlsConfig(engine="driver", driver_max_ratings=0), size)[0] == "driver"


def _files(path: Path) -> list[str]:
    """The part files' contents (their names carry a random job id)."""
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in path.glob("*.parquet"))


def test_driver_factors_are_written_like_spark_s_and_rerun_byte_identical(spark, tmp_path: Path) -> None:
    df = _interactions(spark)
    written: dict[str, Path] = {}
    for name, engine in (("spark", "spark"), ("driver", "driver"), ("driver-again", "driver")):
        fit = als.train_als(df, SMALL.model_copy(update={"engine": engine}))
        for side, frame, key in (("users", fit.users, "user_idx"), ("items", fit.items, "item_idx")):
            written[f"{name}/{side}"] = tmp_path / name / side
            write(frame.orderBy(key), written[f"{name}/{side}"], 2 if side == "users" else 1)
    for side in ("users", "items"):
        s = pq.read_table(written[f"spark/{side}"])
        d = pq.read_table(written[f"driver/{side}"])
        assert d.schema.equals(s.schema, check_metadata=True)  # Spark's row metadata too
        key = "user_idx" if side == "users" else "item_idx"
        assert d.column(key).to_pylist() == s.column(key).to_pylist()  # same ids, same order
        assert {len(v) for v in d.column("vector").to_pylist()} == {8}
        assert _files(written[f"driver/{side}"]) == _files(written[f"driver-again/{side}"])


def test_both_engines_rank_each_user_s_taste_group_first(spark) -> None:
    df = _interactions(spark)
    seen = {(r[0], r[1]) for r in df.collect()}
    for engine in ("spark", "driver"):
        fit = als.train_als(df, SMALL.model_copy(update={"engine": engine}))
        users = {r["user_idx"]: np.array(r["vector"]) for r in fit.users.collect()}
        items = sorted((r["item_idx"], np.array(r["vector"])) for r in fit.items.collect())
        ids = np.array([i for i, _ in items])
        vecs = np.stack([v for _, v in items])
        hits = total = 0
        for u, vec in users.items():
            order = [int(i) for i in ids[np.argsort(-(vecs @ vec), kind="stable")] if (u, int(i)) not in seen]
            hits += sum(i % 3 == u % 3 for i in order[:5])
            total += 5
        assert hits / total > 0.9, engine
