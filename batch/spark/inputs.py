"""Reading the data contract (CSV or Parquet, any string ids) into Spark.

Interactions are read so that every input line reaches validation, each with its position
in the file (`LINE`) and, when the line itself is unreadable, a reason (`READ_ERROR`):

* CSV is read as raw text lines (`spark.read.text`: split by byte ranges, in parallel, the
  bytes not decoded), then parsed per line with `from_csv`. Nothing is skipped: a
  whitespace-only line is `blank_line`, a line that is not valid UTF-8 `bad_encoding`, a
  line with more or fewer fields than the header `wrong_field_count`. The line number is
  the one an editor shows (1-based, the header is line 1): a first job counts the lines of
  each byte range of the file (one small row per range comes back to the driver, never a
  row of data), and a line's number is the lines of the ranges before its own plus its
  position in its range. (`monotonically_increasing_id` alone is no line number: it jumps
  between partitions; `zipWithIndex` does the same two passes but through Python rows, and
  `binaryFile` reads each file whole into one row.)
* Parquet: the number is the row's position in its file (`_metadata.row_index` + 1); a
  directory of Parquet files is numbered through its files in name order. A string that is
  not valid UTF-8 is `bad_encoding`.

Items and users are read as before (`read_as_strings`): they are not quarantined.

Where the files are, and when one counts as there, is shared/inputs.py's (the DAG's
sensor uses it too).
"""

from __future__ import annotations

import csv
from functools import reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType, StringType, TimestampType

from shared.errors import DataContractError
from shared.inputs import INTERACTIONS, describe_expected, find_input

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
OPTIONAL_INTERACTION_COLUMNS = ("event_type", "weight")
LINE = "_line"  # 1-based line number in the CSV file (header = 1) or row number in Parquet
READ_ERROR = "_read_error"  # blank_line | bad_encoding | wrong_field_count, else null


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


def _csv_header(path: Path) -> list[str]:
    """The header's column names (a UTF-8 byte-order mark is not part of the first)."""
    with path.open("rb") as fh:
        first = fh.readline()
    text = first.decode("utf-8", errors="replace").removeprefix("\ufeff").rstrip("\r\n")
    return next(csv.reader([text]), [])


def _line_numbers(lines: DataFrame) -> Column:
    """The 1-based line number of each row of `spark.read.text` over ONE file.

    Each byte range (split) of the file is read by one task, in order, so a line's number
    is 1 + the lines of all earlier ranges + its position in its range. The per-range
    counts and first ids are one small aggregate; the data stays on the executors.
    """
    blocks = (
        lines.groupBy("_block")
        .agg(F.count(F.lit(1)).alias("n"), F.min("_pos").alias("first"))
        .collect()
    )
    shift: list[Column] = []
    before = 0
    for block in sorted(blocks, key=lambda b: int(b["_block"])):
        shift += [F.lit(int(block["_block"])), F.lit(before + 1 - int(block["first"]))]
        before += int(block["n"])
    if not shift:
        return F.lit(None).cast("long")
    return F.col("_pos") + F.create_map(*shift)[F.col("_block")]


def _read_csv_interactions(spark: SparkSession, path: Path, header: list[str]) -> DataFrame:
    lines = spark.read.text(str(path)).select(
        "value",
        F.input_file_block_start().alias("_block"),
        F.monotonically_increasing_id().alias("_pos"),
    )
    lines = lines.withColumn(LINE, _line_numbers(lines)).where(F.col(LINE) > 1)
    schema = ", ".join(f"_c{i} STRING" for i in range(len(header)))
    # Same parser and options as spark.read.csv(header, PERMISSIVE, escape '"'); a line
    # with another number of fields than the header comes back in _corrupt.
    parsed = F.from_csv(
        F.make_valid_utf8("value"),
        f"{schema}, _corrupt STRING" if schema else "_corrupt STRING",
        {"escape": '"', "mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"},
    )
    rows = lines.select(LINE, "value", parsed.alias("_p"))
    error = (
        F.when(F.col("value").rlike(r"^\s*$"), F.lit("blank_line"))
        .when(~F.is_valid_utf8("value"), F.lit("bad_encoding"))
        .when(F.col("_p._corrupt").isNotNull(), F.lit("wrong_field_count"))
    )
    fields = [F.col(f"_p._c{i}").alias(name) for i, name in enumerate(header)]
    return rows.select(LINE, error.alias(READ_ERROR), *fields)


def _read_parquet_interactions(spark: SparkSession, path: Path) -> DataFrame:
    df = spark.read.parquet(str(path))
    fields = df.schema.fields
    df = df.select(
        "*",
        F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.row_index").alias("_index"),
    )
    if path.is_dir():  # rows numbered through the files in name order
        counts = sorted((r["_file"], int(r["count"])) for r in df.groupBy("_file").count().collect())
        shift: list[Column] = []
        before = 0
        for file, n in counts:
            shift += [F.lit(file), F.lit(before + 1)]
            before += n
        first = F.create_map(*shift)[F.col("_file")] if shift else F.lit(1)
    else:
        first = F.lit(1)
    strings = [f.name for f in fields if isinstance(f.dataType, StringType)]
    invalid = [~F.coalesce(F.is_valid_utf8(F.col(c)), F.lit(True)) for c in strings]
    error = F.when(reduce(lambda a, b: a | b, invalid), F.lit("bad_encoding")) if invalid else None
    cols = []
    for field in fields:
        col = F.col(field.name)
        if isinstance(field.dataType, StringType):
            col = F.make_valid_utf8(col)  # the quarantine shows it, with U+FFFD
        elif isinstance(field.dataType, TimestampType):
            col = F.unix_timestamp(col)
        elif isinstance(field.dataType, NumericType):
            col = col.cast("double") if field.name == "weight" else col
        cols.append(col.cast("string").alias(field.name))
    read_error = (error if error is not None else F.lit(None)).cast("string")
    return df.select((F.col("_index") + first).alias(LINE), read_error.alias(READ_ERROR), *cols)


def read_interactions(spark: SparkSession, data_dir: Path) -> DataFrame:
    """Interactions as strings plus LINE and READ_ERROR: one row per input line (CSV,
    header excluded) or row (Parquet), none dropped."""
    path = find_input(data_dir, INTERACTIONS)
    if path is None:
        raise DataContractError(
            f"no interactions in {data_dir}: expected {describe_expected(data_dir, INTERACTIONS)}"
        )
    if path.suffix == ".csv":
        columns = _csv_header(path)
        if len(set(columns)) != len(columns):
            raise DataContractError(f"{path}: the header names a column twice: {columns}")
    else:
        df = _read_parquet_interactions(spark, path)
        columns = [c for c in df.columns if c not in (LINE, READ_ERROR)]
    missing = [c for c in INTERACTION_COLUMNS if c not in columns]
    if missing:
        raise DataContractError(
            f"{path}: missing required columns {missing}; found {columns}. "
            f"Expected {list(INTERACTION_COLUMNS)} plus optional {list(OPTIONAL_INTERACTION_COLUMNS)}"
        )
    if path.suffix == ".csv":
        df = _read_csv_interactions(spark, path, columns)
    if "event_type" not in columns:
        df = df.withColumn("event_type", F.lit("interaction"))
    if "weight" not in columns:
        df = df.withColumn("weight", F.lit(None).cast("string"))
    return df.select(LINE, READ_ERROR, *INTERACTION_COLUMNS, *OPTIONAL_INTERACTION_COLUMNS)


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
