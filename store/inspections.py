"""The inspection log: one row per answered ``/query`` (what was judged, by which version, how, how fast, by whom, its
patch distances), with the image kept as a thumbnail, in full, or not at all, and images past the retention period
deleted (the records stay)."""

from __future__ import annotations

import json
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

import numpy as np
import psycopg
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.pq import Format, TransactionStatus

from patchcore.threshold import part_p_value


@dataclass
class Inspection:
    """One answered query, as the log keeps it."""

    request_id: str
    category: str
    model_id: int
    is_anomalous: bool
    score: float
    threshold: float
    defect_type: str | None
    sha256: str
    bytes: int
    format: str
    width: int
    height: int
    api_key: str | None
    latency_ms: float
    stages_ms: dict[str, float]
    image_kind: str
    image: bytes | None
    image_media_type: str | None
    regions: list[dict] | None = None  # the answer's defect regions (None: not known, as for records before them)
    part: str | None = None  # the part the image shows, as the caller named it (its views share it)
    file_name: str | None = None  # the upload's file name, as sent
    p_value: float | None = None  # the share of good parts expected to score as high (None: not known)
    patch_scores: np.ndarray | None = None  # (rows, columns) float32: each cell's distance on the view's patch grid
    notes: list[str] | None = None  # what the answer said to know before acting on it (None: not known)


_REAL, _REAL_ARRAY = 700, 1021  # PostgreSQL's type oids of real and real[]


class _Grid:
    """A (rows, columns) grid of patch distances, to be written as a ``real[]``."""

    def __init__(self, grid: np.ndarray) -> None:
        self.grid = np.ascontiguousarray(grid, dtype=np.float32)


class _GridDumper(Dumper):
    """A grid in PostgreSQL's binary array format, made in one numpy pass: as nested lists, psycopg writes each value
    apart, which for a 28 x 28 grid took 1.55 ms a record as text and 0.34 ms in binary, against 0.06 ms this way (a
    scratch script inserting into a temporary table, medians of 200), on the path of every answer."""

    format = Format.BINARY
    oid = _REAL_ARRAY

    def dump(self, obj: _Grid) -> bytes:
        grid = obj.grid
        header = struct.pack(  # its dimensions, no NULLs, the element type, then each dimension's size and lower bound
            f">iii{2 * grid.ndim}i", grid.ndim, 0, _REAL, *(n for size in grid.shape for n in (size, 1))
        )
        cells = np.empty(grid.size, dtype=[("length", ">i4"), ("value", ">f4")])  # each element: its length, then it
        cells["length"], cells["value"] = 4, grid.ravel()
        return header + cells.tobytes()


psycopg.adapters.register_dumper(_Grid, _GridDumper)

_COLUMNS = (
    "request_id, category, model_id, is_anomalous, score, threshold, defect_type, sha256, bytes, format, width, "
    "height, api_key, latency_ms, stages_ms, image_kind, image, image_media_type, regions, part, file_name, p_value, "
    "patch_scores, notes"
)


