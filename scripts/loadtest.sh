#!/usr/bin/env bash
# Bounded load test of `writ serve`, loopback only, with wrk.
#
#   scripts/loadtest.sh [DURATION]      # default 10s per scenario
#
# Scenarios, each a fresh server, a 2 s warm-up, then DURATION of load:
#   decide           POST /v1/decide, default pack, examples/ci-deploy.json
#                    (allow), workers pinned (--pin-workers)
#   decide-unpinned  the same, workers left to the kernel's scheduler
#   decide+log       decide with --decision-log to a temporary file
#   authzen          POST /access/v1/evaluation, the Todo policy, one
#                    evaluation, workers pinned
# Environment: THREADS (wrk threads, 1: on two cores, one for the load and
# the other for the server), CONNECTIONS (32), ROUNDS (1: how many times to
# run the scenarios, one after the other), BIN (skip the release build and
# use this binary). Prints one summary line a scenario:
# throughput, latency percentiles, and the server's CPU time per decision
# (from /proc), which does not depend on what else shares the machine.
#
#   MODE=open scripts/loadtest.sh [DURATION]
#
# Open loop instead (scripts/openloop.rs, no wrk needed): `writ serve` with
# default flags (not pinned), the default pack, a mix of five requests in
# turn (two allowed, one denied by a forbid, one denied by default, one
# refused as invalid with 400), every answer checked (decision, or error
# body, and status). Runs one scenario per rate in RATES (default
# "40000 80000": the fixed rate of the goal, then more than the server can
# take, whose achieved rate is its capacity), OPEN_CONNECTIONS (64)
# connections; prints openloop's line, the server's CPU per answer and the
# generator's (it shares the cores). PROTOCOLS="http1 h2" runs each rate
# over HTTP/1.1 and then over HTTP/2 (cleartext, prior knowledge) on
# H2_CONNECTIONS (4) connections, many requests in flight on each.
# OPENLOOP: a prebuilt generator instead of compiling scripts/openloop.rs.
# COUNTS: perf events to count on the server during the measured run,
# printed per answer, e.g.
#   COUNTS=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_writev,context-switches
# PROFILE: instead of COUNTS, a path prefix: `perf record -g` (software
# cpu-clock) of the server during the measured run, written to
# PROFILE.PROTOCOL.RATE (read with `perf report -i`).
# PAIR: another writ binary to run side by side with BIN, at the same time
# and the same rate, one generator each (so each server is offered RATE,
# the machine twice that): on a machine shared with other work, the two
# meet the same noise, and their CPU per answer can be compared where
# runs one after the other cannot. Prints a line for each, `bin` and
# `pair`, with the server's context switches per answer (perf).
# Every open-loop line also gives the time the server's threads were
# runnable but waiting for a CPU, per answer (/proc/PID/task/*/schedstat),
# and openloop's split of the latency into the server's part and the
# generator's (scripts/openloop.rs). OPENLOOP_SLICE_US is passed to the
# generators (a shorter scheduler slice for them; scripts/openloop.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-10s}"
threads="${THREADS:-1}"
connections="${CONNECTIONS:-32}"
rounds="${ROUNDS:-1}"

if [ "${MODE:-closed}" != open ] && ! command -v wrk >/dev/null; then
  echo "loadtest: wrk is not installed (apt-get install -y wrk)" >&2
  exit 2
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=target/release/writ
fi

