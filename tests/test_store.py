"""The memory bank in a real PostgreSQL: migrations, bulk load, indexes, atomic and idempotent re-ingest."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import psycopg
import pytest
import torch
from alembic import command

from config import Settings
from patchcore.model import PatchCoreConfig, fit
from revisions.threshold import set_threshold
from store import banks, changes, images, models, search, versions
from store.database import connect, database_url, stop_embedded
from store.migrate import alembic_config, upgrade
from tests.conftest import ROOT, WEIGHTS


def _save(url: str, category: str, model, cells: bytes | None = None, fits_kept: int | None = None) -> int:
    """Store ``model`` as a fit of ``category`` and retire as a fit does (``fits_kept`` unset: the default)."""
    upgrade(url)
    with connect(url) as connection:
        model_id = models.save_model(connection, category, model, {}, Settings(), cells=cells)["model_id"]
    with connect(url, autocommit=True) as connection:
        models.retire_old_models(connection, category, fits_kept or Settings().fits_kept)
    return model_id


def _halved(model):
    """The same model with half its memory bank: a second, different model of the same category."""
    keep = model.memory_bank.shape[0] // 2
    return dataclasses.replace(
        model, memory_bank=model.memory_bank[:keep], bank_image=model.bank_image[:keep],
        bank_position=model.bank_position[:keep], threshold=model.threshold * 2,
    )  # fmt: skip


def _whole(connection: psycopg.Connection, category: str) -> tuple[int, int, int]:
    """(model id, memory_bank_size, patch rows of that model) as one reader sees them."""
    model = models.active_model(connection, category)
    return model.id, model.memory_bank_size, banks.patch_count(connection, model.bank_segments)


def test_a_new_embedded_server_gets_its_shared_buffers(tmp_path):
    settings = Settings(database_url=None, data_dir=tmp_path / "pgdata", embedded_shared_buffers="192MB")
    try:
        with psycopg.connect(database_url(settings)) as connection:
            assert connection.execute("SHOW shared_buffers").fetchone()[0] == "192MB"
    finally:
        assert stop_embedded(settings)


def test_migrations_run_from_empty_and_again(database_url):
    upgrade(database_url)
    upgrade(database_url)
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0028",)]
        tables = {r[0] for r in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"categories", "models", "images", "patches"} <= tables
        assert connection.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 1


def test_servers_starting_together_migrate_once_while_an_index_is_built_concurrently(database_url):
    """Every API server and worker migrates at start, one at a time behind an advisory lock. Migration 0024 builds
    its index CONCURRENTLY, which waits for every transaction holding an older snapshot, and a caller blocked inside
    ``pg_advisory_lock`` holds its statement's: the build would wait for the caller and the caller for the lock, for
    good (the lock's holder is another session, so PostgreSQL sees no cycle). Callers wait between statements
    instead; four starting at once all finish, and the index is valid."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            upgrade(database_url)
        except BaseException as error:  # the test reports whatever a caller raised
            errors.append(error)

    callers = [threading.Thread(target=start, daemon=True) for _ in range(4)]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 120
    for caller in callers:
        caller.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not [caller for caller in callers if caller.is_alive()] and not errors
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0028",)]
        assert connection.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'inspections_model_at_idx'::regclass"
        ).fetchone() == (True,)


_LOG_RECORD = (
    "INSERT INTO inspections (request_id, category, model_id, is_anomalous, score, threshold, sha256, bytes, format, "
    "width, height, latency_ms, image_kind) VALUES ('r', 'bottle', 1, false, 1.0, 1.3, 'x', 1, 'PNG', 9, 9, 1, 'none')"
)


@pytest.mark.parametrize(("before", "revision"), [("0021", "0022"), ("0023", "0024")])
def test_the_log_takes_records_while_a_migration_indexes_it(database_url, before, revision):
    """Every migration that indexes the log after its first records builds CONCURRENTLY. A plain build asks for a
    lock that excludes every insert and waits for the writers before it; each new record queues behind that request
    for as long as the build waits and runs (minutes on a log of years), and a record the database cannot take within
    ``INSPECT_LOG_TIMEOUT_MS`` is a refused answer. Here one writer holds a record uncommitted while the migration
    runs; once the build waits for it, another record must go in within a second, and the index ends valid. (0012 and
    0021 add the columns they index first, and an ALTER TABLE waits for every writer whichever way its index is built,
    as briefly as a writer's transaction lasts: their builds are held to CONCURRENTLY by the rule over the
    migrations' sources below.)"""
    config = alembic_config(database_url)
    command.upgrade(config, before)
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            command.upgrade(config, revision)
        except BaseException as error:  # the test reports whatever the migration raised
            errors.append(error)

    migration = threading.Thread(target=migrate, daemon=True)
    with psycopg.connect(database_url) as writer, psycopg.connect(database_url, autocommit=True) as watcher:
        writer.execute(_LOG_RECORD)
        migration.start()
        deadline = time.monotonic() + 60
        while not watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'CREATE INDEX%%' AND wait_event_type = 'Lock'"
        ).fetchone()[0]:
            assert time.monotonic() < deadline and migration.is_alive() and not errors
            time.sleep(0.05)
        watcher.execute("SET lock_timeout = '1s'")
        watcher.execute(_LOG_RECORD)
        writer.commit()
    migration.join(timeout=60)
    assert not migration.is_alive() and not errors
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(revision,)]
        assert connection.execute("SELECT count(*) FROM inspections").fetchone()[0] == 2
        invalid = connection.execute(
            "SELECT count(*) FROM pg_index JOIN pg_class ON pg_class.oid = indrelid "
            "WHERE relname = 'inspections' AND NOT indisvalid"
        ).fetchone()[0]
    assert invalid == 0