def record(
    connection: psycopg.Connection,
    rows: list[tuple[UUID, Inspection]],
    timeout_ms: int,
    taken_back: Collection[UUID] = (),
) -> dict[UUID, int]:
    """Write a batch of keyed inspections in ONE transaction and one round trip (pipelined); the ids by key. Gives up
    after ``timeout_ms`` (a locked or slow table must not hold up answers). ``connection`` is not in autocommit mode.

    Idempotent by key: a batch written again after a write whose outcome was unknown gets the ids of the rows that
    landed, never a second row. ``taken_back``: keys of records whose answer was refused after their write was sent;
    deleted in the same transaction, so they go exactly when the new rows come."""
    values = [
        (
            key, r.request_id, r.category, r.model_id, r.is_anomalous, r.score, r.threshold, r.defect_type, r.sha256,
            r.bytes, r.format, r.width, r.height, r.api_key, r.latency_ms, json.dumps(r.stages_ms), r.image_kind,
            r.image, r.image_media_type, None if r.regions is None else json.dumps(r.regions), r.part, r.file_name,
            r.p_value, None if r.patch_scores is None else _Grid(r.patch_scores), r.notes,
        )
        for key, r in rows
    ]  # fmt: skip
    width = len(_COLUMNS.split(", ")) + 1
    rows_sql = ", ".join("(" + ", ".join(["%s"] * width) + ")" for _ in values)
    keys = [key for key, _ in rows]
    with connection.pipeline(), connection.transaction():
        connection.execute(
            "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
            (str(timeout_ms), str(timeout_ms)),
        )
        if taken_back:
            connection.execute("DELETE FROM inspections WHERE record_key = ANY(%s)", (list(taken_back),))
        if values:  # a batch may be only records taken back
            connection.execute(
                f"INSERT INTO inspections (record_key, {_COLUMNS}) VALUES {rows_sql} "
                "ON CONFLICT (record_key) DO NOTHING",
                [v for row in values for v in row],
            )
        found = None
        if keys:  # fetched after the commit, so the batch stays one round trip
            found = connection.execute("SELECT record_key, id FROM inspections WHERE record_key = ANY(%s)", (keys,))
    return dict(found.fetchall()) if found else {}


_LISTED = (
    "id, at::text, request_id, category, model_id, is_anomalous, score, threshold, defect_type, sha256, bytes, "
    "format, width, height, api_key, latency_ms, stages_ms, image_kind, image IS NOT NULL, reviewed_at::text, "
    "reviewed_by, review_label, review_model_id, regions, part, file_name, p_value, notes, patch_scores IS NOT NULL, "
    "(patch_scores IS NOT NULL AND EXISTS (SELECT 1 FROM models m WHERE m.id = inspections.model_id)) OR (image IS "
    "NOT NULL AND EXISTS (SELECT 1 FROM categories c WHERE c.name = inspections.category AND c.active_model_id IS "
    "NOT NULL))"
)  # the last: a heatmap can be drawn, from the answer's distances by its version, or from the image by the active one
_KEYS = (
    "id", "at", "request_id", "category", "model_id", "is_anomalous", "score", "threshold", "defect_type", "sha256",
    "bytes", "format", "width", "height", "api_key", "latency_ms", "stages_ms", "image_kind", "image_kept",
    "reviewed_at", "reviewed_by", "review_label", "review_model_id", "defect_regions", "part", "file_name", "p_value",
    "notes", "patch_scores_kept", "heatmap_drawable",
)  # fmt: skip


_AS_REVIEWED = "CASE WHEN review_label IS NULL THEN is_anomalous ELSE review_label <> 'good' END"  # a view's verdict
# as reviewed: what a person said it was where one did, else the service's


def _compared(conditions: tuple[tuple[str, str, object], ...]) -> tuple[list[sql.Composable], list]:
    """``expression op %s`` for each of ``conditions`` whose value is given, and those values: the filters of a
    listing (the expressions and operators are this module's own, never a caller's)."""
    given = [(expression, op, value) for expression, op, value in conditions if value is not None]
    return [sql.SQL(f"{expression} {op} %s") for expression, op, _ in given], [value for *_, value in given]


