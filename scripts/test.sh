#!/usr/bin/env bash
# Every gate in one place: lint, then the tests (slow soak tests and benchmarks are opt-in: -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check callguard tests scripts
python3 -m pytest -q "$@"
