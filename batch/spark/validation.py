"""Stage 1: validate interactions and quarantine bad rows, each with its reason.

Nothing is dropped silently: every input line (CSV) or row (Parquet) ends in exactly one of
`clean` or `quarantine`, the quarantine row numbered as the line in the file (see
`batch.spark.inputs`). A line the reader could not use keeps the reader's reason
(`blank_line`, `bad_encoding`, `wrong_field_count`); the others are checked in order
`missing_user_id`, `missing_item_id`, `bad_timestamp`, `future_timestamp`, `bad_weight`,
`unknown_item`, `duplicate`. The run fails (after writing the quarantine) when the bad
share exceeds the configured threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from batch.spark.inputs import LINE, READ_ERROR
from shared.config import ValidationConfig
from shared.errors import QuarantineThresholdExceeded

_NUMERIC = r"^\s*-?\d+(\.\d+)?\s*$"


@dataclass(frozen=True)
class ValidationResult:
    clean: DataFrame
    quarantine: DataFrame


def parse_timestamp(raw: Column) -> Column:
    """Unix seconds (integer or decimal) or ISO-8601; null when neither parses."""
    as_number = F.when(raw.rlike(_NUMERIC), raw.try_cast("double").cast("long"))
    as_iso = F.unix_timestamp(F.try_to_timestamp(F.trim(raw)))
    return F.coalesce(as_number, as_iso)


def _reason(df: DataFrame, run_end_epoch: int, known_items: DataFrame | None) -> DataFrame:
    df = (
        df.withColumn("user_id", F.trim("user_id"))
        .withColumn("item_id", F.trim("item_id"))
        .withColumn("ts", parse_timestamp(F.col("timestamp")))
        .withColumn("event_type", F.coalesce(F.trim("event_type"), F.lit("interaction")))
        .withColumn(
            "weight_value",
            F.when(
                F.col("weight").isNull() | (F.trim("weight") == ""), F.lit(1.0)
            ).otherwise(F.col("weight").try_cast("double")),
        )
    )
    if known_items is not None:
        df = df.join(
            known_items.select(F.col("item_id").alias("_known")),
            df.item_id == F.col("_known"),
            "left",
        )
        unknown = F.col("_known").isNull()
    else:
        unknown = F.lit(False)
    reason = (
        F.when(F.col(READ_ERROR).isNotNull(), F.col(READ_ERROR))
        .when(F.col("user_id").isNull() | (F.col("user_id") == ""), "missing_user_id")
        .when(F.col("item_id").isNull() | (F.col("item_id") == ""), "missing_item_id")
        .when(F.col("ts").isNull(), "bad_timestamp")
        .when(F.col("ts") >= run_end_epoch, "future_timestamp")
        .when(F.col("weight_value").isNull() | (F.col("weight_value") < 0), "bad_weight")
        .when(unknown, "unknown_item")
    )
    return df.withColumn("reason", reason)


def validate(
    raw: DataFrame,
    run_end_epoch: int,
    config: ValidationConfig,
    known_items: DataFrame | None = None,
) -> ValidationResult:
    """Split raw interactions (`inputs.read_interactions`: with LINE and READ_ERROR) into
    clean rows and quarantined rows with a reason."""
    missing = [c for c in (LINE, READ_ERROR) if c not in raw.columns]
    if missing:
        raise ValueError(f"validate() needs the reader's {missing} columns: use inputs.read_interactions")
    tagged = _reason(raw, run_end_epoch, known_items)
    if config.drop_duplicates:
        # The first clean copy in file order stays; rows already refused do not count (a
        # refused line followed by its corrected copy keeps the copy).
        key = Window.partitionBy(
            "user_id", "item_id", "ts", "event_type", F.col("reason").isNull()
        ).orderBy(LINE)
        tagged = tagged.withColumn(
            "reason",
            F.when(
                F.col("reason").isNull() & (F.row_number().over(key) > 1), "duplicate"
            ).otherwise(F.col("reason")),
        )
    tagged = tagged.cache()
    clean = tagged.where(F.col("reason").isNull()).select(
        "user_id",
        "item_id",
        "ts",
        "event_type",
        F.col("weight_value").alias("weight"),
    )
    quarantine = tagged.where(F.col("reason").isNotNull()).select(
        F.col(LINE).alias("row_number"),
        "reason",
        "user_id",
        "item_id",
        F.col("timestamp").alias("raw_timestamp"),
        "event_type",
        F.col("weight").alias("raw_weight"),
        *[c for c in ("event_id",) if c in tagged.columns],  # event log rows: to find them
    )
    return ValidationResult(clean=clean, quarantine=quarantine)


def check_threshold(n_total: int, n_bad: int, reasons: dict[str, int], max_share: float) -> None:
    share = n_bad / n_total if n_total else 1.0
    if n_total == 0 or share > max_share:
        detail = ", ".join(f"{r}={n}" for r, n in sorted(reasons.items())) or "no rows at all"
        raise QuarantineThresholdExceeded(
            f"{n_bad} of {n_total} interaction rows ({share:.1%}) failed validation, above the "
            f"threshold of {max_share:.1%} ({detail}). The rows are in the quarantine table; "
            "fix the input or raise validation.max_bad_share."
        )
