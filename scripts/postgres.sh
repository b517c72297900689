#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the tests, from Debian's
# `postgresql` package (installed when missing), and prints its URL.
#
#   eval "$(scripts/postgres.sh start)"   # exports WRIT_TEST_POSTGRES_URL
#   scripts/postgres.sh stop
#
# The cluster lives in $WRIT_PG_DIR (default /tmp/writ-pg), listens on
# 127.0.0.1:$WRIT_PG_PORT (default 55432) only, trusts local connections
# and holds one database, `writ`. It runs as the `postgres` user, since
# initdb refuses root.
set -euo pipefail

dir=${WRIT_PG_DIR:-/tmp/writ-pg}
port=${WRIT_PG_PORT:-55432}

bin() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$found" ] || return 1
  echo "$found"
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "${1:-start}" in
start)
  if ! pgbin=$(bin); then
    echo "postgres.sh: installing postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    pgbin=$(bin)
  fi
  if ! "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    as_postgres "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
    as_postgres "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
      -o "-h 127.0.0.1 -p $port -k $dir -c fsync=on" start >/dev/null
  fi
  "$pgbin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -tc \
    "SELECT 1 FROM pg_database WHERE datname = 'writ'" | grep -q 1 ||
    "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U postgres writ
  echo "export WRIT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/writ"
  ;;
stop)
  if pgbin=$(bin) && [ -d "$dir/data" ]; then
    as_postgres "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  fi
  ;;
*)
  echo "usage: scripts/postgres.sh start|stop" >&2
  exit 2
  ;;
esac
