#!/usr/bin/env bash
# Every gate in one place: lint, types and the layers contract, then the tests (slow soak tests and benchmarks are opt-in: -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
# The Python setup.sh installed into: the active virtualenv, else the project's .venv/.
PYTHON=python3
if [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON="$VIRTUAL_ENV/bin/python"; elif [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
"$PYTHON" -m ruff check callguard tests scripts
"$PYTHON" -m mypy
# The layers contract in pyproject.toml: stages never import live or qa, the edges only audio and core.
"$(dirname "$PYTHON")/lint-imports" --no-cache
"$PYTHON" -m pytest -q "$@"
