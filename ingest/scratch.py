"""A fit job's scratch folder (its uploaded images as the files the fit reads), gone however its worker ends.

A worker removes its job's folder when the job ends; a worker killed mid-fit (SIGKILL, out of memory, a host
restarted under it) cannot, and each such folder kept a job's images (31 MB for 60 bottle images) in the
temporary folder for good. So a worker holds an exclusive lock (``flock``) on its job's folder while the job runs;
the kernel drops it when the process ends, however it ends, and a folder whose lock can be taken belongs to no
live worker. Each worker looks before it takes a job and removes those. A folder is locked a moment after it is
made; one younger than :data:`GRACE_SECONDS` is left alone, so that moment cannot cost a live job its folder.
Folders of workers on other machines, or of other users, are not seen or not touched."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "fit-job-"
GRACE_SECONDS = 60.0


@contextmanager
def job_folder(job_id: int) -> Iterator[Path]:
    """A new folder for job ``job_id`` in the temporary folder (``TMPDIR``), locked until it is removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{job_id}-"))
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # still locked: no sweep can take it halfway
        os.close(handle)


def sweep(grace: float = GRACE_SECONDS) -> list[Path]:
    """Remove the job folders in the temporary folder that no live process holds and that are older than
    ``grace`` seconds; the ones removed."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if not folder.is_dir() or time.time() - folder.stat().st_mtime < grace:
                continue
            handle = os.open(folder, os.O_RDONLY)
        except OSError:  # gone meanwhile, or another user's
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live worker's (or a lock this file system cannot take: left alone)
            continue
        else:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(handle)
    return removed
