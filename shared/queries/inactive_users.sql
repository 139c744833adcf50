-- name: inactive_users
-- version: 1
-- description: Users seen before but with no activity in the last N days up to as_of (the days as_of-N+1 .. as_of). Never relative to now().
-- param: as_of | null | reference day, YYYY-MM-DD (default: the data's last day)
-- param: days | 30 | length of the window
WITH ref AS (
    SELECT coalesce(
        CAST($as_of AS DATE),
        (SELECT CAST(max(event_time) AS DATE) FROM analyst.interactions)
    ) AS as_of
),
last_seen AS (
    SELECT x.user_key, CAST(max(x.event_time) AS DATE) AS last_active
    FROM analyst.interactions AS x, ref
    WHERE x.event_time < ref.as_of + INTERVAL 1 DAY
    GROUP BY x.user_key
)
SELECT l.user_key, l.last_active, ref.as_of, ref.as_of - l.last_active AS days_inactive
FROM last_seen AS l, ref
WHERE l.last_active <= ref.as_of - CAST($days AS INTEGER)
ORDER BY days_inactive DESC, l.user_key
