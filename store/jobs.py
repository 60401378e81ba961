"""Fit jobs: the queue that worker processes take categories to fit from, each job's visible progress, and the
uploaded images it fits from (migration 0011).

A job goes draft (images being uploaded) -> queued -> running -> succeeded | failed | cancelled. A worker takes the
oldest queued job with ``SELECT ... FOR UPDATE SKIP LOCKED`` (two workers never take the same job, and neither waits
for the other) and, in the same transaction, a session advisory lock on it that it holds until the job ends. The
lock is the worker's pulse: PostgreSQL releases it when the worker's session ends, however it ends (killed, out of
memory, its machine lost once TCP notices), so :func:`reap` tells a dead worker from a slow one by trying the lock,
with no heartbeat timeout to guess. The new version and the job's success commit in one transaction
(:func:`succeed` runs inside the fit's save), so a job never says succeeded without its version, nor the reverse.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

LOCK_CLASS = 7411  # the first key of every job's advisory lock (the second is the job id)
CHANNEL = "fit_jobs"  # NOTIFY'd when a job is queued, so that an idle worker takes it at once
MIN_IMAGES = 3  # a fit needs good scores of at least two bank images and one held out
FINISHED = ("succeeded", "failed", "cancelled")
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(%s, %s::int)"

_COLUMNS = (
    "j.id, j.category, j.options, j.state, j.created_at, j.created_by, j.queued_at, j.started_at, j.finished_at, "
    "j.worker, j.attempts, j.stage, j.stage_number, j.stages, j.done, j.total, j.unit, j.rate, j.progress_at, "
    "j.cancel_requested, j.message, j.model_id, j.refit_of, j.excluded, "
    "(SELECT count(*) FROM fit_job_images i WHERE i.job_id = j.id), "
    "(SELECT coalesce(sum(length(i.data)), 0) FROM fit_job_images i WHERE i.job_id = j.id)"
)
_NAMES = (
    "id", "category", "options", "state", "created_at", "created_by", "queued_at", "started_at", "finished_at",
    "worker", "attempts", "stage", "stage_number", "stages", "done", "total", "unit", "rate", "progress_at",
    "cancel_requested", "message", "model_id", "refit_of", "excluded", "images", "bytes",
)  # fmt: skip


class JobStateError(Exception):
    """The job is not in a state that allows this (adding images to a queued job, cancelling a finished one)."""


class UnknownJob(LookupError):
    """No job with this id."""


class NoStoredImages(LookupError):
    """The category's fit was not made by a job whose images are still stored (fitted from files, or its job
    deleted): refit it from its files."""


@dataclass
class Added:
    """What an upload added to a draft job: the new files, and those whose content the job already had."""

    added: list[str]
    duplicates: list[str]


def _job(row: tuple) -> dict:
    job = dict(zip(_NAMES, row, strict=True))
    job["images"], job["bytes"] = int(job["images"]), int(job["bytes"])
    return job


def create(connection: psycopg.Connection, category: str, options: dict, created_by: str | None) -> dict:
    """A new draft job (images are added next, then it is started)."""
    job_id = connection.execute(
        "INSERT INTO fit_jobs (category, options, created_by) VALUES (%s, %s, %s) RETURNING id",
        (category, json.dumps(options), created_by),
    ).fetchone()[0]
    return one(connection, job_id)


def one(connection: psycopg.Connection, job_id: int) -> dict:
    row = connection.execute(f"SELECT {_COLUMNS} FROM fit_jobs j WHERE j.id = %s", (job_id,)).fetchone()
    if row is None:
        raise UnknownJob(f"no job {job_id}")
    return _job(row)


def listed(connection: psycopg.Connection, category: str | None, limit: int) -> list[dict]:
    """Jobs newest first, of one category or all."""
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM fit_jobs j WHERE %(category)s::text IS NULL OR j.category = %(category)s "
        "ORDER BY j.id DESC LIMIT %(limit)s",
        {"category": category, "limit": limit},
    ).fetchall()
    return [_job(r) for r in rows]


def _locked_state(cursor: psycopg.Cursor, job_id: int) -> str:
    row = cursor.execute("SELECT state FROM fit_jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
    if row is None:
        raise UnknownJob(f"no job {job_id}")
    return row[0]


def add_images(connection: psycopg.Connection, job_id: int, files: list[tuple[str, bytes]]) -> Added:
    """Add uploaded images to a draft job in one transaction. A file whose content the job already holds is a
    duplicate (reported, not added); a new content under a name the job already uses is refused, naming it."""
    with connection.transaction(), connection.cursor() as cursor:
        state = _locked_state(cursor, job_id)
        if state != "draft":
            raise JobStateError(f"job {job_id} is {state}: images are added before it starts")
        held = dict(cursor.execute("SELECT file_name, sha256 FROM fit_job_images WHERE job_id = %s", (job_id,)))
        contents = set(held.values())
        added, duplicates = [], []
        for name, data in files:
            digest = hashlib.sha256(data).hexdigest()
            if digest in contents:
                duplicates.append(name)
                continue
            if name in held:
                raise ValueError(f"job {job_id} already holds another image named {name}; rename one of them")
            cursor.execute(
                "INSERT INTO fit_job_images (job_id, file_name, sha256, data) VALUES (%s, %s, %s, %s)",
                (job_id, name, digest, data),
            )
            held[name] = digest
            contents.add(digest)
            added.append(name)
    return Added(added, duplicates)


def start(connection: psycopg.Connection, job_id: int) -> dict:
    """Queue a draft job: from now on any worker may take it."""
    with connection.transaction(), connection.cursor() as cursor:
        state = _locked_state(cursor, job_id)
        if state != "draft":
            raise JobStateError(f"job {job_id} is {state}, not a draft")
        count = cursor.execute("SELECT count(*) FROM fit_job_images WHERE job_id = %s", (job_id,)).fetchone()[0]
        if count < MIN_IMAGES:
            raise ValueError(f"job {job_id} holds {count} image(s); a fit needs at least {MIN_IMAGES} good images")
        _queue(cursor, job_id)
    return one(connection, job_id)


def _queue(cursor: psycopg.Cursor, job_id: int) -> None:
    """A draft job queued, inside the caller's transaction; any worker may take it once that commits."""
    cursor.execute("UPDATE fit_jobs SET state = 'queued', queued_at = now() WHERE id = %s", (job_id,))
    cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(job_id)))  # delivered at the commit


