#!/usr/bin/env bash
# A throwaway Postgres for the Dagster instance, on 127.0.0.1 only (for tests, benchmarks and a one-machine lab).
#   deploy/local/postgres.sh start DIR [PORT]   initialise DIR once, start, print the URL to put in
#                                               SIMASSETS_DAGSTER_POSTGRES_URL
#   deploy/local/postgres.sh stop DIR           stop it (the data in DIR stays; start again to reuse it)
# Installs Debian's postgresql package when no server is present. Runs the server as the `postgres` user when
# started by root (Postgres refuses to run as root). Authentication is `trust`: it listens on loopback only.
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop DIR [PORT]}
dir=$(realpath -m "${2:?usage: postgres.sh start|stop DIR [PORT]}")
port=${3:-55432}

server_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
bin=$(server_bin)
if [ -z "$bin" ] && [ "$cmd" = start ]; then
  echo "postgres.sh: installing Debian's postgresql package" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bin=$(server_bin)
fi
[ -n "$bin" ] || { echo "postgres.sh: no Postgres server installed" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case $cmd in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" != 0 ] || chown postgres: "$dir"
    chmod 700 "$dir"
    if ! as_pg test -w "$dir"; then
      echo "postgres.sh: user postgres cannot write $dir (is a parent folder private?)" >&2
      exit 1
    fi
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$dir" -U simassets --auth=trust -E UTF8 >"$dir.initdb.log" 2>&1 \
        || { cat "$dir.initdb.log" >&2; exit 1; }
    fi
    if ! as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
      as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on" start >/dev/null
    fi
    as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U simassets -d postgres -tAc \
      "select 1 from pg_database where datname = 'dagster'" | grep -q 1 \
      || as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U simassets dagster
    # +psycopg2: the driver dagster-postgres installs (SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql://)
    echo "postgresql+psycopg2://simassets@127.0.0.1:$port/dagster"
    ;;
  stop)
    if [ -f "$dir/postmaster.pid" ]; then as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null; fi
    ;;
  *) echo "usage: postgres.sh start|stop DIR [PORT]" >&2; exit 2 ;;
esac
