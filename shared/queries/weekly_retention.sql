-- name: weekly_retention
-- version: 1
-- description: Weekly retention by signup cohort: signup = first interaction; cohort = its ISO week (Monday); share of the cohort active in each later week.
-- param: max_weeks | 12 | last week offset reported
WITH activity AS (
    SELECT DISTINCT user_key, CAST(date_trunc('week', event_time) AS DATE) AS week
    FROM analyst.interactions
),
cohorts AS (
    SELECT user_key, min(week) AS cohort FROM activity GROUP BY user_key
),
sizes AS (
    SELECT cohort, count(*) AS cohort_users FROM cohorts GROUP BY cohort
)
SELECT
    c.cohort,
    CAST((a.week - c.cohort) // 7 AS INTEGER) AS week_offset,
    s.cohort_users,
    count(*) AS active_users,
    round(count(*) / s.cohort_users, 4) AS retention
FROM activity AS a
JOIN cohorts AS c USING (user_key)
JOIN sizes AS s USING (cohort)
WHERE (a.week - c.cohort) // 7 <= CAST($max_weeks AS INTEGER)
GROUP BY c.cohort, week_offset, s.cohort_users
ORDER BY c.cohort, week_offset