def retry(connection: psycopg.Connection, job_id: int) -> dict:
    """Queue a failed or cancelled job again, with the images it kept."""
    with connection.transaction(), connection.cursor() as cursor:
        state = _locked_state(cursor, job_id)
        if state not in ("failed", "cancelled"):
            raise JobStateError(f"job {job_id} is {state}: only a failed or cancelled job is retried")
        cursor.execute(
            "UPDATE fit_jobs SET state = 'queued', queued_at = now(), finished_at = NULL, cancel_requested = false, "
            "stage = NULL, stage_number = NULL, done = NULL, total = NULL, rate = NULL, message = NULL WHERE id = %s",
            (job_id,),
        )
        cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(job_id)))
    return one(connection, job_id)


def cancel(connection: psycopg.Connection, job_id: int) -> dict:
    """A draft or queued job is cancelled at once; a running one is asked to stop (its worker stops at its next
    progress report and says so); a finished one cannot be."""
    with connection.transaction(), connection.cursor() as cursor:
        state = _locked_state(cursor, job_id)
        if state in FINISHED:
            raise JobStateError(f"job {job_id} has already {state}")
        if state == "running":
            cursor.execute("UPDATE fit_jobs SET cancel_requested = true WHERE id = %s", (job_id,))
        else:
            cursor.execute(
                "UPDATE fit_jobs SET state = 'cancelled', finished_at = now(), cancel_requested = true, "
                "message = 'cancelled before a worker took it' WHERE id = %s",
                (job_id,),
            )
    return one(connection, job_id)


def delete(connection: psycopg.Connection, job_id: int) -> None:
    """Remove a job that is not running, with its images."""
    with connection.transaction(), connection.cursor() as cursor:
        if _locked_state(cursor, job_id) == "running":
            raise JobStateError(f"job {job_id} is running: cancel it first")
        cursor.execute("DELETE FROM fit_jobs WHERE id = %s", (job_id,))


def listen(connection: psycopg.Connection) -> None:
    """Hear of queued jobs on ``connection`` (autocommit): call before looking for one, so none is missed between."""
    connection.execute(f"LISTEN {CHANNEL}")