@pytest.mark.parametrize(
    ("before", "revision", "table"),
    [("0009", "0010", "inspections"), ("0011", "0012", "inspections"), ("0016", "0017", "inspections"),
     ("0020", "0021", "inspections"), ("0022", "0023", "inspections"), ("0025", "0026", "inspections"),
     ("0026", "0027", "inspections"),
     ("0012", "0013", "models"),
     ("0018", "0019", "images"), ("0027", "0028", "images"), ("0013", "0014", "fit_jobs")],
)  # fmt: skip
def test_queries_go_on_while_a_migration_waits_to_alter_a_table(database_url, before, revision, table, caplog):
    """An ALTER TABLE needs its table to itself, so it waits for every transaction that holds it (a fit being saved, a
    dump, someone's psql), and each statement on the table asked for after it queues behind it for as long as that
    transaction runs: every answer reads ``images`` and writes to the log, a server loading a version reads
    ``models``, every poll reads the fit queue. Each migration's ALTER gives up after a moment instead and tries
    again (``migrations.brief_locks``): while a reader holds the table, a record goes into the log (a read of the
    table, for the others) within a second, the wait names the reader, and once the reader is done the migration
    completes."""
    probe = _LOG_RECORD if table == "inspections" else f"SELECT count(*) FROM {table}"
    config = alembic_config(database_url)
    command.upgrade(config, before)
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            upgrade(database_url, revision)
        except BaseException as error:  # the test reports whatever the migration raised
            errors.append(error)

    migration = threading.Thread(target=migrate, daemon=True)
    with psycopg.connect(database_url) as reader, psycopg.connect(database_url, autocommit=True) as watcher:
        reader.execute(f"SELECT count(*) FROM {table}")
        migration.start()
        deadline = time.monotonic() + 60
        while not watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE %s AND wait_event_type = 'Lock'",
            (f"ALTER TABLE {table} %",),
        ).fetchone()[0]:
            assert time.monotonic() < deadline and migration.is_alive() and not errors
            time.sleep(0.01)
        watcher.execute("SET lock_timeout = '1s'")
        for _ in range(3):
            watcher.execute(probe)
            time.sleep(0.3)
        assert migration.is_alive()
        reader.commit()
        named = f"pid {reader.info.backend_pid} "
    migration.join(timeout=60)
    assert not migration.is_alive() and not errors
    assert f"for table {table}, held by {named}" in caplog.text and f"SELECT count(*) FROM {table}" in caplog.text
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(revision,)]
        if table == "inspections":
            assert connection.execute("SELECT count(*) FROM inspections").fetchone()[0] == 3


def test_every_migration_lets_the_services_queries_through():
    """The rules the two tests above measure, over the migrations' sources: every new index on ``inspections`` after
    the log's table was made (0009) is built CONCURRENTLY, and every ALTER TABLE of every revision, up or down, waits
    for its lock briefly (of a table its revision has just made, it holds the lock already)."""
    folder = ROOT / "migrations" / "versions"
    revisions = sorted(folder.glob("0*.py"))
    plain = [
        (path.name, statement)
        for path in revisions
        if path.name[:4] > "0009"
        for statement in re.findall(r"CREATE (?:UNIQUE )?INDEX[^\n]*?ON inspections", path.read_text())
        if "CONCURRENTLY" not in statement
    ]
    altered = re.compile(r"op\.execute\(\s*f?\"\"?\"?\s*ALTER TABLE")
    waiting = [path.name for path in revisions if altered.search(path.read_text())]
    assert len(revisions) >= 24 and not plain and not waiting


def _vector(values) -> str:
    return "[" + ",".join(f"{v:.4f}" for v in values) + "]"


def test_migrations_0003_and_0004_move_stored_models_into_partitions_and_back(database_url):
    config = alembic_config(database_url)
    command.upgrade(config, "0002")
    vectors = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)).tolist()
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("INSERT INTO categories (name) VALUES ('bottle')")
        model_id = connection.execute(
            "INSERT INTO models (category_id, backbone, layers, resize, crop, metric, coreset_ratio, num_neighbors, "
            "holdout_fraction, threshold_sigmas, seed, embedding_dim, grid_height, grid_width, threshold, "
            "memory_bank_size) SELECT id, 'resnet18', '{layer2}', 256, 224, 'l2', 0.1, 9, 0.1, 3, 0, 8, 5, 10, 1.5, 50 "
            "FROM categories RETURNING id"
        ).fetchone()[0]
        image_id = connection.execute(
            "INSERT INTO images (model_id, split, label, file_name, sha256, width, height, embedding) "
            "VALUES (%s, 'train', 'good', 'a.png', 'x', 9, 9, %s) RETURNING id",
            (model_id, _vector(vectors[0])),
        ).fetchone()[0]
        for i, vector in enumerate(vectors):
            connection.execute(
                "INSERT INTO patches (model_id, image_id, grid_row, grid_col, embedding) VALUES (%s, %s, %s, %s, %s)",
                (model_id, image_id, i // 10, i % 10, _vector(vector)),
            )
        connection.execute(
            f"CREATE INDEX patches_model_{model_id}_l2_hnsw ON patches USING hnsw ((embedding::vector(8)) "
            f"vector_l2_ops) WITH (m = 8, ef_construction = 32) WHERE model_id = {model_id}"
        )
    command.upgrade(config, "head")
    with psycopg.connect(database_url, autocommit=True) as connection:
        assert connection.execute("SELECT relkind FROM pg_class WHERE relname = 'patches'").fetchone()[0] == "p"
        assert connection.execute(f"SELECT count(*) FROM patches_model_{model_id}").fetchone()[0] == 50
        definition = connection.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (f"patches_model_{model_id}_l2_hnsw",)
        ).fetchone()[0]
        assert f"ON public.patches_model_{model_id} USING hnsw" in definition and "m='8'" in definition
        policy, rate = connection.execute("SELECT threshold_policy, false_alarm_rate FROM models").fetchone()
        assert policy["kind"] == "sigma_rule" and policy["sigmas"] == 3 and rate == 0.02  # migration 0004
    command.downgrade(config, "0002")
    with psycopg.connect(database_url, autocommit=True) as connection:
        assert connection.execute("SELECT threshold_sigmas FROM models").fetchone()[0] == 3
        assert connection.execute("SELECT relkind FROM pg_class WHERE relname = 'patches'").fetchone()[0] == "r"
        assert connection.execute("SELECT count(*) FROM patches").fetchone()[0] == 50
        definition = connection.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (f"patches_model_{model_id}_l2_hnsw",)
        ).fetchone()[0]
        assert "ON public.patches USING hnsw" in definition and f"WHERE (model_id = {model_id})" in definition
    command.upgrade(config, "head")
    with connect(database_url) as connection:
        assert banks.patch_count(connection, [model_id]) == 50


