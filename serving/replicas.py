"""Where a served search runs when the primary has streaming standbys (``DATABASE_REPLICA_URLS``).

A query's HNSW search is CPU inside PostgreSQL, so spreading it over standbys spreads the factory's heaviest work;
writes and "which version is active" stay on the primary. Consistency needs no waiting: the search statement names
the version it expects and checks, in the same snapshot, that it is the active one (:mod:`store.search`), so a
standby that has not replayed that version answers "not this version" and the caller asks the primary instead. A
standby never serves a mix: a version and all its rows are one transaction, and a standby's snapshot shows whole
transactions only.

A standby that fails a query, cannot be reached, is not in recovery, or lags more than
``INSPECT_REPLICA_MAX_LAG_SECONDS`` behind the primary is out of rotation until a check finds it healthy again.
Lag is measured in seconds, not bytes: each check records the primary's WAL position with the time, and a standby's
lag is how long ago the primary wrote the oldest position it has not replayed (0 when it has replayed everything).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from config import Settings
from serving.inspector import ModelReplaced
from store.database import configure
from store.replication import primary_position, standby_state

log = logging.getLogger(__name__)

T = TypeVar("T")
CONNECT_SECONDS = 2
WAIT_SECONDS = 2.0  # longest wait for a standby's free connection before the primary answers instead


def address(url: str) -> str:
    """Where a server is, without its credentials: host (or socket folder), port and database."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    port = f":{params['port']}" if params.get("port") else ""
    return f"{params.get('host', 'localhost')}{port}/{params.get('dbname', '')}"


@dataclass
class Standby:
    """One standby: its pool of search connections and what the last check (or the last query) found."""

    name: str
    url: str
    pool: ConnectionPool
    in_rotation: bool = False
    why_out: str | None = "not checked yet"
    lag_seconds: float | None = None
    in_flight: int = 0
    answered: int = 0  # searches (and memory-bank reads) it answered
    skipped: dict[str, int] = field(default_factory=lambda: {"behind": 0, "failed": 0, "busy": 0})
    probe: psycopg.Connection | None = None
    served: bool = False  # has been in rotation since this process started

    def describe(self) -> dict:
        return {"name": self.name, "address": address(self.url), "in_rotation": self.in_rotation,
                "why_out": self.why_out, "lag_seconds": self.lag_seconds, "answered": self.answered,
                "skipped": dict(self.skipped)}  # fmt: skip


