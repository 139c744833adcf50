# Everything a fresh machine needs: `make demo`, `make test`, `make test-fast`, `make setup`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ART ?= artifacts/demo
DEMO_DATA ?= data/sample
AIRFLOW_HOME ?= $(CURDIR)/.airflow
DEMO_DATE ?= 2026-01-01
PORT ?= 8000
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(CURDIR)/$(BIN)/python

.PHONY: cluster-up cluster-down cluster-status cluster-nightly cluster-airflow setup redis-tools native-blas monitoring-tools haproxy-tools postgres-tools airflow-prod-up airflow-prod-down airflow-prod-status test test-fast lint typecheck demo airflow serve bench bench-tools bench-quality lock clean check-java

setup: $(STAMP) redis-tools monitoring-tools haproxy-tools native-blas postgres-tools

# $(call debian_tool,CHECK,PACKAGE,HINT): run CHECK; when it fails, install the Debian
# PACKAGE if apt-get is present and we are root, else print how (HINT) and go on: the
# tests that need the tool skip, nothing else does.
define debian_tool
	@$(1) >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y $(2) || { apt-get update && apt-get install -y $(2); }; \
	  else echo "$(2) is missing and cannot be installed here (needs apt-get and root): $(3)"; fi; }
endef

# The real-time store's Redis backend is tested against a real redis-server (Debian
# package), installed here when apt-get is present and we are root; elsewhere install it
# yourself (`apt-get install redis-server`, `brew install redis`) or the Redis tests skip.
# The service itself needs no Redis: the default store is SQLite.
redis-tools:
	$(call debian_tool,command -v redis-server,redis-server,install it (apt-get install redis-server / brew install redis); the Redis store tests skip)

# The Prometheus rules (online/monitoring/recsys_rules.yml) are checked and unit-tested with
# promtool, from the Debian package prometheus (2.42 on bookworm), installed here when
# apt-get is present and we are root; elsewhere install Prometheus yourself (`apt-get
# install prometheus`, `brew install prometheus`) or the promtool tests skip. Only promtool
# is used: the package's prometheus service is not needed (and not started in containers).
monitoring-tools:
	$(call debian_tool,command -v promtool,prometheus,install it (apt-get install prometheus / brew install prometheus); the promtool tests skip)

# `recsys replicas` puts HAProxy (Debian bookworm's 2.6) in front of the replicas; its e2e
# tests run against the real one. Installed here when apt-get is present and we are root;
# elsewhere install it yourself (`apt-get install haproxy`, `brew install haproxy`) or the
# replica tests skip. A single `recsys serve` needs no HAProxy.
haproxy-tools:
	$(call debian_tool,command -v haproxy,haproxy,install it (apt-get install haproxy / brew install haproxy); the replica tests skip)

