#!/usr/bin/env bash
# Everything a fresh machine needs, idempotent and cached: a second run takes seconds.
#   scripts/setup.sh [all|python|temporal|docker|image|mcp|browser|postgres|cluster]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${DA_CACHE_DIR:-$HOME/.cache/durable-agents}
TEMPORAL_CLI_VERSION=v1.5.1
mkdir -p .bin .data "$CACHE"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
# One apt at a time on the machine (set-ups of several checkouts may run at once).
APT_LOCK=/var/lock/durable-agents-apt.lock
apt_install() {
  [ -n "$apt_updated" ] || { as_root flock "$APT_LOCK" apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive as_root flock "$APT_LOCK" apt-get install -y -qq "$@" >/dev/null
}

setup_python() {
  local stamp=.venv/.requirements.sha
  local want; want=$(sha256sum pyproject.toml | cut -c1-16)
  if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  say "python: creating .venv with pinned dependencies"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  echo "$want" > "$stamp"
}

setup_temporal() {
  if [ -x .bin/temporal ]; then return; fi
  if [ -x "$CACHE/temporal-$TEMPORAL_CLI_VERSION" ]; then
    ln -sf "$CACHE/temporal-$TEMPORAL_CLI_VERSION" .bin/temporal; return
  fi
  if command -v temporal >/dev/null 2>&1; then ln -sf "$(command -v temporal)" .bin/temporal; return; fi
  if command -v go >/dev/null 2>&1; then
    say "temporal: building the CLI $TEMPORAL_CLI_VERSION with go install (a few minutes, once)"
    local gobin; gobin=$(mktemp -d "$CACHE/gobin.XXXXXX")  # its own: set-ups running at once do not collide
    GOBIN="$gobin" go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION"
    mv "$gobin/temporal" "$CACHE/temporal-$TEMPORAL_CLI_VERSION"; rm -rf "$gobin"
  else
    say "temporal: no go toolchain; downloading the dev server with the Temporal SDK"
    .venv/bin/python - "$CACHE/sdk-download" "$CACHE/temporal-$TEMPORAL_CLI_VERSION" <<'PY'
import asyncio, pathlib, shutil, sys
from temporalio.testing import WorkflowEnvironment
async def main() -> None:
    env = await WorkflowEnvironment.start_local(download_dest_dir=sys.argv[1], ui=False)
    await env.shutdown()
asyncio.run(main())
found = [p for p in pathlib.Path(sys.argv[1]).rglob("*") if p.is_file() and p.stat().st_mode & 0o111]
if not found:
    sys.exit("the SDK downloaded no dev server")
shutil.copy(found[0], sys.argv[2])
PY
  fi
  ln -sf "$CACHE/temporal-$TEMPORAL_CLI_VERSION" .bin/temporal
}

docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

setup_docker() {
  if docker_ok; then return; fi
  command -v dockerd >/dev/null 2>&1 || { say "docker: installing Debian's docker.io"; apt_install docker.io; }
  command -v runsc >/dev/null 2>&1 || apt_install runsc || say "docker: gVisor (runsc) not available; runc only"
  if command -v runsc >/dev/null 2>&1 && [ ! -f /etc/docker/daemon.json ]; then
    as_root mkdir -p /etc/docker
    printf '{\n  "runtimes": {\n    "runsc": {"path": "%s", "runtimeArgs": ["--network=none"]}\n  }\n}\n' \
      "$(command -v runsc)" | as_root tee /etc/docker/daemon.json >/dev/null
  fi
  # A dockerd that died with an earlier session leaves its pid files behind, and possibly the
  # containerd it managed; with no dockerd running, both are stale.
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    local managed=/var/run/docker/containerd/containerd.pid
    if [ -f "$managed" ] && kill -0 "$(cat "$managed")" 2>/dev/null; then
      as_root kill "$(cat "$managed")" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$(cat "$managed")" 2>/dev/null || break; sleep 0.25; done
    fi
    as_root rm -f /var/run/docker.pid "$managed"
  fi
  say "docker: starting dockerd (log: .data/dockerd.log)"
  # Its own session: it outlives the shell (and the process group) that started it.
  as_root setsid nohup dockerd >"$ROOT/.data/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do docker_ok && return; sleep 0.5; done
  say "docker: dockerd did not answer; see .data/dockerd.log"; tail -20 .data/dockerd.log; exit 1
}

# docker-compose (Debian's) only validates docker-compose.yml here: its images need a registry.
setup_compose() {
  command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose || say "docker-compose not available"
}

# MCP servers from the npm registry (the example agents and the tests use them), pinned by the lock file.
setup_mcp() {
  local stamp=mcp-servers/node_modules/.lock.sha
  local want; want=$(sha256sum mcp-servers/package-lock.json | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  command -v npm >/dev/null 2>&1 || { say "mcp: installing Debian's nodejs and npm"; apt_install nodejs npm; }
  say "mcp: installing the MCP servers from npm (mcp-servers/package-lock.json)"
  (cd mcp-servers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" > "$stamp"
}

# Debian's PostgreSQL: the API's database can be PostgreSQL (DA_DATABASE_URL); the tests start a
# server of their own with it (as the postgres user). Nothing runs from here.
setup_postgres() {
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then return; fi
  say "postgres: installing Debian's postgresql (for the API's PostgreSQL tests)"
  apt_install postgresql
}

# The production engine (scripts/cluster.sh): the Temporal server and its SQL tool built with
# `go install`, cached in $CACHE; the Web UI server where it builds. Nothing runs from here.
setup_cluster() {
  bash scripts/cluster.sh install
}

setup_image() {
  bash sandboxes/image/build.sh
}

# The UI test drives Debian's Chromium with Playwright: the Python package (pinned in
# pyproject.toml) launches this browser and never downloads one of its own.
setup_browser() {
  if command -v chromium >/dev/null 2>&1; then return; fi
  say "browser: installing Debian's chromium (for the Temporal UI test)"
  apt_install chromium
}

case "${1:-all}" in
  python) setup_python ;;
  temporal) setup_temporal ;;
  docker) setup_docker ;;
  image) setup_docker; setup_image ;;
  mcp) setup_mcp ;;
  browser) setup_browser ;;
  postgres) setup_postgres ;;
  cluster) setup_temporal; setup_postgres; setup_cluster ;;
  all) setup_python; setup_temporal; setup_docker; setup_compose; setup_mcp; setup_image; setup_browser; setup_postgres; setup_cluster ;;
  *) echo "usage: $0 [all|python|temporal|docker|image|mcp|browser|postgres|cluster]" >&2; exit 2 ;;
esac
