-- name: fallback_by_segment
-- version: 1
-- description: For whom we fall back: per user segment (region; 'unknown user' = not in the published users, 'anonymous' = no user id), requests, fallback rate and the most common reason.
SELECT
    CASE
        WHEN s.user_key IS NULL THEN 'anonymous'
        WHEN u.user_key IS NULL THEN 'unknown user'
        ELSE coalesce(u.segment, 'no region')
    END AS segment,
    count(*) AS requests,
    round(avg(CAST(s.is_fallback AS INTEGER)), 4) AS fallback_rate,
    mode(s.fallback_reason) AS top_reason
FROM analyst.served_requests AS s
LEFT JOIN analyst.users AS u USING (user_key)
GROUP BY ALL
ORDER BY requests DESC, segment