class Standbys:
    """The standbys of one API process: which are in rotation, and a lease of their connections to a search."""

    def __init__(self, settings: Settings, primary_url: str) -> None:
        self.settings = settings
        self.primary_url = primary_url
        self.pool_max = settings.pool_size or 4
        self.standbys = [
            Standby(f"standby-{index}", url, self._pool(url)) for index, url in enumerate(settings.replica_urls, 1)
        ]
        self.primary_answered = 0  # searches the primary answered while standbys are configured
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._samples: deque[tuple[float, int]] = deque()  # (monotonic time, primary WAL position)
        self._primary: psycopg.Connection | None = None
        self._primary_down = False
        self._closing = threading.Event()
        self._checker = threading.Thread(target=self._watch, name="standby-check", daemon=True)

    def _pool(self, url: str) -> ConnectionPool:
        return ConnectionPool(
            url, min_size=1, max_size=self.pool_max, configure=configure,
            check=ConnectionPool.check_connection, open=False, timeout=WAIT_SECONDS, reconnect_timeout=0,
            kwargs={"application_name": "patchcore-api-standby", "connect_timeout": CONNECT_SECONDS,
                    "autocommit": True},
        )  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.standbys)

    def resize(self, max_size: int) -> None:
        """Let each standby's pool grow to ``max_size`` (the search split became known)."""
        self.pool_max = max_size
        for standby in self.standbys:
            standby.pool.resize(1, max_size)

    def open(self) -> None:
        """Open the pools and check every standby once before the first search, then every
        ``INSPECT_REPLICA_CHECK_SECONDS``."""
        if not self.standbys:
            return
        for standby in self.standbys:
            standby.pool.open(wait=False)
        self.check()
        self._checker.start()

    def close(self) -> None:
        self._closing.set()
        for standby in self.standbys:
            standby.pool.close()

    def describe(self) -> tuple[list[dict], int]:
        """Each standby as it is now, and how many searches and bank reads the primary answered instead."""
        with self._lock:
            return [standby.describe() for standby in self.standbys], self.primary_answered

    def _choose(self) -> Standby | None:
        """The next standby in rotation: the one with the fewest searches running (ties: in turn), or simply in
        turn (``INSPECT_REPLICA_CHOICE``)."""
        candidates = [s for s in self.standbys if s.in_rotation]
        if not candidates:
            return None
        start = next(self._turn) % len(candidates)
        ordered = candidates[start:] + candidates[:start]
        if self.settings.replica_choice == "least_busy":
            return min(ordered, key=lambda s: s.in_flight)
        return ordered[0]

    @contextmanager
    def lease(self, count: int) -> Iterator[list[tuple[Standby, psycopg.Connection]]]:
        """Up to ``count`` connections for one search's parts, each from the least busy standby in rotation: the
        first waited for (up to a bound), the others only when free at once. Empty: no standby can take it."""
        taken: list[tuple[Standby, psycopg.Connection]] = []
        pools: list[ConnectionPool] = []  # each connection goes back to the pool it came from, even one replaced
        try:
            for part in range(count):
                with self._lock:
                    standby = self._choose()
                    if standby is None:
                        break
                    standby.in_flight += 1
                pool = standby.pool
                try:
                    connection = pool.getconn(timeout=WAIT_SECONDS if part == 0 else 0.001)
                except PoolTimeout:
                    with self._lock:
                        standby.in_flight -= 1
                        if part == 0:
                            standby.skipped["busy"] += 1
                    break
                taken.append((standby, connection))
                pools.append(pool)
            yield taken
        finally:
            for (standby, connection), pool in zip(taken, pools, strict=True):
                pool.putconn(connection)
                with self._lock:
                    standby.in_flight -= 1

    def attempt(
        self,
        count: int,
        work: Callable[..., T],
        *args: Any,
        whole: Callable[[T], bool] = lambda _: True,
    ) -> tuple[bool, T | None]:
        """``work(connections, *args)`` on up to ``count`` standby connections: ``(True, result)``, or ``(False,
        None)`` when the primary must answer instead: no standby could take it, one lacks the version asked for
        (:class:`ModelReplaced`, ``LookupError``, or ``whole(result)`` false), or one failed."""
        with self.lease(count) as taken:
            if taken:
                try:
                    result = work([connection for _, connection in taken], *args)
                except (ModelReplaced, LookupError):
                    self._count(taken, "behind")
                except psycopg.Error as exc:
                    self._failed(taken, exc)
                else:
                    if whole(result):
                        self._count(taken, "answered")
                        return True, result
                    self._count(taken, "behind")
        with self._lock:
            self.primary_answered += 1
        return False, None

    def _count(self, taken: list[tuple[Standby, psycopg.Connection]], outcome: str) -> None:
        """Count one search once on each standby that took part in it (a search may hold two of its connections)."""
        with self._lock:
            for standby in {s.name: s for s, _ in taken}.values():
                if outcome == "answered":
                    standby.answered += 1
                else:
                    standby.skipped[outcome] += 1

    def _failed(self, taken: list[tuple[Standby, psycopg.Connection]], error: Exception) -> None:
        """A search failed on these standbys: the ones whose connection broke are out of rotation until a check
        finds them healthy (an error that left the connection usable, such as a query cancelled by a conflict with
        replay, only sends this search to the primary)."""
        self._count(taken, "failed")
        with self._lock:
            for standby, connection in taken:
                if connection.broken or connection.closed:
                    self._take_out(standby, f"a search failed: {_first_line(error)}")

    def _take_out(self, standby: Standby, why: str) -> None:
        if standby.in_rotation:
            log.warning("%s (%s) out of rotation: %s", standby.name, address(standby.url), why)
        standby.in_rotation, standby.why_out = False, why

    def check(self) -> None:
        """Measure every standby: reachable, in recovery, lag within the bound -> in rotation; else out."""
        now = time.monotonic()
        position = self._primary_position()
        if position is not None:
            self._samples.append((now, position))
        horizon = now - max(60.0, 10 * self.settings.replica_max_lag_seconds)
        while len(self._samples) > 1 and self._samples[0][0] < horizon:
            self._samples.popleft()
        for standby in self.standbys:
            why, lag = self._probe(standby, now)
            with self._lock:
                standby.lag_seconds = lag
                if why is None:
                    if not standby.in_rotation:
                        log.warning("%s (%s) in rotation (lag %.2f s)", standby.name, address(standby.url), lag or 0)
                        if standby.served:  # back from an outage: fresh connections, not a pool that gave up on them
                            standby.pool.close(timeout=0)
                            standby.pool = self._pool(standby.url)
                            standby.pool.open(wait=False)
                    standby.in_rotation, standby.why_out, standby.served = True, None, True
                else:
                    self._take_out(standby, why)

    def _primary_position(self) -> int | None:
        try:
            if self._primary is None or self._primary.closed:
                self._primary = _check_connection(self.primary_url)
            position = primary_position(self._primary)
        except psycopg.Error as exc:
            if not self._primary_down:  # once per outage
                log.warning("cannot read the primary's WAL position (standbys keep the last lag measured): %s",
                            _first_line(exc))  # fmt: skip
            self._primary, self._primary_down = None, True
            return None
        self._primary_down = False
        return position

    def _probe(self, standby: Standby, now: float) -> tuple[str | None, float | None]:
        """Why ``standby`` should be out of rotation (``None``: it is fine) and its lag in seconds."""
        try:
            if standby.probe is None or standby.probe.closed:
                standby.probe = _check_connection(standby.url)
            state = standby_state(standby.probe)
        except psycopg.Error as exc:
            if standby.probe is not None:
                standby.probe.close()
            standby.probe = None
            return f"unreachable: {_first_line(exc)}", None
        if not state.in_recovery:
            return "not a standby (not in recovery: promoted, or not a replica of this primary)", None
        lag = self._lag(state.replayed, now)
        if lag is None:
            return "lag unknown: the primary's WAL position cannot be read", None
        if lag > self.settings.replica_max_lag_seconds:
            paused = " (its replay is paused)" if state.paused else ""
            return f"{lag:.1f} s behind the primary, more than {self.settings.replica_max_lag_seconds} s{paused}", lag
        return None, lag

    def _lag(self, replayed: int | None, now: float) -> float | None:
        if not self._samples:
            return None
        if replayed is None:
            return now - self._samples[0][0]
        for written_at, position in self._samples:
            if position > replayed:
                return now - written_at
        return 0.0

    def _watch(self) -> None:
        while not self._closing.wait(self.settings.replica_check_seconds):
            try:
                self.check()
            except Exception:  # the checker must outlive any surprise; the next round tries again
                log.exception("standby check failed")


def _check_connection(url: str) -> psycopg.Connection:
    """The check thread's own connection to a server, apart from the pools the searches use."""
    return psycopg.connect(
        url, autocommit=True, connect_timeout=CONNECT_SECONDS, application_name="patchcore-api-standby-check"
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