def listed(
    connection: psycopg.Connection,
    category: str | None = None,
    is_anomalous: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    model_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
    reviewed: bool | None = None,
    part: str | None = None,
    defective_as_reviewed: bool | None = None,
) -> list[dict]:
    """Inspections newest first, filtered; page on with ``before_id`` = the last id of the previous page.
    ``defective_as_reviewed``: only records defective (True) or good (False) as reviewed, so that a review's
    outcome can be listed: the defects the service missed (``is_anomalous=False`` with True), the false alarms a
    person cleared (``is_anomalous=True`` with False)."""
    where, params = _compared((
        ("category", "=", category), ("is_anomalous", "=", is_anomalous), ("at", ">=", since), ("at", "<", until),
        ("model_id", "=", model_id), ("id", "<", before_id), ("part", "=", part),
        (f"({_AS_REVIEWED})", "=", defective_as_reviewed),
    ))  # fmt: skip
    if reviewed is not None:
        where.append(sql.SQL("reviewed_at IS NOT NULL" if reviewed else "reviewed_at IS NULL"))
    statement = sql.SQL("SELECT {} FROM inspections {} ORDER BY id DESC LIMIT %s").format(
        sql.SQL(_LISTED), sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
    )
    rows = connection.execute(statement, [*params, limit]).fetchall()
    return [dict(zip(_KEYS, r, strict=True)) for r in rows]


_PART_COUNTS = (
    "count(*), count(*) FILTER (WHERE is_anomalous), count(*) FILTER (WHERE reviewed_at IS NOT NULL), "
    "count(*) FILTER (WHERE review_label <> 'good'), "
    f"count(*) FILTER (WHERE {_AS_REVIEWED}), "
    "coalesce(array_agg(DISTINCT category), '{}'), min(at)::text, max(at)::text, count(p_value), min(p_value)"
)
_PART_COLUMNS = 10  # the values of _PART_COUNTS


def _part(part: str, counts: tuple) -> dict:
    """A part's summary from :data:`_PART_COUNTS`: the service's verdict (any view flagged), and the verdict as
    reviewed, where each view a person reviewed counts as what they said it was and every other as the service
    judged it (a flagged view a person found good no longer rejects the part; a missed defect a person found does);
    and how rare the part is among good parts, from its views' p-values (:func:`patchcore.threshold.part_p_value`;
    none where a view has none: a record from before the log kept them, or of a version without good scores)."""
    views, flagged, reviewed, defective, as_reviewed, categories, first, last, rated, rarest = counts
    return {
        "part": part, "is_anomalous": flagged > 0, "views": views, "anomalous_views": flagged,
        "reviewed_views": reviewed, "reviewed_defective_views": defective, "is_defective_as_reviewed": as_reviewed > 0,
        "defective_views_as_reviewed": as_reviewed, "categories": sorted(categories), "first_at": first,
        "last_at": last, "p_value": part_p_value(views, rarest if rated == views else None),
    }  # fmt: skip


def of_part(connection: psycopg.Connection, part: str, category: str | None, limit: int) -> dict | None:
    """What the log holds of one part: anomalous when any view was, how many views were judged, how many flagged,
    how many reviewed and found defective, in which categories, and its newest ``limit`` records; None when no view
    of it was logged."""
    where = "part = %s" + ("" if category is None else " AND category = %s")
    params = [part] if category is None else [part, category]
    counts = connection.execute(f"SELECT {_PART_COUNTS} FROM inspections WHERE {where}", params).fetchone()
    if not counts[0]:
        return None
    rows = connection.execute(
        f"SELECT {_LISTED} FROM inspections WHERE {where} ORDER BY id DESC LIMIT %s", [*params, limit]
    ).fetchall()
    return {**_part(part, counts), "inspections": [dict(zip(_KEYS, r, strict=True)) for r in rows]}


WALK = (2000, 8)  # a listing of parts without `until` reads the newest views in reads of 2,000, at most 8 of them


