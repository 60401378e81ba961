"""Deleting a product: every version of the category with its memory banks, good images, defect library and plots,
and its fit jobs with their images. What stays: the inspection log (its records name the category and version and
outlive both, as they outlive every retired version) and the category's change log, which ends with who deleted it
and goes on if the name is fitted again.

Two steps, each safe to cut short. One transaction takes the category out of service (no active version: every
reader answers that it does not exist, a query in flight included, which its search's check of the active version
tells) and deletes its jobs; then its versions' segments are detached without blocking readers and dropped, as a
new version retires the old ones (:func:`store.models.retire_old_models`). A deletion cut short between the two is
finished by the next: a category with versions but none active is still there to delete.
"""

from __future__ import annotations

import psycopg

from store.changes import log_change
from store.jobs import JobStateError
from store.models import retire_old_models

_BUSY = ("queued", "running")  # a job that would fit the category again once it is deleted


_COUNTED = """
    WITH f AS (SELECT length(data) AS size FROM fit_job_images WHERE job_id = ANY(%(jobs)s)
               UNION ALL
               SELECT length(o.data) FROM image_originals o JOIN images i ON i.id = o.image_id
               WHERE i.model_id = ANY(%(versions)s))
    SELECT (SELECT count(*) FROM images WHERE model_id = ANY(%(versions)s)),
           (SELECT count(*) FROM patches WHERE model_id = ANY(%(versions)s)),
           (SELECT count(*) FROM defect_examples WHERE model_id = ANY(%(versions)s)),
           (SELECT count(*) FROM f),
           (SELECT coalesce(sum(size), 0) FROM f)
"""


def _contents(cursor: psycopg.Cursor, name: str, lock: bool) -> tuple[int, int | None, dict] | None:
    """(category id, active version, what a deletion takes: counted), or ``None`` when there is nothing to delete.
    ``lock``: the category and its jobs are locked, so that what is counted is what goes."""
    row = cursor.execute(
        "SELECT id, active_model_id FROM categories WHERE name = %s" + (" FOR UPDATE" if lock else ""), (name,)
    ).fetchone()
    if row is None:
        return None
    category_id, active_id = row
    versions = [r[0] for r in cursor.execute("SELECT id FROM models WHERE category_id = %s", (category_id,))]
    if active_id is None and not versions:
        return None  # deleted before: only its change log is left
    jobs = cursor.execute(  # locked: a worker claiming one meanwhile is waited for, then seen running
        "SELECT id, state FROM fit_jobs WHERE category = %s ORDER BY id" + (" FOR UPDATE" if lock else ""), (name,)
    ).fetchall()
    busy = [(job, state) for job, state in jobs if state in _BUSY]
    if busy:
        job, state = busy[0]
        raise JobStateError(f"job {job} is {state} for {name} and would fit it again: cancel it, then delete it")
    counts = cursor.execute(_COUNTED, {"versions": versions, "jobs": [job for job, _ in jobs]}).fetchone()
    names = ("images", "patches", "defect_examples", "files", "file_bytes")
    removed = {"versions": len(versions), "jobs": len(jobs), **dict(zip(names, counts, strict=True))}
    return category_id, active_id, {"category": name, "model_id": active_id, **removed}


def contents(connection: psycopg.Connection, name: str) -> dict | None:
    """What :func:`delete_category` would delete, counted (nothing changes); the same errors."""
    with connection.transaction(), connection.cursor() as cursor:
        found = _contents(cursor, name, lock=False)
    return None if found is None else found[2]


def delete_category(connection: psycopg.Connection, name: str, actor: str) -> dict | None:
    """Delete ``name`` (see the module); what went, counted, or ``None`` when there is no such category. Raises
    :class:`JobStateError` while a fit job of it is queued or running (it would bring the category back): cancel
    it first. ``connection`` must be in autocommit mode (segments are detached concurrently)."""
    with connection.transaction(), connection.cursor() as cursor:
        found = _contents(cursor, name, lock=True)
        if found is None:
            return None
        category_id, active_id, removed = found
        if active_id is not None:
            cursor.execute("UPDATE categories SET active_model_id = NULL WHERE id = %s", (category_id,))
            detail = {k: v for k, v in removed.items() if k not in ("category", "model_id")}
            log_change(cursor, category_id, active_id, actor, "deleted", detail)
        cursor.execute("DELETE FROM fit_jobs WHERE category = %s", (name,))
    retire_old_models(connection, name, fits_kept=1)  # none is active: nothing is kept whatever the count
    return removed
