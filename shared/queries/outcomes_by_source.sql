-- name: outcomes_by_source
-- version: 1
-- description: Online outcomes: click-through and play rate by candidate source tag of the served item (an item found by several sources counts for each; 'untagged' = logged without sources).
-- param: impressed_only | false | true: count only exposures a client reported as seen (impression events)
WITH tagged AS (
    SELECT
        unnest(CASE WHEN len(sources) = 0 THEN ['untagged'] ELSE sources END) AS source,
        clicked, played, completed, disliked
    FROM analyst.exposures
    WHERE impressed OR NOT CAST($impressed_only AS BOOLEAN)
)
SELECT
    source,
    count(*) AS exposures,
    count(*) FILTER (WHERE clicked) AS clicked,
    count(*) FILTER (WHERE played) AS played,
    count(*) FILTER (WHERE completed) AS completed,
    count(*) FILTER (WHERE disliked) AS disliked,
    round(count(*) FILTER (WHERE clicked) / count(*), 4) AS ctr,
    round(count(*) FILTER (WHERE played) / count(*), 4) AS play_rate
FROM tagged
GROUP BY source
ORDER BY exposures DESC, source