tmp="$(mktemp -d)"
server=""
pair_pid=""
cleanup() {
  local pid
  for pid in $server $pair_pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# utime + stime of a process, in clock ticks.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# stime alone (kernel time) of a process, in clock ticks.
sys_ticks() {
  awk '{print $15}' "/proc/$1/stat"
}

# Nanoseconds the threads of a process have spent runnable but waiting
# for a CPU (the second field of each thread's schedstat; the threads
# alive now).
run_wait() {
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {printf "%.0f\n", s}'
}

decisions() {
  curl -sf "http://127.0.0.1:$1/metrics" | awk '/^writ_decisions_total/ {s += $2} END {print s + 0}'
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cat >"$tmp/todo.json" <<'JSON'
{"subject": {"type": "user", "id": "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"},
 "action": {"name": "can_update_todo"},
 "resource": {"type": "todo", "id": "7240d0db-8ff0-41ec-98b2-34a096273b91",
              "properties": {"ownerID": "morty@the-citadel.com"}}}
JSON

# scenario NAME PATH BODY -- SERVER ARGS...
scenario() {
  local name="$1" path="$2" body="$3"
  shift 4
  local port
  port="$(free_port)"
  "$BIN" serve --addr "127.0.0.1:$port" "$@" 2>"$tmp/$name.stderr" &
  server=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local url="http://127.0.0.1:$port$path"
  WRIT_BODY="$body" wrk -t"$threads" -c"$connections" -d2s -s scripts/loadtest.lua "$url" >/dev/null
  local before after
  before="$(cpu_ticks "$server")"
  local decisions_before
  decisions_before="$(decisions "$port")"
  WRIT_BODY="$body" wrk -t"$threads" -c"$connections" -d"$duration" --latency \
    -s scripts/loadtest.lua "$url" >"$tmp/$name.wrk"
  after="$(cpu_ticks "$server")"
  local decided
  decided=$(( $(decisions "$port") - decisions_before ))
  kill -TERM "$server"
  wait "$server" || true
  server=""
  local rps p50 p99 errors
  rps="$(awk '/^Requests\/sec/ {print $2}' "$tmp/$name.wrk")"
  p50="$(awk '$1 == "50%" {print $2}' "$tmp/$name.wrk")"
  p99="$(awk '$1 == "99%" {print $2}' "$tmp/$name.wrk")"
  errors="$(awk '/Non-2xx|Socket errors/ {print}' "$tmp/$name.wrk" | tr '\n' ' ')"
  # Server CPU (user + system) per decision: what the server costs,
  # whatever else the two cores were doing.
  local us_per
  us_per="$(awk -v t=$(( after - before )) -v hz="$(getconf CLK_TCK)" -v n="$decided" \
    'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "?" }')"
  printf '%-16s %10s req/s  p50 %-9s p99 %-9s server CPU %s us/decision (%s decisions) %s\n' \
    "$name" "$rps" "$p50" "$p99" "$us_per" "$decided" "$errors"
}

# The open-loop mix: bodies and what each must be answered with.
write_mix() {
  cp examples/ci-deploy.json "$tmp/allow.json"
  cat >"$tmp/forbid.json" <<'JSON'
{"subject":{"id":"spiffe://prod.acme.io/ns/payments/sa/legacy","kind":"service","auth":"static-secret","attested":true,"owner":"payments","environment":"prod"},"action":"read","resource":{"id":"db://payments/orders","kind":"database","owner":"payments"},"intent":{"task":"report","id":"job-7"},"environment":{"name":"prod","broker":"vault","time":"2026-11-22T10:00:00Z"},"sensitivity":"confidential","requested":{"scope":["read:db://payments/orders"],"ttl":900},"context":{"recent_issuances":0}}
JSON
  cat >"$tmp/deny.json" <<'JSON'
{"subject":{"id":"spiffe://prod.acme.io/ns/search/sa/indexer","kind":"workload","auth":"spiffe","attested":true,"owner":"search","environment":"prod"},"action":"read","resource":{"id":"db://payments/orders","kind":"database","owner":"payments"},"intent":{"task":"index","id":"job-9"},"environment":{"name":"prod","broker":"vault","time":"2026-11-22T10:00:00Z"},"sensitivity":"internal","requested":{"scope":["read:db://payments/orders"],"ttl":900},"context":{"recent_issuances":0}}
JSON
  cat >"$tmp/agent.json" <<'JSON'
{"subject":{"id":"spiffe://prod.acme.io/ns/support/sa/assistant","kind":"agent","auth":"oidc","attested":true,"owner":"support","environment":"prod"},"action":"invoke","resource":{"id":"tool://support/refund-lookup","kind":"tool","owner":"support"},"intent":{"task":"answer-ticket","id":"ticket-4411","objective":"look up a refund","actions":["invoke"]},"environment":{"name":"prod","broker":"agent-gateway","time":"2026-11-22T10:00:00Z"},"sensitivity":"internal","requested":{"scope":["invoke:tool://support/refund-lookup"],"ttl":600},"context":{"recent_issuances":0}}
JSON
  cat >"$tmp/bad.json" <<'JSON'
{"subject":{"id":"spiffe://prod.acme.io/ns/payments/sa/deployer","kind":"ci"},"action":"deploy","resource":{"id":"k8s://prod-eu/payments","kind":"cluster"},"requested":{"scope":["deploy:k8s://prod-eu/payments"],"ttl":0}}
JSON
  echo "$tmp/allow.json=allow,$tmp/forbid.json=deny,$tmp/deny.json=deny,$tmp/agent.json=allow,$tmp/bad.json=400"
}

# open_scenario RATE SECONDS PROTOCOL: a fresh default server, 2 s of
# warm-up at the rate, then SECONDS of it, measured.
open_scenario() {
  local rate="$1" seconds="$2" protocol="$3" port mix
  port="$(free_port)"
  mix="$(write_mix)"
  "$BIN" serve --addr "127.0.0.1:$port" 2>"$tmp/open.stderr" &
  server=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local connections="${OPEN_CONNECTIONS:-64}"
  if [ "$protocol" = h2 ]; then
    connections="${H2_CONNECTIONS:-4}"
  fi
  "$tmp/openloop" "$port" /v1/decide "$mix" "$rate" 2 "$connections" 0 warm "$protocol" >/dev/null
  local before after line status=0 load
  load="$(cut -d' ' -f1 /proc/loadavg)"
  before="$(cpu_ticks "$server")"
  local sys_before sys_after
  sys_before="$(sys_ticks "$server")"
  local wait_before wait_after
  wait_before="$(run_wait "$server")"
  # The generator's own CPU (user + system, as its parent sees it): it
  # shares the cores with the server.
  local TIMEFORMAT='%U %S' perf=""
  if [ -n "${COUNTS:-}" ]; then
    perf stat -x, -o "$tmp/perf.csv" -e "$COUNTS" -p "$server" &
    perf=$!
  elif [ -n "${PROFILE:-}" ]; then
    perf record -q -F 4999 -e cpu-clock -g -o "$PROFILE.$protocol.$rate" -p "$server" 2>/dev/null &
    perf=$!
  fi
  { time "$tmp/openloop" "$port" /v1/decide "$mix" "$rate" "$seconds" "$connections" 0 run \
      "$protocol" >"$tmp/open.line" 2>"$tmp/open.err"; } 2>"$tmp/open.time" || status=$?
  after="$(cpu_ticks "$server")"
  sys_after="$(sys_ticks "$server")"
  wait_after="$(run_wait "$server")"
  if [ -n "$perf" ]; then
    kill -INT "$perf"
    wait "$perf" || true
  fi
  line="$(cat "$tmp/open.line")"
  cat "$tmp/open.err" >&2
  kill -TERM "$server"
  wait "$server" || true
  server=""
  local answered us_per gen_per
  answered="${line%% requests*}"
  us_per="$(awk -v t=$(( after - before )) -v hz="$(getconf CLK_TCK)" -v n="$answered" \
    'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "?" }')"
  gen_per="$(awk -v n="$answered" '{ if (n > 0) printf "%.1f", ($1 + $2) * 1e6 / n; else print "?" }' "$tmp/open.time")"
  local sys_per
  sys_per="$(awk -v t=$(( sys_after - sys_before )) -v hz="$(getconf CLK_TCK)" -v n="$answered" \
    'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "?" }')"
  local waited
  waited="$(awk -v w=$(( wait_after - wait_before )) -v n="$answered" \
    'BEGIN { if (n > 0) printf "%.1f", w / 1e3 / n; else print "?" }')"
  printf 'open %-5s %6s/s x%-3s %s | server CPU %s us/answer (system %s), runnable but waiting %s us/answer, generator CPU %s us/request, load %s\n' \
    "$protocol" "$rate" "$connections" "$(head -n1 <<<"$line")" "$us_per" "$sys_per" "$waited" "$gen_per" "$load"
  tail -n +2 <<<"$line"
  if [ -n "$perf" ] && [ -n "${COUNTS:-}" ]; then
    awk -F, -v n="$answered" '$1 ~ /^[0-9]+$/ && n > 0 {
        name = $3; sub(/^syscalls:sys_enter_/, "", name); printf " %s %.2f", name, $1 / n
      } END { print "" }' "$tmp/perf.csv" | sed 's/^/  per answer:/'
  fi
  if [ "$status" -ne 0 ]; then
    echo "loadtest: wrong answers (above)" >&2
    exit 1
  fi
}

# start_server BIN: a default `writ serve` on a free port, in the
# background of this shell; sets started_pid and started_port.
start_server() {
  started_port="$(free_port)"
  "$1" serve --addr "127.0.0.1:$started_port" 2>>"$tmp/open.stderr" &
  started_pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$started_port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
}

# pair_scenario RATE SECONDS PROTOCOL: BIN and PAIR side by side, each a
# fresh default server with its own generator at RATE, warmed up and
# measured at the same time.
pair_scenario() {
  local rate="$1" seconds="$2" protocol="$3" mix connections="${OPEN_CONNECTIONS:-64}"
  if [ "$protocol" = h2 ]; then
    connections="${H2_CONNECTIONS:-4}"
  fi
  mix="$(write_mix)"
  local a a_pid a_port b_pid b_port
  start_server "$BIN"
  a_pid="$started_pid" a_port="$started_port" server="$started_pid"
  start_server "$PAIR"
  b_pid="$started_pid" b_port="$started_port" pair_pid="$started_pid"
  "$tmp/openloop" "$a_port" /v1/decide "$mix" "$rate" 2 "$connections" 0 warm "$protocol" >/dev/null &
  a=$!
  "$tmp/openloop" "$b_port" /v1/decide "$mix" "$rate" 2 "$connections" 0 warm "$protocol" >/dev/null
  wait "$a"
  local load a_before b_before a_after b_after status=0
  load="$(cut -d' ' -f1 /proc/loadavg)"
  a_before="$(cpu_ticks "$a_pid")"
  b_before="$(cpu_ticks "$b_pid")"
  local a_wait b_wait
  a_wait="$(run_wait "$a_pid")"
  b_wait="$(run_wait "$b_pid")"
  perf stat -x, -o "$tmp/a.perf" -e context-switches -p "$a_pid" &
  local a_perf=$!
  perf stat -x, -o "$tmp/b.perf" -e context-switches -p "$b_pid" &
  local b_perf=$!
  "$tmp/openloop" "$a_port" /v1/decide "$mix" "$rate" "$seconds" "$connections" 0 run \
    "$protocol" >"$tmp/a.line" 2>"$tmp/a.err" &
  a=$!
  "$tmp/openloop" "$b_port" /v1/decide "$mix" "$rate" "$seconds" "$connections" 0 run \
    "$protocol" >"$tmp/b.line" 2>"$tmp/b.err" || status=$?
  wait "$a" || status=$?
  a_after="$(cpu_ticks "$a_pid")"
  b_after="$(cpu_ticks "$b_pid")"
  a_wait=$(( $(run_wait "$a_pid") - a_wait ))
  b_wait=$(( $(run_wait "$b_pid") - b_wait ))
  kill -INT "$a_perf" "$b_perf"
  wait "$a_perf" "$b_perf" || true
  cat "$tmp/a.err" "$tmp/b.err" >&2
  kill -TERM "$a_pid" "$b_pid"
  wait "$a_pid" "$b_pid" || true
  server=""
  pair_pid=""
  local which line answered ticks switches waited
  for which in a b; do
    line="$(cat "$tmp/$which.line")"
    answered="${line%% requests*}"
    if [ "$which" = a ]; then
      ticks=$(( a_after - a_before )) waited="$a_wait"
    else
      ticks=$(( b_after - b_before )) waited="$b_wait"
    fi
    switches="$(awk -F, '$3 == "context-switches" {print $1}' "$tmp/$which.perf")"
    printf 'pair %-4s %-5s %6s/s x%-3s %s | server CPU %s us/answer, runnable but waiting %s us/answer, %s context switches/answer, load %s\n' \
      "$( [ "$which" = a ] && echo bin || echo pair )" "$protocol" "$rate" "$connections" \
      "$(head -n1 <<<"$line")" \
      "$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$answered" \
        'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "?" }')" \
      "$(awk -v w="$waited" -v n="$answered" 'BEGIN { if (n > 0) printf "%.1f", w / 1e3 / n; else print "?" }')" \
      "$(awk -v c="${switches:-0}" -v n="$answered" 'BEGIN { if (n > 0) printf "%.2f", c / n; else print "?" }')" \
      "$load"
    tail -n +2 <<<"$line"
  done
  if [ "$status" -ne 0 ]; then
    echo "loadtest: wrong answers (above)" >&2
    exit 1
  fi
}

