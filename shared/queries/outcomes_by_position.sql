-- name: outcomes_by_position
-- version: 1
-- description: Online outcomes: Click-through and play rate by position in the response (1 = first). One exposure per served item; a rate is exposures with that outcome / exposures.
-- param: impressed_only | false | true: count only exposures a client reported as seen (impression events)
SELECT
    position,
    --@include outcome_rates
FROM analyst.exposures
WHERE impressed OR NOT CAST($impressed_only AS BOOLEAN)
GROUP BY position
ORDER BY position
