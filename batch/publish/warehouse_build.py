"""Rebuild the analysts' DuckDB warehouse at publish time (see docs/warehouse.md).

Two files, each built in a private (0700) directory and renamed into place, so readers never
see a half-built one and nobody else can read a file or its WAL while it is built:

* `ART/warehouse.duckdb` (restricted, mode 0600): the raw tables with original ids in `main` (what the
  pipeline tests and on-call use), the same as views in schema `restricted`, the
  `restricted.user_keys` map (user_id -> user_key), and the pseudonymised `analyst.*` views.
* `ART/warehouse_analyst.duckdb` (what `recsys sql` opens by default): ONLY the
  pseudonymised tables, materialised in schema `analyst`, with views of the same names in
  `main`. No raw user id and no secret is in that file, so an analyst connection cannot
  reach them whatever SQL it runs (strong isolation by construction, not by permissions).

Feedback: the event log (`ART/event_log/`, `shared.events.EVENT_SCHEMA`) is loaded as
`events` (deduplicated on event_id) and joined to the served log as `exposures`, one row per
served item with its outcomes, materialised at build time (see `_feedback`).

History: metrics and runs of every run ever published are kept in `ART/history/*.parquet`
(appended idempotently per run_id at each rebuild), so pruning old bundles does not erase
the trend of a metric across nights.

The builder takes Parquet paths or in-memory Arrow tables (`WarehouseInputs`), so tests and
the benchmark build a warehouse without Spark.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from batch.drift import store as drift_store
from shared import bundle_layout as layout
from shared import events as feedback_events
from shared import feature_stats as fstats
from shared import request_log, rollout, shadow_log, skew_log
from shared.bundle import RUNS_DIR, BundleManifest, load_manifest, run_dir
from shared.privacy import load_key, pseudonyms
from shared.warehouse import analyst_warehouse_path, warehouse_path

# An Arrow table, a streaming RecordBatchReader (read once; the benchmark uses it to rename
# columns of a 20M-row file without loading it), one Parquet file or a list of them.
Source: TypeAlias = "pa.Table | pa.RecordBatchReader | Path | list[Path]"

log = logging.getLogger(__name__)

HISTORY_DIR = "history"
RESTRICTED_MODE = 0o600  # warehouse.duckdb holds raw user ids: its owner (the pipeline) only
RUNS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("run_date", pa.date32()),
        ("created_at", pa.timestamp("us")),  # UTC
        ("code_version", pa.string()),
        ("protocol", pa.string()),
        ("row_counts", pa.string()),  # JSON
        ("data_window", pa.string()),  # JSON
        # What the run was configured with (manifest config_fingerprint and extra.config),
        # so "what changed since the last run" can name the setting (canned run_changes).
        # NULL for runs recorded before these columns.
        ("config_fingerprint", pa.string()),
        ("config", pa.string()),  # JSON
    ]
)
METRICS_SCHEMA = pa.schema(
    [("run_id", pa.string()), ("list", pa.string()), ("metric", pa.string()),
     ("value", pa.float64())]
)  # fmt: skip

# ART/history/rollout_events.jsonl (shared/rollout.py): what each canary rollout did and why.
ROLLOUT_EVENTS_SCHEMA = pa.schema(
    [("ts", pa.timestamp("us")), ("run_id", pa.string()), ("experiment", pa.string()),
     ("action", pa.string()), ("reason", pa.string()), ("values", pa.string()),  # JSON
     ("who", pa.string())]
)  # fmt: skip

# Analyst tables: SQL over the raw tables ({m}) and the user_keys map ({r}). The same text
# defines the views in the restricted file and the materialised tables in the analyst file.
ANALYST_SQL: dict[str, str] = {
    "items": "SELECT * FROM {m}.items",
    "users": (
        "SELECT k.user_key, u.region, u.region AS segment, a.first_seen, a.last_seen, "
        "coalesce(a.events, 0) AS events FROM {m}.users u "
        "JOIN {r}.user_keys k USING (user_id) LEFT JOIN (SELECT user_id, "
        "min(event_time) AS first_seen, max(event_time) AS last_seen, count(*) AS events "
        "FROM {m}.interactions GROUP BY user_id) a USING (user_id)"
    ),
    "interactions": (
        "SELECT k.user_key, i.item_id, i.event_time, i.ts, i.event_type, i.weight "
        "FROM {m}.interactions i JOIN {r}.user_keys k USING (user_id)"
    ),
    "recommendations": (
        "SELECT k.user_key, r.rank, r.item_id, r.score, r.sources FROM {m}.recommendations r "
        "JOIN {r}.user_keys k USING (user_id)"
    ),
    "candidates": (
        "SELECT k.user_key, c.* EXCLUDE (user_id, user_idx) FROM {m}.candidates c "
        "JOIN {r}.user_keys k USING (user_id)"
    ),
    "popular": "SELECT * FROM {m}.popular",
    "quarantine": (
        "SELECT k.user_key, q.* EXCLUDE (user_id) FROM {m}.quarantine q "
        "LEFT JOIN {r}.user_keys k USING (user_id)"
    ),
    "runs": "SELECT * FROM {m}.runs",
    "metrics": "SELECT * FROM {m}.metrics",
    "drift": "SELECT * FROM {m}.drift",
    # Operators' names and run ids only: no end-user id to pseudonymise.
    "rollout_events": "SELECT * FROM {m}.rollout_events",
    "served_requests": (
        "SELECT s.request_id, s.ts, k.user_key, s.* EXCLUDE (request_id, ts, user_id) "
        "FROM {m}.served_requests s LEFT JOIN {r}.user_keys k USING (user_id)"
    ),
    "served_impressions": (
        "SELECT s.request_id, s.ts, k.user_key, s.* EXCLUDE (request_id, ts, user_id) "
        "FROM {m}.served_impressions s LEFT JOIN {r}.user_keys k USING (user_id)"
    ),
    # request_id is kept as it is in served_requests: a random id, not a user identifier.
    "events": (
        "SELECT e.event_id, e.type, k.user_key, e.* EXCLUDE (event_id, type, user_id) "
        "FROM {m}.events e LEFT JOIN {r}.user_keys k USING (user_id)"
    ),
    "exposures": (
        "SELECT x.request_id, x.ts, k.user_key, x.* EXCLUDE (request_id, ts, user_id) "
        "FROM {m}.exposures x LEFT JOIN {r}.user_keys k USING (user_id)"
    ),
    "assignments": (
        "SELECT a.request_id, a.ts, k.user_key, a.* EXCLUDE (request_id, ts, user_id) "
        "FROM {m}.assignments a LEFT JOIN {r}.user_keys k USING (user_id)"
    ),
    # The shadow log has no user id (request_id joins served_requests): the same rows.
    "shadow": "SELECT * FROM {m}.shadow",
    # Feature values and statistics: no user or item id at all.
    "feature_skew": "SELECT * FROM {m}.feature_skew",
    "feature_stats": "SELECT * FROM {m}.feature_stats",
}
# Sorting the big analyst tables by user makes per-user scans and joins cheaper.
ANALYST_ORDER = {"interactions": "user_key, ts", "recommendations": "user_key, rank",
                 "events": "ts, event_id", "exposures": "ts, request_id, position",
                 "assignments": "experiment, ts, request_id", "shadow": "ts, request_id"}
# An event without a request_id (or naming a request that did not show its item) is credited
# to the latest request that showed that item to that user at most this long before it.
DEFAULT_ATTRIBUTION_WINDOW_MINUTES = 30
# Event types that are outcomes of an exposure (an impression only says it was seen).
OUTCOME_COLUMNS = {"clicked": "click", "played": "play", "completed": "complete",
                   "disliked": "dislike", "rated": "rating"}


@dataclass
class WarehouseInputs:
    """What goes into the warehouse. Each source is an Arrow table or reader, a Parquet
    file, or a list of Parquet files. Optional sources missing -> empty tables of the right shape."""

    items: Source
    users: Source
    recommendations: Source  # user_id, rank, item_id, score, sources (+ user_idx, item_idx)
    popular: Source
    candidates: Source | None = None  # user_idx, item_idx, sources, score_*, rank_*
    quarantine: Source | None = None
    interactions: Source | None = None  # user_id, item_id, ts (epoch s), event_type, weight
    served: Source | None = None  # request_log.SCHEMA (older files may lack items.sources)
    events: Source | None = None  # shared.events.EVENT_SCHEMA
    shadow: Source | None = None  # shared.shadow_log.SCHEMA
    skew: Source | None = None  # shared.skew_log.SCHEMA
    feature_stats: pa.Table = field(default_factory=lambda: FEATURE_STATS_SCHEMA.empty_table())
    attribution_window_minutes: int = DEFAULT_ATTRIBUTION_WINDOW_MINUTES
    runs: pa.Table = field(default_factory=RUNS_SCHEMA.empty_table)
    metrics: pa.Table = field(default_factory=METRICS_SCHEMA.empty_table)
    drift: pa.Table = field(default_factory=drift_store.DRIFT_SCHEMA.empty_table)
    rollout_events: pa.Table = field(default_factory=ROLLOUT_EVENTS_SCHEMA.empty_table)
    current_run: str | None = None


def rebuild(artifacts: Path, run_id: str, clean_interactions: Path,
            attribution_window_minutes: int = DEFAULT_ATTRIBUTION_WINDOW_MINUTES,
            event_log: Path | None = None) -> Path:
    """Rebuild both warehouse files for the published run `run_id` (publish and rollback).

    event_log: the feedback log the night read (`events.path`); None: ART/event_log."""
    bundle = run_dir(artifacts, run_id)
    runs, metrics = update_history(artifacts)
    served_root = request_log.log_dir(artifacts)
    events_root = event_log if event_log is not None else artifacts / feedback_events.EVENT_LOG_DIR
    shadow_root = shadow_log.log_dir(artifacts)
    skew_root = skew_log.log_dir(artifacts)
    for root in (served_root, events_root, shadow_root, skew_root):
        # Spools a killed worker left behind become part files now, not when a worker
        # of that server next starts (one may never start again on this host).
        request_log.recover_orphans(root)
    served = request_log.part_files(served_root)
    # Same layout and glob as the served log: hidden temporary files never match.
    events = request_log.part_files(events_root)
    shadow = request_log.part_files(shadow_root)
    skew = request_log.part_files(skew_root)
    inputs = WarehouseInputs(
        items=bundle / layout.ITEMS,
        users=bundle / layout.USERS,
        recommendations=bundle / layout.RECOMMENDATIONS,
        popular=bundle / layout.POPULAR,
        candidates=bundle / layout.CANDIDATES,
        quarantine=bundle / layout.QUARANTINE,
        interactions=_parquet_files(clean_interactions) or None,
        served=served or None,
        events=events or None,
        shadow=shadow or None,
        skew=skew or None,
        feature_stats=feature_stats_table(artifacts),
        attribution_window_minutes=attribution_window_minutes,
        runs=runs,
        metrics=metrics,
        drift=drift_history(artifacts),
        rollout_events=rollout_events_table(artifacts),
        current_run=run_id,
    )
    build(inputs, warehouse_path(artifacts), analyst_warehouse_path(artifacts),
          load_key(artifacts))
    return warehouse_path(artifacts)


def _parquet_files(path: Path) -> list[Path]:
    """A Spark output directory's part files, or a single file. Pruned work partitions
    leave nothing (the interactions table is then empty)."""
    if path.is_file():
        return [path]
    return sorted(path.glob("*.parquet")) if path.is_dir() else []


def build(inputs: WarehouseInputs, raw_target: Path, analyst_target: Path,
          key: bytes) -> dict[str, float]:  # fmt: skip
    """Write the restricted and the analyst warehouse files (tmp + rename each); return the
    seconds each phase took (logged: the build is part of the publish stage's time).

    Both are built in a private directory (0700, next to the targets) so that neither a
    half-built file nor DuckDB's write-ahead log is readable by others while it exists; the
    restricted file is 0600 (owner only, like the pseudonymisation key) before it is
    renamed into place. The analyst file keeps the mode the umask gives (readable)."""
    private = Path(tempfile.mkdtemp(prefix=".warehouse-build-", dir=raw_target.parent))
    raw_tmp = private / raw_target.name
    analyst_tmp = private / analyst_target.name
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        seconds[name] = round(now - started, 3)
        started = now

    try:
        con = _connect(raw_tmp)
        try:
            _raw_tables(con, inputs)
            lap("raw tables")
            _feedback(con, inputs.events, inputs.attribution_window_minutes)
            lap("events + exposures")
            _user_keys(con, key)
            lap("user keys")
            _schemas_in_raw(con)
        finally:
            con.close()
        con = _connect(analyst_tmp)
        try:
            con.execute(f"ATTACH {_q(raw_tmp)} AS raw (READ_ONLY)")
            con.execute("CREATE SCHEMA analyst")
            for name, sql in ANALYST_SQL.items():
                order = f" ORDER BY {ANALYST_ORDER[name]}" if name in ANALYST_ORDER else ""
                select = sql.format(m="raw.main", r="raw.restricted")
                con.execute(f"CREATE TABLE analyst.{name} AS {select}{order}")
                # Unqualified names keep working: `SELECT ... FROM recommendations`.
                con.execute(f"CREATE VIEW main.{name} AS SELECT * FROM analyst.{name}")
                lap(f"analyst.{name}")
            con.execute("DETACH raw")
        finally:
            con.close()
        os.chmod(raw_tmp, RESTRICTED_MODE)
        os.replace(raw_tmp, raw_target)
        os.replace(analyst_tmp, analyst_target)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    log.info("warehouse built: %s", seconds)
    return seconds


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    # Timestamps are stored as naive UTC; casts from TIMESTAMPTZ must not use the local zone.
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # keeps the pipeline's log readable
    return con


def _q(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _rel(con: duckdb.DuckDBPyConnection, name: str, src: Source) -> str:
    """A FROM-clause expression for a source."""
    if isinstance(src, pa.Table | pa.RecordBatchReader):
        con.register(f"src_{name}", src)
        return f"src_{name}"
    paths = [src] if isinstance(src, Path) else src
    return "read_parquet([" + ", ".join(_q(p) for p in paths) + "])"


def _table_or_empty(con: duckdb.DuckDBPyConnection, name: str, select: str | None,
                    empty_columns: str) -> None:
    """`name` from `select` (its columns as they come), or empty with the columns analysts'
    views rely on when the bundle has no such input."""
    if select is None:
        con.execute(f"CREATE TABLE {name} ({empty_columns})")
    else:
        con.execute(f"CREATE TABLE {name} AS {select}")


def _raw_tables(con: duckdb.DuckDBPyConnection, inputs: WarehouseInputs) -> None:
    con.execute(f"CREATE TABLE items AS SELECT * FROM {_rel(con, 'items', inputs.items)}")
    con.execute(f"CREATE TABLE users AS SELECT * FROM {_rel(con, 'users', inputs.users)}")
    recs = _rel(con, "recs", inputs.recommendations)
    con.execute(f"CREATE TABLE recommendations AS SELECT * FROM {recs} ORDER BY user_id, rank")
    _table_or_empty(
        con, "candidates",
        None if inputs.candidates is None else
        "SELECT u.user_id, i.item_id, c.* FROM "
        f"{_rel(con, 'cands', inputs.candidates)} c JOIN users u USING (user_idx) "
        "JOIN items i USING (item_idx)",
        "user_id VARCHAR, item_id VARCHAR, user_idx INTEGER, item_idx INTEGER, sources VARCHAR[]",
    )
    con.execute(f"CREATE TABLE popular AS SELECT * FROM {_rel(con, 'popular', inputs.popular)}")
    # A fixed shape: the analyst views and canned queries rely on these columns, and an
    # older or hand-made bundle may lack some (they stay NULL). Raw values are kept as text.
    con.execute(
        "CREATE TABLE quarantine (row_number BIGINT, reason VARCHAR, user_id VARCHAR, "
        "item_id VARCHAR, raw_timestamp VARCHAR, event_type VARCHAR, raw_weight VARCHAR)"
    )
    if inputs.quarantine is not None:
        quarantine = _rel(con, "quarantine", inputs.quarantine)
        con.execute(f"INSERT INTO quarantine BY NAME SELECT * FROM {quarantine}")
    _table_or_empty(
        con, "interactions",
        None if inputs.interactions is None else
        "SELECT user_id, item_id, to_timestamp(ts)::TIMESTAMP AS event_time, ts, event_type, "
        f"weight FROM {_rel(con, 'interactions', inputs.interactions)}",
        "user_id VARCHAR, item_id VARCHAR, event_time TIMESTAMP, ts BIGINT, event_type VARCHAR, "
        "weight DOUBLE",
    )
    con.register("src_runs", inputs.runs)
    con.execute(
        "CREATE TABLE runs AS SELECT run_id, run_date, created_at, code_version, "
        "run_id = $current AS is_current, protocol, row_counts::JSON AS row_counts, "
        "data_window::JSON AS data_window, config_fingerprint, config::JSON AS config "
        "FROM src_runs ORDER BY created_at, run_id",
        {"current": inputs.current_run},
    )
    con.register("src_metrics", inputs.metrics)
    con.execute("CREATE TABLE metrics AS SELECT * FROM src_metrics")
    con.register("src_drift", inputs.drift.cast(drift_store.DRIFT_SCHEMA))
    con.execute('CREATE TABLE drift AS SELECT * FROM src_drift ORDER BY run_date, run_id, "check"')
    con.register("src_rollout", inputs.rollout_events.cast(ROLLOUT_EVENTS_SCHEMA))
    con.execute("CREATE TABLE rollout_events AS SELECT ts, run_id, experiment, action, reason, "
                '"values"::JSON AS "values", who FROM src_rollout ORDER BY ts')  # fmt: skip
    _served(con, inputs.served)
    _shadow(con, inputs.shadow)
    _feature_skew(con, inputs.skew, inputs.feature_stats)


# One row per (run, sample, feature) of every kept bundle's monitoring/feature_stats.json.
FEATURE_STATS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("sample", pa.string()), ("feature", pa.string()),
    ("rows", pa.int64()), ("mean", pa.float64()), ("std", pa.float64()),
    *[(fstats.quantile_key(q), pa.float64()) for q in fstats.QUANTILES],
    ("null_share", pa.float64()), ("default_share", pa.float64()),
])  # fmt: skip


def feature_stats_table(artifacts: Path) -> pa.Table:
    """The feature statistics of every bundle under ART/runs that ships them."""
    rows: list[dict[str, Any]] = []
    root = artifacts / RUNS_DIR
    for path in sorted(root.glob(f"*/{layout.FEATURE_STATS}")) if root.is_dir() else []:
        run_id = path.parent.parent.name
        if run_id.startswith("."):
            continue  # staging or trash
        try:
            doc = fstats.load(path)
        except (OSError, ValueError) as exc:
            log.warning("feature stats of %s not loaded: %s", run_id, exc)
            continue
        for sample, body in doc["samples"].items():
            summaries = dict(body["features"])
            if fstats.SCORE in body:
                summaries[fstats.SCORE] = body[fstats.SCORE]
            for feature, summary in summaries.items():
                rows.append({"run_id": run_id, "sample": sample, "feature": feature,
                             **{k: summary.get(k) for k in FEATURE_STATS_SCHEMA.names[3:]}})
    return pa.Table.from_pylist(rows, schema=FEATURE_STATS_SCHEMA)


def _feature_skew(con: duckdb.DuckDBPyConnection, skew: Source | None,
                  stats: pa.Table) -> None:  # fmt: skip
    """`feature_skew`: the sampled live feature vectors as logged (ts as naive UTC); and
    `feature_stats`: the bundles' batch-side statistics, the reference they are read against."""
    src = _union_by_name(_rel(con, "skew", skew if skew is not None else skew_log.empty_table()))
    con.execute("CREATE TABLE feature_skew AS SELECT * REPLACE (ts::TIMESTAMP AS ts) FROM "
                f"{src} ORDER BY ts, sample_id")  # fmt: skip
    con.register("src_feature_stats", stats.cast(FEATURE_STATS_SCHEMA))
    con.execute("CREATE TABLE feature_stats AS SELECT * FROM src_feature_stats "
                "ORDER BY run_id, sample, feature")  # fmt: skip


def _shadow(con: duckdb.DuckDBPyConnection, shadow: Source | None) -> None:
    """`shadow`: one row per shadow-ranked request as logged (ts as naive UTC, like
    served_requests). A recovered spool may repeat a row: the first copy is kept."""
    src = _union_by_name(
        _rel(con, "shadow", shadow if shadow is not None else shadow_log.empty_table())
    )
    con.execute(
        "CREATE TABLE shadow AS SELECT * REPLACE (ts::TIMESTAMP AS ts) FROM "
        f"{src} QUALIFY row_number() OVER (PARTITION BY request_id, shadow ORDER BY ts) = 1 "
        "ORDER BY ts, request_id"
    )


def _union_by_name(src: str) -> str:
    """union_by_name: older log files may lack columns (or struct fields) added later; they
    read as NULL."""
    return src[:-1] + ", union_by_name = true)" if src.startswith("read_parquet([") else src


def _served(con: duckdb.DuckDBPyConnection, served: Source | None) -> None:
    """served_requests as logged, minus the item list (exploded into served_impressions)
    and the experiment arms (exploded into assignments: one row per request per
    experiment; requests logged before the service recorded arms have none)."""
    src = _union_by_name(
        _rel(con, "served", served if served is not None else request_log.empty_table())
    )
    con.execute(
        "CREATE TABLE served_requests AS SELECT request_id, ts::TIMESTAMP AS ts, user_id, bundle, "
        "served_by, fallback_reason, fallback_reason IS NOT NULL AS is_fallback, "
        "len(items) AS n_items, latency_ms, endpoint, items, "
        f"{_assignments_column(con, src)} AS assignments "
        f"FROM {src} ORDER BY ts, request_id"
    )
    # Items logged before the service recorded their candidate sources have none: an empty
    # list (not NULL), so `unnest(sources)` and `len(sources)` need no special case.
    row = con.execute("SELECT column_type FROM (DESCRIBE served_requests) "
                      "WHERE column_name = 'items'").fetchone()  # fmt: skip
    has_sources = row is not None and "sources" in str(row[0])  # only old files: no field
    sources = ("coalesce(it.sources, CAST([] AS VARCHAR[]))" if has_sources
               else "CAST([] AS VARCHAR[])")  # fmt: skip
    con.execute(
        "CREATE TABLE served_impressions AS SELECT request_id, ts, user_id, bundle, served_by, "
        f"fallback_reason, endpoint, it.item_id, it.rank, it.score, {sources} AS sources FROM "
        "(SELECT *, unnest(items) AS it FROM served_requests)"
    )
    con.execute(
        "CREATE TABLE assignments AS SELECT request_id, ts, user_id, bundle, "
        "a.experiment AS experiment, a.arm AS arm FROM (SELECT request_id, ts, user_id, bundle, "
        "unnest(assignments) AS a FROM served_requests) ORDER BY ts, request_id, experiment"
    )
    con.execute("ALTER TABLE served_requests DROP COLUMN items")
    con.execute("ALTER TABLE served_requests DROP COLUMN assignments")


_NO_ASSIGNMENTS = "CAST([] AS STRUCT(experiment VARCHAR, arm VARCHAR)[])"


def _assignments_column(con: duckdb.DuckDBPyConnection, src: str) -> str:
    """The log's `assignments`, as an empty list (not NULL) for files written before the
    column existed: NULL under union_by_name beside newer files, absent when all are old."""
    names = {str(r[0]) for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    if "assignments" not in names:
        return _NO_ASSIGNMENTS
    return f"coalesce(assignments, {_NO_ASSIGNMENTS})"


def _feedback(con: duckdb.DuckDBPyConnection, events: Source | None,
              window_minutes: int) -> None:  # fmt: skip
    """`events` (deduplicated, with the exposure each is attributed to) and `exposures`.

    Attribution of an event to a served item (request_id, item_id), in order:
    (a) its request_id names a served request that showed its item -> that exposure;
    (b) otherwise the latest request that showed its item to its user at or before the
        event, if at most `window_minutes` before it (an ASOF join: one probe per event);
    (c) otherwise unattributed (`attribution` NULL): organic, too late, or before any request.
    Materialised, not a view: the two joins over every served item would otherwise run in
    every analyst query (docs/warehouse.md has the timings)."""
    src = _union_by_name(
        _rel(con, "events", events if events is not None
             else feedback_events.EVENT_SCHEMA.empty_table())
    )  # fmt: skip
    # A recovered spool may repeat an event: keep its first acknowledged copy.
    con.execute(
        "CREATE TEMP TABLE events_dedup AS SELECT event_id, type, user_id, item_id, "
        "ts::TIMESTAMP AS ts, received_at::TIMESTAMP AS received_at, request_id, value "
        f"FROM {src} WHERE event_id IS NOT NULL "
        "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_at, ts) = 1"
    )
    attributed = attributed_events_sql("events_dedup", "served_impressions", window_minutes)
    con.execute(f"CREATE TABLE events AS {attributed} ORDER BY ts, event_id")
    con.execute(
        f"CREATE TABLE exposures AS {exposures_sql('events', 'served_impressions')} "
        "ORDER BY ts, request_id, position"
    )
    con.execute("DROP TABLE events_dedup")


def attributed_events_sql(events: str, shown: str, window_minutes: int) -> str:
    """SELECT every row of `events` (deduplicated; the event log's columns) with
    `attributed_request_id` and `attribution` ('request_id', 'window' or NULL), attributed
    to the rows of `shown` (served_impressions). Exposed so the benchmark can time the same
    SQL as a view."""
    window = int(window_minutes)  # an int literal: views take no prepared parameters
    return f"""
        WITH direct AS (
            SELECT e.event_id, s.request_id, 'request_id' AS attribution
            FROM {events} AS e
            JOIN {shown} AS s ON s.request_id = e.request_id AND s.item_id = e.item_id
            QUALIFY row_number() OVER (PARTITION BY e.event_id ORDER BY s.rank) = 1
        ),
        rest AS (SELECT ev.* FROM {events} AS ev ANTI JOIN direct USING (event_id)),
        by_user AS (SELECT user_id, item_id, ts, request_id FROM {shown}
                    WHERE user_id IS NOT NULL),
        attribution AS (
            SELECT * FROM direct
            UNION ALL
            SELECT r.event_id, s.request_id, 'window' AS attribution
            FROM rest AS r ASOF JOIN by_user AS s
                ON r.user_id = s.user_id AND r.item_id = s.item_id AND r.ts >= s.ts
            WHERE r.ts <= s.ts + to_minutes({window})
        )
        SELECT e.*, a.request_id AS attributed_request_id, a.attribution
        FROM {events} AS e LEFT JOIN attribution AS a USING (event_id)"""


def exposures_sql(attributed_events: str, shown: str) -> str:
    """SELECT one row per row of `shown` with the outcomes of the events attributed to it."""
    flags = ", ".join(f"bool_or(type = '{t}') AS {c}" for c, t in OUTCOME_COLUMNS.items())
    coalesced = ", ".join(f"coalesce(o.{c}, false) AS {c}" for c in OUTCOME_COLUMNS)
    return f"""
        WITH outcomes AS (
            SELECT attributed_request_id AS request_id, item_id,
                   bool_or(type = 'impression') AS impressed, {flags},
                   min(ts) FILTER (WHERE type <> 'impression') AS first_outcome_ts
            FROM {attributed_events} WHERE attributed_request_id IS NOT NULL GROUP BY ALL
        )
        SELECT s.request_id, s.ts, s.user_id, s.bundle, s.served_by, s.fallback_reason,
               s.endpoint, s.rank AS position, s.item_id, s.score, s.sources,
               coalesce(o.impressed, false) AS impressed, {coalesced}, o.first_outcome_ts
        FROM {shown} AS s LEFT JOIN outcomes AS o USING (request_id, item_id)"""


def _user_keys(con: duckdb.DuckDBPyConnection, key: bytes) -> None:
    """Map every raw user id in the warehouse to its pseudonym (computed here in Python, so
    the secret is never stored in either file)."""
    rows = con.execute(
        "SELECT DISTINCT user_id FROM (SELECT user_id FROM users UNION ALL "
        "SELECT user_id FROM interactions UNION ALL SELECT user_id FROM recommendations "
        "UNION ALL SELECT user_id FROM quarantine UNION ALL SELECT user_id FROM served_requests "
        "UNION ALL SELECT user_id FROM events) WHERE user_id IS NOT NULL"
    ).fetchall()
    ids: list[str | None] = [str(r[0]) for r in rows]
    keys = pa.table({"user_id": pa.array(ids, pa.string()),
                     "user_key": pa.array(pseudonyms(key, ids), pa.string())})  # fmt: skip
    con.execute("CREATE SCHEMA restricted")
    con.register("src_keys", keys)
    con.execute("CREATE TABLE restricted.user_keys AS SELECT * FROM src_keys ORDER BY user_id")


def _schemas_in_raw(con: duckdb.DuckDBPyConnection) -> None:
    """restricted.* = raw tables; analyst.* = the pseudonymised views (same as the analyst
    file), so a canned query runs unchanged on either file."""
    for name in ANALYST_SQL:
        con.execute(f"CREATE VIEW restricted.{name} AS SELECT * FROM main.{name}")
    con.execute("CREATE SCHEMA analyst")
    for name, sql in ANALYST_SQL.items():
        con.execute(f"CREATE VIEW analyst.{name} AS {sql.format(m='main', r='restricted')}")


# ---- history of runs and metrics ------------------------------------------------------


def manifest_rows(m: BundleManifest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One runs row and the long-form metrics rows of a manifest."""
    created = dt.datetime.fromisoformat(m.created_at)
    if created.tzinfo is not None:
        created = created.astimezone(dt.UTC).replace(tzinfo=None)
    run = {
        "run_id": m.run_id, "run_date": dt.date.fromisoformat(m.run_date), "created_at": created,
        "code_version": m.code_version, "protocol": m.metrics.get("protocol"),
        "row_counts": json.dumps(m.row_counts), "data_window": json.dumps(m.data_window),
        "config_fingerprint": m.config_fingerprint,
        "config": json.dumps(m.extra["config"]) if "config" in m.extra else None,
    }  # fmt: skip
    metrics: list[dict[str, Any]] = []

    def add(list_name: str, values: object, rename: str | None = None) -> None:
        if isinstance(values, dict):
            for metric, v in values.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    metrics.append({"run_id": m.run_id, "list": list_name,
                                    "metric": metric, "value": float(v)})  # fmt: skip
        elif isinstance(values, int | float) and rename:
            metrics.append({"run_id": m.run_id, "list": list_name, "metric": rename,
                            "value": float(values)})  # fmt: skip

    for list_name, values in m.metrics.get("lists", {}).items():
        add(list_name, values)
    for src, values in m.metrics.get("candidate_recall", {}).items():
        add(src, values)
    for name, v in m.metrics.get("coverage", {}).items():
        add(name, v, "coverage@10")
    add("index", m.index.recall_at_100, "recall@100")
    add("index", m.index.build_seconds, "build_seconds")
    return run, metrics


def update_history(artifacts: Path) -> tuple[pa.Table, pa.Table]:
    """Merge the runs on disk into ART/history/{runs,metrics}.parquet and return both.

    Idempotent per run_id: a run on disk replaces its earlier rows (a republished run id),
    a run pruned from disk keeps the rows it had when it was last seen.
    """
    runs_rows: list[dict[str, Any]] = []
    metric_rows: list[dict[str, Any]] = []
    for path in sorted((artifacts / RUNS_DIR).glob(f"*/{layout.MANIFEST}")):
        run, metrics = manifest_rows(load_manifest(path.parent))
        runs_rows.append(run)
        metric_rows.extend(metrics)
    on_disk = {r["run_id"] for r in runs_rows}
    history = artifacts / HISTORY_DIR
    runs = _merge(history / "runs.parquet", RUNS_SCHEMA, runs_rows, on_disk)
    metrics = _merge(history / "metrics.parquet", METRICS_SCHEMA, metric_rows, on_disk)
    history.mkdir(parents=True, exist_ok=True)
    for name, table in (("runs.parquet", runs), ("metrics.parquet", metrics)):
        tmp = history / f".{name}.{os.getpid()}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, history / name)
    return runs, metrics


def rollout_events_table(artifacts: Path) -> pa.Table:
    """ART/history/rollout_events.jsonl as a table (naive UTC timestamps, values as JSON)."""
    rows = []
    for e in rollout.read_events(artifacts):
        ts = dt.datetime.fromisoformat(str(e["ts"]))
        rows.append({"ts": ts.astimezone(dt.UTC).replace(tzinfo=None) if ts.tzinfo else ts,
                     "run_id": e.get("run_id"), "experiment": e.get("experiment"),
                     "action": e["action"], "reason": e.get("reason"),
                     "values": json.dumps(e.get("values") or {}), "who": e.get("who")})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=ROLLOUT_EVENTS_SCHEMA)


def drift_history(artifacts: Path) -> pa.Table:
    """ART/history/drift.parquet (every run the drift stage saw, published or not), with the
    checks of any bundle on disk that it lacks (history lost, or a bundle from elsewhere)."""
    history = drift_store.read_history(artifacts)
    known = set(history["run_id"].to_pylist())
    missing: list[dict[str, Any]] = []
    for path in sorted((artifacts / RUNS_DIR).glob(f"*/{layout.MANIFEST}")):
        m = load_manifest(path.parent)
        report = m.extra.get("drift")
        if m.run_id not in known and isinstance(report, dict) and report.get("checks"):
            missing.extend(drift_store.report_rows(report, m.run_date))
    return drift_store.merge_history(artifacts, missing) if missing else history


def _merge(path: Path, schema: pa.Schema, rows: list[dict[str, Any]],
           replace: set[str]) -> pa.Table:  # fmt: skip
    fresh = pa.Table.from_pylist(rows, schema=schema)
    if not path.exists():
        return fresh
    old = pq.read_table(path)
    for name in schema.names:  # a history file written before the column existed: NULLs
        if name not in old.column_names:
            old = old.append_column(name, pa.nulls(len(old), schema.field(name).type))
    old = old.select(schema.names).cast(schema)
    keep = [i for i, r in enumerate(old["run_id"].to_pylist()) if r not in replace]
    return pa.concat_tables([old.take(pa.array(keep, pa.int64())), fresh]).sort_by("run_id")