def parts_listed(
    connection: psycopg.Connection,
    category: str | None = None,
    is_anomalous: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
    walk: tuple[int, int] = WALK,
    defective_as_reviewed: bool | None = None,
) -> list[dict]:
    """The named parts whose views (those within ``since``/``until``) the log holds, the part with the newest view
    first, each as :func:`of_part` counts it without its records, and ``last_id``, its newest view's id: page on with
    ``before_id`` = the last part's. ``is_anomalous``: only parts flagged on any view (True) or on none (False);
    ``defective_as_reviewed``: only parts defective as reviewed on any view (True) or on none (False).

    Without ``until``, grouping every view of the window (of the log, without ``since``) costs half a second per
    million records, so its newest views are read first, ``walk`` = (views per read, reads), and only the parts they
    name are judged; a page they do not fill is completed by grouping the older views alone. The same parts in the
    same order either way: a part first met in a read newest first is met at its newest view, and every part not yet
    met has its newest view below the last view read."""
    where, params = _compared((("category", "=", category), ("at", ">=", since), ("at", "<", until)))
    where.append(sql.SQL("part IS NOT NULL"))
    found: list[dict] = []
    rest: int | None = before_id
    verdicts = (is_anomalous, defective_as_reviewed)
    fresh = connection.autocommit and connection.info.transaction_status == TransactionStatus.IDLE
    with connection.transaction():
        if fresh:  # its reads see one snapshot: a part that gains a view meanwhile keeps its place on the page
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if until is None:  # the window's newest views are the log's: a read newest first starts where they are
            found, rest, whole = _walked(connection, where, params, verdicts, before_id, limit, *walk)
            if whole:
                return found
        return found + _grouped(connection, where, params, verdicts, rest, limit - len(found))


def _grouped(
    connection: psycopg.Connection,
    where: list[sql.Composable],
    params: list,
    verdicts: tuple[bool | None, bool | None],
    below: int | None,
    limit: int,
    parts: list[str] | None = None,
) -> list[dict]:
    """The parts of the views ``where`` selects (of ``parts`` only, when given), grouped and judged, those whose
    newest view lies below ``below`` and whose ``verdicts`` (the service's, as reviewed) are those given, newest
    first."""
    if parts is not None:
        where, params = [*where, sql.SQL("part = ANY(%s)")], [*params, parts]
    having, values = _compared((
        ("bool_or(is_anomalous)", "=", verdicts[0]), (f"bool_or({_AS_REVIEWED})", "=", verdicts[1]),
        ("max(id)", "<", below),
    ))  # fmt: skip
    statement = sql.SQL("SELECT part, {}, max(id) FROM inspections WHERE {} GROUP BY part {} ORDER BY max(id) DESC "
                        "LIMIT %s").format(
        sql.SQL(_PART_COUNTS), sql.SQL(" AND ").join(where),
        sql.SQL("HAVING ") + sql.SQL(" AND ").join(having) if having else sql.SQL(""),
    )  # fmt: skip
    rows = connection.execute(statement, [*params, *values, limit]).fetchall()
    return [{**_part(r[0], r[1 : 1 + _PART_COLUMNS]), "last_id": r[1 + _PART_COLUMNS]} for r in rows]


def _walked(
    connection: psycopg.Connection,
    where: list[sql.Composable],
    params: list,
    verdicts: tuple[bool | None, bool | None],
    before_id: int | None,
    limit: int,
    per_read: int,
    reads: int,
) -> tuple[list[dict], int | None, bool]:
    """The first parts of :func:`parts_listed`'s page found by reading the views newest first, the id below which
    the rest of the page lies (the last view read), and whether they are the whole page."""
    found: list[dict] = []
    met: set[str] = set()
    below = before_id
    for _ in range(reads):
        conditions, values = _compared((("id", "<", below),))
        statement = sql.SQL("SELECT id, part FROM inspections WHERE {} ORDER BY id DESC LIMIT %s").format(
            sql.SQL(" AND ").join([*where, *conditions])
        )
        rows = connection.execute(statement, [*params, *values, per_read]).fetchall()
        new = list(dict.fromkeys(part for _, part in rows if part not in met))
        met.update(new)
        if new:
            found += _grouped(connection, where, params, verdicts, before_id, len(new), new)
        if len(found) >= limit or len(rows) < per_read:
            return found[:limit], None, True
        below = rows[-1][0]
    return found, below, False


