"""What the Spark stages share: reading and writing Parquet, the variant's training data."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.context import RunContext

EVAL_K = 10
RECALL_CUTOFFS = (100, 500)


def read(spark: SparkSession, path: Path | str) -> DataFrame:
    return spark.read.parquet(str(path))


def write(df: DataFrame, path: Path | str, partitions: int = 1) -> None:
    df.coalesce(partitions).write.mode("overwrite").parquet(str(path))


def train_for(ctx: RunContext, spark: SparkSession, variant: str) -> DataFrame:
    """The interactions the variant's models learned from (EmbeddingsOutputs.train_for)."""
    return read(spark, ctx.outputs.embeddings.train_for(variant))


def user_regions(ctx: RunContext, spark: SparkSession) -> DataFrame:
    return (
        read(spark, ctx.outputs.embeddings.users)
        .where(F.col("region").isNotNull() & (F.col("region") != ""))
        .select("user_idx", "region")
    )
