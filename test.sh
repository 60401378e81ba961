#!/usr/bin/env bash
# One command from nothing to a passing test suite: installs into .venv, checks style, builds the docs site, runs
# every test.
# Needs ../shared (real bottle images and ResNet-18 weights) beside the repository.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# the docs site (docs/, mkdocs.yml); strict: a broken link or a page left out of the nav fails (not with --quiet,
# which hides the warnings that strict counts)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict
# the ten slowest tests listed above the summary line: where the suite's time goes, run by run
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=10 "$@"
