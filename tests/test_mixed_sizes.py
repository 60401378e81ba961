"""A category whose images differ in size and aspect ratio runs on every path, as real sets need (crops from a
detector, parts of several lengths, a camera replaced), and a failure after the fit does not lose the fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from PIL import Image

from benchmarks.mixed_sizes import make_copy
from tests.conftest import BOTTLE, ROOT, WEIGHTS, launch_chromium, start_api

SIXTH = (640, 360)


def _ingest(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args], cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Bottle in five sizes from 1:3 to 3:1 (60 training images and the whole test split, masks resized alike),
    made here from ../shared, kept only for this module."""
    return make_copy(BOTTLE, tmp_path_factory.mktemp("mixed") / "data", train=60)


@pytest.mark.parametrize("field_of_view", ["whole", "crop"])
def test_a_category_of_mixed_sizes_fits_evaluates_and_answers_a_sixth_size(
    mixed, field_of_view, tmp_path, database_url
):
    out = tmp_path / "reports"
    done = _ingest(
        "fit", "--data", str(mixed), "--backbone", "resnet18", "--weights", str(WEIGHTS),
        "--field-of-view", field_of_view, "--out", str(out), env={"DATABASE_URL": database_url},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "bottle" / "report.json").read_text())
    # the crop keeps the middle third of a 3:1 image, so defects outside it cannot be seen (0.947 measured): the
    # whole view sees every image whole
    assert report["image_auroc"] >= (0.99 if field_of_view == "whole" else 0.9), report["image_auroc"]
    assert 0.5 < report["pixel_auroc"] <= 1 and 0 < report["pro"] <= 1
    assert report["pixel_auroc_whole_image"] is not None
    # how finely each size is seen: a patch spans fewest of a 3:1 image's pixels, seen 384x128 whole, and most of a
    # 1:2 one (160x320); the centre square spans a third of the long side, so the 3:1 one's 300 pixels are seen finest
    scale = report["view_scale"]
    assert scale["image_sizes"] == 5 and scale["images"] == 60 and scale["images_of_that_size"] == 12, scale
    if field_of_view == "whole":
        assert scale["finest"] == {"image": [900, 300], "patch_pixels": [18.8, 18.8]}, scale
        assert scale["coarsest"] == {"image": [450, 900], "patch_pixels": [22.5, 22.5]}, scale
        assert "; over their 5 sizes from 19x19 (900x300) to 23x23 (450x900); a defect much" in done.stdout
    else:
        assert scale["finest"] == {"image": [900, 300], "patch_pixels": [9.4, 9.4]}, scale
        assert scale["coarsest"] == {"image": [600, 600], "patch_pixels": [18.8, 18.8]}, scale
    for name in ("roc.png", "scores.png", "heatmaps.png", "example.png"):
        assert (out / "bottle" / name).stat().st_size > 10_000
    views = {tuple(v) for v in _stored_view_sizes(database_url)}
    assert len(views) == (5 if field_of_view == "whole" else 1), views  # each seen whole with its aspect ratio
    server, client = start_api({"DATABASE_URL": database_url}, tmp_path / "api.log")
    try:
        with Image.open(BOTTLE / "test" / "broken_large" / "000.png") as image:
            path = tmp_path / "sixth.png"
            image.resize(SIXTH, Image.BILINEAR).save(path)
        answer = client.post("/query", files={"file": ("sixth.png", path.read_bytes(), "image/png")},
                             data={"category": "bottle", "heatmap": "true"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["is_anomalous"] is True and body["anomaly_map"]
        if field_of_view == "whole":  # the sixth size is seen whole too: 16:9 kept
            assert body["view_width"] > body["view_height"]
            assert _finest_detail_row(str(client.base_url)) == (
                "one patch spans 19 x 19 pixels of a 900 x 300 image, seen at 384 x 128 (5 sizes: 19 x 19 to 23 x 23)"
            )
    finally:
        client.close()
        server.terminate()
        server.wait(20)


def _finest_detail_row(base_url: str) -> str:
    """The category page's "Finest detail seen", as Chromium shows it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = launch_chromium(driver)
        page = browser.new_page()
        page.goto(f"{base_url}/category?name=bottle")
        row = page.wait_for_selector("tr:has(th:text-is('Finest detail seen')) td.value")
        text = row.inner_text()
        browser.close()
    return text


def _stored_view_sizes(url: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT DISTINCT v.width, v.height FROM image_views v JOIN images i ON i.id = v.image_id "
            "JOIN categories c ON c.active_model_id = i.model_id"
        ).fetchall()
    return rows


def test_a_failure_after_the_fit_leaves_the_fitted_model_stored_and_serving(mini_mvtec, tmp_path, database_url):
    """A test image damaged after its header passes the checks made before the fit and breaks the evaluation: the
    job says so and exits non-zero, and the fitted model is stored and answers /query."""
    damaged = mini_mvtec / "bottle" / "test" / "good" / "000.png"
    data = damaged.read_bytes()
    damaged.unlink()
    damaged.write_bytes(data[: len(data) // 3])
    done = _ingest(
        "fit", "--data", str(mini_mvtec), "--backbone", "resnet18", "--weights", str(WEIGHTS),
        "--out", str(tmp_path / "reports"), env={"DATABASE_URL": database_url},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert "the evaluation failed after the fit" in done.stderr and "000.png" in done.stderr
    assert "stored bottle" in done.stdout
    report = json.loads((tmp_path / "reports" / "bottle" / "report.json").read_text())
    assert "evaluation_error" in report and "image_auroc" not in report
    server, client = start_api({"DATABASE_URL": database_url}, tmp_path / "api.log")
    try:
        broken = (BOTTLE / "test" / "broken_large" / "000.png").read_bytes()
        answer = client.post("/query", files={"file": ("b.png", broken, "image/png")}, data={"category": "bottle"})
        assert answer.status_code == 200 and answer.json()["is_anomalous"] is True, answer.text
    finally:
        client.close()
        server.terminate()
        server.wait(20)


def test_problems_a_look_at_the_files_can_show_stop_the_job_before_the_fit(mini_mvtec, tmp_path):
    """Unreadable files, a mask of the wrong shape, an unwritable report folder and a target per part for a set
    without parts are all named at once, in seconds, before any feature is computed; a mask at half its image's
    resolution is none of them."""
    category = mini_mvtec / "bottle"
    (category / "train" / "good" / "notes.png").write_text("not an image")
    mask = next((category / "ground_truth" / "broken_large").glob("*.png"))
    mask.unlink()
    Image.new("L", (100, 50)).save(mask)
    halved = sorted((category / "ground_truth" / "broken_large").glob("*.png"))[-1]  # no problem: scaled to its image
    original = Image.open(halved.resolve())
    halved.unlink()  # a link into ../shared: replaced, never written through
    original.resize((450, 450), Image.NEAREST).save(halved)
    (tmp_path / "reports").write_text("a file where the report folder should be")
    done = _ingest(
        "evaluate", "--data", str(mini_mvtec), "--backbone", "resnet18", "--weights", str(WEIGHTS),
        "--out", str(tmp_path / "reports"), "--per", "part",
    )  # fmt: skip
    assert done.returncode == 2
    assert "4 problem(s) found before fitting" in done.stderr, done.stderr
    assert "bottle: a false-alarm rate per part needs good images that are views of parts" in done.stderr
    assert "notes.png" in done.stderr and "the mask is 100x50, its image 900x900" in done.stderr
    assert "report folder cannot be written" in done.stderr
    assert "features" not in done.stderr  # no progress bar: nothing long ran


def test_a_category_name_the_store_refuses_stops_the_fit_before_it_starts(mini_mvtec, database_url, tmp_path):
    """A folder named with a space would fit for minutes and then be refused by the database's CHECK."""
    (mini_mvtec / "bottle").rename(mini_mvtec / "metal plate")
    done = _ingest(
        "fit", "--data", str(mini_mvtec), "--backbone", "resnet18", "--weights", str(WEIGHTS),
        "--out", str(tmp_path / "reports"), env={"DATABASE_URL": database_url},
    )  # fmt: skip
    assert done.returncode == 2
    assert "1 problem(s) found before fitting" in done.stderr, done.stderr
    assert "category 'metal plate' is not a name the store takes" in done.stderr
    assert "rename its folder, or fit with --folder and --category" in done.stderr
    assert "features" not in done.stderr
    evaluated = _ingest(
        "evaluate", "--data", str(mini_mvtec), "--backbone", "resnet18", "--weights", str(WEIGHTS),
        "--out", str(tmp_path / "reports"),
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr  # nothing is stored: any folder name will do
