"""Stage 4: user and item embeddings with Spark MLlib ALS on implicit feedback."""

from __future__ import annotations

from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shared.config import AlsConfig


def train_als(interactions: DataFrame, config: AlsConfig) -> tuple[DataFrame, DataFrame]:
    """Returns (user_factors(user_idx, vector), item_factors(item_idx, vector)).

    Every interaction counts as one unit of preference (repeats add up); the confidence
    is 1 + alpha * count, the usual implicit-feedback form.
    """
    ratings = interactions.groupBy("user_idx", "item_idx").agg(
        F.count("*").cast("float").alias("strength")
    )
    # Each block is a task per iteration: few blocks keep small data from drowning in
    # scheduling overhead, more blocks bound memory per task on large data.
    num_blocks = config.num_blocks or max(2, min(32, ratings.count() // 1_000_000))
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
    users = model.userFactors.select(F.col("id").alias("user_idx"), F.col("features").alias("vector"))
    items = model.itemFactors.select(F.col("id").alias("item_idx"), F.col("features").alias("vector"))
    return users, items
