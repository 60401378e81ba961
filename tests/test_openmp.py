"""The entry packages bound OpenMP's spinning before torch loads (patchcore.openmp): libgomp reads GOMP_SPINCOUNT
once, when torch loads it, so a package that imported torch first would leave its default in force unseen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOW = "import os, sys, {0}; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"


def _imported(package: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", SHOW.format(package)], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


@pytest.mark.parametrize("package", ["app", "ingest"])
def test_each_entry_package_bounds_the_spinning_before_torch_loads_and_leaves_a_choice_made_alone(package):
    assert _imported(package) == "1000 False"  # uvicorn app.main:app and python -m ingest import these first
    assert _imported(package, GOMP_SPINCOUNT="300000") == "300000 False"
    assert _imported(package, OMP_WAIT_POLICY="PASSIVE") == "None False"
