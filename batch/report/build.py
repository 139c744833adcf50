"""Collect the report's numbers from the analysts' warehouse and render one HTML file.

Reads only the pseudonymised file (`warehouse_analyst.duckdb`): a report that is mailed
around must not carry raw user ids. Every chart is an inline base64 PNG, so the file is
self-contained (no external assets, viewable offline or as an attachment).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from batch.report import charts
from batch.report.experiments_section import experiments_section
from shared import canned_queries
from shared.warehouse import connect_analyst

SECTIONS = (
    "Latest run",
    "Metrics over runs",
    "Input drift, freshness and changes",
    "Source mix of the published lists",
    "Catalog coverage",
    "Popularity bias",
    "Served traffic",
    "Online outcomes",
    "Experiments",
)
NO_TRAFFIC = "No served traffic yet."
NO_DRIFT = "No input drift checks recorded yet (the drift stage writes them from its first run)."
# The bundle-age alert (online/monitoring/recsys_rules.yml, RecsysBundleStale): 1.5 days.
STALE_BUNDLE_HOURS = 36.0
CHANGES_SHOWN = 40
NO_FEEDBACK = "No feedback events yet: online outcomes appear once clients send events."
RATE_COLUMNS = ["exposures", "clicked", "played", "completed", "disliked", "CTR", "play rate"]
TREND_METRIC = "ndcg@10"
LATEST_METRICS = ("ndcg@10", "precision@10", "recall@10", "map@10", "coverage@10")


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[tuple[Any, ...]]]] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (alt, base64 png)


def _rows(con: duckdb.DuckDBPyConnection, sql: str,
          params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:  # fmt: skip
    return con.execute(sql, params).fetchall() if params else con.execute(sql).fetchall()


def _canned(con: duckdb.DuckDBPyConnection, name: str, **params: str) -> list[tuple[Any, ...]]:
    query = canned_queries.get(name)
    return _rows(con, query.sql, query.bind(params))


def latest_run(con: duckdb.DuckDBPyConnection) -> Section:
    section = Section(SECTIONS[0])
    run = _rows(con, "SELECT run_id, run_date, created_at, code_version, row_counts "
                     "FROM runs WHERE is_current")  # fmt: skip
    if not run:
        section.paragraphs.append("No current run in the warehouse.")
        return section
    run_id, run_date, created, code, counts = run[0]
    section.paragraphs.append(
        f"Run <b>{html.escape(str(run_id))}</b> for {run_date}, published {created} "
        f"(code {html.escape(str(code))}). Row counts: {html.escape(str(counts))}."
    )
    pivot = ", ".join(
        f"max(value) FILTER (WHERE metric = '{m}') AS \"{m}\"" for m in LATEST_METRICS
    )  # constant metric names, not user input
    rows = _rows(con, f"SELECT list, {pivot} FROM metrics WHERE run_id = $run "
                      "AND list NOT IN ('index') GROUP BY list ORDER BY list", {"run": run_id})
    section.tables.append((["list", *LATEST_METRICS], rows))
    return section


def metrics_over_runs(con: duckdb.DuckDBPyConnection) -> Section:
    section = Section(SECTIONS[1])
    runs = [r[0] for r in _rows(con, "SELECT run_id FROM runs ORDER BY created_at, run_id")]
    lists = [r[0] for r in _rows(con, "SELECT DISTINCT list FROM metrics WHERE metric = $m "
                                      "ORDER BY list", {"m": TREND_METRIC})]  # fmt: skip
    series: dict[str, list[float | None]] = {}
    for name in lists:
        values = dict(_rows(con, "SELECT run_id, value FROM metrics WHERE metric = $m AND "
                                 "list = $l", {"m": TREND_METRIC, "l": name}))  # fmt: skip
        series[name] = [values.get(r) for r in runs]
    section.paragraphs.append(
        f"{TREND_METRIC} of every list across the {len(runs)} run(s) in the history "
        "(kept after old bundles are pruned)."
    )
    section.images.append((f"{TREND_METRIC} over runs", charts.lines(
        f"{TREND_METRIC} per run", runs, series, TREND_METRIC)))  # fmt: skip
    trend = _canned(con, "metric_trend", metric=TREND_METRIC, list="merged")
    section.tables.append((["run_date", "run_id", "value", "change", "current"], trend))
    return section


def monitoring(con: duckdb.DuckDBPyConnection) -> Section:
    """The nightly run's input health from the canned analyses: every drift check's value
    against its threshold per run, how fresh input and bundle were, and what changed in the
    newest run against the one before (docs/monitoring.md)."""
    section = Section(SECTIONS[2])
    drift = _canned(con, "drift_by_run")
    if not drift:
        section.paragraphs.append(NO_DRIFT)
    else:
        runs = sorted({(r[0], r[1]) for r in drift})
        labels = [f"{d} {run}" if len({x[0] for x in runs}) < len(runs) else str(d)
                  for d, run in runs]  # fmt: skip
        at = {(r[1], r[2]): r[5] for r in drift}  # (run_id, check) -> value / threshold
        # Checks switched off (input_age_at_run_hours: a backfill is days "late") would
        # squash the others against the axis: they stay in the table below.
        checks = sorted({r[2] for r in drift if r[5] is not None and r[6] != "off"})
        series: dict[str, list[float | None]] = {
            c: [None if at.get((run, c)) is None else float(at[(run, c)]) for _, run in runs]
            for c in checks
        }
        breached = sorted({(r[1], r[2], r[7]) for r in drift if r[7] in ("warn", "fail")})
        section.paragraphs.append(
            f"{len(checks)} input drift check(s) over {len(runs)} run(s) (published or stopped); "
            f"{len(breached)} breach(es): "
            + (", ".join(html.escape(f"{run} {c} ({st})") for run, c, st in breached) or "none")
            + ". The chart divides each value by its threshold, so every check breaches above "
            "the same line at 1."
        )
        section.images.append(("drift values vs threshold", charts.lines(
            "input drift: value / threshold per run", labels, series, "of threshold",
            limit=(1.0, "threshold"))))  # fmt: skip
        section.tables.append((
            ["check", "runs", "last run", "last run id", "value", "threshold", "of threshold",
             "action", "status", "mean", "max", "breaches", "last breach", "slope per run",
             "runs to threshold"],
            _canned(con, "drift_trend"),
        ))  # fmt: skip
    fresh = [r for r in _canned(con, "freshness_by_run") if r[2]]  # published runs
    if fresh:
        section.paragraphs.append(
            "Freshness per published run: hours from the newest input event to the end of the "
            "run date (lag) and to the publish (age), and hours since the previous publish: "
            f"the service's bundle-age alert fires above {STALE_BUNDLE_HOURS:g} h."
        )
        section.images.append(("freshness per run", charts.lines(
            "freshness per published run", [str(r[0]) for r in fresh],
            {"newest event lag (h)": [r[6] for r in fresh],
             "event age at publish (h)": [r[7] for r in fresh],
             "hours since previous publish": [r[9] for r in fresh]},
            "hours", limit=(STALE_BUNDLE_HOURS, "bundle-age alert"))))  # fmt: skip
    # A warehouse built before the runs table kept each run's config has no config column.
    has_config = _rows(con, "SELECT count(*) FROM information_schema.columns WHERE "
                            "table_name = 'runs' AND column_name = 'config'")[0][0] > 0
    changed = _canned(con, "run_changes") if has_config else []
    if changed and changed[0][1] is None:
        section.paragraphs.append(f"Run <b>{html.escape(str(changed[0][0]))}</b> is the first "
                                  "in the history: nothing to compare it with yet.")
    elif changed:
        run_id, previous = changed[0][0], changed[0][1]
        section.paragraphs.append(
            f"What changed in run <b>{html.escape(str(run_id))}</b> against "
            + (f"<b>{html.escape(str(previous))}</b>" if previous else "nothing (first run)")
            + f": {len(changed)} value(s) differ"
            + (f", the first {CHANGES_SHOWN} shown." if len(changed) > CHANGES_SHOWN else ".")
            + " <code>recsys sql --query run_changes --param run=RUN_ID</code> for any run."
        )
        section.tables.append((["aspect", "name", "previous", "current", "change",
                                "relative change"],
                               [r[2:] for r in changed[:CHANGES_SHOWN]]))  # fmt: skip
    return section


def source_mix(con: duckdb.DuckDBPyConnection) -> Section:
    section = Section(SECTIONS[3])
    rows = _rows(con, "WITH e AS (SELECT unnest(sources) AS source FROM recommendations) "
                      "SELECT source, count(*) / (SELECT count(*) FROM recommendations) AS share "
                      "FROM e GROUP BY source ORDER BY share DESC, source")  # fmt: skip
    combos = _rows(con, "SELECT array_to_string(list_sort(sources), '+') AS sources, count(*) "
                        "AS entries, round(count(*) / sum(count(*)) OVER (), 4) AS share FROM "
                        "recommendations GROUP BY 1 ORDER BY entries DESC LIMIT 10")  # fmt: skip
    section.paragraphs.append(
        "Share of published list entries each candidate source contributed to (an entry found "
        "by several sources counts for each)."
    )
    section.images.append(("source mix", charts.bars(
        "share of list entries per source", [r[0] for r in rows], [r[1] for r in rows],
        "share of entries")))  # fmt: skip
    section.tables.append((["sources", "entries", "share"], combos))
    return section


def coverage(con: duckdb.DuckDBPyConnection) -> Section:
    section = Section(SECTIONS[4])
    max_rank = _rows(con, "SELECT coalesce(max(rank), 10) FROM recommendations")[0][0]
    cuts = sorted({10, min(50, max_rank), max_rank})
    table = [_canned(con, "catalog_coverage", k=str(k))[0] for k in cuts]
    section.tables.append(
        (["k", "catalog items", "recommended", "coverage", "entries", "gini"], table)
    )
    exposure = [r[0] for r in _rows(con, "SELECT count(r.item_id) FROM items i LEFT JOIN "
                                         "recommendations r USING (item_id) GROUP BY i.item_id")]
    section.paragraphs.append(
        "Coverage = share of the catalog appearing in at least one list; Gini = concentration "
        "of exposure over the catalog (0 = every item equally often, 1 = one item everywhere)."
    )
    section.images.append(("exposure Lorenz curve", charts.lorenz(
        "exposure concentration (all ranks)", exposure)))  # fmt: skip
    return section


def popularity_bias(con: duckdb.DuckDBPyConnection) -> Section:
    section = Section(SECTIONS[5])
    n_items = _rows(con, "SELECT count(*) FROM items")[0][0]
    n_top = max(1, math.ceil(0.01 * n_items))
    if _rows(con, "SELECT count(*) FROM interactions")[0][0] == 0:
        section.paragraphs.append("No interactions in the warehouse (work partition pruned).")
        return section
    share = _rows(con, """
        WITH pop AS (SELECT item_id, count(*) AS n FROM interactions GROUP BY item_id),
        top AS (SELECT item_id FROM pop ORDER BY n DESC, item_id LIMIT CAST($n AS INTEGER))
        SELECT
            (SELECT sum(n) FROM pop WHERE item_id IN (SELECT item_id FROM top))
                / (SELECT sum(n) FROM pop),
            avg(CAST(item_id IN (SELECT item_id FROM top) AS INTEGER)) FILTER (WHERE rank <= 10),
            avg(CAST(item_id IN (SELECT item_id FROM top) AS INTEGER))
        FROM recommendations""", {"n": n_top})[0]
    labels = ["interactions", "lists (top 10)", "lists (all ranks)"]
    values = [float(v or 0.0) for v in share]
    section.paragraphs.append(
        f"Share taken by the top 1% most interacted items ({n_top} of {n_items}): in the "
        "interactions versus in the published lists. Lists above the interaction share "
        "amplify popularity; below it they spread exposure."
    )
    section.images.append(("popularity bias", charts.bars(
        f"share of the top {n_top} items", labels, values, "share")))  # fmt: skip
    section.tables.append((["where", "share of top-1% items"], list(zip(labels, values,
                                                                         strict=True))))
    return section


def served_traffic(con: duckdb.DuckDBPyConnection) -> Section:
    section = Section(SECTIONS[6])
    total = _rows(con, "SELECT count(*) FROM served_requests")[0][0]
    if total == 0:
        section.paragraphs.append(NO_TRAFFIC)
        return section
    summary = _rows(con, """
        SELECT served_by, count(*) AS requests, round(avg(is_fallback::INT), 4) AS fallback,
               round(quantile_cont(latency_ms, 0.5), 2) AS p50,
               round(quantile_cont(latency_ms, 0.95), 2) AS p95,
               round(quantile_cont(latency_ms, 0.99), 2) AS p99
        FROM served_requests GROUP BY ALL ORDER BY requests DESC""")
    section.paragraphs.append(f"{total} logged requests.")
    section.tables.append((["served_by", "requests", "fallback rate", "p50 ms", "p95 ms",
                            "p99 ms"], summary))  # fmt: skip
    latencies = [r[0] for r in _rows(con, "SELECT latency_ms FROM served_requests "
                                          "USING SAMPLE 200000 ROWS")]  # fmt: skip
    section.images.append(("latency", charts.histogram("request latency", latencies, "ms")))
    per_hour = _canned(con, "fallback_rate")
    hours = sorted({r[0].strftime("%m-%d %H:00") for r in per_hour})
    reasons = sorted({r[1] for r in per_hour})
    share = {(r[0].strftime("%m-%d %H:00"), r[1]): float(r[3]) for r in per_hour}
    by_reason: dict[str, list[float]] = {reason: [share.get((h, reason), 0.0) for h in hours] for reason in reasons}
    section.images.append(("fallback by hour", charts.stacked_hours(
        "requests per hour by fallback reason ('none' = full path)", hours, by_reason)))
    section.tables.append((["segment", "requests", "fallback rate", "top reason"],
                           _canned(con, "fallback_by_segment")))  # fmt: skip
    return section


def online_outcomes(con: duckdb.DuckDBPyConnection) -> Section:
    """Click-through and play rates of what was served (the `exposures` table; every served
    item counts as exposed, see docs/warehouse.md), from the outcome canned analyses."""
    section = Section(SECTIONS[7])
    # A warehouse built before events were loaded has no such table: same empty state.
    has_events = _rows(con, "SELECT count(*) FROM information_schema.tables "
                            "WHERE table_name = 'exposures'")[0][0] > 0  # fmt: skip
    n_events = _rows(con, "SELECT count(*) FROM events")[0][0] if has_events else 0
    if n_events == 0:
        section.paragraphs.append(NO_FEEDBACK)
        return section
    n_exposures, n_attributed = _rows(
        con, "SELECT (SELECT count(*) FROM exposures), "
             "(SELECT count(*) FROM events WHERE attribution IS NOT NULL)")[0]  # fmt: skip
    section.paragraphs.append(
        f"{n_events} feedback events, {n_attributed} attributed to one of {n_exposures} "
        "served items (by request_id, else to the latest request that showed the item to "
        "the user within the attribution window). CTR = share of served items clicked; "
        "play rate = share played."
    )
    by_position = _canned(con, "outcomes_by_position")
    if by_position:
        positions = [str(r[0]) for r in by_position]
        section.images.append(("CTR by position", charts.lines(
            "CTR and play rate by position", positions,
            {"CTR": [r[6] for r in by_position], "play rate": [r[7] for r in by_position]},
            "rate")))  # fmt: skip
    by_day = _canned(con, "outcomes_by_day")
    if by_day:
        days = sorted({r[0].isoformat() for r in by_day})
        bundles = sorted({str(r[1]) for r in by_day})
        at = {(r[0].isoformat(), str(r[1])): r for r in by_day}
        for label, column in (("CTR", 7), ("play rate", 8)):
            series: dict[str, list[float | None]] = {
                b: [at[(d, b)][column] if (d, b) in at else None for d in days] for b in bundles
            }
            section.images.append((f"{label} by day and bundle", charts.lines(
                f"{label} per day, by bundle", days, series, label)))  # fmt: skip
    section.tables.append((["served_by", *RATE_COLUMNS], _canned(con, "outcomes_by_served_by")))
    section.tables.append((["source", *RATE_COLUMNS], _canned(con, "outcomes_by_source")))
    section.tables.append((
        ["catalog items", "items served", "items played", "served coverage", "played coverage",
         "plays", "plays on served items", "share on served"],
        _canned(con, "watched_coverage"),
    ))  # fmt: skip
    return section


def experiments(con: duckdb.DuckDBPyConnection, artifacts: Path) -> Section:
    paragraphs, tables, images = experiments_section(con, artifacts)
    return Section(SECTIONS[SECTIONS.index("Experiments")], paragraphs, tables, images)


def collect(artifacts: Path) -> list[Section]:
    con = connect_analyst(artifacts)
    try:
        return [latest_run(con), metrics_over_runs(con), monitoring(con), source_mix(con),
                coverage(con), popularity_bias(con), served_traffic(con),
                online_outcomes(con), experiments(con, artifacts)]  # fmt: skip
    finally:
        con.close()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def render(sections: list[Section], title: str = "recsys nightly report") -> str:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}",
        "table{border-collapse:collapse;margin:0.5em 0 1em}",
        "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:right}",
        "th{background:#f0f0f0}img{display:block;margin:0.5em 0}",
        f"</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts.extend(f"<p>{p}</p>" for p in s.paragraphs)  # built from escaped values
        for alt, png in s.images:
            parts.append(f'<img src="data:image/png;base64,{png}" alt="{html.escape(alt)}">')
        for columns, rows in s.tables:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
                         + "</tr>")  # fmt: skip
            parts.extend("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                         for row in rows)  # fmt: skip
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(artifacts: Path, out: Path) -> Path:
    text = render(collect(artifacts))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
