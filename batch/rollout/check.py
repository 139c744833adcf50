"""`recsys rollout check` and `promote`: measure the running canary against control in the
warehouse, roll it back on a breach, promote it once it has held (docs/experiments.md).

The warehouse is rebuilt first, for CURRENT and from the logs as they are now (the rebuild
recovers the spools killed workers left), so the check sees the traffic up to the
service's last log rotation, not last night's. The check reads the restricted file: the
unit is the raw user id, as assigned.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb

from batch.experiments.report import experiment_report
from batch.publish.release import rebuild_warehouse
from batch.rollout.guardrails import METRICS, ArmHealth, MetricTest, Verdict, evaluate, worse_test
from shared import rollout
from shared.bundle import read_current, run_dir, verify_bundle, write_current
from shared.config import RolloutConfig
from shared.errors import RecsysError, RolloutCheckFailed, UsageError
from shared.warehouse import connect_read_only

log = logging.getLogger(__name__)

# A fallback reason naming an error: the service caught a failure and answered anyway.
ERROR_REASON_PATTERN = "%error%"

HEALTH_SQL = """
    WITH a AS (SELECT DISTINCT request_id, user_id, arm FROM assignments WHERE experiment = $name)
    SELECT a.arm, count(DISTINCT a.user_id) AS users, count(*) AS requests,
           count(*) FILTER (WHERE s.fallback_reason LIKE $error) AS errors,
           count(*) FILTER (WHERE s.is_fallback) AS fallbacks,
           quantile_cont(s.latency_ms, 0.99) AS p99
    FROM a JOIN served_requests AS s USING (request_id)
    GROUP BY a.arm"""


@dataclass(frozen=True)
class CheckOutcome:
    action: Literal["none", "check_passed", "rolled_back", "promoted"]
    rollout: rollout.Rollout | None
    reason: str
    values: dict[str, Any] = field(default_factory=dict)


def arm_health(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, ArmHealth]:
    rows = con.execute(HEALTH_SQL, {"name": name, "error": ERROR_REASON_PATTERN}).fetchall()
    return {str(r[0]): ArmHealth(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]),
                                 None if r[5] is None else float(r[5])) for r in rows}  # fmt: skip


def measure(con: duckdb.DuckDBPyConnection, found: rollout.Rollout,
            cfg: RolloutConfig) -> Verdict:  # fmt: skip
    """The verdict on the canary from an open (restricted) warehouse connection."""
    health = arm_health(con, found.experiment)
    empty = {arm: ArmHealth(arm, 0, 0, 0, 0, None) for arm in (rollout.CONTROL, rollout.CANARY)}
    control = health.get(rollout.CONTROL, empty[rollout.CONTROL])
    canary = health.get(rollout.CANARY, empty[rollout.CANARY])
    tests: dict[str, MetricTest] | None = None
    srm_p: float | None = None
    if control.users and canary.users:
        shares = {rollout.CONTROL: 1.0 - found.share, rollout.CANARY: found.share}
        report = experiment_report(con, found.experiment, shares, rollout.CONTROL)
        srm_p = report.stats.srm.p_value
        ctl = report.stats.arm(rollout.CONTROL)
        can = report.stats.arm(rollout.CANARY)
        if ctl.exposures and can.exposures:
            tests = {m: worse_test(m, can.metrics[m], ctl.metrics[m]) for m in METRICS}
    verdict = evaluate(control, canary, tests, srm_p, cfg)
    row = con.execute("SELECT min(ts)::VARCHAR FROM assignments WHERE experiment = $name",
                      {"name": found.experiment}).fetchone()  # fmt: skip
    verdict.values["first_request_ts"] = row[0] if row else None
    return verdict


def _measure_now(artifacts: Path, found: rollout.Rollout, cfg: RolloutConfig) -> Verdict:
    """Rebuild the warehouse from the current logs, then measure; any failure of either is
    a check that could not run (RolloutCheckFailed, exit 10): nothing is decided."""
    live = read_current(artifacts)
    if live is None:
        raise RolloutCheckFailed(f"no CURRENT in {artifacts}: nothing to compare the canary with")
    try:
        rebuild_warehouse(artifacts, live)
        con = connect_read_only(artifacts)
        try:
            return measure(con, found, cfg)
        finally:
            con.close()
    except RolloutCheckFailed:
        raise
    except (RecsysError, duckdb.Error, OSError, ValueError) as exc:
        raise RolloutCheckFailed(f"rollout {found.experiment}: the check could not measure "
                                 f"the canary: {exc}") from exc  # fmt: skip


def promote(artifacts: Path, found: rollout.Rollout, reason: str,
            values: dict[str, Any] | None = None, who: str | None = None) -> None:  # fmt: skip
    """CURRENT -> the canary run, then the rollout stops (in that order: the canary's users
    never flip back to the old run on the way), and the warehouse is rebuilt for what is now
    served, as a rollback does. The caller holds rollout.lock()."""
    verify_bundle(run_dir(artifacts, found.run_id))  # changed since the start? refuse
    previous = read_current(artifacts)
    write_current(artifacts, found.run_id)
    rollout.stop(artifacts, found, "promoted", reason,
                 {**(values or {}), "previous_current": previous}, who)  # fmt: skip
    rebuild_warehouse(artifacts, found.run_id)


def promote_running(artifacts: Path, who: str | None = None) -> rollout.Rollout:
    """`recsys rollout promote`: an operator's promotion, whatever the guardrails say."""
    with rollout.lock(artifacts):
        found = rollout.require(artifacts)
        promote(artifacts, found, "promoted by hand", who=who)
        return found


