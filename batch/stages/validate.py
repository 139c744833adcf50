"""Stage `validate`: every input row ends in clean or in quarantine with one reason."""

from __future__ import annotations

import hashlib

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from batch.context import RunContext, code_version, write_json
from batch.spark import inputs, validation
from batch.stages._spark import read, write
from shared.errors import RecsysError
from shared.inputs import CONTRACT_FILES, ITEMS, USERS, find_input


def _input_fingerprint(ctx: RunContext) -> str:
    """Hash of input file sizes and mtimes plus config and code: the run id's suffix."""
    digest = hashlib.sha256()
    for name in CONTRACT_FILES:
        found = find_input(ctx.data_dir, name)
        if found is None:
            continue
        files = sorted(found.rglob("*")) if found.is_dir() else [found]
        for f in files:
            if f.is_file():
                digest.update(f"{f.relative_to(ctx.data_dir)}:{f.stat().st_size}".encode())
                with f.open("rb") as fh:  # head and tail: cheap, and catches rewrites
                    digest.update(fh.read(1 << 16))
                    fh.seek(max(0, f.stat().st_size - (1 << 16)))
                    digest.update(fh.read())
    digest.update(ctx.config.fingerprint().encode())
    digest.update(code_version().encode())
    return digest.hexdigest()[:8]


def run(ctx: RunContext, spark: SparkSession) -> dict[str, object]:
    raw = inputs.read_interactions(spark, ctx.data_dir)
    items = inputs.read_optional(spark, ctx.data_dir, ITEMS, ("item_id",))
    users = inputs.read_optional(spark, ctx.data_dir, USERS, ("user_id",))
    if items is not None:
        for col in ("title", "genres", "available_regions"):
            if col not in items.columns:
                items = items.withColumn(col, F.lit(None).cast("string"))
        items = (
            items.withColumn("item_id", F.trim("item_id"))
            .where(F.col("item_id").isNotNull() & (F.col("item_id") != ""))
            .dropDuplicates(["item_id"])
            .select("item_id", "title", "genres", "available_regions")
        )
    if users is not None:
        if "region" not in users.columns:
            users = users.withColumn("region", F.lit(None).cast("string"))
        users = (
            users.withColumn("user_id", F.trim("user_id"))
            .where(F.col("user_id").isNotNull() & (F.col("user_id") != ""))
            .dropDuplicates(["user_id"])
            .select("user_id", "region")
        )
    result = validation.validate(raw, ctx.run_end_epoch, ctx.config.validation, items)
    out = ctx.outputs.validate
    write(result.clean.orderBy("user_id", "ts", "item_id", "event_type"), out.clean, 4)
    write(result.quarantine.orderBy("row_number"), out.quarantine)
    clean = read(spark, out.clean)
    if items is None:  # no catalogue given: the catalogue is what users interacted with
        items = clean.select("item_id").distinct().select(
            "item_id", *[F.lit(None).cast("string").alias(c) for c in ("title", "genres", "available_regions")]
        )
    write(items.orderBy("item_id"), out.items)
    if users is None:
        users = clean.select("user_id").distinct().withColumn("region", F.lit(None).cast("string"))
    write(users.orderBy("user_id"), out.users)
    quarantine = read(spark, out.quarantine)
    reasons = {r["reason"]: int(r["count"]) for r in quarantine.groupBy("reason").count().collect()}
    n_bad = sum(reasons.values())
    window = clean.agg(F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
    rows_read = raw.count()  # input lines (CSV, header excluded) or rows (Parquet)
    stats: dict[str, object] = {
        "run_id": f"{ctx.run_date.isoformat()}-{_input_fingerprint(ctx)}",
        "rows_read": rows_read,
        "rows_clean": clean.count(),
        "rows_quarantined": n_bad,
        "quarantine_reasons": reasons,
        "data_window": {"min_ts": window["lo"], "max_ts": window["hi"]},
    }
    write_json(out.stats, stats)
    rows_clean = int(stats["rows_clean"])  # type: ignore[call-overload]
    if rows_clean + n_bad != rows_read:
        raise RecsysError(
            f"validate lost rows: {rows_read} read, {rows_clean} clean + {n_bad} quarantined"
        )
    validation.check_threshold(rows_clean + n_bad, n_bad, reasons, ctx.config.validation.max_bad_share)
    return stats
