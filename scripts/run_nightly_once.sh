#!/usr/bin/env bash
# `make demo`: one nightly run through Airflow, no scheduler needed:
#   scripts/run_nightly_once.sh [YYYY-MM-DD] [extra `airflow dags test` args, e.g. --conf '{...}']
# Uses RECSYS_DATA / RECSYS_ARTIFACTS (defaults in scripts/airflow_env.sh). Exits non-zero,
# with the failing task's reason in the output, when the run fails (e.g. the quality gate).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/airflow_env.sh
source scripts/airflow_env.sh

RUN_DATE="${1:-${DEMO_DATE:-2026-01-01}}"
shift || true
# A demo should not sit 6 hours waiting for data that isn't there.
export RECSYS_INPUT_WAIT_SECONDS="${RECSYS_INPUT_WAIT_SECONDS:-30}"
export RECSYS_INPUT_POKE_SECONDS="${RECSYS_INPUT_POKE_SECONDS:-5}"

command -v airflow >/dev/null || { echo "ERROR: airflow not found; run 'make setup' first." >&2; exit 1; }
command -v java >/dev/null || { echo "ERROR: java not found: Spark stages need Java 17+." >&2; exit 1; }

echo "== airflow db migrate ($AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)"
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || {
    tail -50 "$AIRFLOW_HOME/db-migrate.log" >&2
    exit 1
}
echo "== airflow dags test recsys_nightly $RUN_DATE  (data=$RECSYS_DATA artifacts=$RECSYS_ARTIFACTS)"
start=$(date +%s)
status=0
airflow dags test recsys_nightly "$RUN_DATE" "$@" || status=$?
echo "== recsys_nightly $RUN_DATE finished in $(( $(date +%s) - start ))s with exit code $status"
if [ -f "$RECSYS_ARTIFACTS/CURRENT" ]; then
    echo "== CURRENT -> $(cat "$RECSYS_ARTIFACTS/CURRENT")"
fi
if [ "$status" -ne 0 ] && [ -s "$RECSYS_ALERT_LOG" ]; then
    echo "== last alert ($RECSYS_ALERT_LOG):"
    tail -1 "$RECSYS_ALERT_LOG"
fi
exit "$status"
