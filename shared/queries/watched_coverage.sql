-- name: watched_coverage
-- version: 1
-- description: Coverage of what was actually watched: distinct items played / catalogue items (next to distinct items served), and the share of plays attributed to a served item.
WITH plays AS (
    SELECT item_id, attribution IS NOT NULL AS on_served
    FROM analyst.events
    WHERE type = 'play'
),
counts AS (
    SELECT
        (SELECT count(*) FROM analyst.items) AS catalog_items,
        (SELECT count(DISTINCT item_id) FROM analyst.exposures) AS items_served,
        (SELECT count(DISTINCT item_id) FROM plays) AS items_played,
        (SELECT count(*) FROM plays) AS plays,
        (SELECT count(*) FILTER (WHERE on_served) FROM plays) AS plays_on_served
)
SELECT
    catalog_items,
    items_served,
    items_played,
    round(items_served / nullif(catalog_items, 0), 4) AS served_coverage,
    round(items_played / nullif(catalog_items, 0), 4) AS played_coverage,
    plays,
    plays_on_served,
    round(plays_on_served / nullif(plays, 0), 4) AS share_on_served
FROM counts
