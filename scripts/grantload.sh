#!/usr/bin/env bash
# Load test of `POST /v1/grants` (decide, count and record), loopback only.
#
#   scripts/grantload.sh [DURATION]     # default 10s a scenario
#
# For each store (a fresh SQLite file; PostgreSQL), each decision log
# setting (off; on, `--decision-log FILE`, its default required mode) and
# each subject mix, a fresh release `writ serve --ledger ...` with the
# default pack, then:
#   closed  wrk -t$THREADS -c$CONNECTIONS for DURATION, after a 2 s warm-up
#           (scripts/grants.lua);
#   open    a fixed offered rate (scripts/openloop.rs: latency from each
#           request's due time, so a stall is charged to every request it
#           delays) for OPEN_SECONDS, after a 1 s warm-up at the same rate.
# Subject mixes: `distinct`, a new subject every request (every request is
# allowed and recorded); `cycle`, $CYCLE subjects in turn (each is allowed
# 11 times in the repeat window, then denied by `rate.repeat`: a deny
# records nothing, so this is mostly the counting path under contention
# for the subjects' counter rows).
#
# Environment: STORES (`sqlite postgres`), MIXES (`distinct cycle`), LOGS
# (`off on`), MODES (`closed open`), THREADS (wrk, 1), CONNECTIONS (32),
# CYCLE (300), RATE_SQLITE (2000) and RATE_POSTGRES (5000): the offered
# rates, OPEN_SECONDS (10), OPEN_CONNECTIONS (64), ROUNDS (1), BIN (skip the
# build), BINS (several builds side by side: each scenario of each round is
# run with each of them in turn, its line named by the build's path, so
# what the other processes on the machine do weighs alike on each), SERVER_ARGS (more `writ serve` options), PG_URL (the cluster of
# `scripts/postgres.sh start`; the script uses its own database
# `writ_load` on it, emptied before each PostgreSQL scenario, and never the
# tests' database).
#
# One line a run: requests/s, grants recorded/s (allows: each one a
# committed row), denies/s, latency, and CPU per request of the writ server
# and, on PostgreSQL, of the database's processes (from /proc, so it does
# not depend on what else shares the two cores) and the WAL it wrote per
# request (the whole cluster's) and the grants per commit (the mean size of
# a group), how busy the machine was (all processes:
# the server, the database and the load generator share the two cores) and
# its load average just before the measured part; and, on PostgreSQL, per
# commit (a group), the CPU and the wake-ups (voluntary context switches)
# of writ and of the PostgreSQL processes (all of the cluster's).
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-10s}"
threads="${THREADS:-1}"
connections="${CONNECTIONS:-32}"
cycle="${CYCLE:-300}"
rounds="${ROUNDS:-1}"
open_seconds="${OPEN_SECONDS:-10}"
open_connections="${OPEN_CONNECTIONS:-64}"
read -r -a stores <<<"${STORES:-sqlite postgres}"
read -r -a mixes <<<"${MIXES:-distinct cycle}"
read -r -a logs <<<"${LOGS:-off on}"
read -r -a modes <<<"${MODES:-closed open}"
read -r -a server_args <<<"${SERVER_ARGS:-}"

if [[ " ${modes[*]} " == *" closed "* ]] && ! command -v wrk >/dev/null; then
  echo "grantload: wrk is not installed (apt-get install -y wrk)" >&2
  exit 2
fi
if [ -n "${BINS:-}" ]; then
  read -r -a bins <<<"$BINS"
else
  if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/writ
  fi
  bins=("$BIN")
fi

tmp="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

rustc --edition 2021 -O -o "$tmp/openloop" scripts/openloop.rs
sed 's#"spiffe://prod.acme.io/ns/payments/sa/deployer"#"@SUBJECT@"#' \
  examples/ci-deploy.json >"$tmp/body.json"

pg_url=""
psql_load() { :; }
if [[ " ${stores[*]} " == *" postgres "* ]]; then
  base="${PG_URL:-$(scripts/postgres.sh start | sed -n 's/^export WRIT_TEST_POSTGRES_URL=//p')}"
  pg_url="${base%/*}/writ_load"
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  "$pgbin/psql" -q "${base%/*}/postgres" -tc "SELECT 1 FROM pg_database WHERE datname = 'writ_load'" | grep -q 1 ||
    "$pgbin/psql" -q "${base%/*}/postgres" -c "CREATE DATABASE writ_load" >/dev/null
  psql_load() { "$pgbin/psql" -q "$pg_url" "$@"; }
