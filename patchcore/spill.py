"""A fit's feature matrix larger than memory: kept in a temporary file mapped into memory, the same float32 rows.

A fit holds every patch feature of its training images at once (the coreset is chosen among all of them, and each
fold of the cross-fitted scores searches the others). With the default Wide-ResNet-50 that is 4.8 MB per image at
the default view, so 3,000 images (a Real-IAD category) take 14 GB before the coreset and the network are counted;
in memory, a machine without that much is out of memory minutes into the fit, and the process is killed. Mapped
from a file, the same rows are pages the kernel can write out and read back instead: the fit slows where memory is
short but finishes, with the same numbers (the file holds the exact float32 values; nothing is rounded or
approximated). Where the features fit, they stay in memory: a fit whose matrix takes more than half the memory
available when it starts (``/proc/meminfo``'s MemAvailable, or less where the process's cgroup limits it) maps
it, since the rest of the fit (the projection, the bank, the network) needs room too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FEATURE_BYTES = 4  # float32


@dataclass(frozen=True)
class FeatureMatrix:
    """The fit's (rows, dim) float32 features; ``on_disk`` names the (already unlinked) file they are mapped from."""

    features: torch.Tensor
    on_disk: str | None


def available_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, or its cgroup's limit less its usage where that is lower
    (a container's limit, not the host's memory, is what kills it); ``None`` where neither can be read."""
    found = [value for value in (_mem_available(), _cgroup_room()) if value is not None]
    return min(found) if found else None


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """Limit less usage of this process's memory cgroup (v2: memory.max, memory.current; v1: memory.limit_in_bytes,
    memory.usage_in_bytes), or ``None`` when unlimited or unreadable. The cgroup is looked for at the path that
    ``/proc/self/cgroup`` names, then at the mount's root (inside a container, its own cgroup is mounted there while
    the path names the host's)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            mount, files = Path("/sys/fs/cgroup"), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            mount, files = Path("/sys/fs/cgroup/memory"), ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        for folder in (mount / path.lstrip("/"), mount):
            try:
                limit, usage = ((folder / name).read_text().strip() for name in files)
                if limit == "max" or int(limit) >= 1 << 60:  # v1 writes "no limit" as a huge number
                    break
                return max(0, int(limit) - int(usage))
            except (OSError, ValueError):
                continue
    return None


def feature_matrix(
    rows: int, dim: int, in_memory_max: int | None = None, directory: str | None = None
) -> FeatureMatrix:
    """An uninitialised (rows, dim) float32 matrix: in memory when it takes at most ``in_memory_max`` bytes (unset:
    half of :func:`available_bytes`; unknown: always), else in a temporary file in ``directory`` (unset: the system's
    temporary folder, ``TMPDIR``), unlinked at once so that it goes with the matrix whatever ends the fit. A folder
    without the room for it keeps the matrix in memory: the fit is tried, not refused."""
    size = rows * dim * FEATURE_BYTES
    if in_memory_max is None:
        available = available_bytes()
        in_memory_max = size if available is None else available // 2
    folder = directory or tempfile.gettempdir()
    if size <= in_memory_max or size == 0 or shutil.disk_usage(folder).free < size:
        return FeatureMatrix(torch.empty(rows, dim), None)
    handle, name = tempfile.mkstemp(prefix="patchcore-features-", suffix=".f32", dir=folder)
    try:
        os.ftruncate(handle, size)
        mapped = np.memmap(name, dtype=np.float32, mode="r+", shape=(rows, dim))
    finally:
        os.close(handle)
        os.unlink(name)
    return FeatureMatrix(torch.from_numpy(mapped), name)
