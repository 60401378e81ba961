"""Exactly one record per answer, on a real PostgreSQL, in the cases a timing-based writer gets wrong: a write that
landed although the writer heard a failure, and one that landed after its query had stopped waiting.

The writer's own thread is idle here (it waits on its queue, which these tests never feed), so each test drives the
writer's batches itself, one by one, and every count holds by construction."""

from __future__ import annotations

import itertools
from datetime import timedelta
from uuid import uuid4

import numpy as np
import psycopg
import pytest
from PIL import Image

from app.recording import InspectionWriter, _Pending
from serving import logbook
from store import inspections
from store.database import configure
from store.migrate import upgrade


@pytest.fixture
def log_url(database_url: str) -> str:
    upgrade(database_url)
    return database_url


def _row(request_id: str) -> inspections.Inspection:
    return inspections.Inspection(
        request_id=request_id, category="bottle", model_id=1, is_anomalous=False, score=1.0, threshold=2.0,
        defect_type=None, sha256="0" * 64, bytes=10, format="PNG", width=8, height=8, api_key=None, latency_ms=1.0,
        stages_ms={}, image_kind="none", image=None, image_media_type=None,
    )  # fmt: skip


def _sent(*request_ids: str) -> _Pending:
    """An answer's records (several for a batch) that the writer has taken from its queue (no longer cancellable by
    its query)."""
    pending = _Pending([_row(request_id) for request_id in request_ids])
    assert pending.future.set_running_or_notify_cancel()
    return pending


def _count(url: str, request_id: str) -> int:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT count(*) FROM inspections WHERE request_id = %s", (request_id,)).fetchone()[0]


def test_writing_a_batch_again_keeps_the_rows_that_landed_and_their_ids(log_url):
    """``wait``: the first attempt's commit landed and its acknowledgement was lost; the retry adds no second row."""
    first, second = _sent("landed"), _sent("new")
    with psycopg.connect(log_url) as connection:
        configure(connection)
        landed = inspections.record(connection, [(first.keys[0], first.rows[0])], 1000)
    writer = InspectionWriter(log_url, 1000, "wait")
    assert writer._write([first, second])
    assert first.future.result(0) == [landed[first.keys[0]]] and second.future.result(0) != [landed[first.keys[0]]]
    assert _count(log_url, "landed") == 1 and _count(log_url, "new") == 1


def test_a_refused_answer_whose_write_failed_leaves_no_record_once_the_database_answers(log_url):
    """``refuse``: the writer heard a failure (here a locked table); whatever reached the disk is deleted with the
    next transaction, and the records written with it stay; a batch's records alike, all of them."""
    writer = InspectionWriter(log_url, 300, "refuse")
    refused = _sent("refused", "refused")
    with psycopg.connect(log_url) as blocker:
        blocker.execute("LOCK TABLE inspections IN ACCESS EXCLUSIVE MODE")
        assert writer._write([refused])
    with pytest.raises(psycopg.OperationalError):
        refused.future.result(0)
    assert writer.taken_back == set(refused.keys) and len(refused.keys) == 2
    with psycopg.connect(log_url) as connection:  # as if that commit had reached the disk after all
        configure(connection)
        inspections.record(connection, list(zip(refused.keys, refused.rows, strict=True)), 1000)
    assert _count(log_url, "refused") == 2
    answered = _sent("answered", "answered too")
    assert writer._write([answered])
    assert _count(log_url, "refused") == 0 and _count(log_url, "answered") == _count(log_url, "answered too") == 1
    ids = answered.future.result(0)
    assert len(set(ids)) == 2 and min(ids) > 0 and writer.taken_back == set()