fi
# Bytes of WAL PostgreSQL has written so far (0 without PostgreSQL).
wal_bytes() {
  if [ -n "$pg_url" ]; then
    psql_load -Atc "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
  else
    echo 0
  fi
}

# Transactions committed in the load's database so far (0 without
# PostgreSQL): each group commit is one, so grants / commits is the mean
# group size. PostgreSQL publishes a backend's counts about once a second
# and when it exits, so read after the server has stopped.
commits() {
  if [ -n "$pg_url" ]; then
    psql_load -Atc "SELECT xact_commit FROM pg_stat_database WHERE datname = 'writ_load'"
  else
    echo 0
  fi
}

# utime + stime of one process, in clock ticks.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# CPU time of the PostgreSQL processes, in clock ticks (0 without): the
# live ones' own (utime + stime) and, through the postmaster's cutime +
# cstime, the backends that exited (writ closes a pooled connection whose
# request was cancelled mid-transaction, as when wrk stops).
pg_ticks() {
  local total=0 pid
  for pid in $(pgrep -x postgres || true); do
    total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# Voluntary context switches (each a thread that blocked and is woken
# later) of one process's threads, and of the PostgreSQL processes alive.
switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {n += $2} END {print n + 0}'
}
pg_switches() {
  local pid
  for pid in $(pgrep -x postgres || true); do
    cat "/proc/$pid/status" 2>/dev/null || true
  done | awk '/^voluntary_ctxt_switches/ {n += $2} END {print n + 0}'
}

# Busy and total jiffies of the whole machine.
machine() {
  awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}

# allows denies
outcomes() {
  curl -sf "http://127.0.0.1:$1/metrics" | awk '
    /^writ_decisions_total\{outcome="allow"\}/ {a = $2}
    /^writ_decisions_total\{outcome="deny"\}/ {d = $2}
    END {print a + 0, d + 0}'
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

seconds_of() {
  case "$1" in
  *ms) awk -v v="${1%ms}" 'BEGIN {print v / 1000}' ;;
  *s) echo "${1%s}" ;;
  *m) echo $((${1%m} * 60)) ;;
  *) echo "$1" ;;
  esac
}