def _held_hours(artifacts: Path, found: rollout.Rollout, verdict: Verdict,
                now: dt.datetime) -> float:  # fmt: skip
    since = rollout.started_at(artifacts, found)
    first = verdict.values.get("first_request_ts")
    if since is None and first:  # declared by hand: count from its first served request
        since = dt.datetime.fromisoformat(str(first)).replace(tzinfo=dt.UTC)
    return 0.0 if since is None else max(0.0, (now - since).total_seconds() / 3600)


def check(artifacts: Path, cfg: RolloutConfig, auto_promote: bool = False,
          now: dt.datetime | None = None) -> CheckOutcome:  # fmt: skip
    """One guardrail check of the running rollout (none running: nothing to do)."""
    with rollout.lock(artifacts):
        try:
            found = rollout.current(artifacts)
        except UsageError as exc:  # an experiments file that does not validate
            raise RolloutCheckFailed(f"cannot read the rollout: {exc}") from exc
        if found is None:
            return CheckOutcome("none", None, "no rollout running")
        verdict = _measure_now(artifacts, found, cfg)
        values = verdict.values
        if verdict.breached:
            reason = "guardrail breached: " + "; ".join(verdict.breaches)
            rollout.stop(artifacts, found, "rolled_back", reason, values)
            _refresh_history(artifacts)
            return CheckOutcome("rolled_back", found, reason, values)
        held = _held_hours(artifacts, found, verdict, now or dt.datetime.now(dt.UTC))
        values["held_hours"] = round(held, 3)
        if auto_promote and verdict.complete and held >= cfg.hold_hours:
            reason = (f"guardrails held for {held:.1f} h (>= {cfg.hold_hours:g} h) with "
                      f"{min(values['users'].values())}+ users per arm")  # fmt: skip
            promote(artifacts, found, reason, values)
            return CheckOutcome("promoted", found, reason, values)
        pending = list(verdict.waiting)
        if verdict.complete and held < cfg.hold_hours:
            pending.append(f"held {held:.1f} h of {cfg.hold_hours:g} h")
        reason = "guardrails held" + (f"; {'; '.join(pending)}" if pending else "")
        rollout.record(artifacts, found, "check_passed", reason, values)
        return CheckOutcome("check_passed", found, reason, values)


def _refresh_history(artifacts: Path) -> None:
    """Rebuild once more so `rollout_events` shows the rollback at once. Best effort: the
    rollback itself is done and recorded; the next publish or check rebuilds anyway."""
    live = read_current(artifacts)
    try:
        if live is not None:
            rebuild_warehouse(artifacts, live)
    except (RecsysError, duckdb.Error, OSError) as exc:
        log.warning("rollback recorded, but the warehouse was not refreshed: %s", exc)
