-- name: shadow_overlap
-- version: 1
-- description: Shadow scoring per UTC day and declared shadow: requests ranked, how far the shadow's list agrees with the served one (mean Jaccard@k, mean Kendall tau and Spearman on the common items) and the shadow's latency.
-- param: start | null | first day (YYYY-MM-DD), inclusive; default: all
SELECT
    CAST(ts AS DATE) AS day,
    shadow,
    string_agg(DISTINCT bundle, ',' ORDER BY bundle) AS served_bundles,
    count(*) AS requests,
    round(avg(jaccard), 4) AS mean_jaccard,
    round(avg(kendall_tau), 4) AS mean_kendall_tau,
    round(avg(spearman), 4) AS mean_spearman,
    round(avg(common), 2) AS mean_common,
    round(avg((shadow_fallback_reason IS NOT NULL)::INT), 4) AS shadow_fallback_share,
    round(quantile_cont(shadow_latency_ms, 0.5), 3) AS p50_shadow_ms,
    round(quantile_cont(shadow_latency_ms, 0.99), 3) AS p99_shadow_ms
FROM analyst.shadow
WHERE $start IS NULL OR CAST(ts AS DATE) >= CAST($start AS DATE)
GROUP BY ALL
ORDER BY day, shadow
