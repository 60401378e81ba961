"""Which search serves a category on a CPU, chosen by timing both on the category's own first queries.

On a CPU the two exact-scoring searches cross at no bank size: HNSW in the database (a few hundred distances a patch
and a round trip) against the bank searched in clusters in the API process (:mod:`patchcore.clustered`, whose cost
is how many rows its clusters rule out, which depends on the parts). Measured on 2 cores at about 15,000 rows, the
clusters were the faster on bottle and HNSW on the ball screws and the screws (docs/search.md), so no rule of size or
dimension can choose for parts never seen. Both give the exact model's image score, so the category's first queries
can be served by each in turn and timed; the rest go to the one with the lower median time. A wrong choice is made
only where the two medians lie close, which is where it costs little: what it can cost is bounded by the gap it
failed to see. Each search's first query is left out of its median (one-time costs: pages first read, buffers first
allocated). Only queries searched alone count (no other query embedding or searching in the process meanwhile): a
search's own time under concurrency hides what it costs the others (HNSW's work runs in the database's processes,
on the same cores as the other requests' embedding), and by such times bottle's trial at 4 clients chose HNSW (113.3
against 139.4 ms) where the clusters answer 4 clients faster (p50 167.3 and 183.9 against 189.0 and 289.4 ms). A
search alone takes every core either way, so its time stands for its whole cost."""

from __future__ import annotations

import statistics
import threading

from patchcore.scoring import BankSearch

CANDIDATES = ("database", "exact")
TRIALS = 8  # timed queries of each search that the choice rests on, after its first
WARM_UP = 1
MOST_ASKED = 64  # queries handed out before a trial that could not time enough of them alone ends (busy from start)
FEWEST = 3  # timed queries of each that such an ending still chooses by; with fewer, HNSW (the default before)


class SearchChoice:
    """The trial of one memory bank's two searches, shared by every version that keeps the bank, with the search in
    this process that it times (``here``), let go where HNSW wins (a query still searching it holds its own
    reference). Thread-safe: concurrent queries are handed out in turn, and each search's timings are those of its own
    queries that ran alone (the caller asks :data:`serving.activity.ACTIVITY`)."""

    def __init__(self, here: BankSearch | None = None, trials: int = TRIALS) -> None:
        self.here = here
        self.trials = trials
        self._lock = threading.Lock()
        self._asked = dict.fromkeys(CANDIDATES, 0)
        self._seconds: dict[str, list[float]] = {candidate: [] for candidate in CANDIDATES}
        self.chosen: str | None = None
        self._said = False

    def next(self) -> str:
        """The search to serve the next query: the chosen one, or during the trial the one asked least so far."""
        with self._lock:
            if self.chosen is None and sum(self._asked.values()) >= MOST_ASKED:
                self._choose(FEWEST)
            if self.chosen is not None:
                return self.chosen
            backend = min(CANDIDATES, key=self._asked.__getitem__)
            self._asked[backend] += 1
            return backend

    def record(self, backend: str, seconds: float) -> None:
        """One query's time in ``backend`` (from its features to its exact patch distances), searched alone; the one
        that completes the trial makes the choice (:meth:`newly_chosen` tells it)."""
        with self._lock:
            if self.chosen is not None:
                return
            self._seconds[backend].append(seconds)
            if all(len(times) >= WARM_UP + self.trials for times in self._seconds.values()):
                self._choose(self.trials)

    def _choose(self, fewest: int) -> None:
        """The lower median where each search has ``fewest`` timings past its first, else HNSW (under the lock)."""
        medians = self.medians_ms()
        enough = all(count >= fewest for count in self.timed().values())
        self.chosen = min(CANDIDATES, key=medians.__getitem__) if enough else "database"
        if self.chosen == "database":
            self.here = None

    def newly_chosen(self) -> bool:
        """``True`` once, to the first caller after the choice is made (who says it)."""
        with self._lock:
            if self.chosen is None or self._said:
                return False
            self._said = True
            return True

    def medians_ms(self) -> dict[str, float]:
        """Each search's median time so far, in milliseconds, its first query left out (absent: none timed yet)."""
        return {
            backend: statistics.median(times[WARM_UP:]) * 1000
            for backend, times in self._seconds.items()
            if len(times) > WARM_UP
        }

    def timed(self) -> dict[str, int]:
        """How many queries of each search the medians rest on."""
        return {backend: max(0, len(times) - WARM_UP) for backend, times in self._seconds.items()}
