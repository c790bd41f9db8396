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
	@$(PY) bench/foundation.py
	@$(PY) bench/sandboxes.py
	@$(PY) bench/subagents.py
	@$(PY) bench/session_log.py
	@$(PY) bench/scale.py
	@$(PY) bench/security.py
	@$(PY) bench/streaming.py

lint:
	@.venv/bin/ruff check .
