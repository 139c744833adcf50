#!/usr/bin/env bash
# `make bench`: every benchmark, one after the other (never two at once: they share 2 cores).
# Results land in bench/results/; the README quotes them. Sets are chosen by BENCH_SETS
# (default: ml-latest-small plus the 1M and 5M generated sets; add 20m for the full scale
# run: about 45 minutes on a 2-core machine, see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ROOT=${BENCH_ROOT:-/tmp/recsys-bench}
SETS=${BENCH_SETS:-mls,1m,5m}
mkdir -p bench/results "$ROOT"

# wrk (Debian package) drives the saturation phase of the load test; install it when we can.
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; } || true
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n apt-get install -y -q wrk >/dev/null 2>&1 || true
  fi
  command -v wrk >/dev/null 2>&1 || echo "note: wrk not installed; the load test skips its saturation phase"
fi

step() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "pipeline on ml-latest-small, temporal and random protocols"
$PY bench/pipeline_bench.py --sets mls --root "$ROOT"
$PY bench/pipeline_bench.py --sets mls --root "$ROOT/random" --protocol random
large=${SETS//mls/}
large=${large#,}
if [ -n "$large" ]; then
  step "pipeline scale runs: $large"
  $PY bench/pipeline_bench.py --sets "$large" --root "$ROOT" --config bench/configs/scale.json
fi

step "ANN recall and latency per index type (ml-latest-small bundle, then 200k random items)"
$PY bench/ann_recall.py --artifacts "$ROOT/art-mls" | tee bench/results/ann_recall_mls.txt
$PY bench/ann_recall.py --random-items 200000 --dim 64 | tee bench/results/ann_recall_200k.txt

step "re-ranker scoring latency (torch eager vs ORT fp32 vs ORT int8)"
$PY bench/reranker_latency.py --work "$ROOT/art-mls/work/2016-12-31" \
  --out bench/results/reranker_latency.json

step "service load test (2 workers, ml-latest-small bundle)"
$PY bench/load_test.py --artifacts "$ROOT/art-mls"

step "soak: 10 minutes at 150 req/s, a new bundle every 30 s (SOAK_MINUTES to shorten)"
$PY bench/soak.py --artifacts "$ROOT/art-mls" --minutes "${SOAK_MINUTES:-10}"

step "normal traffic beside slow clients (this worker, then stock gthread)"
$PY bench/slow_clients.py --artifacts "$ROOT/art-mls" --stock

if command -v haproxy >/dev/null 2>&1; then
  step "replicas behind HAProxy: 2 vs 1, direct vs the hop, rolling restart under load"
  $PY bench/replicas_load.py --artifacts "$ROOT/art-mls"
else
  echo "note: haproxy not installed (make setup); skipping bench/replicas_load.py"
fi

if [ -d "$ROOT/data-20m" ]; then
  step "warehouse canned queries on the 20M set"
  $PY bench/warehouse_queries.py --data "$ROOT/data-20m" --work "$ROOT/wh-20m" \
    --out bench/results/warehouse_queries.json
fi
step "done: bench/results/"
