"""What the Spark stages share: writing a DataFrame, the variant's training data."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.context import RANKER_VARIANT, RunContext

EVAL_K = 10
RECALL_CUTOFFS = (100, 500)


def write(df: DataFrame, path: str, partitions: int = 1) -> None:
    df.coalesce(partitions).write.mode("overwrite").parquet(path)


def train_for(ctx: RunContext, spark: SparkSession, variant: str) -> DataFrame:
    names = {RANKER_VARIANT: "ranker_train.parquet", "eval": "train.parquet"}
    name = names.get(variant, "interactions.parquet")
    return spark.read.parquet(ctx.path("embeddings", name))


def user_regions(ctx: RunContext, spark: SparkSession) -> DataFrame:
    return (
        spark.read.parquet(ctx.path("embeddings", "users.parquet"))
        .where(F.col("region").isNotNull() & (F.col("region") != ""))
        .select("user_idx", "region")
    )
