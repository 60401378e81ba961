"""Resident memory that does not grow with concurrency.

glibc gives each thread that allocates its own malloc arena, up to eight per core, and the blocks freed in one arena
are not reused by another: under 16 concurrent clients the threads that embed and score uploads spread tensors of
megabytes over many arenas. In the soak benchmark (``benchmarks/log_soak.py``, 16 clients) the API's resident memory
grew from 1.46 to 2.02 GB in 6 minutes uncapped; with ``MALLOC_ARENA_MAX=2`` in its environment it stayed at
1.58-1.66 GB from the second to the fourth minute of a shorter run; capped by this call at start, 1.39 to 1.78 GB in
5.6 minutes: slower growth, not none (docs/operations.md, "The inspection log under load"). ``mallopt`` applies to
arenas made after the call, so it runs when the service starts; ``MALLOC_ARENA_MAX`` (the Docker image sets it)
applies from the process's first allocation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def cap_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Limit glibc's malloc arenas; False where the C library is not glibc (nothing to do there)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        done = bool(libc and libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        done = False
    if not done:
        log.info("malloc arenas not capped (not glibc)")
    return done
