-- name: top_titles
-- version: 1
-- description: Titles with the most interactions in a period (both days inclusive).
-- param: start | required | first day, YYYY-MM-DD
-- param: end | required | last day, YYYY-MM-DD
-- param: limit | 10 | number of titles
SELECT
    x.item_id,
    i.title,
    count(*) AS interactions,
    count(DISTINCT x.user_key) AS users
FROM analyst.interactions AS x
JOIN analyst.items AS i USING (item_id)
WHERE x.event_time >= CAST($start AS DATE)
  AND x.event_time < CAST($end AS DATE) + INTERVAL 1 DAY
GROUP BY x.item_id, i.title
ORDER BY interactions DESC, x.item_id
LIMIT CAST($limit AS INTEGER)
