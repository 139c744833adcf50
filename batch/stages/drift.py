"""Stage `drift`: input drift checks on the validate stage's outputs (docs/monitoring.md).

Runs right after validate and before any training, so a `fail` check stops the night in
minutes, not after hours of Spark, and CURRENT stays on the last good bundle. It reads only
validate's Parquet outputs and stats (DuckDB on the driver, no Spark) and compares this
run's profile with the previous published run's and the trailing window's (kept by publish
in ART/state/drift/profiles/). Every check's row goes to ART/history/drift.parquet whether
the run publishes or not: the warehouse's `drift` table shows the runs it stopped, too.
"""

from __future__ import annotations

import logging
import shutil
import time

from batch.context import RunContext, read_json, write_json
from batch.drift import checks, profile, store
from batch.drift.checks import DriftReport
from shared.bundle import read_current

log = logging.getLogger(__name__)
progress = logging.getLogger("recsys.progress")


def run(ctx: RunContext) -> dict[str, object]:
    validate, out, cfg = ctx.outputs.validate, ctx.outputs.drift, ctx.config.drift
    stats = read_json(validate.stats)
    run_id = str(stats["run_id"])
    shutil.rmtree(out.profile, ignore_errors=True)  # a rerun never keeps an older profile
    if not cfg.enabled:
        report = DriftReport(run_id, None, [], notes=["drift checks off (drift.enabled=false)"])
        write_json(out.report, report.to_json())
        return {"checks": 0, "warnings": [], "failures": []}
    current = profile.build(validate.clean, validate.feedback, run_id, ctx.run_date, cfg)
    live = read_current(ctx.artifacts)
    previous, window = store.references(ctx.artifacts, ctx.run_date, live, cfg.window_runs)
    report = checks.evaluate(current, previous, window,
                             dict(stats.get("quarantine_reasons", {})),
                             int(stats["rows_read"]), cfg, time.time())
    current.save(out.profile)
    write_json(out.report, report.to_json())
    store.merge_history(ctx.artifacts, store.report_rows(report, ctx.run_date.isoformat()))
    for note in report.notes:
        progress.info("drift: %s", note)
    for c in report.by_status(checks.WARN):
        log.warning("%s", c.message())
    progress.info("drift: %d checks against %s (window %d runs): %d ok, %d warn, %d fail, "
                  "%d skipped", len(report.checks), report.previous_run or "no previous run",
                  len(report.window_runs), *(len(report.by_status(s)) for s in
                                             (checks.OK, checks.WARN, checks.FAIL, checks.SKIPPED)))
    checks.enforce(report, live)
    return {"checks": len(report.checks), "warnings": [c.check for c in report.by_status(checks.WARN)],
            "failures": []}
