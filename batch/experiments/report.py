"""An experiment's report from the warehouse: `assignments` (one row per served request per
experiment) joined to `exposures` (one row per served item, with its outcomes) on request_id.

The unit is the user as `assignments` names them (user_key in the analysts' file, user_id in
the restricted one): per-user sums of exposures, clicks and plays per arm go to stats.py.
A user found in more than one arm cannot be analysed as randomised: such users are left out
of every metric and counted, because it means the assignment is broken (fix that first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from batch.experiments.stats import ExperimentStats, Guardrails, analyse, guardrails
from shared.errors import RecsysError, UsageError

DEFAULT_MDE = 0.05  # the relative change the power calculation is asked about


@dataclass(frozen=True)
class ExperimentReport:
    name: str
    user_column: str  # the unit: user_key (analysts' warehouse) or user_id (restricted)
    shares: dict[str, float]
    shares_declared: bool  # False: equal shares were assumed for the SRM check
    stats: ExperimentStats
    guardrails: dict[str, Guardrails]
    first_ts: str | None
    last_ts: str | None
    requests: int
    users_in_several_arms: int
    requests_without_user: int
    notes: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """What must be read before any metric, most serious first."""
        out = []
        srm = self.stats.srm
        if srm.flagged:
            out.append(f"SAMPLE RATIO MISMATCH (chi-square p = {srm.p_value:.2g} < 0.001): users per arm "
                       f"{srm.observed} vs expected {_round_dict(srm.expected)}. The arms are not comparable; "
                       "find the cause (assignment, logging, a crash in one arm) before reading the metrics.")  # fmt: skip
        if self.users_in_several_arms:
            out.append(f"{self.users_in_several_arms} users were assigned to more than one arm: "
                       "left out of the metrics; the assignment is not stable per user.")  # fmt: skip
        if not self.shares_declared:
            out.append("no shares were declared: the SRM check assumed equal shares.")
        return out + self.notes

    def to_dict(self) -> dict[str, object]:
        from batch.experiments.render import as_dict

        return as_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        from batch.experiments.render import markdown

        return markdown(self)


def _round_dict(d: Mapping[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in d.items()}


def _relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT table_name FROM information_schema.tables "
                       "WHERE table_schema = current_schema()").fetchall()  # fmt: skip
    return {str(r[0]) for r in rows}


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> set[str]:
    return {str(r[0]) for r in con.execute(f"SELECT column_name FROM (DESCRIBE {relation})").fetchall()}


# The experiment's requests, once each (a repeated assignment row must not double exposures).
ASSIGNED_SQL = """
    SELECT DISTINCT request_id, {user} AS unit, arm, ts FROM assignments
    WHERE experiment = $name"""

PER_USER_SQL = """
    WITH a AS ({assigned})
    SELECT a.unit AS user, a.arm, count(x.request_id) AS exposures,
           count(*) FILTER (WHERE x.clicked) AS clicks,
           count(*) FILTER (WHERE x.played) AS plays
    FROM (SELECT DISTINCT request_id, unit, arm FROM a WHERE unit IS NOT NULL) AS a
    LEFT JOIN exposures AS x USING (request_id)
    GROUP BY a.unit, a.arm"""


def per_user_table(con: duckdb.DuckDBPyConnection, name: str, user: str) -> pd.DataFrame:
    """One row per (user, arm) of the experiment: exposures, clicks and plays (zero for a
    user whose requests served nothing: still assigned, still counted; count(*) FILTER, not
    count_if, which is NULL over the NULLs of the outer join)."""
    sql = PER_USER_SQL.format(assigned=ASSIGNED_SQL.format(user=user))
    return con.execute(sql, {"name": name}).df()


def _guardrails(con: duckdb.DuckDBPyConnection, name: str, user: str,
                relations: set[str]) -> dict[str, Guardrails]:  # fmt: skip
    """Per arm, over every assigned request: p99 latency and fallback rate from
    served_requests when the warehouse has it (else the fallback rate from exposures), and
    catalogue coverage from exposures and items."""
    assigned = f"SELECT DISTINCT request_id, arm FROM ({ASSIGNED_SQL.format(user=user)})"
    params = {"name": name}
    served_cols = _columns(con, "served_requests") if "served_requests" in relations else set()
    req = None
    if {"latency_ms", "is_fallback"} <= served_cols:
        req = con.execute(f"SELECT a.arm, s.latency_ms::DOUBLE AS latency_ms, s.is_fallback "
                          f"FROM ({assigned}) a JOIN served_requests s USING (request_id)",
                          params).df()  # fmt: skip
    if req is None or req.empty:  # no served log for these requests: what exposures say
        req = con.execute(f"SELECT a.arm, NULL::DOUBLE AS latency_ms, "
                          f"bool_or(x.fallback_reason IS NOT NULL) AS is_fallback "
                          f"FROM ({assigned}) a JOIN exposures x USING (request_id) "
                          f"GROUP BY a.arm, a.request_id", params).df()  # fmt: skip
    items = con.execute(f"SELECT a.arm, count(DISTINCT x.item_id) AS n FROM ({assigned}) a "
                        f"JOIN exposures x USING (request_id) GROUP BY a.arm", params).fetchall()  # fmt: skip
    distinct = {str(arm): int(n) for arm, n in items}
    catalogue = None
    if "items" in relations:
        row = con.execute("SELECT count(*) FROM items").fetchone()
        catalogue = int(row[0]) if row else None
    out = {}
    arms = sorted(set(map(str, req["arm"])) | set(distinct))
    for arm in arms:
        mine = req[req["arm"] == arm]
        has_latency = bool(mine["latency_ms"].notna().any())
        out[arm] = guardrails(
            latency_ms=mine["latency_ms"].to_numpy(dtype=np.float64) if has_latency else None,
            is_fallback=mine["is_fallback"].to_numpy(dtype=bool) if len(mine) else None,
            distinct_items=distinct.get(arm),
            catalogue_size=catalogue,
            requests=len(mine),
        )
    return out


def experiment_report(warehouse_con: duckdb.DuckDBPyConnection, name: str,
                      shares: Mapping[str, float] | None = None, control: str | None = None,
                      relative_mde: float = DEFAULT_MDE, power: float = 0.8) -> ExperimentReport:  # fmt: skip
    """The report of experiment `name` from an open (read-only) warehouse connection.
    `shares`: the declared traffic share per arm (any scale); None assumes equal shares.
    `control`: the arm the others are compared with; default 'control' if there is one,
    else the first arm in name order."""
    con = warehouse_con
    relations = _relations(con)
    missing = {"assignments", "exposures"} - relations
    if missing:
        raise RecsysError(f"the warehouse has no {', '.join(sorted(missing))}: "
                          "no experiment has been published into it yet")  # fmt: skip
    cols = _columns(con, "assignments")
    user = "user_key" if "user_key" in cols else "user_id"
    if user not in cols:
        raise RecsysError("assignments has neither user_key nor user_id")
    head = con.execute(
        f"SELECT count(DISTINCT request_id), count(DISTINCT request_id) FILTER (WHERE unit IS NULL), "
        f"min(ts)::VARCHAR, max(ts)::VARCHAR FROM ({ASSIGNED_SQL.format(user=user)})",
        {"name": name},
    ).fetchone()  # fmt: skip
    if head is None or not head[0]:
        known = [r[0] for r in con.execute("SELECT DISTINCT experiment FROM assignments "
                                           "ORDER BY 1 LIMIT 20").fetchall()]  # fmt: skip
        raise UsageError(f"no assignments for experiment {name!r} (experiments: {known})")
    per_user = per_user_table(con, name, user)
    arms_of_user = per_user.groupby("user")["arm"].transform("nunique")
    several = int(per_user.loc[arms_of_user > 1, "user"].nunique())
    per_user = per_user[arms_of_user == 1]
    arms = sorted(set(map(str, per_user["arm"])))
    declared = shares is not None
    share_map = {str(k): float(v) for k, v in (shares or dict.fromkeys(arms, 1.0)).items()}
    ctl = control or ("control" if "control" in arms else arms[0])
    if ctl not in arms:
        raise UsageError(f"control arm {ctl!r} has no users in {name!r} (arms: {arms})")
    try:
        result = analyse(per_user, share_map, ctl, relative_mde, power)
    except ValueError as exc:  # e.g. an arm with users but no declared share
        raise UsageError(f"experiment {name!r}: {exc}") from exc
    return ExperimentReport(
        name=name, user_column=user, shares=share_map, shares_declared=declared, stats=result,
        guardrails=_guardrails(con, name, user, relations), first_ts=head[2], last_ts=head[3],
        requests=int(head[0]), users_in_several_arms=several, requests_without_user=int(head[1]),
    )  # fmt: skip


def write_report(report: ExperimentReport, out: Path) -> list[Path]:
    """`out` (JSON), with the Markdown and the PNG chart beside it; returns the three paths."""
    from batch.experiments.render import chart

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.to_json())
    md = out.with_suffix(".md")
    md.write_text(report.to_markdown())
    png = chart(report, out.with_suffix(".png"))
    return [out, md, png]
