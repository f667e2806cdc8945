#!/usr/bin/env bash
# Re-resolve callguard's dependencies in a throw-away venv and write the versions to constraints.txt.
# Then run `bash scripts/setup.sh && bash scripts/test.sh`, and commit constraints.txt if it passes.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install -q --upgrade pip
"$scratch/venv/bin/python" -m pip install -q -e ".[test,floor,serve,cluster]"
{
  echo "# The versions the test suite last passed with, used by scripts/setup.sh and CI (pip -c)."
  echo "# Update: bash scripts/update_constraints.sh"
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pinned packages"
