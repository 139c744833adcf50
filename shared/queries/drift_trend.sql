-- name: drift_trend
-- version: 1
-- description: One row per input drift check: its newest value, threshold and status, the mean and max over its newest runs, how many of them breached (warn or fail) and when last, the least-squares slope per run and, while rising below its threshold, the runs left before it gets there (docs/monitoring.md).
-- param: last | 14 | the newest N runs of each check the trend covers
-- param: check | null | only this check (e.g. item_psi_window); NULL: every check
WITH d AS (
    SELECT
        d.check AS check_name,
        d.run_date,
        d.run_id,
        d.value,
        d.threshold,
        d.action,
        d.status,
        row_number() OVER (PARTITION BY d.check ORDER BY d.run_date DESC, d.run_id DESC) AS age
    FROM analyst.drift AS d
    WHERE CAST($check AS VARCHAR) IS NULL OR d.check = CAST($check AS VARCHAR)
),
w AS (
    SELECT * FROM d WHERE age <= CAST($last AS INTEGER)
),
trend AS (
    SELECT
        check_name,
        count(*) AS runs,
        avg(value) AS mean,
        max(value) AS max_value,
        count(*) FILTER (WHERE status IN ('warn', 'fail')) AS breaches,
        max(run_date) FILTER (WHERE status IN ('warn', 'fail')) AS last_breach,
        -- x = -age: the newest run is x = -1, so a value growing run after run has slope > 0;
        -- no slope from fewer than two values (DuckDB would answer NaN)
        CASE WHEN regr_count(value, -age) >= 2 THEN regr_slope(value, -age) END AS slope
    FROM w
    GROUP BY check_name
)
SELECT
    l.check_name AS "check",
    t.runs,
    l.run_date AS last_run_date,
    l.run_id AS last_run_id,
    l.value AS last_value,
    l.threshold,
    round(l.value / nullif(l.threshold, 0), 3) AS of_threshold,
    l.action,
    l.status AS last_status,
    round(t.mean, 6) AS mean,
    t.max_value AS max,
    t.breaches,
    t.last_breach,
    round(t.slope, 6) AS slope_per_run,
    CASE WHEN round(t.slope, 6) > 0 AND l.value < l.threshold
         THEN CAST(ceil(round((l.threshold - l.value) / round(t.slope, 6), 6)) AS INTEGER)
    END AS runs_to_threshold
FROM d AS l
JOIN trend AS t USING (check_name)
WHERE l.age = 1
-- checks switched off (recorded for dashboards, never alerting) last
ORDER BY l.action = 'off', of_threshold DESC NULLS LAST, "check"
