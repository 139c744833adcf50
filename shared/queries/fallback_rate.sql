-- name: fallback_rate
-- version: 1
-- description: Served traffic per UTC hour and fallback reason ('none' = full path), with the share of that hour's requests.
WITH per_hour AS (
    SELECT
        date_trunc('hour', ts) AS hour,
        coalesce(fallback_reason, 'none') AS reason,
        count(*) AS requests
    FROM analyst.served_requests
    GROUP BY ALL
)
SELECT
    hour,
    reason,
    requests,
    round(requests / sum(requests) OVER (PARTITION BY hour), 4) AS share
FROM per_hour
ORDER BY hour, requests DESC, reason
