-- name: outcomes_by_served_by
-- version: 1
-- description: Online outcomes: Click-through and play rate by the path that answered (rerank, precomputed, popular_segment, popular_global). One exposure per served item; a rate is exposures with that outcome / exposures.
-- param: impressed_only | false | true: count only exposures a client reported as seen (impression events)
SELECT
    served_by,
    --@include outcome_rates
FROM analyst.exposures
WHERE impressed OR NOT CAST($impressed_only AS BOOLEAN)
GROUP BY served_by
ORDER BY served_by
