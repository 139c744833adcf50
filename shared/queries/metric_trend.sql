-- name: metric_trend
-- version: 1
-- description: One metric of one list across every run ever published (history survives pruning), with the change from the previous run.
-- param: metric | ndcg@10 | metric name (see SELECT DISTINCT metric FROM metrics)
-- param: list | merged | list name (merged, popularity, ann, cooc, popular, index, ...)
SELECT
    r.run_date,
    m.run_id,
    m.value,
    m.value - lag(m.value) OVER (ORDER BY r.created_at, m.run_id) AS change,
    r.is_current
FROM analyst.metrics AS m
JOIN analyst.runs AS r USING (run_id)
WHERE m.metric = $metric AND m.list = $list
ORDER BY r.created_at, m.run_id
