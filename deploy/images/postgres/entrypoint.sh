#!/bin/sh
# First start: initdb, then the role POSTGRES_USER (password from POSTGRES_PASSWORD_FILE,
# read by psql itself so that it is never on a command line) owning POSTGRES_DB. Remote
# connections need a password (scram-sha-256); the socket is for the postgres user only.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -r "${POSTGRES_PASSWORD_FILE:-}" ] || {
    echo "postgres-entrypoint: set POSTGRES_PASSWORD_FILE to a readable file (first start)" >&2
    exit 1
  }
  initdb -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  {
    echo "local all postgres peer"
    echo "host all all 0.0.0.0/0 scram-sha-256"
    echo "host all all ::/0 scram-sha-256"
  } > "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  psql -v ON_ERROR_STOP=1 -q -U postgres -d postgres \
    -v user="$POSTGRES_USER" -v db="$POSTGRES_DB" <<'SQL'
\set pw `cat "$POSTGRES_PASSWORD_FILE"`
SET password_encryption = 'scram-sha-256';
CREATE ROLE :"user" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"user";
SQL
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgres-entrypoint: initialised $PGDATA (role $POSTGRES_USER, database $POSTGRES_DB)"
fi
if [ "${1:-}" = postgres ]; then
  shift
  exec postgres -D "$PGDATA" -c listen_addresses='*' -c max_connections="${POSTGRES_MAX_CONNECTIONS:-200}" "$@"
fi
exec "$@"
