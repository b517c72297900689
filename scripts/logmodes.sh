#!/bin/sh
# The decision log's modes side by side: a fresh release server per mode,
# the default pack, examples/ci-deploy.json on POST /v1/decide, a closed
# loop of CONNECTIONS keep-alive clients (scripts/closedloop.rs), 1000
# requests of warm-up, then REQUESTS measured. The log goes to TMPDIR.
#
#   cargo build --release && scripts/logmodes.sh
#   ROUNDS=3 CONNECTIONS=8 REQUESTS=20000 scripts/logmodes.sh
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-8}
REQUESTS=${REQUESTS:-20000}
PORT=${PORT:-18471}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rustc --edition 2021 -O -o "$tmp/closedloop" scripts/closedloop.rs
log="$tmp/decisions.jsonl"
round=1
while [ "$round" -le "$ROUNDS" ]; do
  for mode in none best-effort required required+sync; do
    rm -f "$log"
    case $mode in
      none) set -- ;;
      best-effort) set -- --decision-log "$log" --decision-log-required=false ;;
      required) set -- --decision-log "$log" ;;
      required+sync) set -- --decision-log "$log" --decision-log-sync ;;
    esac
    target/release/writ serve --addr "127.0.0.1:$PORT" "$@" 2>/dev/null &
    pid=$!
    sleep 0.5
    "$tmp/closedloop" "$PORT" /v1/decide examples/ci-deploy.json "$CONNECTIONS" 1000 >/dev/null
    printf '%-14s ' "$mode"
    "$tmp/closedloop" "$PORT" /v1/decide examples/ci-deploy.json "$CONNECTIONS" "$REQUESTS"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
  round=$((round + 1))
done
