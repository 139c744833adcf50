-- name: run_changes
-- version: 1
-- description: What changed from the previous published run to a run (default: the newest, a run stopped by a drift check included): configuration (code version, config fingerprint, every differing setting), input volumes (row_counts), drift check values, statuses and thresholds, and evaluation metrics. A stopped run has drift rows only (docs/monitoring.md).
-- param: run | null | the run id to explain; NULL: the newest run (by run date) in runs or drift
-- param: changed_only | true | true: only rows whose value differs; false: every row
WITH every_run AS (
    SELECT run_id, run_date, created_at, true AS published FROM analyst.runs
    UNION ALL
    SELECT DISTINCT run_id, run_date, CAST(NULL AS TIMESTAMP), false
    FROM analyst.drift
    WHERE run_id NOT IN (SELECT run_id FROM analyst.runs)
),
target AS (
    SELECT * FROM every_run
    WHERE CAST($run AS VARCHAR) IS NULL OR run_id = CAST($run AS VARCHAR)
    -- same date: the published run is the later one (a stopped night fixed and rerun)
    ORDER BY run_date DESC, published DESC, created_at DESC, run_id DESC
    LIMIT 1
),
previous AS (
    SELECT r.run_id
    FROM analyst.runs AS r, target AS t
    WHERE r.run_id <> t.run_id
      AND (r.run_date < t.run_date OR (r.run_date = t.run_date AND r.created_at < t.created_at))
    ORDER BY r.run_date DESC, r.created_at DESC
    LIMIT 1
),
-- (run, aspect, name, number, text): every fact compared, numbers and texts apart
facts AS (
    SELECT run_id, 'config' AS aspect, 'code_version' AS name,
           CAST(NULL AS DOUBLE) AS num, code_version AS txt
    FROM analyst.runs
    UNION ALL
    SELECT run_id, 'config', 'config_fingerprint', NULL, config_fingerprint FROM analyst.runs
    UNION ALL
    SELECT run_id, 'config', 'protocol', NULL, protocol FROM analyst.runs
    UNION ALL
    SELECT r.run_id, 'config', substr(j.fullkey, 3), NULL,
           CASE WHEN j.type = 'VARCHAR' THEN j.atom ->> '$' ELSE CAST(j.atom AS VARCHAR) END
    FROM analyst.runs AS r, json_tree(r.config) AS j
    WHERE j.atom IS NOT NULL
    UNION ALL
    SELECT r.run_id, 'input', j.key, TRY_CAST(CAST(j.atom AS VARCHAR) AS DOUBLE), NULL
    FROM analyst.runs AS r, json_tree(r.row_counts) AS j
    WHERE j.atom IS NOT NULL
    UNION ALL
    SELECT run_id, 'drift', d.check, value, NULL FROM analyst.drift AS d
    UNION ALL
    SELECT run_id, 'drift', d.check || ' status', NULL, status FROM analyst.drift AS d
    UNION ALL
    SELECT run_id, 'drift', d.check || ' threshold', threshold, NULL FROM analyst.drift AS d
    UNION ALL
    SELECT run_id, 'drift', d.check || ' action', NULL, action FROM analyst.drift AS d
    UNION ALL
    SELECT run_id, 'metric', list || ' ' || metric, value, NULL FROM analyst.metrics
),
now_ AS (SELECT f.* FROM facts AS f JOIN target USING (run_id)),
before_ AS (SELECT f.* FROM facts AS f JOIN previous USING (run_id)),
pairs AS (
    SELECT
        coalesce(n.aspect, b.aspect) AS aspect,
        coalesce(n.name, b.name) AS name,
        b.num AS prev_num, n.num AS cur_num,
        -- counts print as 1100, not 1100.0
        coalesce(CASE WHEN b.num = trunc(b.num) AND abs(b.num) < 1e15
                      THEN CAST(CAST(b.num AS BIGINT) AS VARCHAR) ELSE CAST(b.num AS VARCHAR) END,
                 b.txt) AS previous,
        coalesce(CASE WHEN n.num = trunc(n.num) AND abs(n.num) < 1e15
                      THEN CAST(CAST(n.num AS BIGINT) AS VARCHAR) ELSE CAST(n.num AS VARCHAR) END,
                 n.txt) AS current,
        n.aspect IS NOT NULL AS in_current
    FROM now_ AS n
    FULL JOIN before_ AS b ON n.aspect = b.aspect AND n.name = b.name
)
SELECT
    (SELECT run_id FROM target) AS run_id,
    (SELECT run_id FROM previous) AS previous_run_id,
    p.aspect,
    p.name,
    p.previous,
    p.current,
    round(p.cur_num - p.prev_num, 6) AS change,
    round((p.cur_num - p.prev_num) / nullif(abs(p.prev_num), 0), 4) AS relative_change
FROM pairs AS p, target AS t
-- a stopped run has no bundle: no config, input or metric rows to compare
WHERE (p.in_current OR t.published)
  AND (NOT CAST($changed_only AS BOOLEAN) OR p.previous IS DISTINCT FROM p.current)
ORDER BY CASE p.aspect WHEN 'config' THEN 1 WHEN 'input' THEN 2 WHEN 'drift' THEN 3 ELSE 4 END,
         p.name
