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
    --@include outcome_rates
FROM tagged
GROUP BY source
ORDER BY exposures DESC, source
