#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the project with its development tools; re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$python" -m venv .venv
# constraints.txt: the versions the tests last passed with (scripts/lock.sh); without it, the newest pyproject allows
constraints=()
[ -f constraints.txt ] && constraints=(-c constraints.txt)
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  # The registry's torch brings its CUDA libraries (5.8 GB installed); pip's cache would keep a second copy of every
  # downloaded wheel, and an install on a nearly full disk failed. Say what is free before starting.
  free_mb=$(df -Pm . | awk 'NR == 2 {print $4}')
  echo "install: ${free_mb} MB free on $(df -P . | awk 'NR == 2 {print $6}'); a clean install measured 8,460 MB at its peak"
  if [ "$free_mb" -lt 8460 ]; then
    echo "install: warning: less free than that; pip may stop with 'No space left on device' (free some space)" >&2
  fi
  .venv/bin/python -m pip install --quiet --no-cache-dir --upgrade pip
  # torch comes from the package registry (never the local torch==2.13.0 file, which breaks torchvision)
  .venv/bin/python -m pip install --quiet --no-cache-dir "${constraints[@]}" -e ".[dev]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
# The page test drives Debian's Chromium through Playwright; no browser build is ever downloaded.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "install: Debian's chromium, for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "install: chromium is missing and this is not root: apt-get install -y chromium (the browser test needs it)" >&2
  fi
fi
