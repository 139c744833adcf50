"""Reading the data contract (CSV or Parquet, any string ids) into Spark; where its files
are, and when one counts as there, is shared/inputs.py's (the DAG's sensor uses it too)."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType, TimestampType

from shared.errors import DataContractError
from shared.inputs import INTERACTIONS, describe_expected, find_input

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
OPTIONAL_INTERACTION_COLUMNS = ("event_type", "weight")


def read_as_strings(spark: SparkSession, path: Path) -> DataFrame:
    """Every column as a string, so malformed values reach validation instead of failing
    the reader; timestamp-typed columns become unix seconds."""
    if path.suffix == ".csv":
        return (
            spark.read.option("header", True)
            .option("mode", "PERMISSIVE")
            .option("escape", '"')
            .option("multiLine", False)
            .csv(str(path))
        )
    df = spark.read.parquet(str(path))
    cols = []
    for field in df.schema.fields:
        col = F.col(field.name)
        if isinstance(field.dataType, TimestampType):
            col = F.unix_timestamp(col)
        elif isinstance(field.dataType, NumericType):
            col = col.cast("double") if field.name == "weight" else col
        cols.append(col.cast("string").alias(field.name))
    return df.select(*cols)


def read_interactions(spark: SparkSession, data_dir: Path) -> DataFrame:
    path = find_input(data_dir, INTERACTIONS)
    if path is None:
        raise DataContractError(
            f"no interactions in {data_dir}: expected {describe_expected(data_dir, INTERACTIONS)}"
        )
    df = read_as_strings(spark, path)
    missing = [c for c in INTERACTION_COLUMNS if c not in df.columns]
    if missing:
        raise DataContractError(
            f"{path}: missing required columns {missing}; found {df.columns}. "
            f"Expected {list(INTERACTION_COLUMNS)} plus optional {list(OPTIONAL_INTERACTION_COLUMNS)}"
        )
    if "event_type" not in df.columns:
        df = df.withColumn("event_type", F.lit("interaction"))
    if "weight" not in df.columns:
        df = df.withColumn("weight", F.lit(None).cast("string"))
    return df.select(*INTERACTION_COLUMNS, *OPTIONAL_INTERACTION_COLUMNS)


def read_optional(
    spark: SparkSession, data_dir: Path, name: str, required: tuple[str, ...]
) -> DataFrame | None:
    path = find_input(data_dir, name)
    if path is None:
        return None
    df = read_as_strings(spark, path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataContractError(f"{path}: missing required columns {missing}; found {df.columns}")
    return df
