#!/usr/bin/env bash
# Installs caslb with its test extra into .venv (created if missing), then lints, type-checks and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "== ruff"; .venv/bin/ruff check lb probes examples perf tests
echo "== mypy"; .venv/bin/mypy --strict lb probes examples/casfarm
echo "== pytest"; .venv/bin/python -m pytest -q "$@"
