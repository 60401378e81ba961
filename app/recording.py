"""Every answer's inspection record written exactly once, or the answer refused: a writer thread with a connection
of its own batches the records of concurrent queries into one transaction, and ``INSPECT_LOG_POLICY`` says what a
query does when the database cannot take its record in time (docs/operations.md)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from uuid import UUID, uuid4

import psycopg

from store import inspections
from store.database import configure

log = logging.getLogger(__name__)


class RecordRefused(Exception):
    """The inspection record could not be written in time and ``INSPECT_LOG_POLICY=refuse``: no answer goes out."""


@dataclass
class _Pending:
    """The records of one answer (several for a batch of images) on their way, written in one transaction or not at
    all: their keys are drawn before the first attempt, so every attempt writes the same rows."""

    rows: list[inspections.Inspection]
    keys: list[UUID] = field(init=False)
    future: Future = field(default_factory=Future)
    abandoned: bool = False

    def __post_init__(self) -> None:
        self.keys = [uuid4() for _ in self.rows]


class InspectionWriter:
    """Writes inspection records on a connection of its own, in batches: a query hands its record over and waits
    for its id. Concurrent queries share one transaction (one WAL flush), and the writer never waits for a pool
    connection that searches hold.

    When the database cannot take a record in time (``INSPECT_LOG_TIMEOUT_MS``), ``policy`` decides: ``refuse``
    (the default) raises :class:`RecordRefused` and the query is answered 503, ``wait`` keeps waiting while the
    writer retries until the database takes it, ``answer`` answers without a record id (counted).

    Exactly one record per answer, by construction rather than by timing: each record carries a key drawn before
    its first attempt. A record still queued when its query stops waiting is never written. One already sent may
    have landed although the writer heard a failure (the commit reached the disk, its acknowledgement did not) or
    may land after its query stopped waiting; so ``wait`` writes the same keys again (the database keeps the first
    row and gives its id), and ``refuse`` takes the keys of refused answers back (deleted with the writer's next
    transaction, retried until the database is back). With ``answer`` such a record stays: its verdict did go out."""

    BATCH = 64
    CONNECT_SECONDS = 3
    RETRY_SECONDS = 0.5

    def __init__(self, url: str, timeout_ms: int, policy: str = "refuse") -> None:
        self.url = url
        self.timeout_ms = timeout_ms
        self.policy = policy
        self.queue: queue.Queue[_Pending] = queue.Queue()
        self.lock = threading.Lock()
        self.taken_back: set[UUID] = set()
        self.connection: psycopg.Connection | None = None
        self.thread = threading.Thread(target=self._run, name="inspection-writer", daemon=True)
        self.thread.start()

    def write(self, row: inspections.Inspection) -> int | None:
        """The record's id; ``None`` only with the ``answer`` policy, when it could not be written in time."""
        return self.write_all([row])[0]

    def write_all(self, rows: list[inspections.Inspection]) -> list[int | None]:
        """The records' ids, the rows written in one transaction: all of them, or (refused, or ``None`` each with the
        ``answer`` policy) none, so a batch answered together is recorded together or refused together."""
        pending = _Pending(rows)
        future = pending.future
        self.queue.put(pending)
        if self.policy == "wait":
            return future.result()
        try:
            return future.result(timeout=self.timeout_ms / 1000)
        except FutureTimeout:
            if future.cancel():  # still queued: it will never be written
                return self._late(rows, f"not written within {self.timeout_ms} ms")
        except Exception as exc:
            return self._late(rows, str(exc))
        try:  # being written: the statement's own timeout bounds this wait, the connect timeout a reconnection
            return future.result(timeout=self.timeout_ms / 1000 + self.CONNECT_SECONDS)
        except FutureTimeout:
            with self.lock:  # the writer settles a record under this lock: landed and wanted, or taken back
                pending.abandoned = not future.done()
            if not pending.abandoned:
                return self._outcome(pending)
            return self._late(rows, f"still being written after {self.timeout_ms} ms")
        except Exception as exc:
            return self._late(rows, repr(exc))

    def _outcome(self, pending: _Pending) -> list[int | None]:
        try:
            return pending.future.result()
        except Exception as exc:
            return self._late(pending.rows, repr(exc))

    def _late(self, rows: list[inspections.Inspection], why: str) -> list[None]:
        if self.policy == "refuse":
            raise RecordRefused(why)
        log.warning("inspection %s not recorded: %s", rows[0].request_id, why)
        return [None] * len(rows)

    def _run(self) -> None:
        while True:
            try:  # records to take back are retried even when no query comes
                batch = [self.queue.get(timeout=self.RETRY_SECONDS if self.taken_back else None)]
            except queue.Empty:
                batch = []
            while sum(len(pending.rows) for pending in batch) < self.BATCH:  # a transaction of about 64 rows
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            batch = [pending for pending in batch if pending.future.set_running_or_notify_cancel()]
            while not self._write(batch):
                time.sleep(self.RETRY_SECONDS)  # only the wait policy comes back here: the same batch again

    def _write(self, batch: list[_Pending]) -> bool:
        """Write one batch (and take back what is due); False when it failed and ``wait`` wants it again."""
        taken_back = set(self.taken_back)
        try:
            if self.connection is None or self.connection.closed:
                self.connection = psycopg.connect(
                    self.url, connect_timeout=self.CONNECT_SECONDS, application_name="patchcore-api-log"
                )
                configure(self.connection)
            rows = [(key, row) for p in batch for key, row in zip(p.keys, p.rows, strict=True)]
            ids = inspections.record(self.connection, rows, self.timeout_ms, taken_back)
        except Exception as exc:  # every waiting query hears it; the next batch reconnects if need be
            if self.connection is not None and self.connection.broken:
                self.connection = None
            if self.policy == "wait" and batch:
                log.warning("%s inspection records wait for the database: %s", len(batch), exc)
                return False
            if self.policy == "refuse":  # refused below, perhaps written: taken back once the database answers
                self.taken_back.update(key for p in batch for key in p.keys)
            for pending in batch:
                pending.future.set_exception(exc)
            return True
        self.taken_back -= taken_back
        with self.lock:
            for pending in batch:
                if pending.abandoned and self.policy == "refuse":
                    self.taken_back.update(pending.keys)
                else:
                    pending.future.set_result([ids[key] for key in pending.keys])
        return True
