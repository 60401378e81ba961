"""A fit job's scratch folder goes however its worker ends (``ingest/scratch.py``); the worker's own sweep over
HTTP and real processes is in ``tests/test_jobs.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ingest import scratch
from tests.conftest import ROOT

# a worker holding job 2's folder until it is killed
HOLD = "\n".join(("import time", "from ingest import scratch", "with scratch.job_folder(2) as folder:",
                  "    print(folder, flush=True)", "    time.sleep(600)"))  # fmt: skip


def _age(*folders: Path) -> None:
    past = time.time() - 2 * scratch.GRACE_SECONDS
    for folder in folders:
        os.utime(folder, (past, past))


def test_only_the_folders_of_ended_workers_are_swept(tmp_path, monkeypatch):
    """A killed worker's folder goes once it is older than the grace; a live worker's (another process's, or this
    one's) stays however old, and so does a folder made a moment ago and not locked yet."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD], cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)},
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        killed = Path(holder.stdout.readline().strip())
        assert killed.parent == tmp_path and killed.name.startswith("fit-job-2-")
        (killed / "000.png").write_bytes(bytes(1000))
        with scratch.job_folder(3) as live:
            young = Path(tempfile.mkdtemp(prefix="fit-job-4-"))
            _age(killed, live)
            assert scratch.sweep() == []  # the killed one's worker still runs; the young one is young
            holder.send_signal(signal.SIGKILL)
            holder.wait(20)
            assert scratch.sweep() == [killed] and not killed.exists()
            _age(live, young)
            assert scratch.sweep() == [young] and live.is_dir()
        assert not live.exists() and list(tmp_path.iterdir()) == []
    finally:
        holder.kill()