def test_versions_fitted_before_migration_0016_decode_their_jpegs_in_full(database_url, small_model):
    """A version keeps how its fit decoded JPEGs, so its queries are decoded alike: new fits at a reduced scale (and
    a threshold version made from one: the column is copied, not defaulted), every version stored before the
    column existed in full."""
    _save(database_url, "bottle", small_model)
    with connect(database_url) as connection:
        fitted = models.active_model(connection, "bottle")
        set_threshold(connection, fitted, "test", value=1.5)
        copied = models.active_model(connection, "bottle")
    assert fitted.config.jpeg_scaling is True and copied.id != fitted.id and copied.config.jpeg_scaling is True
    config = alembic_config(database_url)
    command.downgrade(config, "0015")
    command.upgrade(config, "head")
    with connect(database_url) as connection:
        before = models.active_model(connection, "bottle")
    assert before.id == copied.id and before.config.jpeg_scaling is False
    assert before.config.preprocess.least(3600, 2400) == (3600, 2400)


def test_good_images_keep_their_parts_and_a_new_threshold_is_described_per_part(database_url, small_model):
    """Good images that are views of parts (two each here) keep their part in the store, in the order of their good
    scores, so that a threshold set later describes the parts by their worst views as the fit's did; a threshold
    with no part of several views says nothing per part."""
    viewed = dataclasses.replace(
        small_model, images=[dataclasses.replace(r, part=f"p{i // 2}") for i, r in enumerate(small_model.images)]
    )
    model_id = _save(database_url, "bottle", viewed)
    with connect(database_url) as connection:
        scores, parts = images.good_scores(connection, [model_id])
        assert (scores, parts) == (viewed.good_scores, viewed.good_parts) and len(set(parts)) == 6
        views = "SELECT count(*) FROM image_views v JOIN images i ON i.id = v.image_id WHERE i.model_id = %s"
        assert connection.execute(views, (model_id,)).fetchone()[0] == len(viewed.images)  # each with its view
        set_threshold(connection, models.active_model(connection, "bottle"), "test", false_alarm_rate=0.25)
        changed = models.active_model(connection, "bottle")
    worst = [max(scores[2 * p : 2 * p + 2]) for p in range(6)]
    per_part = changed.threshold_policy["per_part"]
    assert per_part["parts"] == 6 and per_part["good_scores"] == 6
    assert per_part["good_scores_above"] == sum(w > changed.threshold for w in worst)
    assert per_part["estimated_false_alarm_rate"] > changed.threshold_policy["estimated_false_alarm_rate"]
    _save(database_url, "bottle", small_model)
    with connect(database_url) as connection:
        set_threshold(connection, models.active_model(connection, "bottle"), "test", false_alarm_rate=0.25)
        assert "per_part" not in models.active_model(connection, "bottle").threshold_policy


def test_every_query_the_docs_offer_runs_on_a_stored_category(database_url, small_model):
    """docs/database.md and docs/operations.md give SQL to read the store and the inspection log with: each statement
    runs against a fitted category (a typo, or a column's type misread, as an array compared with a scalar, fails
    here, not in a user's psql)."""
    import re

    _save(database_url, "bottle", small_model)
    pages = "".join((ROOT / "docs" / page).read_text() for page in ("database.md", "operations.md"))
    blocks = re.findall(r"```sql\n(.*?)```", pages, flags=re.S)
    statements = [s.strip() for b in blocks for s in re.sub(r"--[^\n]*", "", b).split(";") if s.strip()]
    assert len(statements) >= 20
    with psycopg.connect(database_url) as connection:
        for statement in statements:
            connection.execute(statement).fetchall()


