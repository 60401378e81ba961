"""How long torch's CPU threads spin before they sleep: briefly, so that cores shared with another busy process
(a fit beside the API, a second server, PostgreSQL's searches) do not stall every parallel operation.

torch runs its CPU operations on GNU OpenMP threads. At the end of each parallel operation a thread that is done
waits for the others by spinning, up to ``GOMP_SPINCOUNT`` rounds (libgomp's default: 300,000, milliseconds of a
core) before it sleeps. Alone on its cores that costs nothing. Beside another busy process it is the worst case: the
thread awaited has been descheduled to let the neighbour run, and the one that spins for it keeps the core it needs.
Measured on the 2 cores here, beside a process running torch convolutions on 2 threads: a fresh API server's
``/query`` p50 281 ms and p95 834 ms against 64 and 87 alone, and bsdata's coreset selection (4,000 centres) 61 s
against 4.8 s. Spinning about as long as sleeping and being woken costs (1,000 rounds, tens of microseconds) is the
classic bound for waiting without knowing how long: it never loses more than about twice what the better choice
would have cost, whatever the wait turns out to be. The measurements are in docs/search.md.

libgomp reads the variable once, when torch loads it, so :func:`spin_briefly` runs on importing each entry package
(``app``, ``ingest``) before anything imports torch; a ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` already set is
left as it is.
"""

from __future__ import annotations

import os

SPIN_COUNT = "1000"


def spin_briefly() -> None:
    """Bound OpenMP's spinning (:data:`SPIN_COUNT` rounds) for this process, unless the environment chose already."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