def test_a_record_that_lands_after_its_query_gave_up_is_taken_back_or_kept_as_the_policy_says(log_url):
    """The query stopped waiting while its batch was being written and the write then succeeded: ``refuse`` answered
    503, so the record goes (with the next transaction, or on its own when no query comes); ``answer`` gave the
    verdict without an id, so the record stays: it is true."""
    refusing, answering = InspectionWriter(log_url, 300, "refuse"), InspectionWriter(log_url, 300, "answer")
    late, also_late = _sent("late refused"), _sent("late answered")
    late.abandoned = also_late.abandoned = True
    assert refusing._write([late]) and answering._write([also_late])
    assert _count(log_url, "late refused") == 1 and refusing.taken_back == set(late.keys)
    assert refusing._write([])
    assert _count(log_url, "late refused") == 0 and refusing.taken_back == set()
    assert _count(log_url, "late answered") == 1 and answering.taken_back == set()


def test_any_file_name_an_upload_carries_leaves_its_record(log_url):
    """A text column refuses NUL, so a name holding one would have lost the whole record (and, under ``refuse``,
    the answer): the log keeps the name with U+FFFD in its place, and a name of any length up to its first 1,000
    characters."""
    image = Image.new("RGB", (8, 8))
    names = {"nul": "cam\x001.png", "long": "n" * 5000 + ".png", "none": None}
    rows = [
        (uuid4(), logbook.entry(request, "bottle", 1, False, 1.0, 2.0, None,
                                logbook.received(b"\x89PNG", image, "none", name), None, {}, [], "SN-1"))
        for request, name in names.items()
    ]  # fmt: skip
    with psycopg.connect(log_url) as connection:
        configure(connection)
        ids = inspections.record(connection, rows, 1000)
        kept = dict(connection.execute(
            "SELECT request_id, file_name FROM inspections WHERE id = ANY(%s)", (list(ids.values()),)
        ).fetchall())  # fmt: skip
    assert kept == {"nul": "cam\ufffd1.png", "long": "n" * logbook.NAME_KEPT, "none": None}


def test_an_answer_s_patch_distances_are_kept_exactly_as_a_grid_sql_can_read(log_url):
    """The record keeps the answer's (rows, columns) patch distances as a ``real[]``, written in binary by the log's
    own dumper: read back, every float32 is the same and the grid is not turned (a 3 x 5 grid of a strip);
    ``drawn_from`` gives them with the kept image; a record without them has none."""
    grid = np.random.default_rng(0).random((3, 5), dtype=np.float32) * 4
    grid[2, 4] = np.float32(1 / 3)  # a value with every bit of its mantissa set
    image = Image.new("RGB", (40, 24))
    kept = logbook.received(b"\x89PNG", image, "none", "strip.png")
    rows = [
        (uuid4(), logbook.entry("grid", "bottle", 1, True, 3.0, 2.0, None, kept, None, {}, [], None, 0.01, grid)),
        (uuid4(), logbook.entry("no grid", "bottle", 1, False, 1.0, 2.0, None, kept, None, {}, [], None)),
    ]  # fmt: skip
    with psycopg.connect(log_url) as connection:
        configure(connection)
        ids = inspections.record(connection, rows, 1000)
        recorded, without = (ids[key] for key, _ in rows)
        stored = connection.execute(
            "SELECT array_dims(patch_scores), patch_scores[3][5], (SELECT max(s) FROM unnest(patch_scores) s) "
            "FROM inspections WHERE id = %s", (recorded,)
        ).fetchone()  # fmt: skip
        assert stored[0] == "[1:3][1:5]" and np.float32(stored[1]) == grid[2, 4] and np.float32(stored[2]) == grid.max()
        assert np.array_equal(np.array(inspections.drawn_from(connection, recorded)[1], dtype=np.float32), grid)
        assert inspections.drawn_from(connection, without) == (None, None)
        assert inspections.drawn_from(connection, -1) == (None, None)


