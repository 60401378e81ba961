"""A server's start with categories to load: it answers before they are all loaded."""

from __future__ import annotations

import time

import psycopg
from psycopg import sql

from app.services import Services
from config import Settings
from store import banks, models
from store.database import connect
from store.migrate import upgrade
from tests.api.conftest import EVALUATION, GOOD, post
from tests.conftest import start_api


def test_a_server_answers_while_it_loads_its_categories(fitted, database_url, tmp_path):
    """The categories load in a thread of their own once the server answers: with the first one's memory bank held
    by a lock, the server answers its probes and a query for the second at once (the build before answered nothing
    until every category was loaded), `/ready` says 503 "loading" and names the one still to load, and 200 with both
    loaded once the lock goes. A server that may hold only one loads the one last asked."""
    upgrade(database_url)
    with connect(database_url) as connection:
        held = models.save_model(connection, "first", fitted, EVALUATION, Settings())["model_id"]
        models.save_model(connection, "second", fitted, EVALUATION, Settings())
    with psycopg.connect(database_url) as holder:
        partition = sql.Identifier(banks.partition_name(held))
        holder.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(partition))
        server, client = start_api({"DATABASE_URL": database_url}, tmp_path / "server.log", ready="/health")
        try:
            loading = client.get("/ready")
            assert loading.status_code == 503, loading.text
            assert loading.json()["status"] == "loading" and loading.json()["loading"] == ["first", "second"]
            answer = post(client, GOOD, category="second")
            assert answer.status_code == 200 and answer.json()["category"] == "second", answer.text
            body = client.get("/ready").json()
            assert body["loaded"] == ["second"] and body["loading"] == ["first"], body
            assert "inspect_models_loading 1.0" in client.get("/metrics").text.splitlines()
            holder.rollback()  # the lock goes: the start-up thread loads the first
            deadline = time.monotonic() + 60
            while (ready := client.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, ready.text
                time.sleep(0.2)
            body = ready.json()
            assert body["status"] == "ready" and body["loaded"] == ["first", "second"] and body["loading"] == []
            assert "inspect_models_loading 0.0" in client.get("/metrics").text.splitlines()
        finally:
            client.close()
            server.terminate()
            server.wait(20)
    services = Services(Settings(database_url=database_url, max_loaded_categories=1))
    services.open()
    try:  # a server that may hold one loads the one last asked, not the first by name
        deadline = time.monotonic() + 60
        while services.loading():
            assert time.monotonic() < deadline, services.loading()
            time.sleep(0.1)
        assert services.loaded() == ["second"]
    finally:
        services.close()


def test_a_category_that_cannot_load_at_start_leaves_the_others_loading(fitted, database_url, tmp_path):
    """A category whose memory bank cannot be read at start (its rows gone, as under a retirement that every read
    met) is logged and left to its first query; the one after it still loads and the server gets ready."""
    upgrade(database_url)
    with connect(database_url) as connection:
        emptied = models.save_model(connection, "first", fitted, EVALUATION, Settings())["model_id"]
        models.save_model(connection, "second", fitted, EVALUATION, Settings())
        connection.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(banks.partition_name(emptied))))
    log = tmp_path / "server.log"
    server, client = start_api({"DATABASE_URL": database_url}, log)
    try:
        body = client.get("/ready").json()
        assert body["status"] == "ready" and body["loaded"] == ["second"] and body["loading"] == [], body
        assert "category first could not be loaded at start; it is tried again on its first query" in log.read_text()
        assert post(client, GOOD, category="second").status_code == 200
    finally:
        client.close()
        server.terminate()
        server.wait(20)