def test_load_counts_index_and_idempotent_reingest(database_url, small_model):
    """A re-ingest stores a second fit beside the first (kept: INSPECT_FITS_KEPT is 2), never rows added to it; one
    more with one fit kept retires both earlier fits, their partitions and indexes."""
    first = _save(database_url, "bottle", small_model)
    size = small_model.memory_bank.shape[0]
    with connect(database_url) as connection:
        assert _whole(connection, "bottle") == (first, size, size)
        assert images.image_counts(connection, [first]) == {"train": 9, "holdout": 3}
    second = _save(database_url, "bottle", small_model)
    with connect(database_url) as connection:
        assert second != first
        assert _whole(connection, "bottle") == (second, size, size)
        assert connection.execute("SELECT count(*) FROM patches").fetchone()[0] == 2 * size
        assert connection.execute("SELECT array_agg(id ORDER BY id) FROM models").fetchone()[0] == [first, second]
    third = _save(database_url, "bottle", small_model, fits_kept=1)
    with connect(database_url) as connection:
        assert _whole(connection, "bottle") == (third, size, size)
        assert connection.execute("SELECT count(*) FROM patches").fetchone()[0] == size
        assert connection.execute("SELECT count(*) FROM models").fetchone()[0] == 1
        indexes = {r[0] for r in connection.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE '%hnsw'")}
        assert indexes == {f"patches_model_{third}_cosine_hnsw", f"patches_model_{third}_l2_hnsw"}
        partitions = connection.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'patches'::regclass"
        ).fetchall()
        assert partitions == [(f"patches_model_{third}",)]
        for gone in (first, second):
            assert connection.execute("SELECT to_regclass(%s)", (f"patches_model_{gone}",)).fetchone()[0] is None


def test_two_categories_of_different_dimension_side_by_side(database_url, small_model, small_train):
    wide = fit(PatchCoreConfig(backbone="wide_resnet50_2", holdout_fraction=0.34), small_train[:3], "random")
    _save(database_url, "bottle", small_model)
    _save(database_url, "bottle_wide", wide)
    with connect(database_url) as connection:
        for name, model in (("bottle", small_model), ("bottle_wide", wide)):
            stored = models.active_model(connection, name)
            assert stored.dim == model.memory_bank.shape[1]
            queries = model.memory_bank[:5].numpy()
            statement = search.search_statement(stored)
            result = search.search(connection, statement, queries, queries.mean(0), 3, 40)
            assert result.distances.shape == (5,)
            assert result.distances.max() < 1e-3  # each query is a memory-bank patch of that category
        # 6 KB vectors stay inline in their heap rows: nothing went to the TOAST table (migration 0002)
        toasted = connection.execute(
            "SELECT count(*) FROM patches p JOIN models m ON m.id = p.model_id "
            "WHERE m.embedding_dim = 1536 AND pg_column_size(p.embedding) <> 4 * 1536 + 8"
        ).fetchone()[0]
        assert toasted == 0
        with pytest.raises(psycopg.errors.CheckViolation):
            connection.execute("UPDATE models SET embedding_dim = 2001")
    assert wide.memory_bank.shape[1] == 1536


def test_more_dimensions_than_hnsw_takes_are_refused_before_any_work():
    with pytest.raises(ValueError, match="at most 2000 dimensions"):
        models.check_dimension(3072)


_ATTACH = "ALTER TABLE patches ATTACH%%"


def _blocker(url: str) -> psycopg.Connection:
    """Hold a lock that lets an ingest COPY and index its memory bank but makes it wait when it attaches it to
    ``patches``, mid-transaction (readers are not blocked by this lock)."""
    blocker = psycopg.connect(url)
    blocker.execute("LOCK TABLE patches IN SHARE MODE")
    return blocker


