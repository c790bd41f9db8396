# The README's commands. `make demo` and `make test` do all set-up themselves.
PY := .venv/bin/python
# ENGINE=cluster: Temporal on PostgreSQL (scripts/cluster.sh) instead of the dev server.
ENGINE ?= dev
export DA_ENGINE := $(ENGINE)

.PHONY: setup demo test up down status bench lint cluster-up cluster-down compose-up compose-down

setup:
	@bash scripts/setup.sh all

demo: setup
	@$(PY) scripts/stack.py demo

test: setup
	@$(PY) -m pytest

up: setup
	@$(PY) scripts/stack.py up

down:
	@[ -x $(PY) ] && $(PY) scripts/stack.py down || true

status:
	@$(PY) scripts/stack.py status

bench: setup
	@$(PY) -m bench.foundation
	@$(PY) -m bench.sandboxes
	@$(PY) -m bench.subagents
	@$(PY) -m bench.session_log
	@$(PY) -m bench.scale
	@$(PY) -m bench.model_client
	@$(PY) -m bench.security
	@$(PY) -m bench.streaming
	@$(PY) -m bench.learning
	@$(PY) -m bench.api
	@$(PY) -m bench.memory
	@$(PY) -m bench.console

cluster-up: setup
	@bash scripts/cluster.sh up

cluster-down:
	@bash scripts/cluster.sh down

# The compose stack, images built without a registry (deploy/images/build.sh). Without
# ANTHROPIC_API_KEY the harness workers use the scripted model, run on the host.
compose-up: setup
	@bash deploy/images/build.sh
	@bash scripts/compose.sh up

compose-down:
	@bash scripts/compose.sh down

lint:
	@.venv/bin/ruff check .
