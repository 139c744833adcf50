-- name: catalog_coverage
-- version: 1
-- description: Catalog coverage and concentration (Gini over every catalog item, unrecommended items count as 0) of the published lists, cut at rank k.
-- param: k | 10 | use ranks 1..k of each list
WITH exposure AS (
    SELECT i.item_id, count(r.item_id) AS n
    FROM analyst.items AS i
    LEFT JOIN analyst.recommendations AS r
        ON r.item_id = i.item_id AND r.rank <= CAST($k AS INTEGER)
    GROUP BY i.item_id
),
ordered AS (
    SELECT n, row_number() OVER (ORDER BY n, item_id) AS pos FROM exposure
),
totals AS (
    SELECT count(*) AS items, sum(n) AS entries FROM exposure
)
SELECT
    CAST($k AS INTEGER) AS k,
    t.items AS catalog_items,
    count(*) FILTER (WHERE o.n > 0) AS items_recommended,
    round(count(*) FILTER (WHERE o.n > 0) / t.items, 4) AS coverage,
    t.entries AS list_entries,
    -- Gini of the exposure counts sorted ascending: sum((2i - N - 1) x_i) / (N sum x)
    round(sum((2 * o.pos - t.items - 1) * o.n) / nullif(t.items * t.entries, 0), 4) AS gini
FROM ordered AS o, totals AS t
GROUP BY t.items, t.entries