def one(connection: psycopg.Connection, inspection_id: int) -> dict | None:
    row = connection.execute(f"SELECT {_LISTED} FROM inspections WHERE id = %s", (inspection_id,)).fetchone()
    return dict(zip(_KEYS, row, strict=True)) if row else None


def review(
    connection: psycopg.Connection, inspection_id: int, label: str, by: str, model_id: int | None
) -> dict | None:
    """Record what a person says the inspected part was (a later review replaces an earlier one); the record."""
    row = connection.execute(
        f"UPDATE inspections SET reviewed_at = now(), reviewed_by = %s, review_label = %s, review_model_id = %s "
        f"WHERE id = %s RETURNING {_LISTED}",
        (by, label, model_id, inspection_id),
    ).fetchone()
    return dict(zip(_KEYS, row, strict=True)) if row else None


def image(connection: psycopg.Connection, inspection_id: int) -> tuple[bytes, str, str] | None:
    """(bytes, media type, kind) of an inspection's kept image."""
    row = connection.execute(
        "SELECT image, image_media_type, image_kind FROM inspections WHERE id = %s AND image IS NOT NULL",
        (inspection_id,),
    ).fetchone()
    return (bytes(row[0]), row[1], row[2]) if row else None


def drawn_from(connection: psycopg.Connection, inspection_id: int) -> tuple[bytes | None, list[list[float]] | None]:
    """What the log's heatmap of an inspection is drawn from: its kept image and the answer's patch distances (each
    None where not kept: an image expired or never kept, a record from before the distances were)."""
    row = connection.execute("SELECT image, patch_scores FROM inspections WHERE id = %s", (inspection_id,)).fetchone()
    if row is None:
        return None, None
    return None if row[0] is None else bytes(row[0]), row[1]


def expire_images(connection: psycopg.Connection, days: float) -> int:
    """Delete the images (not the records) of inspections older than ``days``; returns how many."""
    return connection.execute(
        "UPDATE inspections SET image = NULL, image_media_type = NULL WHERE image IS NOT NULL "
        "AND at < now() - make_interval(secs => %s)",
        (days * 86400,),
    ).rowcount


class Hour(NamedTuple):
    """One hour of the drift window's answers (or of the parts they judged, each flagged when any view was), and what
    people found reviewing them: what the drift report and its estimate from reviews count."""

    hour: str
    answered: int
    flagged: int
    flagged_reviewed: int
    flagged_found_good: int
    passed_reviewed: int
    passed_found_defective: int
    passed_above_median: int = 0  # passed answers scoring above the median of their version's good scores


REVIEW_COUNTS = Hour._fields[1:7]  # what the reviews' estimate counts


def _hour_label(hour: datetime) -> str:
    """An hour of UTC as the reports name it. Formatted here, once per hour: formatting each row in SQL (to_char)
    took most of a scan's time."""
    return hour.strftime("%Y-%m-%dT%H:00Z")


class Window(NamedTuple):
    """A drift window's answers per hour, and how many each version gave (what a window of several versions weighs
    each one's predicted rate by)."""

    hours: list[Hour]
    answered: dict[int, int]


