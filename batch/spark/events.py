"""The feedback event log as raw interaction rows, for the same validation as any input.

Each event becomes one row in `inputs.read_interactions`' shape (LINE, READ_ERROR, user_id,
item_id, timestamp, event_type, weight, all strings) plus its `event_id`, so
`validation.validate` checks it like an input line: null ids, a null or future `ts` are
quarantined with the usual reasons. Two reasons are the log's own, set as READ_ERROR:
`unknown_event_type` (a type events.type_weights does not list), `duplicate_event` (a
later copy of an event_id the service logged twice: client retries are at-least-once) and
`missing_value` (a 'value' type, a rating, without its value). LINE is the event's position in the
log's files read in date and name order.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from batch.feedback import TypeWeights
from batch.spark.inputs import LINE, READ_ERROR

EVENT_ID = "event_id"


def _weight(tw: TypeWeights) -> Column:
    """The interaction weight as a string: validation parses it like an input's."""
    expr: Column = F.lit(None).cast("double")
    for name, weight in tw.fixed.items():
        expr = F.when(F.col("type") == name, F.lit(weight)).otherwise(expr)
    for name in tw.from_value:
        expr = F.when(F.col("type") == name, F.col("value")).otherwise(expr)
    # not interactions: weight 0, so validation passes them and nothing counts them
    for name in tw.feedback:
        expr = F.when(F.col("type") == name, F.lit(0.0)).otherwise(expr)
    return expr


def read_events(spark: SparkSession, files: list[Path], tw: TypeWeights) -> DataFrame:
    """Raw rows of these event-log files (batch.feedback.part_files), none dropped."""
    df = spark.read.parquet(*[str(f) for f in files]).select(
        "event_id", "type", "user_id", "item_id", "ts", "value",
        F.col("received_at").alias("_received"),
        F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.row_index").alias("_index"),
    )
    order = {f.resolve().as_uri(): i for i, f in enumerate(files)}
    counts = {r["_file"]: int(r["count"]) for r in df.groupBy("_file").count().collect()}
    shift: list[Column] = []
    before = 0
    for file in sorted(counts, key=lambda f: order.get(f, len(order))):
        shift += [F.lit(file), F.lit(before + 1)]
        before += counts[file]
    first = F.create_map(*shift)[F.col("_file")] if shift else F.lit(1)
    df = df.withColumn(LINE, F.col("_index") + first)
    first_copy = Window.partitionBy(EVENT_ID).orderBy("_received", LINE)
    known = sorted(tw.known)
    error = (
        F.when(F.col("type").isNull() | ~F.col("type").isin(*known), F.lit("unknown_event_type"))
        .when(F.col(EVENT_ID).isNotNull() & (F.row_number().over(first_copy) > 1),
              F.lit("duplicate_event"))
    )
    if tw.from_value:
        error = error.when(F.col("type").isin(*sorted(tw.from_value)) & F.col("value").isNull(),
                           F.lit("missing_value"))
    weight = _weight(tw)
    return df.select(
        LINE,
        error.alias(READ_ERROR),
        F.col("user_id"),
        F.col("item_id"),
        F.unix_timestamp("ts").cast("string").alias("timestamp"),
        F.col("type").alias("event_type"),
        weight.cast("string").alias("weight"),
        F.col(EVENT_ID),
    )