def _wait_for_blocked_attach(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '{_ATTACH}' AND wait_event_type = 'Lock'"
            ).fetchone()
            if row[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the ingest never reached ATTACH PARTITION")


def kill_at_attach(url: str, job_args: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``python -m ingest <job_args>``, SIGKILL it while its transaction waits to attach its partition, and wait
    until PostgreSQL has rolled that transaction back."""
    blocker = _blocker(url)
    job = subprocess.Popen(
        [sys.executable, "-m", "ingest", *job_args], cwd=ROOT, env={**os.environ, "DATABASE_URL": url, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_blocked_attach(url)
        job.send_signal(signal.SIGKILL)
        job.wait(30)
    finally:
        blocker.rollback()
        blocker.close()
    deadline = time.monotonic() + 30
    with connect(url, autocommit=True) as connection:
        while connection.execute(f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '{_ATTACH}'").fetchone()[0]:
            assert time.monotonic() < deadline, "the killed job's transaction was never rolled back"
            time.sleep(0.1)


def test_reader_sees_a_whole_model_during_reingest(database_url, small_model):
    old_id = _save(database_url, "bottle", small_model)
    old_size = small_model.memory_bank.shape[0]
    new = _halved(small_model)
    blocker = _blocker(database_url)
    writer = threading.Thread(target=_save, args=(database_url, "bottle", new))
    writer.start()
    try:
        _wait_for_blocked_attach(database_url)
        with connect(database_url, autocommit=True) as reader:
            assert _whole(reader, "bottle") == (old_id, old_size, old_size)  # new rows are in, but not visible
            assert reader.execute("SELECT threshold FROM active_models").fetchone()[0] == small_model.threshold
    finally:
        blocker.rollback()
        blocker.close()
        writer.join(60)
    with connect(database_url, autocommit=True) as reader:
        new_id, size, rows = _whole(reader, "bottle")
        assert new_id != old_id and size == rows == new.memory_bank.shape[0]
        assert reader.execute("SELECT threshold FROM active_models").fetchone()[0] == new.threshold


def test_a_killed_ingest_leaves_the_old_model_intact(database_url, small_model, small_train, tmp_path):
    old_id = _save(database_url, "bottle", small_model)
    size = small_model.memory_bank.shape[0]
    folder = tmp_path / "good"
    folder.mkdir()
    for path in small_train[:6]:
        (folder / path.name).symlink_to(path)
    kill_at_attach(
        database_url,
        ["fit", "--folder", str(folder), "--category", "bottle", "--backbone", "resnet18", "--weights", str(WEIGHTS),
         "--out", str(tmp_path / "reports")],
    )  # fmt: skip
    with connect(database_url, autocommit=True) as connection:
        assert _whole(connection, "bottle") == (old_id, size, size)
        assert connection.execute("SELECT count(*) FROM patches").fetchone()[0] == size
        orphans = connection.execute(
            "SELECT count(*) FROM pg_class c WHERE c.relkind = 'r' AND c.relname ~ '^patches_model_[0-9]+$' "
            "AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)"
        ).fetchone()[0]
        assert orphans == 0, "the killed job's half-loaded memory bank table is left behind"
        stored = models.active_model(connection, "bottle")
        queries = small_model.memory_bank[:4].numpy()
        statement = search.search_statement(stored)
        result = search.search(connection, statement, queries, queries.mean(0), 2, 40)
        assert torch.from_numpy(result.distances).max() < 1e-3


def test_a_new_threshold_is_a_new_version_made_atomically(database_url, small_model):
    """Readers see the old version whole until the new one commits; the new version shares the memory bank (no rows
    copied, no index built), is logged, survives retirement with its bank, and a stale request changes nothing."""
    old_id = _save(database_url, "bottle", small_model)
    with connect(database_url, autocommit=True) as connection:
        old = models.active_model(connection, "bottle")
    assert old.threshold_policy["kind"] == "false_alarm_rate" and old.bank_segments == (old_id,)
    blocker = psycopg.connect(database_url)
    blocker.execute("SELECT 1 FROM categories WHERE name = 'bottle' FOR UPDATE")
    made: list[int] = []

    def change() -> None:
        with connect(database_url, autocommit=True) as connection:
            made.append(set_threshold(connection, old, "test", false_alarm_rate=0.25))

    writer = threading.Thread(target=change)
    writer.start()
    try:
        time.sleep(1.0)
        assert writer.is_alive(), "the new version did not wait for the category's lock"
        with connect(database_url, autocommit=True) as reader:
            assert _whole(reader, "bottle") == (old_id, old.memory_bank_size, old.memory_bank_size)
            assert models.active_model(reader, "bottle").threshold == old.threshold
    finally:
        blocker.rollback()
        blocker.close()
        writer.join(60)
    with connect(database_url, autocommit=True) as connection:
        new = models.active_model(connection, "bottle")
        assert new.id == made[0] != old_id and new.bank_segments == (old_id,)
        assert new.threshold < old.threshold and new.threshold_policy["target_false_alarm_rate"] == 0.25
        assert new.config.false_alarm_rate == 0.25
        assert _whole(connection, "bottle") == (new.id, old.memory_bank_size, old.memory_bank_size)
        assert models.retire_old_models(connection, "bottle", fits_kept=1) == 0  # the old version owns the bank
        log = changes.changes(connection, new.category_id)
        assert [c["action"] for c in log] == ["threshold", "fit"] and log[0]["actor"] == "test"
        assert log[0]["detail"]["previous_model_id"] == old_id
        with pytest.raises(versions.VersionConflict):
            set_threshold(connection, old, "test", value=1.0)
        assert models.active_model(connection, "bottle").id == new.id
        assert connection.execute("SELECT count(*) FROM models").fetchone()[0] == 2
        assert connection.execute("SELECT count(*) FROM patches").fetchone()[0] == old.memory_bank_size
    refit = _save(database_url, "bottle", _halved(small_model))  # the fit before stays, both its versions
    with connect(database_url, autocommit=True) as connection:
        stored = versions.stored_versions(connection, new.category_id)
        assert [(v["model_id"], v["fit"], v["active"]) for v in stored] == [
            (refit, refit, True), (new.id, old_id, False), (old_id, old_id, False)]  # fmt: skip
        assert versions.reactivate(connection, models.active_model(connection, "bottle"), new.id, "test")
        assert _whole(connection, "bottle") == (new.id, old.memory_bank_size, old.memory_bank_size)
    # the fits kept are those in service last, by the change log, not the newest: the refit goes, the first stays
    newest = _save(database_url, "bottle", _halved(small_model))
    with connect(database_url, autocommit=True) as connection:
        assert connection.execute("SELECT array_agg(id ORDER BY id) FROM models").fetchone()[0] == [
            old_id, new.id, newest]  # fmt: skip
        with pytest.raises(versions.UnknownVersion, match="a retired fit's went with it"):
            versions.reactivate(connection, models.active_model(connection, "bottle"), refit, "test")
        assert models.retire_old_models(connection, "bottle", fits_kept=1) == 2  # one fit kept: both versions go
        assert connection.execute("SELECT array_agg(id) FROM models").fetchone()[0] == [newest]
        partitions = connection.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'patches'::regclass")
        assert partitions.fetchone()[0] == 1


def test_the_search_split_follows_the_database_servers_cores(database_url):
    """The server reads its own /proc/cpuinfo and cgroup quota (here it runs on this machine, so it must see what
    this machine's files say); a role that may not read server files gets no answer, and the split then falls back
    to this machine's cores for the embedded server and to 2 for any other."""
    from pathlib import Path

    from store.database import search_split, server_cores

    local = sum(line.startswith("processor") for line in Path("/proc/cpuinfo").read_text().splitlines())
    quota = Path("/sys/fs/cgroup/cpu.max")
    if quota.exists() and not quota.read_text().startswith("max"):
        limit, period = quota.read_text().split()
        local = min(local, max(1, -(-int(limit) // int(period))))
    with psycopg.connect(database_url, autocommit=True) as connection:
        assert server_cores(connection) == local
        assert search_split(Settings(database_url=database_url), connection) == local
        assert search_split(Settings(database_url=database_url, search_connections=3), connection) == 3
        connection.execute("CREATE ROLE plain_reader NOLOGIN")
        connection.execute("SET ROLE plain_reader")
        assert server_cores(connection) is None
        assert search_split(Settings(database_url=database_url), connection) == 2
        assert search_split(Settings(database_url=None), connection) == os.cpu_count()
        connection.execute("RESET ROLE")
        connection.execute("DROP ROLE plain_reader")


def test_a_deleted_category_leaves_its_logs_and_a_deletion_cut_short_is_finished(database_url, small_model):
    """A category with two versions (a fit and a threshold sharing its bank) is deleted whole: its partitions and
    rows go, another category's stay; a queued fit job of it refuses the deletion; its change log ends with the
    deletion and the inspection log keeps its record. Cut short after taking it out of service, the next deletion
    finishes it; once deleted there is nothing to delete, and the name can be fitted again on its change log."""
    from store import categories, jobs

    fitted = _save(database_url, "gone", small_model)
    kept = _save(database_url, "kept", small_model)
    with connect(database_url, autocommit=True) as connection:
        set_threshold(connection, models.active_model(connection, "gone"), "test", false_alarm_rate=0.25)
        connection.execute(
            "INSERT INTO inspections (request_id, category, model_id, is_anomalous, score, threshold, sha256, bytes, "
            "format, width, height, latency_ms, image_kind) VALUES ('r', 'gone', %s, false, 1, 2, 's', 1, 'PNG', 1, "
            "1, 1, 'none')",
            (fitted,),
        )
        job = jobs.create(connection, "gone", {}, "test")
        jobs.add_images(connection, job["id"], [(f"{i}.png", bytes([i]) * 10) for i in range(3)])
        jobs.start(connection, job["id"])
        with pytest.raises(jobs.JobStateError, match=f"job {job['id']} is queued for gone"):
            categories.delete_category(connection, "gone", "test")
        assert models.active_model(connection, "gone") is not None
        jobs.cancel(connection, job["id"])
        counted = categories.contents(connection, "gone")
        assert counted["versions"] == 2 and counted["jobs"] == 1 and counted["files"] == 3
        assert counted["file_bytes"] == 30 and counted["patches"] == small_model.memory_bank.shape[0]
        versions_of = "SELECT array_agg(m.id ORDER BY m.id) FROM models m JOIN categories c ON c.id = m.category_id "
        ids = connection.execute(versions_of + "WHERE c.name = 'gone'").fetchone()[0]
        assert len(ids) == 2 and ids[0] == fitted

        # cut short: out of service (as the first step leaves it), its versions still stored
        connection.execute("UPDATE categories SET active_model_id = NULL WHERE name = 'gone'")
        assert models.active_model(connection, "gone") is None
        finished = categories.delete_category(connection, "gone", "again")
        assert finished["model_id"] is None and finished["versions"] == 2 and finished["jobs"] == 1
        assert connection.execute(versions_of + "WHERE c.name = 'gone'").fetchone()[0] is None
        assert connection.execute("SELECT count(*) FROM fit_jobs WHERE category = 'gone'").fetchone()[0] == 0
        partitions = [banks.partition_name(i, table) for i in ids for table in banks.TABLES]
        left = connection.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", (partitions,))
        assert left.fetchone()[0] == 0
        assert connection.execute(versions_of + "WHERE c.name = 'kept'").fetchone()[0] == [kept]
        assert _whole(connection, "kept") == (kept, small_model.memory_bank.shape[0], small_model.memory_bank.shape[0])
        assert categories.delete_category(connection, "gone", "test") is None
        assert categories.contents(connection, "gone") is None
        logged = connection.execute("SELECT count(*) FROM inspections WHERE category = 'gone'").fetchone()[0]
        assert logged == 1

    refitted = _save(database_url, "gone", small_model)
    with connect(database_url, autocommit=True) as connection:
        deleted = categories.delete_category(connection, "gone", "test")
        assert deleted["model_id"] == refitted and deleted["versions"] == 1 and deleted["jobs"] == 0
        category_id = connection.execute("SELECT id FROM categories WHERE name = 'gone'").fetchone()[0]
        log = changes.changes(connection, category_id)
        assert [c["action"] for c in log] == ["deleted", "fit", "threshold", "fit"]
        assert log[0]["actor"] == "test" and log[0]["detail"]["versions"] == 1


def test_the_store_leaves_as_one_archive_and_comes_back_whole(database_url, server_url, small_model, tmp_path):
    """``ingest db-dump`` writes the whole store (two versions sharing a bank, the logs, a job with its images) to
    one archive, never over a file; ``ingest db-restore`` puts it back into an empty database, every row and index
    as it was, so a search answers the same; a database holding the service refuses a restore, and an archive cut
    short restores nothing."""
    from psycopg import sql

    from patchcore import regions
    from store import backup, jobs

    grid, truth = np.ones((2, 2), np.float32), regions.cell_truth((2, 2), np.eye(4, dtype=bool))
    _save(database_url, "bottle", small_model, cells=regions.packed([0], [grid], [truth]))  # its evaluation's cells
    with connect(database_url, autocommit=True) as connection:
        set_threshold(connection, models.active_model(connection, "bottle"), "test", false_alarm_rate=0.25)
        job = jobs.create(connection, "bottle", {}, "test")
        jobs.add_images(connection, job["id"], [(f"{i}.png", bytes([i]) * 1000) for i in range(3)])
    targets = []
    for _ in range(2):
        name = "r_" + os.urandom(6).hex()
        with psycopg.connect(server_url, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        base, _, query = server_url.partition("?")
        targets.append(base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else ""))
    restored, spoiled = targets

    def ingest(url: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ingest", *args], cwd=ROOT, env={**os.environ, "DATABASE_URL": url},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    archive = tmp_path / "store.dump"
    dumped = ingest(database_url, "db-dump", "--out", str(archive))
    assert dumped.returncode == 0 and "1 categories (bottle)" in dumped.stdout, dumped.stderr
    again = ingest(database_url, "db-dump", "--out", str(archive))
    assert again.returncode == 2 and "exists" in again.stderr
    back = ingest(restored, "db-restore", str(archive))
    assert back.returncode == 0 and "1 categories" in back.stdout, back.stderr

    tables = ("categories", "models", "images", "image_views", "patches", "category_changes", "model_plots",
              "evaluation_cells", "fit_jobs", "fit_job_images", "inspections")  # fmt: skip
    probe = small_model.memory_bank[7].tolist()

    def contents(url: str) -> dict:
        with connect(url, autocommit=True) as connection:
            rows = {t: connection.execute(f"SELECT md5(string_agg(x::text, '' ORDER BY x::text)) FROM {t} x").fetchone()
                    for t in tables}  # fmt: skip
            model = models.active_model(connection, "bottle")
            rows["indexes"] = connection.execute(
                "SELECT tablename, indexdef FROM pg_indexes WHERE tablename LIKE 'patches%' ORDER BY 1, 2"
            ).fetchall()
            connection.execute("SET enable_seqscan = off")
            rows["nearest"] = connection.execute(
                f"SELECT id FROM patches WHERE model_id = {model.bank_segments[0]} "
                "ORDER BY embedding::vector(384) <-> %s::vector(384) LIMIT 5",
                (str(probe),),
            ).fetchall()
            rows["active"] = (model.id, model.threshold, model.bank_segments)
        return rows

    before, after = contents(database_url), contents(restored)
    assert before == after and before["evaluation_cells"][0] is not None
    assert len(before["indexes"]) >= 2 and len(before["nearest"]) == 5

    with pytest.raises(backup.BackupError, match="already holds the service's tables"):
        backup.restore(restored, archive)
    cut = tmp_path / "cut.dump"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    with pytest.raises(backup.BackupError, match="pg_restore failed"):
        backup.restore(spoiled, cut)
    assert not backup.holds_the_service(spoiled)  # one transaction: nothing of it stayed
    with psycopg.connect(spoiled, autocommit=True) as connection:
        assert connection.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'patches%'").fetchone()[0] == 0
    with psycopg.connect(server_url, autocommit=True) as connection:
        for url in targets:
            name = url.partition("?")[0].rsplit("/", 1)[1]
            connection.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_dump_s_password_goes_in_the_environment_not_on_the_command_line(monkeypatch, tmp_path):
    """Other users of the machine read a process's arguments (``ps``), not its environment."""
    from store import backup

    seen = {}

    def run(args, **kwargs):
        seen.update(args=args, env=kwargs["env"])
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(backup.subprocess, "run", run)
    with pytest.raises(FileNotFoundError):  # nothing was written by the stand-in
        backup.dump("postgresql://line:s3cret@db:5432/inspect?sslmode=require", tmp_path / "a.dump")
    assert not any("s3cret" in arg for arg in seen["args"]) and seen["env"]["PGPASSWORD"] == "s3cret"
    assert seen["args"][-2:] == ["--dbname", "user=line dbname=inspect host=db port=5432 sslmode=require"]


def test_the_command_line_lists_the_versions_of_the_fit_and_makes_one_active_again(database_url, small_model):
    """``ingest versions`` lists the kept fits' versions with the active one marked; ``--activate`` makes an earlier
    one answer again and logs it, one of the fit before a refit too; a version the category does not store is
    refused by name; ``--retire-fit`` retires the undone refit now, and refuses the fit answering."""
    fitted = _save(database_url, "bottle", small_model)
    with connect(database_url, autocommit=True) as connection:
        raised = set_threshold(connection, models.active_model(connection, "bottle"), "test", value=9.0)

    def ingest(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ingest", "versions", "--category", "bottle", *args], cwd=ROOT,
            env={**os.environ, "DATABASE_URL": database_url}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    listed = ingest()
    assert listed.returncode == 0, listed.stderr
    assert f"* version {raised}: threshold " in listed.stdout and ", threshold 9.0000," in listed.stdout
    assert f"  version {fitted}: fit " in listed.stdout and f"version {raised} is active" in listed.stdout
    back = ingest("--activate", str(fitted), "--actor", "qa")
    assert back.returncode == 0 and f"* version {fitted}: fit " in back.stdout, back.stdout
    with connect(database_url, autocommit=True) as connection:
        model = models.active_model(connection, "bottle")
        assert model.id == fitted and model.threshold == small_model.threshold
        log = changes.changes(connection, model.category_id)
        assert (log[0]["action"], log[0]["actor"], log[0]["model_id"]) == ("reactivated", "qa", fitted)
    unknown = ingest("--activate", "999999")
    assert unknown.returncode == 2 and "stores no version 999999" in unknown.stderr, unknown.stderr
    refit = _save(database_url, "bottle", _halved(small_model))  # listed under their fits; the refit undone
    both = ingest()
    assert f"fit {refit}, " in both.stdout and f"fit {fitted}, " in both.stdout, both.stdout
    lines = both.stdout.splitlines()
    assert lines[0].startswith(f"fit {refit}, ") and lines[0].endswith(": answering"), lines
    assert lines[2].startswith(f"fit {fitted}, ") and lines[2].endswith(": kept"), lines
    undone = ingest("--activate", str(raised))
    assert undone.returncode == 0 and f"* version {raised}: threshold " in undone.stdout, undone.stdout
    answering = ingest("--retire-fit", str(fitted))
    assert answering.returncode == 2 and f"fit {fitted} of bottle is answering" in answering.stderr, answering.stderr
    retired = ingest("--retire-fit", str(refit))  # the undone refit's disk freed now
    assert retired.returncode == 0 and f"fit {refit} retired: 1 version(s) went" in retired.stdout, retired.stdout
    assert f"fit {refit}, " not in retired.stdout and f"fit {fitted}, " in retired.stdout
    with connect(database_url, autocommit=True) as connection:
        assert connection.execute("SELECT to_regclass(%s)", (f"patches_model_{refit}",)).fetchone()[0] is None


def test_version_writers_wait_for_each_other_so_attaching_segments_cannot_deadlock(database_url, small_model):
    """A fit stored and a threshold set both wait for the version writers' lock before they lock anything else:
    attaching a segment needs SHARE ROW EXCLUSIVE on ``models`` and ``images``, which each writer already holds
    ROW EXCLUSIVE on, so two unordered writers deadlock (a mixed soak caught added normals refused while a worker
    stored a new product). Readers do not wait for it."""
    upgrade(database_url)
    _save(database_url, "first", small_model)
    done: dict[str, int] = {}

    def store_another() -> None:
        done["fit"] = _save(database_url, "second", small_model)

    def move_threshold() -> None:
        with connect(database_url) as connection:
            done["threshold"] = set_threshold(connection, models.active_model(connection, "first"), "t", value=2.0)

    with psycopg.connect(database_url) as holder:  # another writer, in its transaction
        holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", banks.VERSION_WRITERS)
        writers = [threading.Thread(target=store_another), threading.Thread(target=move_threshold)]
        for writer in writers:
            writer.start()
        time.sleep(3)
        assert done == {} and all(writer.is_alive() for writer in writers)
        with connect(database_url) as reader:  # readers answer meanwhile
            assert models.active_model(reader, "first").threshold != 2.0
            assert reader.execute("SELECT count(*) FROM categories WHERE name = 'second'").fetchone()[0] == 0
        holder.commit()
        for writer in writers:
            writer.join(60)
    assert set(done) == {"fit", "threshold"}
    with connect(database_url) as connection:
        assert models.active_model(connection, "first").threshold == 2.0
        assert models.active_model(connection, "second").id == done["fit"]


def _held_back_by_a_retirement(url: str, work: Callable[[], object]) -> list:
    """``work()`` in a thread while another session holds the retirement lock, as a retirement running does: it
    must wait, then finish once the lock is let go; what it returned."""
    done: list = []
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", models.RETIRING)
        waiting = threading.Thread(target=lambda: done.append(work()))
        waiting.start()
        time.sleep(2)
        assert waiting.is_alive() and not done
        holder.execute("SELECT pg_advisory_unlock(%s, %s)", models.RETIRING)
        waiting.join(60)
    return done


def test_one_retirement_at_a_time(database_url, small_model):
    """Retirements of old fits detach segments outside a transaction, so two at once (a refit's own while a threshold
    set on another server tidies up) once raced to detach the same segment; a second one waits for the first, then
    retires what is left."""
    _save(database_url, "retired", small_model)
    with connect(database_url) as connection:
        old = models.active_model(connection, "retired").id
        models.save_model(connection, "retired", _halved(small_model), {}, Settings())  # a refit, not yet retired

    def retire() -> int:
        with connect(database_url, autocommit=True) as connection:
            return models.retire_old_models(connection, "retired", fits_kept=1)

    assert _held_back_by_a_retirement(database_url, retire) == [1]
    with connect(database_url) as connection:
        assert connection.execute("SELECT count(*) FROM models WHERE id = %s", (old,)).fetchone()[0] == 0


def test_a_version_is_made_active_again_only_between_retirements(database_url, small_model):
    """A retirement picks the versions to drop, then drops their segments one statement at a time; a version of a
    kept fit made active again meanwhile could be one it picked. So a reactivation waits for a retirement running (its
    advisory lock), then finds the version stored or not."""
    old = _save(database_url, "between", small_model)
    _save(database_url, "between", _halved(small_model))  # a refit: the first fit kept

    def reactivate() -> bool:
        with connect(database_url, autocommit=True) as connection:
            return versions.reactivate(connection, models.active_model(connection, "between"), old, "t")

    assert _held_back_by_a_retirement(database_url, reactivate) == [True]
    with connect(database_url) as connection:
        assert models.active_model(connection, "between").id == old