# Spark MLlib (ALS) calls BLAS through netlib, which loads a native libblas.so.3 when there is
# one (JNIBLAS) and falls back to pure Java otherwise. Debian's OpenBLAS is installed here
# when apt-get is present and we are root; elsewhere install it yourself (`apt-get install
# libopenblas0-pthread`, `dnf install openblas`). The run logs and records which one loaded.
native-blas:
	$(call debian_tool,{ ls /usr/lib/*/libblas.so.3 || ls /usr/lib64/libblas.so.3; },libopenblas0-pthread,install a native libblas.so.3 (apt-get install libopenblas0-pthread / dnf install openblas); Spark ALS runs on Java BLAS meanwhile)

# The production-shaped Airflow (`make airflow-prod-up`) keeps its metadata in a PostgreSQL
# cluster of its own, started from the server binaries of Debian's postgresql package (15 on
# bookworm), installed here when apt-get is present and we are root; elsewhere install
# PostgreSQL yourself (`apt-get install postgresql`, `brew install postgresql@15`) or the
# scheduler + PostgreSQL test skips. Debian's own cluster/service is not used.
postgres-tools:
	$(call debian_tool,{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; },postgresql,install it (apt-get install postgresql / brew install postgresql@15); the Airflow scheduler + PostgreSQL test skips)

check-java:
	@command -v java >/dev/null 2>&1 || { echo "ERROR: java not found. Spark 4 needs Java 17+ (apt-get install openjdk-17-jre-headless)."; exit 1; }
	@java -version 2>&1 | head -1 | grep -Eq '"(1[7-9]|[2-9][0-9])' || { echo "ERROR: Java 17+ required, found: $$(java -version 2>&1 | head -1)"; exit 1; }

# torch first, pinned, so that nothing pulls a multi-GB CUDA build (see PITFALLS).
$(STAMP): pyproject.toml constraints.txt | check-java
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[batch,serve,airflow,dev]"
	@# The Spark provider pulls pyspark-client, whose python files overwrite full pyspark's
	@# and no longer match its jars: put the full pyspark back on top.
	$(BIN)/pip install -q --force-reinstall --no-deps -c constraints.txt pyspark
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check shared batch online dags tests bench
	$(BIN)/mypy shared online

# Everything, as CI runs it: Spark, the pipeline, gunicorn, `airflow dags test` (~16 min).
test: setup lint
	$(BIN)/python -m pytest -q --durations=20 tests

# The inner loop: lint, type-check and every test that starts neither Spark nor a server
# (markers `spark` and `e2e`, see pyproject.toml; tests/conftest.py marks any test using
# the Spark session fixture). Under a minute on 2 cores.
FAST_TESTS := not spark and not e2e
test-fast: setup lint
	$(BIN)/python -m pytest -q -m "$(FAST_TESTS)" tests

demo: setup
	bash scripts/demo.sh

# A Spark standalone cluster on this machine (a master and two 1-core workers, docs/cluster.md)
# and the nightly pipeline on it; `make cluster-down` stops every process it started.
CLUSTER_DIR ?= $(CURDIR)/.spark-cluster
cluster-up: setup
	$(BIN)/recsys cluster start --dir $(CLUSTER_DIR)

cluster-status:
	$(BIN)/recsys cluster status --dir $(CLUSTER_DIR)

cluster-nightly: setup
	$(BIN)/recsys batch run --data $(DEMO_DATA) --artifacts $(ART) --run-date $(DEMO_DATE) \
	  --spark-master "$$($(BIN)/recsys cluster url --dir $(CLUSTER_DIR))"

# The nightly DAG once through Airflow (`airflow dags test`), its Spark tasks spark-submitted
# to that cluster: spark_default = the master's host and port, driver on this machine.
cluster-airflow: setup
	url="$$($(BIN)/recsys cluster url --dir $(CLUSTER_DIR))" && \
	AIRFLOW_CONN_SPARK_DEFAULT="{\"conn_type\": \"spark\", \"host\": \"$${url%:*}\", \"port\": $${url##*:}, \"extra\": {\"deploy-mode\": \"client\"}}" \
	  RECSYS_DATA=$(DEMO_DATA) RECSYS_ARTIFACTS=$(ART) bash scripts/run_nightly_once.sh $(DEMO_DATE)

cluster-down:
	$(BIN)/recsys cluster stop --dir $(CLUSTER_DIR)

airflow: setup
	bash scripts/airflow_standalone.sh

# Airflow as in production (docs/airflow.md, "Production: scheduler + PostgreSQL"): its own
# PostgreSQL under .airflow-prod/pg, LocalExecutor, api-server + scheduler + dag-processor.
airflow-prod-up: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/airflow_prod.sh up

airflow-prod-status:
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/airflow_prod.sh status

airflow-prod-down:
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/airflow_prod.sh down

serve: setup
	$(BIN)/recsys serve --artifacts $(ART) --port $(PORT)

# The load test's saturation phases and the soak need wrk (Debian package): installed here
# when apt-get is present and we are root; otherwise install it yourself (`apt-get install
# wrk`, `brew install wrk`) or the load test skips its saturation phases.
bench: setup bench-tools
	bash bench/run_all.sh

bench-tools:
	$(call debian_tool,command -v wrk,wrk,install it (apt-get install wrk / brew install wrk); the load test skips saturation)

lock:
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/' > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) artifacts .airflow .airflow-prod

# Ranking quality on an external hold-out (docs/quality.md): ml-latest-small split per user,
# both protocols, default config and the protocol-matched one; results in bench/results/quality/.
QUALITY_DATA ?= $(CURDIR)/../shared/datasets/ml-latest-small
QUALITY_WORK ?= /tmp/recsys-quality
QUALITY_OUT ?= bench/results/quality
bench-quality: setup
	@for proto in random temporal; do \
	  echo "{\"split\": {\"protocol\": \"$$proto\"}}" > $(QUALITY_WORK)-$$proto.json; \
	  nice -n 19 $(BIN)/recsys evaluate-holdout --data $(QUALITY_DATA) --protocol $$proto \
	    --work $(QUALITY_WORK)/$$proto-default --out $(QUALITY_OUT) --name $$proto-default || exit 1; \
	  nice -n 19 $(BIN)/recsys evaluate-holdout --data $(QUALITY_DATA) --protocol $$proto \
	    --config $(QUALITY_WORK)-$$proto.json --work $(QUALITY_WORK)/$$proto-matched \
	    --out $(QUALITY_OUT) --name $$proto-matched || exit 1; \
	done
