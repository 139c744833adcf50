-- name: freshness_by_run
-- version: 1
-- description: How fresh each run's input and bundle were: the newest event, its lag behind the end of the run date and its age when the bundle was published, the publish time, hours since the previous publish (the bundle age the service reached before it), and the drift stage's freshness checks; stopped runs too (docs/monitoring.md).
-- param: last | 30 | the newest N runs
WITH published AS (
    SELECT
        run_id,
        run_date,
        is_current,
        created_at AS published_at,
        -- data_window holds ISO-8601 UTC strings ('' for an empty input): TIMESTAMPTZ reads
        -- the offset, the session time zone is UTC, so the naive result is UTC.
        CAST(TRY_CAST(data_window ->> 'max' AS TIMESTAMPTZ) AS TIMESTAMP) AS newest_event,
        CAST(TRY_CAST(data_window ->> 'end_exclusive' AS TIMESTAMPTZ) AS TIMESTAMP) AS run_end,
        created_at - lag(created_at) OVER (ORDER BY created_at, run_id) AS since_previous
    FROM analyst.runs
),
checks AS (
    SELECT
        run_id,
        any_value(run_date) AS run_date,
        max(value) FILTER (WHERE d.check = 'freshness_hours') AS freshness_hours,
        max(threshold) FILTER (WHERE d.check = 'freshness_hours') AS freshness_threshold,
        max(status) FILTER (WHERE d.check = 'freshness_hours') AS freshness_status,
        max(value) FILTER (WHERE d.check = 'input_age_at_run_hours') AS input_age_at_run_hours
    FROM analyst.drift AS d
    GROUP BY run_id
)
SELECT
    coalesce(p.run_date, c.run_date) AS run_date,
    run_id,
    p.run_id IS NOT NULL AS published,
    coalesce(p.is_current, false) AS is_current,
    p.newest_event,
    p.published_at,
    round(epoch(p.run_end - p.newest_event) / 3600, 2) AS event_lag_hours,
    round(epoch(p.published_at - p.newest_event) / 3600, 2) AS event_age_at_publish_hours,
    round(epoch(p.published_at - p.run_end) / 3600, 2) AS publish_delay_hours,
    round(epoch(p.since_previous) / 3600, 2) AS hours_since_previous_publish,
    c.freshness_hours,
    c.freshness_threshold,
    c.freshness_status,
    c.input_age_at_run_hours
FROM published AS p
FULL JOIN checks AS c USING (run_id)
QUALIFY row_number() OVER (ORDER BY coalesce(p.run_date, c.run_date) DESC, run_id DESC)
        <= CAST($last AS INTEGER)
ORDER BY run_date, run_id
