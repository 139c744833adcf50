"""Stage 4: user and item embeddings, implicit ALS on Spark MLlib or on the driver.

Two engines fit the same model (`AlsConfig.engine`, docs/benchmarks.md "ALS engines"):
`spark` (MLlib ALS on the executors) and `driver` (the `implicit` library over the matrix
collected to the driver, batch/spark/als_driver.py). `auto` picks the driver while the
matrix fits its budgets. Both return the same DataFrames, so what follows is unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass

import pyarrow as pa
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch.spark import als_driver
from shared.config import AlsConfig

log = logging.getLogger(__name__)

# What Spark's ALSModel.userFactors/itemFactors hold once renamed: the driver engine
# writes the same schema, nullability included, so the Parquet files are alike.
USER_SCHEMA = T.StructType([
    T.StructField("user_idx", T.IntegerType(), False),
    T.StructField("vector", T.ArrayType(T.FloatType(), False), True),
])  # fmt: skip
ITEM_SCHEMA = T.StructType([
    T.StructField("item_idx", T.IntegerType(), False),
    T.StructField("vector", T.ArrayType(T.FloatType(), False), True),
])  # fmt: skip


@dataclass(frozen=True)
class MatrixSize:
    ratings: int  # distinct (user, item) pairs
    users: int  # the largest user_idx + 1 (the driver's rows: stable ids may have gaps)
    items: int


@dataclass(frozen=True)
class AlsFit:
    users: DataFrame  # (user_idx, vector)
    items: DataFrame  # (item_idx, vector)
    info: dict[str, object]  # engine, why, sizes, seconds: the stage's stats record it


def ratings_of(interactions: DataFrame) -> DataFrame:
    """Every interaction counts as one unit of preference (repeats add up); the confidence
    is 1 + alpha * count, the usual implicit-feedback form."""
    return interactions.groupBy("user_idx", "item_idx").agg(
        F.count("*").cast("float").alias("strength")
    )


def choose_engine(config: AlsConfig, size: MatrixSize) -> tuple[str, str]:
    """(engine, reason): `auto` takes the driver while both budgets hold."""
    if config.engine != "auto":
        return config.engine, f"als.engine={config.engine}"
    need_mb = als_driver.memory_bytes(size.ratings, size.users, size.items, config.rank) / 2**20
    if size.ratings > config.driver_max_ratings:
        return "spark", f"{size.ratings} ratings > driver_max_ratings {config.driver_max_ratings}"
    if need_mb > config.driver_max_memory_mb:
        return "spark", f"~{need_mb:.0f} MB > driver_max_memory_mb {config.driver_max_memory_mb}"
    return "driver", f"{size.ratings} ratings, ~{need_mb:.0f} MB within the driver budgets"


def driver_threads(spark: SparkSession, config: AlsConfig) -> int:
    """The cores the driver may use: local[N] is N (the executors are idle meanwhile, they
    are the driver), local[*] every core of the process; on a cluster spark.driver.cores."""
    if config.driver_threads:
        return config.driver_threads
    master = spark.sparkContext.master
    local = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\s*\d+)?\])?", master)
    if local:
        cores = local.group(1) or "1"
        return len(os.sched_getaffinity(0)) if cores == "*" else int(cores)
    return int(spark.conf.get("spark.driver.cores", "1") or "1")


def train_als(interactions: DataFrame, config: AlsConfig) -> AlsFit:
    """Factors of every user and item with a rating, by the engine `config` chooses."""
    spark = interactions.sparkSession
    ratings = ratings_of(interactions).cache()
    try:
        row = ratings.agg(F.count("*"), F.max("user_idx"), F.max("item_idx")).first()
        assert row is not None
        size = MatrixSize(int(row[0]), int(row[1] or -1) + 1, int(row[2] or -1) + 1)
        engine, why = choose_engine(config, size)
        log.info("ALS engine: %s (%s)", engine, why)
        started = time.monotonic()
        if engine == "driver":
            threads = driver_threads(spark, config)
            users, items = _train_driver(spark, ratings, config, threads)
            extra: dict[str, object] = {"threads": threads}
        else:
            users, items = _train_spark(ratings, config, size.ratings)
            extra = {}
        return AlsFit(users, items, {
            "engine": engine, "why": why, "ratings": size.ratings,
            "fit_seconds": round(time.monotonic() - started, 2), **extra,
        })  # fmt: skip
    finally:
        # The driver engine's factors are local data, Spark's are read from the model:
        # neither needs the cached ratings once the fit is done.
        ratings.unpersist()


def _train_spark(ratings: DataFrame, config: AlsConfig, n_ratings: int) -> tuple[DataFrame, DataFrame]:
    # Each block is a task per iteration: few blocks keep small data from drowning in
    # scheduling overhead, more blocks bound memory per task on large data.
    num_blocks = config.num_blocks or max(2, min(32, n_ratings // 1_000_000))
    als = ALS(
        rank=config.rank,
        maxIter=config.max_iter,
        regParam=config.reg_param,
        alpha=config.alpha,
        implicitPrefs=True,
        userCol="user_idx",
        itemCol="item_idx",
        ratingCol="strength",
        seed=config.seed,
        numUserBlocks=num_blocks,
        numItemBlocks=num_blocks,
        checkpointInterval=config.checkpoint_interval,
        coldStartStrategy="drop",
    )
    model = als.fit(ratings)
    # The model's factor DataFrames are materialised before the ratings are unpersisted.
    users = model.userFactors.select(F.col("id").alias("user_idx"), F.col("features").alias("vector"))
    items = model.itemFactors.select(F.col("id").alias("item_idx"), F.col("features").alias("vector"))
    return users, items


def _train_driver(spark: SparkSession, ratings: DataFrame, config: AlsConfig,
                  threads: int) -> tuple[DataFrame, DataFrame]:
    table = ratings.toArrow()
    user_idx = table.column("user_idx").to_numpy()
    item_idx = table.column("item_idx").to_numpy()
    counts = table.column("strength").to_numpy()
    del table
    factors = als_driver.fit(user_idx, item_idx, counts, config, threads)
    return (_factor_frame(spark, factors.user_idx, factors.user_vectors, USER_SCHEMA),
            _factor_frame(spark, factors.item_idx, factors.item_vectors, ITEM_SCHEMA))  # fmt: skip


def _factor_frame(spark: SparkSession, ids: object, vectors: object, schema: T.StructType) -> DataFrame:
    import numpy as np

    ids_np = np.asarray(ids, dtype=np.int32)
    vec_np = np.asarray(vectors, dtype=np.float32)
    rank = vec_np.shape[1] if vec_np.ndim == 2 else 0
    # One flat float32 buffer cut into lists of `rank`: no Python object per value.
    offsets = pa.array(np.arange(0, len(ids_np) * rank + 1, rank, dtype=np.int32))
    values = pa.ListArray.from_arrays(offsets, pa.array(vec_np.reshape(-1), type=pa.float32()))
    key = schema.fields[0].name
    table = pa.table({key: pa.array(ids_np, type=pa.int32()), "vector": values})
    return spark.createDataFrame(table, schema=schema)
