-- name: second_title_per_region
-- version: 2
-- description: Per region, the second most watched title (by distinct viewers; ties broken by interactions, then item_id). Users without a region count as 'unknown'.
-- param: start | null | first day (default: all data)
-- param: end | null | last day, inclusive (default: all data)
-- v2: (user, item) pairs aggregated first, so viewers is a plain count, not COUNT(DISTINCT).
WITH pairs AS (
    SELECT user_key, item_id, count(*) AS interactions
    FROM analyst.interactions
    WHERE ($start IS NULL OR event_time >= CAST($start AS DATE))
      AND ($end IS NULL OR event_time < CAST($end AS DATE) + INTERVAL 1 DAY)
    GROUP BY user_key, item_id
),
per_region AS (
    SELECT
        coalesce(u.region, 'unknown') AS region,
        p.item_id,
        count(*) AS viewers,
        sum(p.interactions) AS interactions
    FROM pairs AS p
    LEFT JOIN analyst.users AS u USING (user_key)
    GROUP BY ALL
),
ranked AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY region ORDER BY viewers DESC, interactions DESC, item_id
        ) AS position
    FROM per_region
)
SELECT r.region, r.item_id, i.title, r.viewers, r.interactions
FROM ranked AS r
LEFT JOIN analyst.items AS i USING (item_id)
WHERE r.position = 2
ORDER BY r.region