# run STORE MIX LOG MODE
run() {
  local store="$1" mix="$2" log="$3" mode="$4"
  local name="$store/$mix/log-$log/$mode"
  [ "${#bins[@]}" -gt 1 ] && name="$BIN $name"
  local ledger args=()
  if [ "$store" = sqlite ]; then
    rm -f "$tmp"/writ.db*
    ledger="$tmp/writ.db"
  else
    psql_load -c "DROP TABLE IF EXISTS writ_grants, writ_subjects, writ_idempotency, writ_revocations, writ_feed_head, writ_deliveries, writ_migrations" >/dev/null 2>&1
    ledger="$pg_url"
  fi
  if [ "$log" = on ]; then
    rm -f "$tmp/decisions.jsonl"
    args+=(--decision-log "$tmp/decisions.jsonl")
  fi
  local subjects=0
  [ "$mix" = cycle ] && subjects="$cycle"
  local port
  port="$(free_port)"
  "$BIN" serve --addr "127.0.0.1:$port" --ledger "$ledger" "${args[@]}" "${server_args[@]}" \
    2>"$tmp/server.stderr" &
  server=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local url="http://127.0.0.1:$port/v1/grants"
  local rate=0
  if [ "$store" = sqlite ]; then rate="${RATE_SQLITE:-2000}"; else rate="${RATE_POSTGRES:-5000}"; fi
  local stamp
  stamp="$(date +%s%N)"
  # Warm-up: other subjects than the measured run's.
  if [ "$mode" = closed ]; then
    WRIT_BODY="$tmp/body.json" WRIT_SUBJECTS="$subjects" WRIT_RUN="w$stamp" \
      wrk -t"$threads" -c"$connections" -d2s -s scripts/grants.lua "$url" >/dev/null
  else
    "$tmp/openloop" "$port" /v1/grants "$tmp/body.json" "$rate" 1 "$open_connections" \
      "$subjects" "w$stamp" >/dev/null
  fi
  local before pg_before m_before out_before wal_before load_before
  load_before="$(cut -d' ' -f1 /proc/loadavg)"
  wal_before="$(wal_bytes)"
  local commits_before
  commits_before="$(commits)"
  before="$(cpu_ticks "$server")"
  pg_before="$(pg_ticks)"
  local sw_before pgsw_before
  sw_before="$(switches "$server")"
  pgsw_before="$(pg_switches)"
  m_before="$(machine)"
  out_before="$(outcomes "$port")"
  local started ended
  started="$(date +%s.%N)"
  local summary
  if [ "$mode" = closed ]; then
    WRIT_BODY="$tmp/body.json" WRIT_SUBJECTS="$subjects" WRIT_RUN="r$stamp" \
      wrk -t"$threads" -c"$connections" -d"$duration" --latency \
      -s scripts/grants.lua "$url" >"$tmp/wrk.out"
  else
    "$tmp/openloop" "$port" /v1/grants "$tmp/body.json" "$rate" "$open_seconds" \
      "$open_connections" "$subjects" "r$stamp" >"$tmp/open.out"
  fi
  ended="$(date +%s.%N)"
  local after pg_after m_after out_after
  after="$(cpu_ticks "$server")"
  pg_after="$(pg_ticks)"
  local sw_after pgsw_after
  sw_after="$(switches "$server")"
  pgsw_after="$(pg_switches)"
  m_after="$(machine)"
  out_after="$(outcomes "$port")"
  local wal_after
  wal_after="$(wal_bytes)"
  kill -TERM "$server"
  wait "$server" || true
  server=""
  local commits_after
  commits_after="$(commits)"
  # Anything the server said beyond starting and stopping.
  grep -v -e '^writ: serving' -e '^writ: grant ledger' -e '^writ: listening' \
    -e '^writ: shutting down' -e '^writ: stopped' "$tmp/server.stderr" | head -5 |
    sed 's/^/    server: /' || true
  local hz
  hz="$(getconf CLK_TCK)"
  local elapsed
  if [ "$mode" = closed ]; then
    elapsed="$(seconds_of "$duration")"
  else
    elapsed="$(awk -v a="$started" -v b="$ended" 'BEGIN {print b - a}')"
  fi
  read -r a0 d0 <<<"$out_before"
  read -r a1 d1 <<<"$out_after"
  read -r mb0 mt0 <<<"$m_before"
  read -r mb1 mt1 <<<"$m_after"
  local figures
  figures="$(awk -v store="$store" -v a=$((a1 - a0)) -v d=$((d1 - d0)) -v t=$((after - before)) \
    -v p=$((pg_after - pg_before)) -v hz="$hz" -v s="$elapsed" \
    -v busy=$((mb1 - mb0)) -v all=$((mt1 - mt0)) -v wal=$((wal_after - wal_before)) \
    -v load="$load_before" -v commits=$((commits_after - commits_before)) \
    -v sw=$((sw_after - sw_before)) -v pgsw=$((pgsw_after - pgsw_before)) 'BEGIN {
      n = a + d; if (n == 0) n = 1;
      printf "grants %.0f/s denies %.0f/s | writ CPU %.0f us/req", a / s, d / s, t / hz * 1e6 / n;
      if (store == "postgres") {
        c = commits ? commits : 1;
        printf ", postgres CPU %.0f us/req, WAL %.0f B/req, %.1f grants/commit", p / hz * 1e6 / n, wal / n, a / c;
        printf " | a commit: writ %.0f us %.1f wake-ups, postgres %.0f us %.1f wake-ups", t / hz * 1e6 / c, sw / c, p / hz * 1e6 / c, pgsw / c
      }
      printf " | machine %.0f%% busy, load %s before", 100 * busy / (all ? all : 1), load
    }')"
  if [ "$mode" = closed ]; then
    local rps p50 p99 errors
    rps="$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$tmp/wrk.out")"
    p50="$(awk '$1 == "50%" {print $2}' "$tmp/wrk.out")"
    p99="$(awk '$1 == "99%" {print $2}' "$tmp/wrk.out")"
    errors="$(awk '/Non-2xx|Socket errors/ {print}' "$tmp/wrk.out" | tr '\n' ' ')"
    printf '%-30s %6s req/s p50 %-8s p99 %-8s | %s %s\n' "$name" "$rps" "$p50" "$p99" "$figures" "$errors"
  else
    printf '%-30s %s | %s\n' "$name" "$(cat "$tmp/open.out")" "$figures"
  fi
}

echo "writ /v1/grants load: closed wrk -t$threads -c$connections $duration; open ${RATE_SQLITE:-2000}/s (SQLite), ${RATE_POSTGRES:-5000}/s (PostgreSQL) over $open_connections connections for ${open_seconds}s; $(nproc) cores shared by server, database and load generator; load $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq 1 "$rounds"); do
  for store in "${stores[@]}"; do
    for mix in "${mixes[@]}"; do
      for log in "${logs[@]}"; do
        for mode in "${modes[@]}"; do
          for BIN in "${bins[@]}"; do
            run "$store" "$mix" "$log" "$mode"
          done
        done
      done
    done
  done
done
