#!/usr/bin/env bash
# Write constraints.txt: the exact versions of every package in .venv, the set the test suite last passed with.
# scripts/install.sh installs within it, so a clean machine (CI) gets the tested set, not whatever the registry
# released since (a new ruff that formats differently, a FastAPI that validates differently). To move to newer
# versions: delete .venv and constraints.txt, run scripts/install.sh (it installs the newest that pyproject.toml
# allows), ./test.sh, then this script, and commit the new constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# The versions the test suite passed with (scripts/lock.sh writes this file; scripts/install.sh installs within it)."
  .venv/bin/python -m pip freeze --exclude-editable --all | grep -v -E '^(pip|setuptools|wheel)=='
} > constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) packages"
