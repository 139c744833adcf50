"""Stage 2: stable id maps (string id <-> dense int32), kept across runs.

The maps live in `ART/state/idmaps/{users,items}`; a run only appends ids it has not seen,
numbered in sorted order after the current maximum, so an id keeps its number forever and
rerunning a date with the same input changes nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F


def extend_map(spark: SparkSession, map_dir: Path, ids: DataFrame, id_col: str) -> DataFrame:
    """Return the full map (id_col, idx) after appending the ids not yet numbered."""
    distinct = ids.select(F.col(id_col).alias("id")).distinct()
    if map_dir.exists():
        existing = spark.read.parquet(str(map_dir))
        start = existing.agg(F.max("idx")).first()[0]
        next_idx = (start + 1) if start is not None else 0
    else:
        existing = None
        next_idx = 0
    new_ids = distinct if existing is None else distinct.join(existing, "id", "left_anti")
    numbered = new_ids.withColumn(
        "idx", (F.row_number().over(Window.orderBy("id")) - 1 + F.lit(next_idx)).cast("int")
    )
    full = numbered if existing is None else existing.unionByName(numbered)
    # Write beside, then swap: Spark cannot overwrite a path it is reading from.
    tmp = map_dir.with_name(map_dir.name + ".new")
    full.coalesce(1).orderBy("idx").write.mode("overwrite").parquet(str(tmp))
    if map_dir.exists():
        old = map_dir.with_name(map_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        map_dir.rename(old)
        tmp.rename(map_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        map_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(map_dir)
    return spark.read.parquet(str(map_dir)).withColumnRenamed("id", id_col)
