"""Canned-analysis query times on a warehouse built from a large generated data set.

    .venv/bin/recsys data generate --out /tmp/wh20m --users 400000 --items 60000 \\
        --events 20000000 --seed 1
    .venv/bin/python bench/warehouse_queries.py --data /tmp/wh20m --work /tmp/wh20m-art \\
        --out bench/results/warehouse_queries.json

No Spark: interactions/items/users Parquet go straight into the warehouse builder
(batch/pipeline/warehouse_build.py, the code the nightly publish runs); the published lists
(top 100 per user), a duplicate-rows quarantine, 30 nights of metrics history and a served
log (written by the real RequestLogWriter) and feedback events drawn from it (`--events`:
clicks and plays falling off with the position, some with the request_id and some only
within the attribution window or after it, impressions, a few repeated copies) are
synthetic. Each canned query runs 3 times on the analysts' file; the median is reported.

A smaller set that measures the events/exposures build at ~1M served items:

    .venv/bin/recsys data generate --out /tmp/wh1m --users 50000 --items 10000 \\
        --events 1000000 --seed 1
    .venv/bin/python bench/warehouse_queries.py --data /tmp/wh1m --work /tmp/wh1m-art \\
        --served 100000 --out bench/results/warehouse_feedback.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from batch.publish.warehouse_build import (
    DEFAULT_ATTRIBUTION_WINDOW_MINUTES,
    METRICS_SCHEMA,
    RUNS_SCHEMA,
    WarehouseInputs,
    attributed_events_sql,
    build,
    exposures_sql,
)
from shared import canned_queries
from shared.events import EVENT_LOG_DIR, EVENT_SCHEMA
from shared.request_log import RequestLogWriter, ServedRequest, log_dir, part_files
from shared.warehouse import analyst_warehouse_path, connect_analyst, warehouse_path

OUTCOME_QUERIES = ("outcomes_by_position", "outcomes_by_source", "watched_coverage")

TOP_K = 100
STRIDES = (7, 11, 13, 17, 19, 23, 29, 31)  # coprime with the catalogue sizes used here
SOURCES = [["ann"], ["cooc"], ["popular"], ["ann", "cooc"], ["ann", "popular"],
           ["ann", "cooc", "popular"]]  # fmt: skip
REASONS = [None] * 17 + ["timeout", "unknown_user", "rerank_error"]


def with_idx(path: Path, idx: str) -> pa.Table:
    table = pq.read_table(path)
    return table.add_column(0, idx, pa.array(np.arange(table.num_rows, dtype=np.int32)))


def item_popularity(con: duckdb.DuckDBPyConnection, data: Path) -> list[str]:
    rows = con.execute(
        "SELECT item_id FROM read_parquet($p) GROUP BY item_id ORDER BY count(*) DESC, item_id",
        {"p": str(data / "interactions.parquet")},
    ).fetchall()
    return [r[0] for r in rows]


def recommendations(users: pa.Table, by_pop: list[str], seed: int) -> Iterator[pa.RecordBatch]:
    """Top-K lists biased to popular items: item = by_pop[(base + rank * stride) % n]."""
    rng = np.random.default_rng(seed)
    n = len(by_pop)
    pop = np.array(by_pop, dtype=object)
    user_ids = users["user_id"].to_numpy(zero_copy_only=False)
    sources = pa.array(SOURCES, pa.list_(pa.string()))
    for start in range(0, len(user_ids), 20_000):
        chunk = user_ids[start : start + 20_000]
        m = len(chunk)
        base = np.minimum(rng.zipf(1.3, m) - 1, n - 1)
        stride = rng.choice(STRIDES, m)
        ranks = np.arange(1, TOP_K + 1)
        pos = (base[:, None] + ranks[None, :] * stride[:, None]) % n
        yield pa.record_batch({
            "user_idx": pa.array(np.repeat(np.arange(start, start + m), TOP_K), pa.int32()),
            "user_id": pa.array(np.repeat(chunk, TOP_K), pa.string()),
            "rank": pa.array(np.tile(ranks, m), pa.int32()),
            "item_id": pa.array(pop[pos.ravel()], pa.string()),
            "score": pa.array(np.tile(1.0 / ranks, m), pa.float32()),
            "sources": sources.take(pa.array(rng.integers(0, len(SOURCES), m * TOP_K))),
        })  # fmt: skip


def served_log(root: Path, users: pa.Table, by_pop: list[str], n: int, seed: int,
               day: dt.date) -> dict[str, float]:  # fmt: skip
    rng = np.random.default_rng(seed)
    user_ids = users["user_id"].to_pylist()
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    records = []
    for i in range(n):
        reason = REASONS[int(rng.integers(len(REASONS)))]
        u = int(rng.integers(len(user_ids) + len(user_ids) // 20))
        records.append(ServedRequest(
            request_id=f"req{i}", ts=start + dt.timedelta(seconds=float(i * 86_400 / n)),
            user_id=user_ids[u] if u < len(user_ids) else f"new{u}",
            bundle="bench", served_by="rerank" if reason is None else "precomputed",
            fallback_reason=reason,
            items=[(by_pop[int(j)], r + 1, 1.0 / (r + 1))
                   for r, j in enumerate(rng.integers(0, min(2000, len(by_pop)), 10))],
            latency_ms=float(rng.gamma(4.0, 4.0)),
        ))  # fmt: skip
    writer = RequestLogWriter(root, rotate_rows=50_000, rotate_seconds=3600)
    t0 = time.perf_counter()
    for r in records:
        writer.log(r)
    logged = time.perf_counter() - t0
    writer.close()
    total = time.perf_counter() - t0
    return {"requests": n, "log_call_us": logged / n * 1e6, "write_all_s": total,
            "files": len(part_files(root))}  # fmt: skip


# Feedback drawn per served item (a DuckDB query over the served log, seeded): a click with
# probability CLICK / rank, a play with PLAY / rank; 60% carry the request_id, the rest only
# fall within the window, except LATE of them an hour later (unattributed); an impression
# for ranks 1-5 of IMPRESSED of the requests; REPEAT of the events written twice.
CLICK, PLAY, IMPRESSED, LATE, REPEAT = 0.25, 0.10, 0.2, 0.1, 0.001


def feedback_log(art: Path) -> dict[str, float]:
    """Synthetic feedback events for the served log in art, written to ART/event_log/."""
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SELECT setseed(0.42)").fetchall()
    files = [str(p) for p in part_files(log_dir(art))]
    table = con.sql(f"""
        WITH shown AS (
            SELECT request_id, ts, user_id, it.item_id, it.rank, random() AS r1,
                   random() AS r2, random() AS r3, random() AS r4
            FROM (SELECT *, unnest(items) AS it FROM read_parquet($files, union_by_name = true))
            WHERE user_id IS NOT NULL
        ),
        drawn AS (
            SELECT 'click' AS type, user_id, item_id,
                   ts + to_seconds(CAST(r2 * 600 + CASE WHEN r4 < {LATE} THEN 3600 ELSE 0 END
                                        AS BIGINT)) AS ts,
                   CASE WHEN r3 < 0.6 THEN request_id END AS request_id
            FROM shown WHERE r1 < {CLICK} / rank
            UNION ALL
            SELECT 'play', user_id, item_id, ts + to_seconds(CAST(60 + r2 * 900 AS BIGINT)),
                   CASE WHEN r3 < 0.6 THEN request_id END
            FROM shown WHERE r1 < {PLAY} / rank
            UNION ALL
            SELECT 'impression', user_id, item_id, ts, request_id
            FROM shown WHERE rank <= 5 AND hash(request_id) % 1000 < {IMPRESSED * 1000}
        ),
        numbered AS (SELECT 'ev' || row_number() OVER () AS event_id, * FROM drawn)
        SELECT event_id, type, user_id, item_id, ts, ts + INTERVAL 1 SECOND AS received_at,
               request_id, CAST(NULL AS DOUBLE) AS value FROM numbered
        UNION ALL
        SELECT event_id, type, user_id, item_id, ts, ts + INTERVAL 1 HOUR, request_id, NULL
        FROM numbered WHERE random() < {REPEAT}
    """, params={"files": files}).to_arrow_table()
    con.close()
    events = table.cast(EVENT_SCHEMA, safe=False)
    folder = art / EVENT_LOG_DIR / "date=bench"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(events, folder / "part-bench-000001.parquet", compression="zstd")
    return {"events": events.num_rows, "generate_s": time.perf_counter() - t0}


def history(n: int, end: dt.date) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(0)
    runs, metrics = [], []
    for i in range(n):
        day = end - dt.timedelta(days=n - 1 - i)
        run_id = f"{day}-bench{i:02d}"
        runs.append({"run_id": run_id, "run_date": day,
                     "created_at": dt.datetime.combine(day, dt.time(3)), "code_version": "bench",
                     "protocol": "temporal", "row_counts": "{}", "data_window": "{}"})
        for name, level in (("merged", 0.12), ("popularity", 0.06), ("ann", 0.09)):
            metrics.append({"run_id": run_id, "list": name, "metric": "ndcg@10",
                            "value": level + float(rng.normal(0, 0.004))})  # fmt: skip
    return (pa.Table.from_pylist(runs, schema=RUNS_SCHEMA),
            pa.Table.from_pylist(metrics, schema=METRICS_SCHEMA))  # fmt: skip


def bench_params(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    last = con.execute("SELECT CAST(max(event_time) AS DATE) FROM interactions").fetchone()
    assert last is not None
    some_user = con.execute("SELECT min(user_key) FROM users").fetchone()
    assert some_user is not None
    return {
        "top_titles": {"start": str(last[0] - dt.timedelta(days=29)), "end": str(last[0])},
        "cumulative_activity (one user)": {"user_key": str(some_user[0])},
    }


def time_queries(art: Path, repeats: int) -> list[dict[str, Any]]:
    con = connect_analyst(art)
    results = []
    try:
        params = bench_params(con)
        jobs = [(name, name, params.get(name, {})) for name in canned_queries.load_all()]
        jobs.append(("cumulative_activity (one user)", "cumulative_activity",
                     params["cumulative_activity (one user)"]))  # fmt: skip
        for label, name, given in jobs:
            query = canned_queries.get(name)
            bound = query.bind(given)
            walls, cpus, arrows = [], [], []
            rows = 0
            for _ in range(repeats):
                w0, c0 = time.perf_counter(), time.process_time()
                cursor = con.execute(query.sql, bound) if bound else con.execute(query.sql)
                rows = len(cursor.fetchall())  # what `recsys sql` does, minus printing
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)  # all DuckDB threads of this process
                w0 = time.perf_counter()
                con.sql(query.sql, params=bound or None).to_arrow_table()
                arrows.append(time.perf_counter() - w0)
            results.append({"query": label, "params": given, "rows": rows,
                            "median_s": statistics.median(walls),
                            "median_cpu_s": statistics.median(cpus),
                            "median_arrow_s": statistics.median(arrows), "runs_s": walls})
            print(f"{label:32s} {statistics.median(walls):7.3f} s  cpu "
                  f"{statistics.median(cpus):7.3f} s  arrow {statistics.median(arrows):7.3f} s"
                  f"  {rows:>10,} rows", flush=True)
    finally:
        con.close()
    return results


def view_versus_table(art: Path, repeats: int) -> list[dict[str, Any]]:
    """The outcome analyses on the materialised `exposures` against the same SQL over a
    view that attributes the events at query time (the alternative that was not taken)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"ATTACH '{warehouse_path(art)}' AS raw (READ_ONLY)")
    raw_events = ("(SELECT * EXCLUDE (attributed_request_id, attribution) "
                  "FROM raw.main.events)")  # fmt: skip
    con.execute("CREATE TEMP VIEW v_events AS " + attributed_events_sql(
        raw_events, "raw.main.served_impressions", DEFAULT_ATTRIBUTION_WINDOW_MINUTES))
    con.execute("CREATE TEMP VIEW v_exposures AS "
                + exposures_sql("v_events", "raw.main.served_impressions"))  # fmt: skip
    out = []
    try:
        for name in OUTCOME_QUERIES:
            query = canned_queries.get(name)
            bound = query.bind({}) or None
            timings = {}
            for label, events, exposures in (("table", "raw.main.events", "raw.main.exposures"),
                                             ("view", "v_events", "v_exposures")):  # fmt: skip
                sql = query.sql.replace("analyst.exposures", exposures).replace(
                    "analyst.events", events).replace("analyst.items", "raw.main.items")
                walls = []
                for _ in range(repeats):
                    w0 = time.perf_counter()
                    con.sql(sql, params=bound).fetchall()
                    walls.append(time.perf_counter() - w0)
                timings[label] = statistics.median(walls)
            out.append({"query": name, "table_s": timings["table"], "view_s": timings["view"]})
            print(f"{name:32s} table {timings['table']:7.3f} s  view {timings['view']:7.3f} s",
                  flush=True)
    finally:
        con.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="an artifacts dir to build into")
    ap.add_argument("--out", type=Path, default=Path("bench/results/warehouse_queries.json"))
    ap.add_argument("--served", type=int, default=500_000, help="synthetic served requests")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-events", action="store_true", help="no synthetic feedback events")
    ap.add_argument("--reuse", action="store_true",
                    help="time the queries on the warehouse already in --work")
    args = ap.parse_args()
    art: Path = args.work
    art.mkdir(parents=True, exist_ok=True)
    if args.reuse and analyst_warehouse_path(art).exists():
        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
        previous["queries"] = time_queries(art, args.repeats)
        args.out.write_text(json.dumps(previous, indent=2, default=str))
        return
    t0 = time.perf_counter()
    scratch = duckdb.connect()
    by_pop = item_popularity(scratch, args.data)
    items = with_idx(args.data / "items.parquet", "item_idx")
    users = with_idx(args.data / "users.parquet", "user_idx")
    max_ts = scratch.execute("SELECT max(timestamp) FROM read_parquet($p)",
                             {"p": str(args.data / "interactions.parquet")}).fetchone()
    assert max_ts is not None
    last_day = dt.datetime.fromtimestamp(int(max_ts[0]), dt.UTC).date()
    scratch.execute(
        "CREATE TEMP TABLE q AS SELECT row_number() OVER () AS row_number, 'duplicate' AS "
        "reason, user_id, item_id, CAST(timestamp AS VARCHAR) AS raw_timestamp, event_type, "
        "CAST(weight AS VARCHAR) AS raw_weight FROM read_parquet($p) "
        "USING SAMPLE 20000 ROWS (reservoir, 1)",
        {"p": str(args.data / "interactions.parquet")},
    )
    quarantine = scratch.sql("SELECT * FROM q").to_arrow_table()
    scratch.close()
    prepared = time.perf_counter() - t0

    if not part_files(log_dir(art)):
        log_stats = served_log(log_dir(art), users, by_pop, args.served, 1,
                               last_day + dt.timedelta(days=1))  # fmt: skip
    else:
        log_stats = {"reused": len(part_files(log_dir(art)))}
    print("served log:", log_stats, flush=True)
    event_files = part_files(art / EVENT_LOG_DIR)
    if not args.no_events and not event_files:
        event_stats: dict[str, float] = feedback_log(art)
        event_files = part_files(art / EVENT_LOG_DIR)
    else:
        event_stats = {"reused": len(event_files)}
    print("event log:", event_stats, flush=True)

    interactions = ds.dataset(args.data / "interactions.parquet").scanner(columns={
        "user_id": ds.field("user_id"), "item_id": ds.field("item_id"),
        "ts": ds.field("timestamp"), "event_type": ds.field("event_type"),
        "weight": ds.field("weight"),
    }).to_reader()  # fmt: skip
    rec_schema = next(recommendations(users.slice(0, 1), by_pop, 0)).schema
    recs = pa.RecordBatchReader.from_batches(rec_schema, recommendations(users, by_pop, 1))
    popular = pa.table({"segment": ["__global__"] * 100, "rank": pa.array(range(1, 101)),
                        "item_id": by_pop[:100], "score": [1.0 / r for r in range(1, 101)]})
    runs, metrics = history(30, last_day)
    inputs = WarehouseInputs(
        items=items, users=users, recommendations=recs, popular=popular, candidates=None,
        quarantine=quarantine, interactions=interactions,
        served=part_files(log_dir(art)), events=event_files or None, runs=runs, metrics=metrics,
        current_run=runs["run_id"][-1].as_py(),
    )  # fmt: skip
    t1 = time.perf_counter()
    phases = build(inputs, warehouse_path(art), analyst_warehouse_path(art), b"bench-key")
    built = time.perf_counter() - t1
    print("build phases (s):", phases, flush=True)
    sizes = {p.name: p.stat().st_size for p in (warehouse_path(art), analyst_warehouse_path(art))}
    print(f"prepared in {prepared:.1f} s, built both files in {built:.1f} s: {sizes}", flush=True)
    queries = time_queries(art, args.repeats)
    exposures_view = view_versus_table(art, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "data": str(args.data), "duckdb": duckdb.__version__, "served_log": log_stats,
        "event_log": event_stats,
        "build_s": built, "build_phases_s": phases, "file_bytes": sizes, "queries": queries,
        "exposures_view_vs_table": exposures_view,
        "recommendations_per_user": TOP_K,
    }, indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