def test_the_whole_log_s_parts_read_newest_first_are_the_parts_its_grouping_lists(log_url):
    """``GET /parts`` without ``until`` reads the newest views first and groups only what a page leaves: the same
    parts, counts and order as grouping the whole window, for every filter and page, whether the reads fill the page,
    run out of log, or leave the rest to the grouping. The views of a part are scattered through the log here (one a
    second), a few views name no part, few parts are flagged, and some views are reviewed (good, or a defect)."""
    with psycopg.connect(log_url) as connection:
        connection.execute(
            "INSERT INTO inspections (request_id, category, model_id, is_anomalous, score, threshold, sha256, bytes, "
            "format, width, height, latency_ms, image_kind, part, at, reviewed_at, review_label) SELECT 'r' || i, "
            "(ARRAY['a', 'b', 'c'])[1 + i % 3], 0, (i * 7919) % 97 = 0, 1.0, 2.0, '', 1, 'PNG', 8, 8, 1.0, 'none', "
            "CASE WHEN i % 11 = 0 THEN NULL ELSE 'P' || ((i * 2654435761) % 400) END, "
            "now() - make_interval(secs => 3000 - i), CASE WHEN i % 5 = 0 OR i % 89 = 0 THEN now() END, "
            "CASE WHEN i % 89 = 0 THEN 'scratch' WHEN i % 5 = 0 THEN 'good' END FROM generate_series(1, 3000) i"
        )
        half = connection.execute("SELECT now() - interval '1500 seconds'").fetchone()[0]
        verdicts = ((None, None), (True, None), (False, None), (None, True), (None, False), (True, False))
        for category, (anomalous, reviewed), since in itertools.product((None, "a"), verdicts, (None, half)):
            chosen = {"defective_as_reviewed": reviewed}
            grouped = inspections.parts_listed(connection, category, anomalous, since, limit=500, walk=(1, 0), **chosen)
            assert 0 < len(grouped) < 100 if anomalous or reviewed else len(grouped) > 50
            assert all(p["is_defective_as_reviewed"] == reviewed for p in grouped if reviewed is not None)
            for walk, limit in itertools.product(((50, 3), (50, 1000), (2000, 8)), (7, 500)):
                pages, before = [], None
                for _ in range(len(grouped) + 1):  # a page that repeats itself ends the loop too
                    page = inspections.parts_listed(connection, category, anomalous, since, before_id=before,
                                                    limit=limit, walk=walk, **chosen)  # fmt: skip
                    pages += page
                    if len(page) < limit:
                        break
                    before = page[-1]["last_id"]
                assert pages == grouped, (category, anomalous, reviewed, since, walk, limit)


def test_the_drift_report_counts_hours_of_utc_whatever_the_session_s_time_zone(log_url):
    """The drift report's hours are named in UTC ("...T05:00Z"), so they must be UTC's hours too. In a time zone half
    an hour off UTC (India's), truncating in the session's zone cut each hour at half past: views ten and forty
    minutes past an hour of UTC fell into two hours, and a part seen ten minutes past the next into the hour before.
    Counted here by the scans the report and ``/metrics`` run (answers per hour, and parts per hour of their last
    view)."""
    with psycopg.connect(log_url) as connection:
        connection.execute("SET TimeZone = 'Asia/Kolkata'")
        hour = connection.execute("SELECT date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '1 hour'")
        hour = hour.fetchone()[0]
        for minutes, part, flagged in ((10, "A", True), (40, "A", False), (70, "B", False)):
            connection.execute(
                "INSERT INTO inspections (request_id, category, model_id, is_anomalous, score, threshold, sha256, "
                "bytes, format, width, height, latency_ms, image_kind, part, at) VALUES (%s, 'hours', 7, %s, 1.0, "
                "2.0, '', 1, 'PNG', 8, 8, 1.0, 'none', %s, (%s + make_interval(mins => %s)) AT TIME ZONE 'UTC')",
                (f"r{minutes}", flagged, part, hour, minutes),
            )
        first, second = (f"{h:%Y-%m-%dT%H}:00Z" for h in (hour, hour + timedelta(hours=1)))
        answers = inspections.hourly(connection, [7], 24)
        assert [(h.hour, h.answered, h.flagged) for h in answers.hours] == [(first, 2, 1), (second, 1, 0)]
        assert answers.answered == {7: 3}
        parts = inspections.hourly_parts(connection, [7], 24)
        assert [(h.hour, h.answered, h.flagged) for h in parts] == [(first, 1, 1), (second, 1, 0)]
