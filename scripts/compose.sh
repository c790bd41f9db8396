#!/usr/bin/env bash
# The compose stack (docker-compose.yml) up or down, images already built (deploy/images/build.sh).
# Without ANTHROPIC_API_KEY the scripted model runs on the host (port 8765, reached from the
# harness containers as host.docker.internal) and the harness workers use it.
#   scripts/compose.sh up | down
set -euo pipefail
cd "$(dirname "$0")/.."
PIDFILE=.data/compose-scripted-model.pid
say() { printf '\033[1m[compose]\033[0m %s\n' "$*"; }
compose() { docker-compose -p durable-agents -f docker-compose.yml "$@"; }
mkdir -p .data secrets

up() {
  if [ -z "${ANTHROPIC_API_KEY:-}" ]; then
    if ! { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }; then
      setsid nohup .venv/bin/python -m durable_agents.testing.scripted_model --host 0.0.0.0 --port 8765 \
        >.data/compose-scripted-model.log 2>&1 </dev/null &
      echo $! >"$PIDFILE"
      say "no ANTHROPIC_API_KEY: the scripted model on the host (pid $!), not Claude"
    fi
    export ANTHROPIC_API_KEY=scripted-model-needs-no-key ANTHROPIC_BASE_URL=http://host.docker.internal:8765
  fi
  compose up -d
  say "Temporal localhost:7233, UI http://localhost:8080, live server http://localhost:8780"
}

down() {
  ANTHROPIC_API_KEY=${ANTHROPIC_API_KEY:-none} compose down
  if [ -f "$PIDFILE" ]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; rm -f "$PIDFILE"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
