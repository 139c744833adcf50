-- name: outcomes_by_day
-- version: 1
-- description: Online outcomes per UTC day of the request and bundle: click-through and play rate (the trend of each bundle).
-- param: impressed_only | false | true: count only exposures a client reported as seen (impression events)
SELECT
    CAST(ts AS DATE) AS day,
    bundle,
    --@include outcome_rates
FROM analyst.exposures
WHERE impressed OR NOT CAST($impressed_only AS BOOLEAN)
GROUP BY ALL
ORDER BY day, bundle
