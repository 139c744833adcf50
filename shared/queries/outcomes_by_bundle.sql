-- name: outcomes_by_bundle
-- version: 1
-- description: Online outcomes: Click-through and play rate by the bundle (run id) that served. One exposure per served item; a rate is exposures with that outcome / exposures.
-- param: impressed_only | false | true: count only exposures a client reported as seen (impression events)
SELECT
    bundle,
    --@include outcome_rates
FROM analyst.exposures
WHERE impressed OR NOT CAST($impressed_only AS BOOLEAN)
GROUP BY bundle
ORDER BY bundle
