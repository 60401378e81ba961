#!/usr/bin/env bash
# One command from nothing to a passing test suite: installs into .venv, checks style, runs every test.
# Needs ../shared (real bottle images and ResNet-18 weights) beside the repository.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
