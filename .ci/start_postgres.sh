#!/usr/bin/env bash
# Install (if needed) and start a real PostgreSQL server on localhost for the multi-worker tuning tests.
#
# Usage:  source .ci/start_postgres.sh     # exports ADVISOR_TEST_POSTGRES_URL in the calling shell
#    or:  bash .ci/start_postgres.sh       # prints the URL (last line of stdout)
#
# Idempotent: a server already answering on the port is reused. Settings (environment):
#   ADVISOR_PG_PORT (5433), ADVISOR_PG_DATA (/tmp/advisor-pg), ADVISOR_PG_USER/PASSWORD/DB (advisor/advisor/advisor_test).
# Written so that `source`-ing it never changes the caller's shell options nor exits the caller.

_advisor_start_postgres() (
    set -eu
    port="${ADVISOR_PG_PORT:-5433}"
    data="${ADVISOR_PG_DATA:-/tmp/advisor-pg}"
    user="${ADVISOR_PG_USER:-advisor}"
    password="${ADVISOR_PG_PASSWORD:-advisor}"
    db="${ADVISOR_PG_DB:-advisor_test}"
    sock="${data}-sock"

    bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
        echo "start_postgres: installing postgresql with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
        bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    fi

    # The server refuses to run as root: run it as the `postgres` system user when we are root.
    if [ "$(id -u)" = "0" ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
        as_pg() { su postgres -s /bin/sh -c "$*"; }
    else
        as_pg() { sh -c "$*"; }
    fi

    if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        mkdir -p "$data" "$sock"
        [ "$(id -u)" = "0" ] && chown postgres "$data" "$sock" && chmod 700 "$data"
        if [ ! -s "$data/PG_VERSION" ]; then
            as_pg "'$bindir/initdb' -D '$data' -U postgres --auth=trust -E UTF8 >/dev/null"
        fi
        as_pg "'$bindir/pg_ctl' -D '$data' -l '$data/server.log' -w -t 60 \
            -o \"-p $port -k $sock -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off\" start >/dev/null"
    fi

    psql_su() { "$bindir/psql" -v ON_ERROR_STOP=1 -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "$1"; }
    if [ -z "$(psql_su "SELECT 1 FROM pg_roles WHERE rolname='$user'")" ]; then
        psql_su "CREATE ROLE $user LOGIN PASSWORD '$password'" >/dev/null
    fi
    if [ -z "$(psql_su "SELECT 1 FROM pg_database WHERE datname='$db'")" ]; then
        psql_su "CREATE DATABASE $db OWNER $user" >/dev/null
    fi
    echo "postgresql://$user:$password@127.0.0.1:$port/$db"
)

if _advisor_pg_url="$(_advisor_start_postgres)"; then
    export ADVISOR_TEST_POSTGRES_URL="$_advisor_pg_url"
    echo "ADVISOR_TEST_POSTGRES_URL=$ADVISOR_TEST_POSTGRES_URL"
else
    echo "start_postgres: could not start PostgreSQL; postgres tests will be skipped" >&2
fi
unset _advisor_pg_url
