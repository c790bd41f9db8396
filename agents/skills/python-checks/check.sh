#!/usr/bin/env bash
# Usage: bash /workspace/skills/python-checks/check.sh FILE
set -u
file=${1:?usage: check.sh FILE}
python3 -m py_compile "$file"; echo "compile: exit $?"
python3 "$file"; echo "run: exit $?"
