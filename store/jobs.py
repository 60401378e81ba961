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
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psycopg

from patchcore.care import care_area
from patchcore.datasets.folders import unmixed
from patchcore.threshold import PER_PART

LOCK_CLASS = 7411  # the first key of every job's advisory lock (the second is the job id)
CHANNEL = "fit_jobs"  # NOTIFY'd when a job is queued, so that an idle worker takes it at once
MIN_IMAGES = 3  # a fit needs good scores of at least two bank images and one held out (parts, where named)
PART_MAX = 200  # characters of a part's name
FINISHED = ("succeeded", "failed", "cancelled")
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(%s, %s::int)"
_PART = "coalesce(part, ' ' || file_name)"  # an image's part: an unnamed one is its own (no named part begins so)

_COLUMNS = (
    "j.id, j.category, j.options, j.state, j.created_at, j.created_by, j.queued_at, j.started_at, j.finished_at, "
    "j.worker, j.attempts, j.stage, j.stage_number, j.stages, j.done, j.total, j.unit, j.rate, j.progress_at, "
    "j.cancel_requested, j.message, j.model_id, j.refit_of, j.excluded, j.normals, j.care_area, "
    "(SELECT count(*) FROM fit_job_images i WHERE i.job_id = j.id), "
    "(SELECT coalesce(sum(length(i.data)), 0) FROM fit_job_images i WHERE i.job_id = j.id), "
    "(SELECT count(DISTINCT i.part) FROM fit_job_images i WHERE i.job_id = j.id)"
)
_NAMES = (
    "id", "category", "options", "state", "created_at", "created_by", "queued_at", "started_at", "finished_at",
    "worker", "attempts", "stage", "stage_number", "stages", "done", "total", "unit", "rate", "progress_at",
    "cancel_requested", "message", "model_id", "refit_of", "excluded", "normals", "care_area", "images", "bytes",
    "parts",
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
    png = job["care_area"]  # what a job shows of its care area: the mask's size and share (care_png: the mask)
    job["care_area"] = care_area(bytes(png)).summary() if png is not None else None
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


def name_parts(connection: psycopg.Connection, job_id: int, parts: dict[str, str]) -> dict:
    """The parts of a draft job's images: ``parts`` maps an image's file name to the part it is one view of, and
    every image it does not name is a part of its own (``{}``: every image), replacing what was named before. The
    worker then holds out and cross-fits whole parts (:func:`patchcore.model.fit`), so that no good score is taken
    with another view of its part in the memory bank, as no new part's is. The names are the job's own (``added``
    of the uploads); the parts are data, never a pattern run here (a pattern is the client's: ``ingest enqueue
    --part``, the new product page). Refused: a name the job does not hold, an empty or overlong part."""
    for name, part in parts.items():
        if not part or len(part) > PART_MAX:
            raise ValueError(f"{name}: a part is named by 1 to {PART_MAX} characters, not {part!r}")
    with connection.transaction(), connection.cursor() as cursor:
        state = _locked_state(cursor, job_id)
        if state != "draft":
            raise JobStateError(f"job {job_id} is {state}: its images' parts are named before it starts")
        held = {name for (name,) in cursor.execute("SELECT file_name FROM fit_job_images WHERE job_id = %s", (job_id,))}
        unknown = sorted(set(parts) - held)
        if unknown:
            raise ValueError(
                f"job {job_id} holds no image named {unknown[0]}"
                f"{f' (nor {len(unknown) - 1} more names)' if len(unknown) > 1 else ''}: name the images it holds"
            )
        cursor.execute(
            "UPDATE fit_job_images i SET part = p.part FROM fit_job_images j LEFT JOIN "
            "unnest(%s::text[], %s::text[]) AS p (file_name, part) ON p.file_name = j.file_name "
            "WHERE i.id = j.id AND j.job_id = %s",
            (list(parts), list(parts.values()), job_id),
        )
    return one(connection, job_id)


def set_care_area(connection: psycopg.Connection, job_id: int, png: bytes | None) -> dict:
    """A draft job's care area (:mod:`patchcore.care`: a mask's PNG, checked by the caller against the job's
    options), or none (``None``): its worker fits with it, and a refit of the category takes it along."""
    with connection.transaction(), connection.cursor() as cursor:
        state = _locked_state(cursor, job_id)
        if state != "draft":
            raise JobStateError(f"job {job_id} is {state}: its care area is drawn before it starts")
        cursor.execute("UPDATE fit_jobs SET care_area = %s WHERE id = %s", (png, job_id))
    return one(connection, job_id)


def care_png(connection: psycopg.Connection, job_id: int) -> bytes | None:
    """The job's care area as the PNG its worker fits with (``None``: the whole picture)."""
    row = connection.execute("SELECT care_area FROM fit_jobs WHERE id = %s", (job_id,)).fetchone()
    if row is None:
        raise UnknownJob(f"no job {job_id}")
    return bytes(row[0]) if row[0] is not None else None


def start(connection: psycopg.Connection, job_id: int) -> dict:
    """Queue a draft job: from now on any worker may take it."""
    with connection.transaction(), connection.cursor() as cursor:
        state = _locked_state(cursor, job_id)
        if state != "draft":
            raise JobStateError(f"job {job_id} is {state}, not a draft")
        names = _fittable(cursor, job_id, f"job {job_id}")
        unmixed(f"job {job_id}", names, "make the job again without them")
        _queue(cursor, job_id)
    return one(connection, job_id)


def _fittable(cursor: psycopg.Cursor, job_id: int, what: str) -> list[Path]:
    """The names of a job's images, refused (``ValueError``, naming the job as ``what``) where a fit of them would
    fail: fewer than :data:`MIN_IMAGES` images or parts, or a target per part (``options.per``) with no part of
    several views."""
    rows = cursor.execute(f"SELECT file_name, {_PART} FROM fit_job_images WHERE job_id = %s ORDER BY 1", (job_id,))
    names, views = [], Counter()
    for name, part in rows:
        names.append(Path(name))
        views[part] += 1
    if len(names) < MIN_IMAGES:
        raise ValueError(f"{what} holds {len(names)} image(s); a fit needs at least {MIN_IMAGES} good images")
    if len(views) < MIN_IMAGES:
        raise ValueError(
            f"{what}'s {len(names)} images are views of {len(views)} part(s); a fit needs at least "
            f"{MIN_IMAGES} good parts (the memory bank learns from some, the threshold is set on others)"
        )
    per = cursor.execute("SELECT options->>'per' FROM fit_jobs WHERE id = %s", (job_id,)).fetchone()[0]
    if per == PER_PART and max(views.values()) < 2:
        raise ValueError(
            f"{what}: a false-alarm rate per part needs images that are views of parts, and each of its images "
            "is a part of its own; name their parts first (PUT /jobs/{id}/parts, enqueue --part, the page's views "
            "of one part)"
        )
    return names


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


def images(connection: psycopg.Connection, job_id: int) -> Iterator[tuple[str, bytes, str | None]]:
    """The job's images with the part each is a view of (``None``: its own), a few rows at a time through a
    server-side cursor (a job may hold gigabytes)."""
    with connection.transaction(), connection.cursor(name=f"job_images_{job_id}") as cursor:
        cursor.execute(
            "SELECT file_name, data, part FROM fit_job_images WHERE job_id = %s ORDER BY file_name", (job_id,)
        )
        for name, data, part in cursor:
            yield name, bytes(data), part


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
    the fit is retired (:func:`drop_retired_images`)."""
    connection.execute(
        "UPDATE fit_jobs SET state = 'succeeded', finished_at = now(), model_id = %s, stage = 'done', message = NULL "
        "WHERE id = %s",
        (model_id, job_id),
    )


def drop_retired_images(connection: psycopg.Connection, category: str) -> None:
    """After a retirement (:func:`store.models.retire_old_models`): the images of the succeeded jobs whose fits went.
    A kept fit keeps its job's images, so that the category can go back to it and refit it. Failed and cancelled
    jobs keep theirs for a retry."""
    connection.execute(
        "DELETE FROM fit_job_images i USING fit_jobs j WHERE j.id = i.job_id AND j.category = %s "
        "AND j.state = 'succeeded' AND NOT EXISTS (SELECT 1 FROM models m WHERE m.id = j.model_id)",
        (category,),
    )


def source_job(cursor: psycopg.Cursor, category: str, fit_model_id: int, lock: bool) -> tuple[int, dict] | None:
    """(id, options) of the succeeded job that made the fit ``fit_model_id`` while its images are stored, or None
    (fitted from files, or its images gone); ``lock`` holds its row until the transaction ends."""
    return cursor.execute(
        "SELECT j.id, j.options FROM fit_jobs j WHERE j.category = %s AND j.model_id = %s AND j.state = 'succeeded' "
        "AND EXISTS (SELECT 1 FROM fit_job_images i WHERE i.job_id = j.id)" + (" FOR UPDATE OF j" if lock else ""),
        (category, fit_model_id),
    ).fetchone()


def fit_images(connection: psycopg.Connection, category: str, fit_model_id: int, segments: Sequence[int]) -> int | None:
    """How many good images a refit of the fit ``fit_model_id`` would take: its training images, stored with its
    job, and the images added since whose files are kept (``segments``: the version's memory bank); None when the
    fit's images are not stored (not fitted by a job, or its images gone)."""
    with connection.cursor() as cursor:
        source = source_job(cursor, category, fit_model_id, lock=False)
        if source is None:
            return None
        return cursor.execute(
            "SELECT (SELECT count(*) FROM fit_job_images WHERE job_id = %s) + (SELECT count(*) FROM images i "
            "JOIN image_originals o ON o.image_id = i.id WHERE i.model_id = ANY(%s) AND i.split = 'added')",
            (source[0], list(segments)),
        ).fetchone()[0]


def refit(
    connection: psycopg.Connection,
    category: str,
    fit_model_id: int,
    segments: Sequence[int],
    excluded: dict[str, str],
    target: dict,
    created_by: str | None,
    care: bytes | Literal["kept"] | None = "kept",
) -> dict:
    """Queue a new job that fits ``category`` again from the training images of its fit ``fit_model_id`` and the
    good images added since (``segments``: the version's memory bank), less ``excluded`` (sha256 -> file name),
    with the fit's options, its care area (``care="kept"``) or another (a mask's PNG, checked by the caller against
    the options; ``None``: all of each picture: the rows outside an area were never kept, so a new one needs a fit)
    and the category's ``target`` (its ``false_alarm_rate`` and ``per``: a target set since, by hand, is kept), in
    one transaction; the job records the job it was made from, the names it left out and how many added images it
    took along. The images are copied inside the database, not read out. Raises
    :class:`NoStoredImages` when the fit's images are not stored, :class:`JobStateError` while a refit from them is
    queued or running (a second one, finishing later, would bring back what the first left out), ``ValueError``
    naming an excluded image that is not among them, an added image whose file was not kept, or when too few would
    be left."""
    with connection.transaction(), connection.cursor() as cursor:
        row = source_job(cursor, category, fit_model_id, lock=True)  # one refit at a time
        if row is None:
            option = {"kept": "--exclude NAME", None: "(without --care-area)"}.get(care, "--care-area MASK")
            raise NoStoredImages(
                f"{category} was not fitted by a job whose images are stored (fitted from files, or its job was "
                f"deleted): refit it from its files, python -m ingest fit ... {option}"
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
        left_out, segments = list(excluded), list(segments)
        held = {
            digest
            for (digest,) in cursor.execute(
                "SELECT sha256 FROM fit_job_images WHERE job_id = %s AND sha256 = ANY(%s) UNION SELECT sha256 FROM "
                "images WHERE model_id = ANY(%s) AND split = 'added' AND sha256 = ANY(%s)",
                (source, left_out, segments, left_out),
            )
        }
        missing = [name for digest, name in excluded.items() if digest not in held]
        if missing:
            raise ValueError(f"{', '.join(missing)}: neither among the images {category} was fitted from nor added")
        unkept = [
            f"{name} (image {image_id})"
            for image_id, name in cursor.execute(
                "SELECT i.id, i.file_name FROM images i WHERE i.model_id = ANY(%s) AND i.split = 'added' "
                "AND NOT (i.sha256 = ANY(%s)) AND NOT EXISTS (SELECT 1 FROM image_originals o WHERE o.image_id = i.id) "
                "ORDER BY i.id",
                (segments, left_out),
            )
        ]
        if unkept:
            raise ValueError(
                f"{', '.join(unkept)}: added to {category} before the files of added images were kept, so a refit "
                "cannot take them along; leave them out (exclude_image_ids) and add them again after the refit"
            )
        job_id = cursor.execute(
            "INSERT INTO fit_jobs (category, options, created_by, refit_of, excluded, care_area) "
            "SELECT %s, %s, %s, %s, %s, CASE WHEN %s THEN care_area ELSE %s END FROM fit_jobs WHERE id = %s "
            "RETURNING id",
            (category, json.dumps({**options, **target}), created_by, source, sorted(excluded.values()),
             care == "kept", None if care == "kept" else care, source),
        ).fetchone()[0]  # fmt: skip
        cursor.execute(
            "INSERT INTO fit_job_images (job_id, file_name, sha256, data, part) "
            "SELECT %s, file_name, sha256, data, part FROM fit_job_images WHERE job_id = %s AND NOT (sha256 = ANY(%s))",
            (job_id, source, left_out),
        )
        normals = cursor.execute(
            "INSERT INTO fit_job_images (job_id, file_name, sha256, data) SELECT %s, o.file_name, i.sha256, o.data "
            "FROM images i JOIN image_originals o ON o.image_id = i.id WHERE i.model_id = ANY(%s) "
            "AND i.split = 'added' AND NOT (i.sha256 = ANY(%s))",
            (job_id, segments, left_out),
        ).rowcount
        _fittable(cursor, job_id, f"a refit of {category}")  # enough images and parts are left
        cursor.execute("UPDATE fit_jobs SET normals = %s WHERE id = %s", (normals, job_id))
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