def hourly(connection: psycopg.Connection, versions: Sequence[int], hours: float) -> Window:
    """The inspections the ``versions`` answered in the last ``hours`` hours, per hour, oldest first, and per
    version. The reviews, and the passed answers above the median of their own version's good scores (its memory
    bank's), are counted in the same scan, so their reports cost the drift report nothing more."""
    rows = connection.execute(
        "WITH medians AS (SELECT m.id, (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY calibration_score) "
        "FROM images WHERE model_id = ANY(m.bank_segments)) AS median FROM models m WHERE m.id = ANY(%(versions)s)) "
        "SELECT date_trunc('hour', i.at AT TIME ZONE 'UTC'), i.model_id, count(*), "
        "count(*) FILTER (WHERE is_anomalous), count(*) FILTER (WHERE is_anomalous AND review_label IS NOT NULL), "
        "count(*) FILTER (WHERE is_anomalous AND review_label = 'good'), "
        "count(*) FILTER (WHERE NOT is_anomalous AND review_label IS NOT NULL), "
        "count(*) FILTER (WHERE NOT is_anomalous AND review_label <> 'good'), "
        "count(*) FILTER (WHERE NOT is_anomalous AND score > m.median) "
        "FROM inspections i LEFT JOIN medians m ON m.id = i.model_id "
        "WHERE i.model_id = ANY(%(versions)s) AND i.at >= now() - make_interval(secs => %(seconds)s) "
        "GROUP BY 1, 2 ORDER BY 1",
        {"versions": list(versions), "seconds": hours * 3600},
    ).fetchall()
    per_hour: dict[datetime, list[int]] = {}
    answered: dict[int, int] = {}
    for hour, version, *counts in rows:
        per_hour[hour] = [a + b for a, b in zip(per_hour.get(hour, [0] * len(counts)), counts, strict=True)]
        answered[version] = answered.get(version, 0) + counts[0]
    return Window([Hour(_hour_label(hour), *counts) for hour, counts in per_hour.items()], answered)


def hourly_parts(connection: psycopg.Connection, versions: Sequence[int], hours: float) -> list[Hour]:
    """The parts (named by their queries) the ``versions`` judged in the last ``hours`` hours, per hour of each
    part's last view, oldest first. A part is flagged when any view is; a flagged part is reviewed when every flagged
    view is, and found good when, besides, no view of it was found defective; a passed part is reviewed when every
    view is, and found defective when any was."""
    rows = connection.execute(
        "SELECT date_trunc('hour', last AT TIME ZONE 'UTC'), count(*), "
        "count(*) FILTER (WHERE flagged), count(*) FILTER (WHERE flagged AND flagged_open = 0), "
        "count(*) FILTER (WHERE flagged AND flagged_open = 0 AND NOT defective), "
        "count(*) FILTER (WHERE NOT flagged AND unreviewed = 0), "
        "count(*) FILTER (WHERE NOT flagged AND unreviewed = 0 AND defective) "
        "FROM (SELECT max(at) AS last, bool_or(is_anomalous) AS flagged, "
        "count(*) FILTER (WHERE is_anomalous AND review_label IS NULL) AS flagged_open, "
        "count(*) FILTER (WHERE review_label IS NULL) AS unreviewed, "
        "count(*) FILTER (WHERE review_label <> 'good') > 0 AS defective "
        "FROM inspections WHERE model_id = ANY(%s) AND part IS NOT NULL AND at >= now() - make_interval(secs => %s) "
        "GROUP BY category, part) AS parts GROUP BY 1 ORDER BY 1",
        (list(versions), hours * 3600),
    ).fetchall()
    return [Hour(_hour_label(row[0]), *row[1:]) for row in rows]


PREVIEW_HOURS = 24 * 7  # the log's window a threshold is tried on by default: a week of the line's answers


class AtThresholds(NamedTuple):
    """A memory bank's answers of a window counted at a threshold and at the one in use now, with what their reviews
    say: what another threshold would have done on the line; and the parts they show, each flagged where any of its
    views is, as a line rejects it (a part the query named, by its views here in the window; else the answer's own)."""

    answered: int
    flagged: int
    flagged_now: int
    reviewed_good: int
    good_flagged: int  # found good by a review, and flagged: false alarms
    good_flagged_now: int
    reviewed_defective: int
    defects_passed: int  # found defective by a review, and passed: defects let by
    defects_passed_now: int
    parts: int
    parts_flagged: int
    parts_flagged_now: int
    other_banks: int  # answers of the window by the fit's versions with other rows (images taught), left out


