-- name: drift_by_run
-- version: 1
-- description: Every input drift check of every run (published or stopped by a check): value, threshold, action, status, the change from that check's previous run and its mean over the 7 runs before (docs/monitoring.md).
-- param: check | null | only this check (e.g. item_psi_prev, volume_drop); NULL: every check
-- param: status | null | only rows with this status (ok, warn, fail, skipped, off); NULL: all
WITH d AS (
    SELECT
        d.run_date,
        d.run_id,
        d.check AS check_name,
        d.value,
        d.threshold,
        d.action,
        d.status,
        d.value - lag(d.value) OVER w AS change,
        avg(d.value) OVER (w ROWS BETWEEN 7 PRECEDING AND 1 PRECEDING) AS trailing_mean,
        d.detail
    FROM analyst.drift AS d
    WINDOW w AS (PARTITION BY d.check ORDER BY d.run_date, d.run_id)
)
SELECT
    d.run_date,
    d.run_id,
    d.check_name AS "check",
    d.value,
    d.threshold,
    round(d.value / nullif(d.threshold, 0), 3) AS of_threshold,
    d.action,
    d.status,
    round(d.change, 6) AS change,
    round(d.trailing_mean, 6) AS trailing_mean,
    r.run_id IS NOT NULL AS published,
    d.detail
FROM d
LEFT JOIN analyst.runs AS r USING (run_id)
WHERE (CAST($check AS VARCHAR) IS NULL OR d.check_name = CAST($check AS VARCHAR))
  AND (CAST($status AS VARCHAR) IS NULL OR d.status = CAST($status AS VARCHAR))
ORDER BY d.run_date, d.run_id, d.check_name