if [ "${MODE:-closed}" = open ]; then
  if [ -n "${OPENLOOP:-}" ]; then
    cp "$OPENLOOP" "$tmp/openloop"
  else
    rustc --edition 2021 -O -o "$tmp/openloop" scripts/openloop.rs
  fi
  seconds="${duration%s}"
  echo "writ serve open loop: $seconds s a rate, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  for _ in $(seq 1 "$rounds"); do
    for rate in ${RATES:-40000 80000}; do
      for protocol in ${PROTOCOLS:-http1}; do
        if [ -n "${PAIR:-}" ]; then
          pair_scenario "$rate" "$seconds" "$protocol"
        else
          open_scenario "$rate" "$seconds" "$protocol"
        fi
      done
    done
  done
  exit 0
fi

echo "writ serve load test: wrk -t$threads -c$connections, $duration a scenario, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq 1 "$rounds"); do
  scenario decide /v1/decide examples/ci-deploy.json -- --pin-workers
  scenario decide-unpinned /v1/decide examples/ci-deploy.json --
  scenario decide+log /v1/decide examples/ci-deploy.json -- \
    --pin-workers --decision-log "$tmp/decisions.jsonl"
  rm -f "$tmp/decisions.jsonl"
  scenario authzen /access/v1/evaluation "$tmp/todo.json" -- --pin-workers \
    --policy examples/authzen/todo.writ --data examples/authzen/pip_users.json
done
