-- name: feature_stats_train_vs_live
-- version: 1
-- description: Per served bundle and feature (and the model score), the live values the service sampled (feature_skew) against the bundle's batch-side statistics (feature_stats, sample training or candidates): rows, means, standard deviations, medians, 5th/95th percentiles, null shares, and the mean shift in training standard deviations.
-- param: start | null | first day (YYYY-MM-DD) of live samples, inclusive; default: all
-- param: sample | training | the bundle's reference sample: training or candidates
WITH live AS (
    UNPIVOT (
        SELECT * FROM analyst.feature_skew
        WHERE $start IS NULL OR CAST(ts AS DATE) >= CAST($start AS DATE)
    )
    ON COLUMNS(lambda c: c NOT IN ('ts', 'bundle', 'scorer', 'sample_id', 'candidates', 'date'))
    INTO NAME feature VALUE value
),
live_stats AS (
    SELECT
        bundle,
        feature,
        count(*) FILTER (WHERE NOT isnan(value)) AS live_rows,
        avg(value) FILTER (WHERE NOT isnan(value)) AS live_mean,
        stddev_pop(value) FILTER (WHERE NOT isnan(value)) AS live_std,
        quantile_cont(value, 0.05) FILTER (WHERE NOT isnan(value)) AS live_p05,
        quantile_cont(value, 0.5) FILTER (WHERE NOT isnan(value)) AS live_p50,
        quantile_cont(value, 0.95) FILTER (WHERE NOT isnan(value)) AS live_p95,
        avg(isnan(value)::INT) AS live_null_share
    FROM live
    GROUP BY ALL
)
SELECT
    l.bundle,
    l.feature,
    s.rows AS ref_rows,
    l.live_rows,
    round(s.mean, 4) AS ref_mean,
    round(l.live_mean, 4) AS live_mean,
    round(s.std, 4) AS ref_std,
    round(l.live_std, 4) AS live_std,
    round(s.p50, 4) AS ref_p50,
    round(l.live_p50, 4) AS live_p50,
    round(s.p05, 4) AS ref_p05,
    round(l.live_p05, 4) AS live_p05,
    round(s.p95, 4) AS ref_p95,
    round(l.live_p95, 4) AS live_p95,
    round(s.null_share, 4) AS ref_null_share,
    round(l.live_null_share, 4) AS live_null_share,
    round((l.live_mean - s.mean) / nullif(s.std, 0), 3) AS mean_shift_sd
FROM live_stats l
LEFT JOIN analyst.feature_stats s
    ON s.run_id = l.bundle AND s.feature = l.feature AND s.sample = $sample
WHERE l.live_rows > 0
ORDER BY l.bundle, abs(coalesce((l.live_mean - s.mean) / nullif(s.std, 0), 0)) DESC, l.feature