def at_thresholds(
    connection: psycopg.Connection, category: str, segments: Sequence[int], hours: float, threshold: float, now: float
) -> AtThresholds:
    """The answers of the last ``hours`` hours by every version of ``category`` that searches the memory bank
    ``segments``, counted at ``threshold`` and at ``now``. A threshold set makes a version of the same bank, so these
    answers' scores are what the active version gives them; a version with other rows (normals added, a refit)
    scored otherwise, and is left out: the same fit's are counted apart (``other_banks``), so a window that images
    taught since have emptied says why. A score above the threshold is flagged, as the verdict's rule has it; a part
    by its worst view's score, so a target set per part is read on the line as it was set."""
    row = connection.execute(
        "SELECT count(*), count(*) FILTER (WHERE score > %(t)s), count(*) FILTER (WHERE score > %(now)s), "
        "count(*) FILTER (WHERE review_label = 'good'), "
        "count(*) FILTER (WHERE review_label = 'good' AND score > %(t)s), "
        "count(*) FILTER (WHERE review_label = 'good' AND score > %(now)s), "
        "count(*) FILTER (WHERE review_label <> 'good'), "
        "count(*) FILTER (WHERE review_label <> 'good' AND score <= %(t)s), "
        "count(*) FILTER (WHERE review_label <> 'good' AND score <= %(now)s), "
        # a part is flagged where any view is: where it is among the flagged answers' parts
        "count(*) FILTER (WHERE part IS NULL) + count(DISTINCT part), "
        "count(*) FILTER (WHERE part IS NULL AND score > %(t)s) "
        "+ count(DISTINCT part) FILTER (WHERE score > %(t)s), "
        "count(*) FILTER (WHERE part IS NULL AND score > %(now)s) "
        "+ count(DISTINCT part) FILTER (WHERE score > %(now)s), "
        "(SELECT count(*) FROM inspections WHERE model_id = ANY(SELECT m.id FROM models m JOIN categories c "
        "ON c.id = m.category_id WHERE c.name = %(category)s AND m.bank_segments[1] = %(segments)s[1] "
        "AND m.bank_segments <> %(segments)s::bigint[]) AND at >= now() - make_interval(secs => %(seconds)s)) "
        "FROM inspections WHERE model_id = ANY(SELECT m.id FROM models m JOIN categories c ON c.id = m.category_id "
        "WHERE c.name = %(category)s AND m.bank_segments = %(segments)s::bigint[]) "
        "AND at >= now() - make_interval(secs => %(seconds)s)",
        {"t": threshold, "now": now, "category": category, "segments": list(segments), "seconds": hours * 3600},
    ).fetchone()
    return AtThresholds(*row)


def recent_scores(
    connection: psycopg.Connection, versions: Sequence[int], hours: float, limit: int = 5000
) -> list[float]:
    """Scores of the newest ``limit`` inspections the ``versions`` answered in the last ``hours`` hours. Newest by
    ``at``, so ``inspections_model_at_idx`` reads these versions' rows alone, backwards from now (by ``id`` every
    other product's newer rows were read and discarded too)."""
    rows = connection.execute(
        "SELECT score FROM inspections WHERE model_id = ANY(%s) AND at >= now() - make_interval(secs => %s) "
        "ORDER BY at DESC LIMIT %s",
        (list(versions), hours * 3600, limit),
    ).fetchall()
    return [row[0] for row in rows]


def last_asked_first(connection: psycopg.Connection) -> list[str]:
    """The categories with an active version, the one whose latest answer is newest first (those never asked last,
    by name): what a server loads at start when it may hold only some, so the products the line is making are the
    ones ready. One probe of ``inspections_category_idx`` per category, however long the log."""
    rows = connection.execute(
        "SELECT a.category FROM active_models a LEFT JOIN LATERAL (SELECT i.id FROM inspections i "
        "WHERE i.category = a.category ORDER BY i.id DESC LIMIT 1) latest ON true "
        "ORDER BY latest.id DESC NULLS LAST, a.category"
    ).fetchall()
    return [row[0] for row in rows]
