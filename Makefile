# The README's commands. `make demo` and `make test` do all set-up themselves.
PY := .venv/bin/python

.PHONY: setup demo test up down status bench lint

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
	@$(PY) -m bench.security
	@$(PY) -m bench.streaming

lint:
	@.venv/bin/ruff check .
