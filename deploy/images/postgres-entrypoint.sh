#!/usr/bin/env bash
# initdb once (user temporal, password $POSTGRES_PASSWORD, password auth from the network), then
# PostgreSQL in the foreground.
set -euo pipefail
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp); echo "${POSTGRES_PASSWORD:-temporal}" >"$pw"
  initdb -D "$PGDATA" -U temporal --pwfile "$pw" -A scram-sha-256 -E UTF8 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c max_connections=400
