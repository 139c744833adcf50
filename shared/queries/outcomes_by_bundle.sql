-- name: outcomes_by_bundle
-- version: 1
-- description: Online outcomes: Click-through and play rate by the bundle (run id) that served. One exposure per served item; a rate is exposures with that outcome / exposures.
-- param: impressed_only | false | true: count only exposures a client reported as seen (impression events)
SELECT
    bundle,
    count(*) AS exposures,
    count(*) FILTER (WHERE clicked) AS clicked,
    count(*) FILTER (WHERE played) AS played,
    count(*) FILTER (WHERE completed) AS completed,
    count(*) FILTER (WHERE disliked) AS disliked,
    round(count(*) FILTER (WHERE clicked) / count(*), 4) AS ctr,
    round(count(*) FILTER (WHERE played) / count(*), 4) AS play_rate
FROM analyst.exposures
WHERE impressed OR NOT CAST($impressed_only AS BOOLEAN)
GROUP BY bundle
ORDER BY bundle
