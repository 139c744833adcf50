"""Stage `validate`: every input row ends in clean or in quarantine with one reason.

The service's feedback event log (when there is one, batch/feedback) is read beside the
interactions and goes through the same validation: its engagement events (click, play,
complete, rating) join the clean interactions, with their type's weight; impressions and
dislikes, which are no interactions, are kept in `feedback`; its bad rows are in
`event_quarantine` with their reason and event_id. The quarantine threshold counts both.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch import feedback
from batch.context import RunContext, code_version, write_json
from batch.spark import events, inputs, validation
from batch.stages._spark import read, write
from shared.errors import RecsysError
from shared.inputs import CONTRACT_FILES, ITEMS, USERS, find_input
from shared.parquet_log import recover_orphans


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


progress = logging.getLogger("recsys.progress")
_FEEDBACK_SCHEMA = "user_id STRING, item_id STRING, ts BIGINT, event_type STRING"
_QUARANTINE_SCHEMA = ("row_number BIGINT, reason STRING, user_id STRING, item_id STRING, "
                      "raw_timestamp STRING, event_type STRING, raw_weight STRING, event_id STRING")


@dataclass(frozen=True)
class _Events:
    files: list[str]
    raw: DataFrame | None  # None: no event log read this run
    interactions: DataFrame
    feedback: DataFrame
    quarantine: DataFrame


def _events(ctx: RunContext, spark: SparkSession, items: DataFrame | None) -> _Events:
    """The event log's rows of this run's window, validated (empty when there is none)."""
    cfg = ctx.config.events
    files = []
    if feedback.is_enabled(cfg, ctx.artifacts):
        root = feedback.log_dir(cfg, ctx.artifacts)
        recover_orphans(root)  # a killed worker's last spool is tonight's input too
        files = feedback.part_files(feedback.partitions(root, ctx.run_date, cfg.window_days))
    if not files:
        empty_clean = spark.createDataFrame([], "user_id STRING, item_id STRING, ts BIGINT, "
                                                "event_type STRING, weight DOUBLE")
        return _Events([], None, empty_clean, spark.createDataFrame([], _FEEDBACK_SCHEMA),
                       spark.createDataFrame([], _QUARANTINE_SCHEMA))
    weights = feedback.TypeWeights.of(dict(cfg.type_weights))
    raw = events.read_events(spark, files, weights)
    result = validation.validate(raw, ctx.run_end_epoch, ctx.config.validation, items)
    is_feedback = F.col("event_type").isin(*sorted(weights.feedback)) if weights.feedback else F.lit(False)
    # One validation pass for the valid rows: every split and count below reads this file.
    write(result.clean, ctx.outputs.validate.valid_events, 4)
    valid = read(spark, ctx.outputs.validate.valid_events)
    return _Events(
        [str(f.relative_to(files[0].parent.parent)) for f in files], raw,
        valid.where(~is_feedback),
        valid.where(is_feedback).select("user_id", "item_id", "ts", "event_type"),
        result.quarantine,
    )


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
    ev = _events(ctx, spark, items)
    out = ctx.outputs.validate
    # Today's plays are interactions like any other from here on: embeddings, candidates
    # and the "seen" filter include them.
    write(result.clean.unionByName(ev.interactions).orderBy("user_id", "ts", "item_id", "event_type"),
          out.clean, 4)
    write(result.quarantine.orderBy("row_number"), out.quarantine)
    write(ev.feedback.orderBy("user_id", "ts", "item_id"), out.feedback)
    write(ev.quarantine.orderBy("row_number"), out.event_quarantine)
    clean = read(spark, out.clean)
    if items is None:  # no catalogue given: the catalogue is what users interacted with
        items = clean.select("item_id").distinct().select(
            "item_id", *[F.lit(None).cast("string").alias(c) for c in ("title", "genres", "available_regions")]
        )
    write(items.orderBy("item_id"), out.items)
    # Every user with a clean interaction is a user of this run. One first seen in the event
    # log (signed up and played today) is in no users file yet: kept with no region, or the
    # bundle's user ids would stop short of their number.
    seen = clean.select("user_id").distinct()
    unlisted = seen if users is None else seen.join(users.select("user_id"), "user_id", "left_anti")
    unlisted = unlisted.withColumn("region", F.lit(None).cast("string"))
    users = unlisted if users is None else users.unionByName(unlisted)
    write(users.orderBy("user_id"), out.users)
    quarantine = read(spark, out.quarantine)
    reasons = {r["reason"]: int(r["count"]) for r in quarantine.groupBy("reason").count().collect()}
    n_bad = sum(reasons.values())
    window = clean.agg(F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
    rows_read = raw.count()  # input lines (CSV, header excluded) or rows (Parquet)
    event_stats = _event_stats(spark, ctx, ev)
    event_reasons: dict[str, int] = event_stats["quarantine_reasons"]  # type: ignore[assignment]
    stats: dict[str, object] = {
        "run_id": f"{ctx.run_date.isoformat()}-{_input_fingerprint(ctx)}",
        "rows_read": rows_read + int(event_stats["rows_read"]),  # type: ignore[call-overload]
        "rows_clean": clean.count(),  # interactions, the event log's engagement events included
        "rows_feedback": int(event_stats["rows_feedback"]),  # type: ignore[call-overload]
        "rows_quarantined": n_bad + sum(event_reasons.values()),
        "quarantine_reasons": _add(reasons, event_reasons),
        "data_window": {"min_ts": window["lo"], "max_ts": window["hi"]},
        "events": event_stats,
    }
    write_json(out.stats, stats)
    rows_read = int(stats["rows_read"])  # type: ignore[call-overload]
    rows_clean = int(stats["rows_clean"])  # type: ignore[call-overload]
    n_feedback = int(stats["rows_feedback"])  # type: ignore[call-overload]
    n_bad = int(stats["rows_quarantined"])  # type: ignore[call-overload]
    if rows_clean + n_feedback + n_bad != rows_read:
        raise RecsysError(
            f"validate lost rows: {rows_read} read, {rows_clean} clean + {n_feedback} feedback "
            f"+ {n_bad} quarantined"
        )
    validation.check_threshold(rows_clean + n_feedback + n_bad, n_bad,
                               stats["quarantine_reasons"],  # type: ignore[arg-type]
                               ctx.config.validation.max_bad_share)
    return stats


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in sorted(set(a) | set(b))}


def _event_stats(spark: SparkSession, ctx: RunContext, ev: _Events) -> dict[str, object]:
    """What the event log gave this run, per type; logged as the stage's progress line."""
    out = ctx.outputs.validate
    if ev.raw is None:
        progress.info("validate: no feedback events read (events.enabled=%s, log %s)",
                      ctx.config.events.enabled, feedback.log_dir(ctx.config.events, ctx.artifacts))
        return {"files": [], "rows_read": 0, "rows_feedback": 0, "by_type": {},
                "quarantine_reasons": {}}
    quarantine = read(spark, out.event_quarantine)
    reasons = {r["reason"]: int(r["count"]) for r in quarantine.groupBy("reason").count().collect()}
    feedback_rows = read(spark, out.feedback)
    # Valid events per type: engagement events (now interactions) and feedback ones.
    by_type = {r["event_type"]: int(r["count"]) for r in (
        ev.interactions.select("event_type").unionByName(ev.feedback.select("event_type"))
        .groupBy("event_type").count().collect())}
    stats: dict[str, object] = {
        "files": ev.files, "rows_read": ev.raw.count(), "rows_feedback": feedback_rows.count(),
        "by_type": dict(sorted(by_type.items())), "quarantine_reasons": dict(sorted(reasons.items())),
    }
    progress.info(
        "validate: %d feedback events from %d files: %s; quarantined %d (%s)",
        stats["rows_read"], len(ev.files),
        ", ".join(f"{t}={n}" for t, n in sorted(by_type.items())) or "none valid",
        sum(reasons.values()), ", ".join(f"{r}={n}" for r, n in sorted(reasons.items())) or "none",
    )
    return stats