def wait_for_work(connection: psycopg.Connection, seconds: float) -> bool:
    """Block until a job is queued (True) or ``seconds`` pass (False), on a connection that :func:`listen` ed."""
    return any(True for _ in connection.notifies(timeout=seconds, stop_after=1))


def claim(connection: psycopg.Connection, worker: str) -> dict | None:
    """Take the oldest queued job, or None. The advisory lock taken here is held by ``connection``'s session until
    :func:`release`: keep the connection open (and in autocommit mode afterwards) for the whole job."""
    with connection.transaction():
        row = connection.execute(
            "SELECT id FROM fit_jobs WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
        ).fetchone()
        if row is None:
            return None
        connection.execute("SELECT pg_advisory_lock(%s, %s::int)", (LOCK_CLASS, row[0]))
        connection.execute(
            "UPDATE fit_jobs SET state = 'running', started_at = now(), worker = %s, attempts = attempts + 1, "
            "stage = 'starting', progress_at = now() WHERE id = %s",
            (worker, row[0]),
        )
    return one(connection, row[0])


def release(connection: psycopg.Connection, job_id: int) -> None:
    connection.execute("SELECT pg_advisory_unlock(%s, %s::int)", (LOCK_CLASS, job_id))


def images(connection: psycopg.Connection, job_id: int) -> Iterator[tuple[str, bytes]]:
    """The job's images, a few rows at a time through a server-side cursor (a job may hold gigabytes)."""
    with connection.transaction(), connection.cursor(name=f"job_images_{job_id}") as cursor:
        cursor.execute("SELECT file_name, data FROM fit_job_images WHERE job_id = %s ORDER BY file_name", (job_id,))
        for name, data in cursor:
            yield name, bytes(data)


def report(
    connection: psycopg.Connection,
    job_id: int,
    stage: str,
    number: int,
    stages: int,
    done: int,
    total: int,
    unit: str,
    rate: float | None,
) -> bool:
    """Record the running job's progress; True when someone asked to cancel it."""
    row = connection.execute(
        "UPDATE fit_jobs SET stage = %s, stage_number = %s, stages = %s, done = %s, total = %s, unit = %s, "
        "rate = %s, progress_at = now() WHERE id = %s AND state = 'running' RETURNING cancel_requested",
        (stage, number, stages, done, total, unit, rate, job_id),
    ).fetchone()
    return bool(row and row[0])


def cancel_requested(connection: psycopg.Connection, job_id: int) -> bool:
    row = connection.execute("SELECT cancel_requested FROM fit_jobs WHERE id = %s", (job_id,)).fetchone()
    return bool(row and row[0])


def succeed(connection: psycopg.Connection, job_id: int, model_id: int) -> None:
    """Inside the transaction that stores the version: the job succeeded with it. Its images stay, the fit's
    training images, so that the category can be refitted from them less one found defective (:func:`refit`), until
    the category's next fit (:func:`drop_replaced_images`)."""
    connection.execute(
        "UPDATE fit_jobs SET state = 'succeeded', finished_at = now(), model_id = %s, stage = 'done', message = NULL "
        "WHERE id = %s",
        (model_id, job_id),
    )


def drop_replaced_images(connection: psycopg.Connection, category: str) -> int:
    """Inside the transaction that stores a new fit of ``category`` (from files or by a job, which is still running
    then): the images of its earlier succeeded jobs go, their fits replaced; one set of originals per category, the
    serving fit's. Failed and cancelled jobs keep theirs for a retry. Returns how many went."""
    return connection.execute(
        "DELETE FROM fit_job_images i USING fit_jobs j WHERE j.id = i.job_id AND j.category = %s "
        "AND j.state = 'succeeded'",
        (category,),
    ).rowcount


def fit_images(connection: psycopg.Connection, category: str, fit_model_id: int) -> int | None:
    """How many training images of the fit ``fit_model_id`` are stored for a refit, or None (not fitted by a job,
    or its images gone)."""
    row = connection.execute(
        "SELECT count(i.id) FROM fit_jobs j JOIN fit_job_images i ON i.job_id = j.id "
        "WHERE j.category = %s AND j.model_id = %s AND j.state = 'succeeded'",
        (category, fit_model_id),
    ).fetchone()
    return int(row[0]) if row and row[0] else None


