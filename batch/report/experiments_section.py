"""The report's "Experiments" section: every experiment that served traffic, newest first,
with the per-arm rates, lift, p-value and SRM check of `recsys experiment report` and its
chart, plus the canary rollouts and what the guardrails decided.

Shares for the SRM check come from the experiments file as installed (`ART/experiments.json`);
an experiment no longer in the file is checked against equal shares and says so.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import duckdb

from batch.experiments.render import figure
from batch.experiments.report import ExperimentReport, experiment_report
from batch.report import charts
from shared import experiments as exp
from shared.errors import RecsysError

TITLE = "Experiments"
NO_EXPERIMENTS = "No experiment has served traffic yet (docs/experiments.md says how to run one)."
MOST_SHOWN = 6  # newest experiments with a full analysis; the rest are listed by name


def _declared_shares(artifacts: Path, name: str) -> dict[str, float] | None:
    try:
        file = exp.load(artifacts)
    except RecsysError:  # a file that does not validate: the report still renders
        return None
    declared = file.experiment(name) if file is not None else None
    return None if declared is None else {a.name: a.share for a in declared.arms}


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:+.2f}%" if pct else f"{x:.4f}"


def _arm_rows(report: ExperimentReport) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for a in report.stats.arms:
        for metric in ("ctr", "play_rate"):
            e = a.metrics[metric]
            lo, hi = e.ci
            c = a.vs_control[metric] if a.vs_control else None
            rows.append((a.arm, metric, a.users, a.exposures, _fmt(e.value),
                         f"[{_fmt(lo)}, {_fmt(hi)}]",
                         "(control)" if c is None else _fmt(c.lift, pct=True),
                         "" if c is None else f"{c.p_value:.3g}"))  # fmt: skip
    return rows


def _guardrail_rows(report: ExperimentReport) -> list[tuple[object, ...]]:
    return [(arm, g.requests, g.p99_latency_ms, g.fallback_rate, g.coverage)
            for arm, g in report.guardrails.items()]  # fmt: skip


def _has(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    row = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                      [table]).fetchone()  # fmt: skip
    return bool(row and row[0])


def experiments_section(con: duckdb.DuckDBPyConnection, artifacts: Path) -> tuple[
        list[str], list[tuple[list[str], list[tuple[object, ...]]]], list[tuple[str, str]]]:  # fmt: skip
    """(paragraphs, tables, images) of the section, for build.Section."""
    paragraphs: list[str] = []
    tables: list[tuple[list[str], list[tuple[object, ...]]]] = []
    images: list[tuple[str, str]] = []
    names = [] if not _has(con, "assignments") else [str(r[0]) for r in con.execute(
        "SELECT experiment FROM assignments GROUP BY experiment ORDER BY max(ts) DESC").fetchall()]  # fmt: skip
    if not names:
        paragraphs.append(NO_EXPERIMENTS)
    for name in names[:MOST_SHOWN]:
        try:
            report = experiment_report(con, name, _declared_shares(artifacts, name))
        except RecsysError as exc:  # e.g. no control arm with users yet
            paragraphs.append(f"<b>{html.escape(name)}</b>: no analysis yet ({html.escape(str(exc))}).")
            continue
        srm = report.stats.srm
        paragraphs.append(
            f"<b>{html.escape(name)}</b>: {report.requests} assigned requests, "
            f"{html.escape(str(report.first_ts))} .. {html.escape(str(report.last_ts))}; control "
            f"<code>{html.escape(report.stats.control)}</code>; sample ratio "
            f"chi-square p = {srm.p_value:.3g} ({'MISMATCH: do not read the metrics' if srm.flagged else 'ok'})."
        )  # fmt: skip
        paragraphs.extend(html.escape(f"Warning ({name}): {w}") for w in report.warnings())
        tables.append((["arm", "metric", "users", "exposures", "value", "95% CI",
                        "lift vs control", "p-value"], _arm_rows(report)))  # fmt: skip
        if report.guardrails:
            tables.append((["arm", "requests", "p99 latency ms", "fallback rate", "coverage"],
                           _guardrail_rows(report)))  # fmt: skip
        images.append((f"experiment {name}", charts.to_png_b64(figure(report))))
    if len(names) > MOST_SHOWN:
        paragraphs.append("Older experiments (run `recsys experiment report NAME`): "
                          + html.escape(", ".join(names[MOST_SHOWN:])))  # fmt: skip
    if _has(con, "rollout_events"):
        rows = con.execute("SELECT ts::VARCHAR, run_id, experiment, action, reason "
                           "FROM rollout_events ORDER BY ts DESC LIMIT 20").fetchall()  # fmt: skip
        if rows:
            tables.append((["ts", "run", "experiment", "action", "reason"],
                           [tuple(r) for r in rows]))  # fmt: skip
    return paragraphs, tables, images
