#!/usr/bin/env bash
# The compose stack's images without a registry: the sandbox image's debootstrap base, Debian's
# PostgreSQL and Python on it, the Temporal binaries scripts/cluster.sh built, the project.
#   deploy/images/build.sh        (make compose-up runs it; unchanged images rebuild from cache)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=${DA_CACHE_DIR:-$HOME/.cache/durable-agents}
say() { printf '\033[1m[images]\033[0m %s\n' "$*"; }
bash sandboxes/image/build.sh
bash scripts/cluster.sh install
say "durable-agents/postgres"
docker build -q -t durable-agents/postgres:15 -f deploy/images/postgres.Dockerfile deploy/images >/dev/null
stage=$ROOT/.data/images/temporal
rm -rf "$stage" && mkdir -p "$stage/cache" "$stage/app/.bin" "$stage/app/scripts" "$stage/app/deploy"
for f in temporal-server-v1.29.1 temporal-sql-tool-v1.29.1 temporal-ui-server-v2.42.1 temporal-v1.5.1; do
  [ -e "$CACHE/$f" ] || continue
  ln "$CACHE/$f" "$stage/cache/$f" 2>/dev/null || cp "$CACHE/$f" "$stage/cache/$f"
done
cp -r "$CACHE/temporal-server-v1.29.1-schema" "$stage/cache/"
ln -s /opt/temporal/temporal-v1.5.1 "$stage/app/.bin/temporal"
cp scripts/cluster.sh scripts/setup.sh "$stage/app/scripts/"
cp deploy/dynamicconfig.yaml "$stage/app/deploy/"
say "durable-agents/temporal"
docker build -q -t durable-agents/temporal:1.29.1 -f deploy/images/temporal.Dockerfile "$stage" >/dev/null
say "durable-agents/python"
cp /etc/ssl/certs/ca-certificates.crt deploy/images/ca-certificates.crt
docker build -q -t durable-agents/python:3.11 -f deploy/images/python.Dockerfile deploy/images >/dev/null
rm -f deploy/images/ca-certificates.crt
say "durable-agents/worker (the project)"
docker build -q -t durable-agents/worker:latest --build-arg BASE_IMAGE=durable-agents/python:3.11 . >/dev/null
say "built"