def refit(
    connection: psycopg.Connection, category: str, fit_model_id: int, excluded: dict[str, str], created_by: str | None
) -> dict:
    """Queue a new job that fits ``category`` again from the training images of its fit ``fit_model_id`` less
    ``excluded`` (sha256 -> file name), with the same options, in one transaction; the job records the job it was
    made from and the names it left out. The images are copied inside the database, not read out. Raises
    :class:`NoStoredImages` when that fit's images are not stored, :class:`JobStateError` while a refit from them is
    queued or running (a second one, finishing later, would bring back what the first left out), ``ValueError``
    naming an excluded image that is not among them, or when too few would be left."""
    with connection.transaction(), connection.cursor() as cursor:
        row = cursor.execute(
            "SELECT j.id, j.options FROM fit_jobs j WHERE j.category = %s AND j.model_id = %s AND j.state = 'succeeded'"
            " AND EXISTS (SELECT 1 FROM fit_job_images i WHERE i.job_id = j.id) FOR UPDATE OF j",  # one refit at a time
            (category, fit_model_id),
        ).fetchone()
        if row is None:
            raise NoStoredImages(
                f"{category} was not fitted by a job whose images are stored (fitted from files, or its job was "
                "deleted): refit it from its files, python -m ingest fit ... --exclude NAME"
            )
        source, options = row
        pending = cursor.execute(
            "SELECT id, state FROM fit_jobs WHERE refit_of = %s AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
            (source,),
        ).fetchone()
        if pending is not None:
            raise JobStateError(
                f"a refit of {category} from the same images is {pending[1]} (job {pending[0]}): wait for it, or "
                "cancel it and ask again with every image to leave out"
            )
        held = {
            digest
            for (digest,) in cursor.execute(
                "SELECT sha256 FROM fit_job_images WHERE job_id = %s AND sha256 = ANY(%s)", (source, list(excluded))
            )
        }
        missing = [name for digest, name in excluded.items() if digest not in held]
        if missing:
            raise ValueError(
                f"{', '.join(missing)}: not among the images {category} was fitted from (added later? those go with "
                "a refit anyway)"
            )
        job_id = cursor.execute(
            "INSERT INTO fit_jobs (category, options, created_by, refit_of, excluded) VALUES (%s, %s, %s, %s, %s) "
            "RETURNING id",
            (category, json.dumps(options), created_by, source, sorted(excluded.values())),
        ).fetchone()[0]
        copied = cursor.execute(
            "INSERT INTO fit_job_images (job_id, file_name, sha256, data) SELECT %s, file_name, sha256, data "
            "FROM fit_job_images WHERE job_id = %s AND NOT (sha256 = ANY(%s))",
            (job_id, source, list(excluded)),
        ).rowcount
        if copied < MIN_IMAGES:
            raise ValueError(f"{copied} image(s) would be left; a fit needs at least {MIN_IMAGES} good images")
        _queue(cursor, job_id)
    return one(connection, job_id)


def end(connection: psycopg.Connection, job_id: int, state: str, message: str) -> None:
    """A running job failed or was cancelled; its images stay for a retry."""
    if state not in ("failed", "cancelled"):
        raise ValueError(f"a job ends failed or cancelled here, not {state}")
    connection.execute(
        "UPDATE fit_jobs SET state = %s, finished_at = now(), message = %s WHERE id = %s AND state = 'running'",
        (state, message, job_id),
    )


def reap(connection: psycopg.Connection) -> list[int]:
    """Fail every running job whose worker's session is gone (its advisory lock is free): the ids. Safe to call from
    anywhere at any time (the workers' loop and the API's job pages do); a live worker's lock is never free."""
    reaped = []
    with connection.transaction():
        rows = connection.execute(
            "SELECT id, worker, stage FROM fit_jobs WHERE state = 'running' FOR UPDATE SKIP LOCKED"
        ).fetchall()
        for job_id, worker, stage in rows:
            if connection.execute(_TRY_LOCK, (LOCK_CLASS, job_id)).fetchone()[0]:
                connection.execute(
                    "UPDATE fit_jobs SET state = 'failed', finished_at = now(), message = %s WHERE id = %s",
                    (
                        f"the worker {worker} stopped during {stage or 'its start'} (its database session ended: "
                        "killed, or its machine lost); nothing of this job was stored and the category's previous "
                        "version still serves; retry to queue it again",
                        job_id,
                    ),
                )
                reaped.append(job_id)
    return reaped
