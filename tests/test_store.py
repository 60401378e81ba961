"""The memory bank in a real PostgreSQL: migrations, bulk load, indexes, atomic and idempotent re-ingest."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import torch

from config import Settings
from patchcore.model import PatchCoreConfig, fit
from store import repository
from store.database import connect
from store.migrate import upgrade
from tests.conftest import ROOT, WEIGHTS


def _save(url: str, category: str, model) -> int:
    upgrade(url)
    with connect(url) as connection:
        model_id = repository.save_model(connection, category, model, {}, Settings())["model_id"]
    with connect(url, autocommit=True) as connection:
        repository.retire_old_models(connection, category)
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
    model = repository.active_model(connection, category)
    return model.id, model.memory_bank_size, repository.patch_count(connection, model.id)


def test_migrations_run_from_empty_and_again(database_url):
    upgrade(database_url)
    upgrade(database_url)
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        tables = {r[0] for r in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"categories", "models", "images", "patches"} <= tables
        assert connection.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 1


def test_load_counts_index_and_idempotent_reingest(database_url, small_model):
    first = _save(database_url, "bottle", small_model)
    size = small_model.memory_bank.shape[0]
    with connect(database_url) as connection:
        assert _whole(connection, "bottle") == (first, size, size)
        assert repository.image_counts(connection, first) == {"train": 9, "holdout": 3}
    second = _save(database_url, "bottle", small_model)
    with connect(database_url) as connection:
        assert second != first
        assert _whole(connection, "bottle") == (second, size, size)
        assert connection.execute("SELECT count(*) FROM patches").fetchone()[0] == size
        assert connection.execute("SELECT count(*) FROM models").fetchone()[0] == 1
        indexes = [r[0] for r in connection.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'patches'")]
        assert not [name for name in indexes if f"_{first}_" in name]


def test_two_categories_of_different_dimension_side_by_side(database_url, small_model, small_train):
    wide = fit(PatchCoreConfig(backbone="wide_resnet50_2", holdout_fraction=0.34), small_train[:3], "random")
    _save(database_url, "bottle", small_model)
    _save(database_url, "bottle_wide", wide)
    with connect(database_url) as connection:
        for name, model in (("bottle", small_model), ("bottle_wide", wide)):
            stored = repository.active_model(connection, name)
            assert stored.dim == model.memory_bank.shape[1]
            queries = model.memory_bank[:5].numpy()
            result = repository.search(connection, repository.search_statement(stored), queries, queries.mean(0), 3, 40)
            assert result.distances.shape == (5,)
            assert result.distances.max() < 1e-3  # each query is a memory-bank patch of that category
    assert wide.memory_bank.shape[1] == 1536


def _blocker(url: str) -> psycopg.Connection:
    """Hold a lock that lets an ingest COPY its rows but makes it wait at CREATE INDEX, mid-transaction."""
    blocker = psycopg.connect(url)
    blocker.execute("LOCK TABLE patches IN ROW EXCLUSIVE MODE")
    return blocker


def _wait_for_blocked_index_build(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX%%' AND wait_event_type = 'Lock'"
            ).fetchone()
            if row[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the ingest never reached CREATE INDEX")


def test_reader_sees_a_whole_model_during_reingest(database_url, small_model):
    old_id = _save(database_url, "bottle", small_model)
    old_size = small_model.memory_bank.shape[0]
    new = _halved(small_model)
    blocker = _blocker(database_url)
    writer = threading.Thread(target=_save, args=(database_url, "bottle", new))
    writer.start()
    try:
        _wait_for_blocked_index_build(database_url)
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
    blocker = _blocker(database_url)
    job = subprocess.Popen(
        [sys.executable, "-m", "ingest", "fit", "--folder", str(folder), "--category", "bottle",
         "--backbone", "resnet18", "--weights", str(WEIGHTS), "--out", str(tmp_path / "reports")],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_blocked_index_build(database_url)
        job.send_signal(signal.SIGKILL)
        job.wait(30)
    finally:
        blocker.rollback()
        blocker.close()
    deadline = time.monotonic() + 30
    with connect(database_url, autocommit=True) as connection:
        while connection.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX%%'").fetchone()[
            0
        ]:
            assert time.monotonic() < deadline, "the killed job's transaction was never rolled back"
            time.sleep(0.1)
        assert _whole(connection, "bottle") == (old_id, size, size)
        assert connection.execute("SELECT count(*) FROM patches").fetchone()[0] == size
        stored = repository.active_model(connection, "bottle")
        queries = small_model.memory_bank[:4].numpy()
        result = repository.search(connection, repository.search_statement(stored), queries, queries.mean(0), 2, 40)
        assert torch.from_numpy(result.distances).max() < 1e-3
