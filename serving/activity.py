"""The queries at work in this process, and the share of the cores each one's torch work takes.

Every query's embedding and search runs inside :meth:`Activity.working`, so the process knows how many are at work.
Two things rest on that count:

- A search trial (:mod:`serving.search_choice`) times only searches that ran alone.
- On a CPU each query's torch work runs on ``cores // queries at work`` threads (at least one), so that concurrent
  queries together ask for the cores there are, not ``queries x cores`` threads. A thread that runs torch work gets
  OpenMP worker threads of its own, kept while it lives, and once GNU OpenMP manages more threads than there are
  cores it lets its idle workers spin only briefly before sleeping, so each of the many small parallel regions of a
  search waits for its workers to be woken (a scratch script: one small product 0.049 ms, 0.151-0.160 ms once two
  other threads had run torch work). A query alone still takes every core. On a GPU the network and the search run on
  the device, and this sets only the few CPU operations around them. Measured: docs/search.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class Activity:
    """Counts the queries at work (embedding or searching) and sets each one's torch threads by that count."""

    def __init__(self, cores: int | None = None) -> None:
        self._lock = threading.Lock()
        self._working = 0
        self._begun = 0
        self._cores = cores

    @property
    def cores(self) -> int:
        """The torch threads a query alone takes: as given, else torch's own count (``INSPECT_TORCH_THREADS``, else
        every core), read at the first query, after the service set it."""
        with self._lock:
            if self._cores is None:
                self._cores = torch.get_num_threads()
            return self._cores

    @contextmanager
    def working(self) -> Iterator[None]:
        """One query's torch work: counted while it runs, on its share of the cores (this thread's torch threads,
        given back to every core when it is over, which is what the thread's other work takes). Torch keeps the count
        per thread, but setting it also sets the count a thread begins with that first runs torch work meanwhile;
        the end of its own first query sets that back."""
        cores = self.cores
        with self._lock:
            self._working += 1
            self._begun += 1
            threads = max(1, cores // self._working)
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            with self._lock:
                self._working -= 1
            torch.set_num_threads(cores)

    def alone(self) -> int | None:
        """A mark to pass to :meth:`still_alone` when the caller's work is the only one now, else ``None``."""
        with self._lock:
            return self._begun if self._working == 1 else None

    def still_alone(self, mark: int | None) -> bool:
        """Whether no other work began since ``mark`` and none is at work now."""
        with self._lock:
            return mark is not None and self._working == 1 and self._begun == mark


ACTIVITY = Activity()
