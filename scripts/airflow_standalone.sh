#!/usr/bin/env bash
# `make airflow`: Airflow 3 standalone (api-server + scheduler + dag-processor + triggerer)
# on this project's DAGs, with SQLite under .airflow/. UI on http://127.0.0.1:${AIRFLOW_PORT:-8080};
# the admin password is printed at start and kept in
# $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/airflow_env.sh
source scripts/airflow_env.sh

command -v airflow >/dev/null || { echo "ERROR: airflow not found; run 'make setup' first." >&2; exit 1; }
command -v java >/dev/null || { echo "ERROR: java not found: Spark stages need Java 17+." >&2; exit 1; }

# Not 8793/8794: the scheduler's and triggerer's log servers listen there, and tasks that
# reach the log server instead of the execution API fail with "Not Found".
export AIRFLOW__API__PORT="${AIRFLOW_PORT:-${AIRFLOW__API__PORT:-8080}}"
case "$AIRFLOW__API__PORT" in
    8793 | 8794) echo "ERROR: port $AIRFLOW__API__PORT is Airflow's log server port; pick another." >&2; exit 1 ;;
esac
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://127.0.0.1:$AIRFLOW__API__PORT}"
# Bind to loopback only: this is a single-user development instance.
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
# New DAGs start paused: unpausing recsys_nightly schedules yesterday's run at once
# (catchup=False still runs the latest interval), so that stays a deliberate step.
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-True}"

echo "AIRFLOW_HOME=$AIRFLOW_HOME  DAGs=$AIRFLOW__CORE__DAGS_FOLDER"
echo "data=$RECSYS_DATA  artifacts=$RECSYS_ARTIFACTS  spark_default=$AIRFLOW_CONN_SPARK_DEFAULT"
echo "Unpause and trigger:  airflow dags unpause recsys_nightly && airflow dags trigger recsys_nightly --logical-date 2026-01-01T00:00:00+00:00"
exec airflow standalone
