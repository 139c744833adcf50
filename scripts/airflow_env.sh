# shellcheck shell=bash
# Environment for running this project's Airflow locally. Source it, don't execute it:
#   source scripts/airflow_env.sh
# Every variable keeps a value already set by the caller, so CI, tests and a real
# deployment override any of them (e.g. AIRFLOW_CONN_SPARK_DEFAULT for a cluster).

_recsys_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

export AIRFLOW_HOME="${AIRFLOW_HOME:-$_recsys_root/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$_recsys_root/dags}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
# SQLite is enough for one machine (standalone, dags test); use Postgres for a real scheduler.
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
# Parsing imports pyspark's provider; the default 30 s is tight on a busy 2-core machine.
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="${AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT:-120}"
export AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT="${AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT:-180}"

# Without a spark_default connection SparkSubmitOperator silently submits to `yarn`.
# Local by default; point it at spark://, yarn or k8s:// by setting this variable (or an
# Airflow connection named spark_default) before sourcing. See docs/airflow.md.
if [ -z "${AIRFLOW_CONN_SPARK_DEFAULT:-}" ]; then
    export AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "local[*]", "extra": {"deploy-mode": "client"}}'
fi

# spark-submit and `recsys` come from the project's virtualenv; drivers/executors use its python.
if [ -d "$_recsys_root/.venv/bin" ]; then
    case ":$PATH:" in
        *":$_recsys_root/.venv/bin:"*) ;;
        *) export PATH="$_recsys_root/.venv/bin:$PATH" ;;
    esac
    export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$_recsys_root/.venv/bin/python}"
    export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$PYSPARK_PYTHON}"
fi
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"

# Where the DAGs read and write when a run's params don't say otherwise.
export RECSYS_DATA="${RECSYS_DATA:-$_recsys_root/data/sample}"
export RECSYS_ARTIFACTS="${RECSYS_ARTIFACTS:-$_recsys_root/artifacts/demo}"
export RECSYS_ALERT_LOG="${RECSYS_ALERT_LOG:-$AIRFLOW_HOME/alerts.log}"

mkdir -p "$AIRFLOW_HOME"
unset _recsys_root
