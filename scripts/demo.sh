#!/usr/bin/env bash
# `make demo`: sample data -> one nightly run through Airflow (local Spark) -> service up ->
# example requests. Re-running it reuses the sample data and publishes again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN="$ROOT/.venv/bin"
DATA="${DEMO_DATA:-$ROOT/data/sample}"
ART="${ART:-$ROOT/artifacts/demo}"
DATE="${DEMO_DATE:-2026-01-01}"
PORT="${PORT:-8000}"
mkdir -p "$ROOT/.demo"

step() { printf '\n==> %s\n' "$*"; }

if [ ! -f "$DATA/interactions.parquet" ]; then
  step "generating sample data in $DATA"
  "$BIN/recsys" data generate --out "$DATA" --users 3000 --items 1500 --events 150000 \
    --seed 1 --end-date 2025-12-31 --bad-share 0.002
fi

step "running the nightly DAG once through Airflow for $DATE (Spark local[*])"
RECSYS_DATA="$DATA" RECSYS_ARTIFACTS="$ART" bash scripts/run_nightly_once.sh "$DATE"

step "published bundle: $(cat "$ART/CURRENT")"
"$BIN/recsys" sql --artifacts "$ART" \
  "SELECT list, metric, round(value, 4) AS value FROM metrics JOIN runs USING (run_id) WHERE is_current AND metric = 'ndcg@10' ORDER BY value DESC"

if [ -f "$ROOT/.demo/serve.pid" ] && kill -0 "$(cat "$ROOT/.demo/serve.pid")" 2>/dev/null; then
  step "stopping the previous demo service"
  kill "$(cat "$ROOT/.demo/serve.pid")" || true
  sleep 2
fi
step "starting the service on 127.0.0.1:$PORT (log: .demo/serve.log)"
RECSYS_ADMIN_TOKEN="${RECSYS_ADMIN_TOKEN:-demo-token}" nohup "$BIN/recsys" serve --artifacts "$ART" \
  --host 127.0.0.1 --port "$PORT" --workers 2 > "$ROOT/.demo/serve.log" 2>&1 &
echo $! > "$ROOT/.demo/serve.pid"
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" > /dev/null 2>&1 && break
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/readyz" > /dev/null || { echo "service did not become ready; see .demo/serve.log"; exit 1; }

USER_ID=$("$BIN/recsys" sql --artifacts "$ART" --restricted --format csv "SELECT user_id FROM recommendations LIMIT 1" | tail -1)
ITEM_ID=$("$BIN/recsys" sql --artifacts "$ART" --format csv "SELECT item_id FROM popular WHERE rank = 1 LIMIT 1" | tail -1)
run() { printf '\n$ %s\n' "$*"; eval "$@"; echo; }
step "example requests"
run "curl -s -X POST http://127.0.0.1:$PORT/v1/recommendations -H 'Content-Type: application/json' -d '{\"user_id\": \"$USER_ID\", \"k\": 5}'"
run "curl -s -X POST http://127.0.0.1:$PORT/v1/recommendations -H 'Content-Type: application/json' -d '{\"user_id\": \"someone-new\", \"k\": 5, \"context\": {\"recent_item_ids\": [\"$ITEM_ID\"]}}'"
run "curl -s 'http://127.0.0.1:$PORT/v1/items/$ITEM_ID/similar?k=5'"
run "curl -s -X POST http://127.0.0.1:$PORT/v1/recommendations -H 'Content-Type: application/json' -d '{\"user_id\": \"x\", \"k\": 500}'"
step "feedback: the user plays the first item shown, and the next answer has moved on"
SHOWN=$(curl -s -X POST "http://127.0.0.1:$PORT/v1/recommendations" -H 'Content-Type: application/json' -d "{\"user_id\": \"$USER_ID\", \"k\": 5}")
REQUEST_ID=$(printf '%s' "$SHOWN" | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["request_id"])')
PLAYED=$(printf '%s' "$SHOWN" | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["items"][0]["item_id"])')
run "curl -s -X POST http://127.0.0.1:$PORT/v1/events -H 'Content-Type: application/json' -d '{\"events\": [{\"event_id\": \"demo-click-1\", \"type\": \"click\", \"user_id\": \"$USER_ID\", \"item_id\": \"$PLAYED\", \"request_id\": \"$REQUEST_ID\"}, {\"event_id\": \"demo-play-1\", \"type\": \"play\", \"user_id\": \"$USER_ID\", \"item_id\": \"$PLAYED\", \"request_id\": \"$REQUEST_ID\"}]}'"
run "curl -s -X POST http://127.0.0.1:$PORT/v1/recommendations -H 'Content-Type: application/json' -d '{\"user_id\": \"$USER_ID\", \"k\": 5}'"
echo "(item $PLAYED, played a moment ago, is no longer in the list; tonight's run trains on the play)"
run "curl -s -X POST http://127.0.0.1:$PORT/v1/events -H 'Content-Type: application/json' -d '{\"events\": [{\"type\": \"share\", \"user_id\": \"$USER_ID\", \"item_id\": \"$PLAYED\"}]}'"
step "the service keeps running (pid $(cat "$ROOT/.demo/serve.pid")): open http://127.0.0.1:$PORT/ ; stop it with: kill \$(cat .demo/serve.pid)"
