-- name: cumulative_activity
-- version: 1
-- description: Per user and active day, the day's interactions and the running total up to that day.
-- param: user_key | null | one user's pseudonym (default: every user)
WITH daily AS (
    SELECT user_key, CAST(event_time AS DATE) AS day, count(*) AS events
    FROM analyst.interactions
    WHERE $user_key IS NULL OR user_key = $user_key
    GROUP BY ALL
)
SELECT
    user_key,
    day,
    events,
    sum(events) OVER (PARTITION BY user_key ORDER BY day) AS cumulative_events
FROM daily
ORDER BY user_key, day
