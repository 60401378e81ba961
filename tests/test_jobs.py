"""Fit jobs over real HTTP, run by real worker processes, against a real PostgreSQL: a new product from uploads,
its lifecycle's refusals, a worker killed mid-fit, and the new product page in Chromium."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from PIL import Image

from patchcore.threshold import DEFAULT_FALSE_ALARM_RATE
from store import banks, jobs, models
from tests.conftest import BOTTLE, ROOT, WEIGHTS, launch_chromium, start_api, start_worker

TRAIN = sorted((BOTTLE / "train" / "good").glob("*.png"))


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "INSPECT_BACKBONE": "resnet18", "INSPECT_WEIGHTS": str(WEIGHTS),
            "INSPECT_MAX_UPLOAD_BYTES": "8000000"}  # fmt: skip


@pytest.fixture
def api(env, tmp_path):
    server, client = start_api(env, tmp_path / "server.log", ready="/health")
    yield client
    client.close()
    server.terminate()
    server.wait(20)


def _png(width: int, height: int) -> bytes:
    encoded = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(encoded, "PNG")
    return encoded.getvalue()


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def _job(api: httpx.Client, category: str, paths: list[Path], **options) -> dict:
    created = api.post("/jobs", json={"category": category, **options})
    assert created.status_code == 201, created.text
    job = created.json()
    for start in range(0, len(paths), 10):
        added = api.post(f"/jobs/{job['id']}/images", files=_files(paths[start : start + 10]))
        assert added.status_code == 200, added.text
    started = api.post(f"/jobs/{job['id']}/start")
    assert started.status_code == 200, started.text
    assert started.json()["state"] == "queued"
    return started.json()


def _wait(api: httpx.Client, job_id: int, done, seconds: float = 300) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if done(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def _finished(job: dict) -> bool:
    return job["state"] in ("succeeded", "failed", "cancelled")


def test_a_job_takes_images_and_archives_and_refuses_what_it_cannot_fit(api, tmp_path):
    """Uploads are checked before a job queues: a text file is a 415 naming it, a zip's images are added and its
    other members listed as ignored, a file already sent is a duplicate; too few images cannot start, nor can images
    with their masks beside them; a queued job is cancelled at once and cannot be started or given images after;
    unknown jobs are 404s."""
    job = api.post("/jobs", json={"category": "cans"}).json()
    assert job["state"] == "draft" and job["options"]["backbone"] == "resnet18" and job["options"]["per"] == "image"
    assert job["options"]["coreset_ratio"] == 0.1 and job["options"]["false_alarm_rate"] == DEFAULT_FALSE_ALARM_RATE
    refused = api.post(f"/jobs/{job['id']}/images", files=[("files", ("notes.txt", b"not an image", "text/plain"))])
    assert refused.status_code == 415 and "notes.txt" in refused.json()["detail"], refused.text
    # a shape the job's field of view refuses is refused now, named within its archive, not by the worker's check;
    # every file the fit cannot take is named in one answer, of the first one's kind
    strips = io.BytesIO()
    with zipfile.ZipFile(strips, "w") as zipped:
        zipped.write(TRAIN[0], "line/000.png")
        zipped.writestr("line/strip.png", _png(900, 3))
        zipped.writestr("line/notes.png", "not an image")
    upload = ("line.zip", strips.getvalue(), "application/zip")
    refused = api.post(f"/jobs/{job['id']}/images", files=[("files", upload)])
    assert refused.status_code == 422 and refused.json()["error"] == "unsupported_image_shape", refused.text
    said = refused.json()["detail"]
    assert said.startswith("2 files cannot be taken, nothing was added: line.zip: line/strip.png: a 900x3 image")
    assert "; line.zip: line/notes.png: not a recognised image" in said
    assert api.get(f"/jobs/{job['id']}").json()["images"] == 0  # nothing of the request was added
    wide = ("wide.png", _png(800, 40), "image/png")  # 20:1: the whole view takes it, the paper's crop does not
    crop = api.post("/jobs", json={"category": "cans", "field_of_view": "crop"}).json()
    refused = api.post(f"/jobs/{crop['id']}/images", files=[("files", wide)])
    assert refused.status_code == 422 and "in the crop field of view" in refused.json()["detail"], refused.text
    whole = api.post("/jobs", json={"category": "cans"}).json()
    assert api.post(f"/jobs/{whole['id']}/images", files=[("files", wide)]).json()["added"] == ["wide.png"]
    for draft in (crop, whole):
        assert api.delete(f"/jobs/{draft['id']}").status_code == 204
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in TRAIN[:2]:
            zipped.write(path, f"good/{path.name}")
        zipped.writestr("good/readme.txt", "taken on line 3")
    upload = ("good.zip", archive.getvalue(), "application/zip")
    added = api.post(f"/jobs/{job['id']}/images", files=[("files", upload)])
    assert added.status_code == 200, added.text
    assert added.json()["added"] == [p.name for p in TRAIN[:2]]
    assert added.json()["ignored"] == ["good.zip: good/readme.txt"] and added.json()["job"]["images"] == 2
    too_few = api.post(f"/jobs/{job['id']}/start")
    assert too_few.status_code == 422 and "at least 3" in too_few.json()["detail"]
    again = api.post(f"/jobs/{job['id']}/images", files=_files(TRAIN[1:3]))
    assert again.json()["added"] == [TRAIN[2].name] and again.json()["duplicates"] == [TRAIN[1].name]
    assert api.post(f"/jobs/{job['id']}/start").json()["state"] == "queued"
    late = api.post(f"/jobs/{job['id']}/images", files=_files(TRAIN[3:4]))
    assert late.status_code == 409 and "queued" in late.json()["detail"]
    cancelled = api.post(f"/jobs/{job['id']}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["message"] == "cancelled before a worker took it"
    assert api.post(f"/jobs/{job['id']}/start").status_code == 409
    assert api.post(f"/jobs/{job['id']}/cancel").status_code == 409
    assert api.get("/jobs/9999").status_code == 404 and api.post("/jobs/9999/start").status_code == 404
    bad = api.post("/jobs", json={"category": "cans", "backbone": "vgg"})
    assert bad.status_code == 422 and "resnet18" in bad.json()["detail"]
    bad = api.post("/jobs", json={"category": "cans", "tile": 100})  # refused now, not by the worker later
    assert bad.status_code == 422 and bad.json()["detail"].startswith("tile (100) must be at least 64"), bad.text
    assert api.post("/jobs", json={"category": "../etc"}).status_code == 422
    assert [j["id"] for j in api.get("/jobs").json()] == [job["id"]]
    assert api.delete(f"/jobs/{job['id']}").status_code == 204 and api.get("/jobs").json() == []
    masked = api.post("/jobs", json={"category": "masked"}).json()  # masks uploaded beside their images
    mask = (BOTTLE / "ground_truth" / "broken_large" / "000_mask.png").read_bytes()
    upload = [*_files(TRAIN[:3]), ("files", (f"{TRAIN[0].stem}_mask.png", mask, "image/png"))]
    assert api.post(f"/jobs/{masked['id']}/images", files=upload).json()["job"]["images"] == 4
    refused = api.post(f"/jobs/{masked['id']}/start")
    assert refused.status_code == 422 and refused.json()["detail"] == (
        f"job {masked['id']}: 1 of its images are the masks of images beside them (as {TRAIN[0].stem}_mask.png); "
        "make the job again without them"
    )
    assert api.get(f"/jobs/{masked['id']}").json()["state"] == "draft"


def _views(folder: Path, parts: int, views: int) -> list[Path]:
    """``parts`` x ``views`` links named ``p<part>_v<view>.png`` to distinct bottle images, as a station's cameras
    name one part's pictures."""
    folder.mkdir()
    links = []
    for index, path in enumerate(TRAIN[: parts * views]):
        link = folder / f"p{index // views:02d}_v{index % views}.png"
        link.symlink_to(path)
        links.append(link)
    return links


def test_a_job_names_the_parts_its_images_show_before_it_starts(api, tmp_path):
    """``PUT /jobs/{id}/parts`` names the part each image of a draft is a view of, by the images' own names (the
    service runs no pattern); an unknown name or an empty part is a 422 and changes nothing, fewer than 3 parts
    cannot start, a new mapping replaces the old one, and a queued job's parts are fixed (409)."""
    links = _views(tmp_path / "views", 3, 2)
    job = api.post("/jobs", json={"category": "views"}).json()
    assert api.post(f"/jobs/{job['id']}/images", files=_files(links)).json()["job"]["parts"] == 0
    names = [link.name for link in links]
    unknown = api.put(f"/jobs/{job['id']}/parts", json={"parts": {"p99_v0.png": "p99", names[0]: "p00"}})
    assert unknown.status_code == 422 and f"job {job['id']} holds no image named p99_v0.png" in unknown.text
    empty = api.put(f"/jobs/{job['id']}/parts", json={"parts": {names[0]: ""}})
    assert empty.status_code == 422 and "1 to 200 characters" in empty.text
    assert api.get(f"/jobs/{job['id']}").json()["parts"] == 0
    two = api.put(f"/jobs/{job['id']}/parts", json={"parts": {name: name[:3] for name in names[:4]}})
    assert two.status_code == 200 and two.json()["parts"] == 2  # p00, p01; the last two images their own parts
    replaced = api.put(f"/jobs/{job['id']}/parts", json={"parts": {names[0]: "p00"}})
    assert replaced.json()["parts"] == 1  # the names not given again are their own parts now
    assert api.post(f"/jobs/{job['id']}/start").json()["state"] == "queued"  # 6 parts: p00 and 5 images alone
    assert api.post("/jobs", json={"category": "views", "per": "view"}).status_code == 422
    job = api.post("/jobs", json={"category": "views", "per": "part"}).json()  # a target per part needs parts
    assert job["options"]["per"] == "part"
    api.post(f"/jobs/{job['id']}/images", files=_files(links))
    alone = api.post(f"/jobs/{job['id']}/start")
    assert alone.status_code == 422 and "a false-alarm rate per part needs images that are views" in alone.text
    assert api.put(f"/jobs/{job['id']}/parts", json={"parts": {name: name[0] for name in names}}).json()["parts"] == 1
    refused = api.post(f"/jobs/{job['id']}/start")
    assert refused.status_code == 422 and refused.json()["detail"].startswith(
        f"job {job['id']}'s 6 images are views of 1 part(s); a fit needs at least 3 good parts"
    )
    named = api.put(f"/jobs/{job['id']}/parts", json={"parts": {name: name[:3] for name in names}})
    assert named.json()["parts"] == 3
    assert api.post(f"/jobs/{job['id']}/start").json()["parts"] == 3
    fixed = api.put(f"/jobs/{job['id']}/parts", json={"parts": {}})
    assert fixed.status_code == 409 and "queued" in fixed.json()["detail"]
    archive = io.BytesIO()  # a station's views in a folder per part, the same file names in each
    with zipfile.ZipFile(archive, "w") as zipped:
        for link in links:
            zipped.write(link, f"station/{link.name[:3]}/cam{link.name[5]}.png")
        zipped.write(links[0], "station/overview.png")
        zipped.write(TRAIN[6], f"station/{'x' * 250}/cam9.png")  # a name a file system would refuse: its folder goes
    job = api.post("/jobs", json={"category": "station"}).json()
    upload = ("station.zip", archive.getvalue(), "application/zip")
    added = api.post(f"/jobs/{job['id']}/images", files=[("files", upload)])
    assert added.status_code == 200, added.text
    assert added.json()["added"] == [f"p0{p}__cam{v}.png" for p in range(3) for v in range(2)] + ["cam9.png"]
    assert added.json()["duplicates"] == ["overview.png"]  # the bytes of p00__cam0.png


def test_a_worker_killed_mid_fit_leaves_the_previous_version_serving(api, env, tmp_path):
    """Two worker processes: one fits a first version; a second job's worker is killed (SIGKILL) while it fits, the
    job is then seen failed with its own message, the category still answers with the first version and no second
    version exists; a retry is fitted by the other worker and serves, which has removed the folder of images the
    killed one left (once older than the grace). A cancel stops a running fit; no job folder is left."""
    from ingest.scratch import GRACE_SECONDS

    folders = tmp_path / "tmp"  # the workers' temporary folder, where each job's images are written
    folders.mkdir()
    env = {**env, "TMPDIR": str(folders)}
    first = start_worker(env, tmp_path / "worker-1.log", "w1")
    try:
        job = _job(api, "bottle-jobs", TRAIN[:12])
        done = _wait(api, job["id"], _finished)
        assert done["state"] == "succeeded" and done["worker"] == "w1" and done["images"] == 12, done  # kept
        version = done["model_id"]
        query = api.post("/query", data={"category": "bottle-jobs"},
                         files={"file": ("b.png", (BOTTLE / "test" / "good" / "000.png").read_bytes())})  # fmt: skip
        assert query.status_code == 200 and query.json()["model_id"] == version
        first.send_signal(signal.SIGKILL)
        first.wait(20)

        victim = start_worker(env, tmp_path / "worker-2.log", "w2")
        job = _job(api, "bottle-jobs", TRAIN[12:72])
        _wait(api, job["id"], lambda j: j["state"] == "running" and j["stage"] == "features" and j["done"])
        victim.send_signal(signal.SIGKILL)
        victim.wait(20)
        failed = _wait(api, job["id"], _finished, 30)
        assert failed["state"] == "failed" and failed["message"].startswith("the worker w2 stopped during features")
        assert "previous version still serves" in failed["message"] and failed["images"] == 60
        detail = api.get("/categories/bottle-jobs").json()
        assert detail["model_id"] == version and [c["model_id"] for c in detail["changes"]] == [version]
        query = api.post("/query", data={"category": "bottle-jobs"},
                         files={"file": ("b.png", (BOTTLE / "test" / "good" / "000.png").read_bytes())})  # fmt: skip
        assert query.json()["model_id"] == version
        (left,) = folders.glob(f"fit-job-{job['id']}-*")  # the killed worker's, its images in it
        assert any(left.iterdir())
        past = time.time() - 2 * GRACE_SECONDS
        os.utime(left, (past, past))

        rescuer = start_worker(env, tmp_path / "worker-3.log", "w3")
        try:
            assert api.post(f"/jobs/{job['id']}/retry").json()["state"] == "queued"
            retried = _wait(api, job["id"], _finished)
            assert retried["state"] == "succeeded" and retried["worker"] == "w3" and retried["attempts"] == 2
            assert api.get("/categories/bottle-jobs").json()["model_id"] == retried["model_id"] != version
            assert api.get(f"/jobs/{done['id']}").json()["images"] == 12  # the fit before is kept, its originals too
            assert not left.exists() and f"removed {left}" in (tmp_path / "worker-3.log").read_text()

            stopped = _job(api, "bottle-jobs", TRAIN[72:132])
            _wait(api, stopped["id"], lambda j: j["state"] == "running" and j["stage"] == "features")
            assert api.post(f"/jobs/{stopped['id']}/cancel").json()["cancel_requested"] is True
            ended = _wait(api, stopped["id"], _finished, 60)
            assert ended["state"] == "cancelled" and ended["message"].endswith("nothing was stored"), ended
            assert api.get("/categories/bottle-jobs").json()["model_id"] == retried["model_id"]
            assert list(folders.iterdir()) == []
        finally:
            rescuer.terminate()
            rescuer.wait(20)
    finally:
        if first.poll() is None:
            first.kill()


def test_a_good_image_found_defective_is_refitted_without_from_the_category_page(api, env, tmp_path):
    """A job's training images stay with it, and the files of good images added later are kept; on the category page
    (Chromium) the two images that score highest are marked not good and one button, the dialog accepted, queues one
    job with the fit's options, the false-alarm rate set since by hand and the other images, the added ones among
    them; a second refit while it runs is refused (it would bring them back); a worker fits it, and the new version
    never saw the marked ones; the fit before stays with its images, and the refit is undone by making that fit's
    version active again; a fit from files then retires the refit (the fit in service longest ago) with its job's
    images. Refused too: an added image whose file is not kept (422, naming it), an image that is not one of the
    category's (404), a category whose fit's images are not stored (409, naming the command line's way)."""
    from playwright.sync_api import sync_playwright

    worker = start_worker(env, tmp_path / "worker.log", "w")
    try:
        first = _wait(api, _job(api, "refits", TRAIN[:8])["id"], _finished)
        assert first["state"] == "succeeded" and first["images"] == 8, first
        taught = api.post("/categories/refits/normals", files=_files(TRAIN[8:10]))
        assert taught.status_code == 200 and len(taught.json()["images_added"]) == 2, taught.text
        assert api.put("/categories/refits/threshold", json={"false_alarm_rate": 0.05}).status_code == 200
        detail = api.get("/categories/refits").json()
        top, second_top = detail["highest_good_scores"][:2]
        assert detail["refit_images"] == 10 and detail["images"]["added"] == 2
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as connection:  # as if added by an earlier build
            kept = connection.execute("DELETE FROM image_originals RETURNING image_id, file_name, data").fetchall()
            unkept = api.post("/categories/refits/refit", json={"exclude_image_ids": []})
            connection.cursor().executemany("INSERT INTO image_originals VALUES (%s, %s, %s)", kept)
        assert unkept.status_code == 422 and TRAIN[8].name in unkept.json()["detail"], unkept.text
        kept.sort()  # by image id: the order they were added in
        expected = [f"added-{i}-{path.stem}.png" for (i, _, _), path in zip(kept, TRAIN[8:10], strict=True)]
        assert [name for _, name, _ in kept] == expected
        with sync_playwright() as driver:
            browser = launch_chromium(driver)
            page = browser.new_page(viewport={"width": 1180, "height": 900})
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(str(api.base_url) + "/category?name=refits")
            page.wait_for_selector(".highest-good .not-good")
            assert page.is_disabled(".refit-without")  # nothing marked yet
            boxes = page.query_selector_all(".highest-good .not-good")
            boxes[0].check()  # under the first two thumbnails: the highest
            boxes[1].check()
            assert page.inner_text(".refit-without") == "Refit without the 2 marked"
            page.click(".refit-without")
            page.wait_for_function("document.querySelector('.refit-result').textContent.includes('queued')")
            said = page.inner_text(".refit-result")
            # queued: a second click would only be refused (below), so the button and the marks are held
            assert page.is_disabled(".refit-without") and page.is_disabled(".highest-good .not-good")
            job = api.get("/jobs").json()[0]
            again = api.post("/categories/refits/refit", json={"exclude_image_ids": [top["image_id"]]})
            assert again.status_code == 409 and f"(job {job['id']})" in again.json()["detail"], again.text
            page.click(".refit-result a")  # the jobs list says what the refit is
            page.wait_for_selector(f".job-{job['id']}")
            row = page.inner_text(f".job-{job['id']}")
            names = sorted([top["file_name"], second_top["file_name"]])
            carried = 2 - [top["split"], second_top["split"]].count("added")
            with_added = f", with {carried} added since" if carried else ""
            assert f"refits (8 images), refit of job {first['id']} without {', '.join(names)}{with_added}" in row, row
            page.set_viewport_size({"width": 390, "height": 844})  # a phone: each job a block within the card
            card = "(jobs) => [jobs.closest('.card').scrollWidth, jobs.closest('.card').clientWidth]"
            wide, shown = page.eval_on_selector("#jobs", card)
            assert wide <= shown and page.evaluate("document.documentElement.scrollWidth") == 390, (wide, shown)
            browser.close()
        assert said.startswith(f"job {job['id']} queued: refits from 8 images, without {top['file_name']}, "), said
        assert job["options"] == {**first["options"], "false_alarm_rate": 0.05} and job["created_by"].startswith("api")
        assert job["refit_of"] == first["id"] and job["excluded"] == names
        assert job["images"] == 8 and job["normals"] == carried
        second = _wait(api, job["id"], _finished)
        assert second["state"] == "succeeded", second
        after = api.get("/categories/refits").json()
        assert after["model_id"] == second["model_id"] != detail["model_id"]
        assert sum(after["images"].values()) == 8 and after["refit_images"] == 8
        assert after["settings"]["false_alarm_rate"] == 0.05 and "added" not in after["images"]
        fitted_from = {h["file_name"] for h in after["highest_good_scores"]}
        assert not set(names) & fitted_from and len([n for n in fitted_from if n.startswith("added-")]) == carried
        # the fit before stays with its images (INSPECT_FITS_KEPT, 2): the refit is undone by one call
        assert api.get(f"/jobs/{first['id']}").json()["images"] == 8
        assert [(v["model_id"], v["fit"]) for v in after["versions"]][-3:] == [
            (detail["model_id"], first["model_id"]), (taught.json()["model_id"], first["model_id"]),
            (first["model_id"], first["model_id"])]  # fmt: skip
        added_files = sum(path.stat().st_size for path in TRAIN[8:10])  # kept with the first fit for a refit
        assert [(f["fit"], f["answering"], f["image_file_bytes"]) for f in after["fits"]] == [
            (second["model_id"], True, second["bytes"]),
            (first["model_id"], False, first["bytes"] + added_files),
        ]
        back = api.put("/categories/refits/active-version", json={"model_id": detail["model_id"]})
        assert back.status_code == 200 and back.json()["previous_model_id"] == second["model_id"], back.text
        undone = api.get("/categories/refits").json()
        assert undone["model_id"] == detail["model_id"] and undone["refit_images"] == 10
        assert undone["images"] == detail["images"] and undone["threshold"] == detail["threshold"]
    finally:
        worker.terminate()
        worker.wait(20)
    refitted_image = after["highest_good_scores"][0]["image_id"]  # the refit's, not the answering version's
    unknown = api.post("/categories/refits/refit", json={"exclude_image_ids": [refitted_image]})
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_image", unknown.text
    folder = tmp_path / "files"  # refitted from files: the fits kept are it and the first (in service since the
    # refit), so the refit's fit goes with its job's images, and the first's stay
    folder.mkdir()
    for path in TRAIN[:4]:
        (folder / path.name).symlink_to(path)
    fitted = subprocess.run(
        [sys.executable, "-m", "ingest", "fit", "--folder", str(folder), "--category", "refits", "--out",
         str(tmp_path / "reports")], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    assert api.get(f"/jobs/{second['id']}").json()["images"] == 0
    assert api.get(f"/jobs/{first['id']}").json()["images"] == 8
    assert {v["fit"] for v in api.get("/categories/refits").json()["versions"]} == {
        first["model_id"], api.get("/categories/refits").json()["memory_bank_segments"][0]}  # fmt: skip
    gone = api.post("/categories/refits/refit", json={"exclude_image_ids": []})
    assert gone.status_code == 409 and gone.json()["error"] == "no_stored_images", gone.text
    assert "--exclude" in gone.json()["detail"] and api.get("/categories/refits").json()["refit_images"] is None
    assert api.post("/categories/nope/refit", json={}).json()["error"] == "unknown_category"


def test_a_new_product_from_the_browser(api, env, tmp_path):
    """Chromium on the new product page: bottle's 209 good training images uploaded, a worker process fits them
    while the page shows the stage and its progress, the product then judges bottle's broken and good test images
    right over /query; the same name again asks before replacing the product (dismissed: no job). Writes the
    screenshot of the fit in progress when INSPECT_SCREENSHOT_FIT names a file."""
    from playwright.sync_api import sync_playwright

    worker = start_worker(env, tmp_path / "worker.log", "gpu-box-1")
    try:
        with sync_playwright() as driver:
            browser = launch_chromium(driver)
            page = browser.new_page(viewport={"width": 1180, "height": 700})
            page.goto(str(api.base_url) + "/new")
            page.wait_for_selector("#jobs")
            page.fill("#category", "bottle")
            page.set_input_files("#files", [str(p) for p in TRAIN])
            page.click("#start")
            page.wait_for_function(
                "document.querySelector('.job .state') && "
                "document.querySelector('.job .state').textContent === 'running' && "
                "/stage [2-5] of 6: .+ at /.test(document.querySelector('.job .stage')?.textContent || '')",
                timeout=120_000,
            )
            text = page.inner_text(".job .stage")
            assert " of 6: " in text and " at " in text, text  # the stage, its counts and its rate
            assert page.inner_text(".job").startswith("1\tbottle (209 images)\trunning")
            if os.environ.get("INSPECT_SCREENSHOT_FIT"):
                page.screenshot(path=os.environ["INSPECT_SCREENSHOT_FIT"], full_page=True)
            page.wait_for_function("document.querySelector('.job .state').textContent === 'succeeded'", timeout=600_000)
            assert page.inner_text(".job .actions").startswith("version ")
            asked: list[str] = []  # the same name again would replace the product: the page asks first
            page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
            page.fill("#category", "bottle")
            page.set_input_files("#files", [str(p) for p in TRAIN[:3]])
            page.click("#start")
            page.wait_for_function("document.querySelector('#uploadStatus').textContent.includes('nothing uploaded')")
            assert asked and asked[0].startswith("bottle is already a product (version "), asked
            browser.close()
    finally:
        worker.terminate()
        worker.wait(20)
    listed = api.get("/jobs").json()
    job = listed[0]
    assert len(listed) == 1 and job["state"] == "succeeded" and job["worker"] == "gpu-box-1"  # none made unasked
    # options left empty on the page are the service's defaults, not the page's own copies of them
    assert job["options"]["false_alarm_rate"] == DEFAULT_FALSE_ALARM_RATE and job["options"]["coreset_ratio"] == 0.1
    wrong = []
    for kind in ("broken_large", "broken_small", "good"):
        for path in sorted((BOTTLE / "test" / kind).glob("*.png")):
            answer = api.post("/query", data={"category": "bottle"}, files={"file": (path.name, path.read_bytes())})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_id"] == job["model_id"]
            if answer.json()["is_anomalous"] != (kind != "good"):
                wrong.append(f"{kind}/{path.name}")
    assert wrong == []


def test_the_new_product_page_names_parts_by_a_pattern_it_runs_itself(api, tmp_path):
    """Chromium on the new product page: a pattern on the file names names each upload's part in the browser, which
    sends the names (``PUT /jobs/{id}/parts``) before it starts the job, and its care area's mask (``PUT
    /jobs/{id}/care-area``), which the list then names; a name the pattern does not match is said
    and the draft made is removed, said; a pattern that does not compile stops before anything is uploaded. A queued job
    cancelled from the list stays drawn cancelled when a poll's answer from before the click comes after it. The list
    is not asked for while the tab is hidden, and is at once when it is shown. A cancelled job is deleted from the
    list once its dialog is accepted, its button held until the answer comes, through the list's redraws (a slow
    answer clicked twice sends one DELETE)."""
    from playwright.sync_api import sync_playwright

    links = [str(link) for link in _views(tmp_path / "views", 3, 2)]
    mask = Image.new("L", (900, 900), 255)
    mask.paste(0, (0, 0, 225, 225))
    mask.save(tmp_path / "care.png")
    with sync_playwright() as driver:
        browser = launch_chromium(driver)
        page = browser.new_page()
        page.goto(str(api.base_url) + "/new")
        page.wait_for_selector("#jobs")
        page.fill("#category", "cams")
        page.set_input_files("#files", links)
        page.fill("#partPattern", "^(p\\d+)_")
        page.fill("#viewSide", "256")  # a finer view than the default's 224x224 pixels, in tiles
        page.fill("#tileSide", "128")
        page.set_input_files("#careArea", str(tmp_path / "care.png"))  # sent before the images
        page.click("#start")
        page.wait_for_function("document.querySelector('#uploadStatus').textContent.includes('queued')")
        assert "6 images, views of 3 parts" in page.inner_text("#uploadStatus")
        page.wait_for_function("document.querySelector('.job-1')?.textContent.includes('views of 3 parts')")
        options = api.get("/jobs/1").json()["options"]
        assert (options["pixels"], options["tile"]) == (256 * 256, 128)
        assert "whole at 256x256's pixels in tiles of 128, " in page.inner_text(".job-1")
        assert "care area 93.8% of each picture" in page.inner_text(".job-1")
        assert api.get("/jobs/1").json()["care_area"] == {"width": 900, "height": 900, "share": 0.9375}
        page.fill("#viewSide", "")
        page.fill("#category", "cams-2")
        page.fill("#partPattern", "^(q\\d+)")
        page.click("#start")
        page.wait_for_selector(".api-error")
        said = page.inner_text(".api-error")  # failed part-way: the draft it made is not left half-made
        assert said == ("nothing fitted, job 2 removed with the images it had taken: views of one part: ^(q\\d+) "
                        "does not match p00_v0.png; every image needs a part"), said  # fmt: skip
        assert api.get("/jobs/2").status_code == 404
        page.fill("#category", "cams-3")
        page.fill("#partPattern", "^(p")
        page.click("#start")
        page.wait_for_function("document.querySelector('.api-error')?.textContent.startsWith('views of one part: ')")
        # every state job 1's row is drawn in, in order; the next poll answered at once but handed to the page 1.5 s
        # late, and Cancel clicked in between: the cancelled row must not give way to the poll's queued one
        page.evaluate("""() => {
            window.drawn = [];
            new MutationObserver(() => window.drawn.push(document.querySelector('.job-1 .state')?.textContent))
              .observe(document.querySelector('#jobs'), {childList: true, subtree: true});
            const plain = window.fetch;
            window.fetch = (url, options) => {
              if (window.held || !String(url).startsWith('/jobs?limit')) return plain(url, options);
              window.held = 'asked';
              return plain(url, options).then((answer) => { window.held = 'answered';
                return new Promise((done) => setTimeout(() => { window.held = 'handed'; done(answer); }, 1500)); });
            }; }""")
        page.wait_for_function("window.held === 'answered'")
        page.click(".job-1 .cancel")
        page.wait_for_function("window.held === 'handed' && window.drawn.includes('cancelled')")
        page.wait_for_timeout(300)  # the held answer's list is drawn by now, were it drawn
        drawn = page.evaluate("window.drawn")
        assert "queued" not in drawn[drawn.index("cancelled") :], drawn
        # the tab hidden, the list is asked for no more; shown again, at once
        page.evaluate("""() => {
            window.asked = 0;
            const plain = window.fetch;
            window.fetch = (url, options) => {
              if (String(url).startsWith('/jobs?limit')) window.asked += 1;
              return plain(url, options); };
            Object.defineProperty(document, 'hidden', {configurable: true, get: () => window.hide === true});
            window.hide = true; }""")
        page.wait_for_timeout(1500)  # a poll asked before it was hidden has been answered
        asked = page.evaluate("window.asked")
        page.wait_for_timeout(3000)
        assert page.evaluate("window.asked") == asked
        page.evaluate("() => { window.hide = false; document.dispatchEvent(new Event('visibilitychange')); }")
        page.wait_for_function(f"window.asked > {asked}", timeout=2000)
        made = api.get("/jobs").json()
        assert [(j["id"], j["state"], j["parts"], j["images"]) for j in made] == [(1, "cancelled", 3, 6)]
        asked = []  # Delete asks first (its stored images go with it): dismissed, nothing is removed
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        page.click(".job-1 .delete")
        page.wait_for_timeout(1500)
        assert asked == ["Delete job 1 (cams, cancelled) and its 6 stored images? It cannot be retried after."]
        assert api.get("/jobs/1").status_code == 200
        # accepted, its call held until released here: the button stays held through the list's redraws, so a
        # second click sends nothing
        page.evaluate("""() => {
            window.deletes = 0;
            const plain = window.fetch;
            window.fetch = (url, options) => {
              if (options?.method !== 'DELETE') return plain(url, options);
              window.deletes += 1;
              return new Promise((done) => { window.release = () => done(plain(url, options)); }); }; }""")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click(".job-1 .delete")
        page.evaluate("window.clicked = document.querySelector('.job-1 .delete')")
        page.wait_for_function("document.querySelector('.job-1 .delete') !== window.clicked")  # a poll's redraw
        assert page.is_disabled(".job-1 .delete")
        page.click(".job-1 .delete", force=True)
        assert page.evaluate("window.deletes") == 1
        page.evaluate("window.release()")
        page.wait_for_function("document.querySelector('#jobs').textContent === 'no fit job yet'")
        assert page.evaluate("window.deletes") == 1
        browser.close()
    assert api.get("/jobs").json() == [] and api.get("/jobs/1").status_code == 404


def test_a_job_s_care_area_is_fitted_taken_along_by_a_refit_and_exported(api, env, tmp_path):
    """A draft job's care area (``PUT /jobs/{id}/care-area``, a mask's image): refused for a picture that is not an
    image, for a job in the centre crop and once the job is queued; the worker fits with it, so the version inspects
    only there (its memory bank's cells inside it) and serves the mask; a refit takes it along; ``ingest export``
    writes it beside the folder and the command it prints fits with it."""
    mask = Image.new("L", (900, 900), 255)
    mask.paste(0, (0, 0, 225, 225))  # the top left 7x7 of bottle's 28x28 cells
    drawn = io.BytesIO()
    mask.save(drawn, format="PNG")
    care = {"file": ("care.png", drawn.getvalue(), "image/png")}
    crop = api.post("/jobs", json={"category": "cropped", "field_of_view": "crop"}).json()
    refused = api.put(f"/jobs/{crop['id']}/care-area", files=care)
    assert refused.status_code == 422 and "whole field of view" in refused.json()["detail"], refused.text
    created = api.post("/jobs", json={"category": "careful", "coreset_ratio": 0.05}).json()
    text = api.put(f"/jobs/{created['id']}/care-area", files={"file": ("notes.png", b"not an image", "image/png")})
    assert text.status_code == 422 and "notes.png" in text.json()["detail"], text.text
    assert api.put(f"/jobs/{created['id']}/care-area", files=care).json()["care_area"]["share"] == 0.9375
    kept = api.get(f"/jobs/{created['id']}/care-area")  # the mask itself, as the worker will fit with it
    assert kept.status_code == 200, kept.text
    assert (np.asarray(Image.open(io.BytesIO(kept.content))) == (np.asarray(mask) > 0)).all()
    assert api.delete(f"/jobs/{created['id']}/care-area").json()["care_area"] is None
    gone = api.get(f"/jobs/{created['id']}/care-area")
    assert gone.status_code == 404 and gone.json()["error"] == "no_care_area", gone.text
    assert api.get("/jobs/999/care-area").status_code == 404
    assert api.put(f"/jobs/{created['id']}/care-area", files=care).status_code == 200
    assert api.post(f"/jobs/{created['id']}/images", files=_files(TRAIN[:6])).status_code == 200
    assert api.post(f"/jobs/{created['id']}/start").json()["care_area"]["share"] == 0.9375
    late = api.put(f"/jobs/{created['id']}/care-area", files=care)
    assert late.status_code == 409 and late.json()["error"] == "job_state", late.text
    worker = start_worker(env, tmp_path / "worker.log", "w")
    try:
        assert _wait(api, created["id"], _finished)["state"] == "succeeded"
        detail = api.get("/categories/careful").json()
        assert detail["settings"]["care_area"] == {"width": 900, "height": 900, "share": 0.9375}
        served = Image.open(io.BytesIO(api.get("/categories/careful/care-area").content))
        assert (np.asarray(served) == (np.asarray(mask) > 0)).all()
        with psycopg.connect(env["DATABASE_URL"]) as connection:
            cells = connection.execute(
                "SELECT count(*), count(*) FILTER (WHERE grid_row < 7 AND grid_col < 7) FROM patches"
            ).fetchone()
        assert cells[0] > 0 and cells[1] == 0
        refit = api.post("/categories/careful/refit", json={"exclude_image_ids": []})
        assert refit.status_code == 201 and refit.json()["care_area"]["share"] == 0.9375, refit.text
        assert _wait(api, refit.json()["id"], _finished)["state"] == "succeeded"
        assert api.get("/categories/careful").json()["settings"]["care_area"]["share"] == 0.9375
    finally:
        worker.terminate()
        worker.wait(20)
    done = subprocess.run(
        [sys.executable, "-m", "ingest", "export", "--category", "careful", "--out", str(tmp_path / "out")],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = tmp_path / "out" / "careful.care-area.png"
    assert (np.asarray(Image.open(written)) == (np.asarray(mask) > 0)).all()
    assert f"--care-area {written}" in done.stdout.splitlines()[-1]


def _outline(page, corners: list[tuple[float, float]], enter: bool = False) -> None:
    """Click the corners (shares of the drawing's width and height) on the care area's drawing, then the first again,
    which closes the shape (or press Enter, which does too)."""
    page.locator("canvas.care-draw").scroll_into_view_if_needed()
    box = page.locator("canvas.care-draw").bounding_box()  # in the window: the drawing is within it
    for x, y in corners if enter else [*corners, corners[0]]:
        page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
    if enter:
        page.keyboard.press("Enter")


def _drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag from ``start`` to ``end`` (shares of the drawing's width and height) on the care area's drawing."""
    page.locator("canvas.care-draw").scroll_into_view_if_needed()
    box = page.locator("canvas.care-draw").bounding_box()
    page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=5)
    page.mouse.up()


def _share(text: str) -> float:
    """The share of each picture a page says is inspected ("inspects 24.9% ..." -> 0.249)."""
    return float(re.search(r"inspect\w* ([0-9.]+)%", text).group(1)) / 100


def _outside(database_url: str, model_id: int, inside) -> tuple[int, int]:
    """(memory bank rows of the version, those whose cell is not ``inside(row, col)``) of bottle's 28x28 grid."""
    with psycopg.connect(database_url) as connection:
        cells = connection.execute(
            "SELECT p.grid_row, p.grid_col FROM patches p JOIN models m ON p.model_id = ANY(m.bank_segments) "
            "WHERE m.id = %s",
            (model_id,),
        ).fetchall()
    return len(cells), sum(not inside(row, col) for row, col in cells)


def test_a_care_area_is_drawn_over_a_picture_and_drawn_again_as_a_refit(api, env, database_url, tmp_path):
    """Chromium on the new product page: the care area drawn over the first image chosen, the part outlined (the right
    half, corner by corner) and a rectangle dragged out of it (the top right quarter): the worker fits the bottom right
    quarter alone. On the
    category page it is drawn again over a good image, from the area in service: cleared, the left half outlined,
    and ``PUT /categories/{name}/care-area`` queues the refit that fits it; ``DELETE`` refits over all of each
    picture. A mask that is not an image is refused (422) and a second refit while one is queued (409)."""
    from playwright.sync_api import sync_playwright

    worker = start_worker(env, tmp_path / "worker.log", "w")
    try:
        with sync_playwright() as driver:
            browser = launch_chromium(driver)
            page = browser.new_page()
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(str(api.base_url) + "/new")
            page.fill("#category", "drawn")
            page.fill("#coresetRatio", "0.05")
            assert page.locator("canvas.care-draw").is_hidden()  # nothing to draw over yet: no empty box
            assert page.inner_text(".care-share") == "choose a picture to draw over"
            page.set_input_files("#files", [str(path) for path in TRAIN[:6]])
            page.wait_for_function("document.querySelector('.care-share').textContent.includes('all of each')")
            assert page.inner_text("#careShown") == "drawn over 000.png (1 of 6 pictures)"
            page.click("#carePicture")  # the area is drawn over each picture in turn
            assert page.inner_text("#careShown") == "drawn over 001.png (2 of 6 pictures)"
            _outline(page, [(0.5, 0.002), (0.998, 0.002), (0.998, 0.998), (0.5, 0.998)])
            page.select_option(".care-mode", "out")
            _drag(page, (0.5, 0.002), (0.998, 0.5))  # a rectangle
            assert abs(_share(page.inner_text(".care-share")) - 0.25) < 0.01, page.inner_text(".care-share")
            # the cells a fit inspects, by the service's rule: a quarter of bottle's 28x28 grid of 32-pixel cells
            page.wait_for_function("document.querySelector('.care-share').textContent.includes('patch cells')")
            assert "25.0% of this picture's patch cells: 196 of 784 (28 x 28, each 32 x 32 pixels" in page.inner_text(
                ".care-share"
            )
            page.click("#start")
            page.wait_for_function("document.querySelector('#uploadStatus').textContent.includes('queued')")
            first = api.get("/jobs").json()[0]
            assert first["care_area"]["width"] == 900 and abs(first["care_area"]["share"] - 0.25) < 0.01, first
            first = _wait(api, first["id"], _finished)
            assert first["state"] == "succeeded", first
            rows, outside = _outside(database_url, first["model_id"], lambda row, col: row >= 14 and col >= 14)
            assert rows > 0 and outside == 0, (rows, outside)

            page.goto(str(api.base_url) + "/category?name=drawn")
            page.click(".care-redraw")
            page.wait_for_function("document.querySelector('.care-share')?.textContent.startsWith('inspects ')")
            assert abs(_share(page.inner_text(".care-share")) - 0.25) < 0.01, page.inner_text(".care-share")
            page.click(".care-clear")
            assert page.inner_text(".care-share") == "all of each picture is inspected"
            _outline(page, [(0.002, 0.002), (0.5, 0.002), (0.5, 0.998), (0.002, 0.998)], enter=True)
            page.wait_for_function("document.querySelector('.care-share').textContent.includes(': 392 of 784')")
            page.click(".care-refit")
            page.wait_for_function("document.querySelector('.care-result').textContent.includes('queued')")
            assert abs(_share(page.inner_text(".care-result")) - 0.5) < 0.01, page.inner_text(".care-result")
            browser.close()
        again = api.get("/jobs").json()[0]
        assert again["refit_of"] == first["id"] and abs(again["care_area"]["share"] - 0.5) < 0.01, again
        sliver = Image.new("L", (900, 900), 0)
        sliver.paste(255, (0, 0, 900, 10))  # a tenth of a cell's height
        drawn = io.BytesIO()
        sliver.save(drawn, format="PNG")
        asked = {"width": "900", "height": "900"}
        none = api.post("/care-area/cells", data=asked, files={"file": ("sliver.png", drawn.getvalue(), "image/png")})
        assert none.status_code == 422 and "covers no patch cell of a 28x28 grid" in none.json()["detail"], none.text
        finer = api.post("/care-area/cells", data={**asked, "pixels": str(448 * 448)},
                         files={"file": ("sliver.png", drawn.getvalue(), "image/png")})  # fmt: skip
        assert finer.status_code == 200, finer.text  # a finer view's first row of cells is 16 pixels high
        assert (finer.json()["rows"], finer.json()["inspected"], finer.json()["cells"][0]) == (56, 56, "1" * 56)
        busy = api.delete("/categories/drawn/care-area")
        assert busy.status_code == 409 and busy.json()["error"] == "job_state", busy.text
        text = api.put("/categories/drawn/care-area", files={"file": ("notes.png", b"not an image", "image/png")})
        assert text.status_code == 422 and "notes.png" in text.json()["detail"], text.text
        again = _wait(api, again["id"], _finished)
        assert again["state"] == "succeeded", again
        detail = api.get("/categories/drawn").json()
        assert abs(detail["settings"]["care_area"]["share"] - 0.5) < 0.01
        fits = [change["detail"] for change in detail["changes"] if change["action"] == "fit"]
        assert [round(fit["care_area_share"], 2) for fit in fits] == [0.5, 0.25], fits  # newest first
        rows, outside = _outside(database_url, again["model_id"], lambda row, col: col < 14)
        assert rows > 0 and outside == 0, (rows, outside)
        whole = api.delete("/categories/drawn/care-area")
        assert whole.status_code == 201 and whole.json()["care_area"] is None, whole.text
        assert _wait(api, whole.json()["id"], _finished)["state"] == "succeeded"
    finally:
        worker.terminate()
        worker.wait(20)
    assert api.get("/categories/drawn").json()["settings"]["care_area"] is None
    assert api.get("/categories/drawn/care-area").status_code == 404


def test_the_command_line_enqueues_and_follows_a_job(env, tmp_path):
    """``python -m ingest enqueue --wait`` queues a folder of good images, a worker process wakes at once and fits
    it, and the command follows the job to its end and exits 0, having printed the stages on the way. Its images
    are 6 parts' 2 views each, named by ``--part`` on the command line: the version's images keep their parts and
    its hold-out takes whole parts, as a fit from files with ``--part`` does; ``--care-area`` is the job's, then the
    version's, and the command ``export`` prints fits with it."""
    folder = tmp_path / "good"
    _views(folder, 6, 2)
    mask = Image.new("L", (300, 300), 255)  # drawn smaller than the pictures: stretched over them
    mask.paste(0, (0, 0, 75, 75))
    mask.save(tmp_path / "care.png")
    worker = start_worker(env, tmp_path / "worker.log", "cli-worker")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ingest", "enqueue", "--category", "cli-bottle", "--folder", str(folder),
             "--backbone", "resnet18", "--part", "^(p[0-9]+)_", "--per", "part", "--pixels", str(256 * 256),
             "--tile", "128", "--care-area", str(tmp_path / "care.png"), "--wait"],
            cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(20)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("cli-bottle queued with 12 images (views of 6 parts)"), lines
    assert any(" stage " in line for line in lines) and lines[-1].split(": ", 1)[1].startswith("succeeded (version ")
    log = (tmp_path / "worker.log").read_text()
    assert "job 1: taken (cli-bottle, 12 images)" in log and "from 12 images (12 of them views of 6 parts)" in log
    assert "care area 93.8% of each picture" in log
    with psycopg.connect(env["DATABASE_URL"]) as connection:
        rows = connection.execute(
            "SELECT i.split, i.part, i.file_name FROM images i JOIN categories c ON c.active_model_id = i.model_id "
            "WHERE c.name = 'cli-bottle'"
        ).fetchall()
    assert len(rows) == 12 and all(part == name[:3] for _, part, name in rows), rows
    held = {part for split, part, _ in rows if split == "holdout"}
    assert held and held.isdisjoint({part for split, part, _ in rows if split == "train"}), rows
    exported = subprocess.run(
        [sys.executable, "-m", "ingest", "export", "--category", "cli-bottle", "--out", str(tmp_path / "out")],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "12 of them are views of 6 parts (manifest.json names each file's part)" in exported.stdout, exported
    manifest = json.loads((tmp_path / "out" / "cli-bottle" / "manifest.json").read_text())
    assert {f["file"]: f["part"] for f in manifest["files"]} == {name: name[:3] for _, _, name in rows}
    command = exported.stdout.splitlines()[-1].removeprefix("fit from them: ")  # the same parts and target per part
    assert f"--parts {tmp_path / 'out' / 'cli-bottle' / 'manifest.json'}" in command and "--per part" in command
    assert "--pixels 65536 --tile 128" in command  # the job's view in tiles, as the worker fitted it
    words = [w if w != "cli-bottle" else "cli-refit" for w in shlex.split(command)[1:]]  # as a category of its own
    words += ["--out", str(tmp_path / "reports")]
    refitted = subprocess.run([sys.executable, *words], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    assert refitted.returncode == 0, refitted.stderr
    with psycopg.connect(env["DATABASE_URL"]) as connection:
        again = connection.execute(
            "SELECT i.part, i.file_name FROM images i JOIN categories c ON c.active_model_id = i.model_id "
            "WHERE c.name = 'cli-refit'"
        ).fetchall()
    assert sorted(again) == sorted((name[:3], name) for _, _, name in rows)
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as connection:  # a refit takes the parts along
        model = models.active_model(connection, "cli-bottle")
        four_parts = {hashlib.sha256(p.read_bytes()).hexdigest(): p.name for p in sorted(folder.iterdir())[:8]}
        too_few = r"^a refit of cli-bottle's 4 images are views of 2 part\(s\); a fit needs at least 3 good parts"
        with pytest.raises(ValueError, match=too_few):
            jobs.refit(connection, "cli-bottle", model.fit_id, model.bank_segments, four_parts, {}, "test")
        assert model.threshold_policy["per"] == "part"  # the job's target per part is the version's
        assert (model.config.pixels, model.config.tile) == (256 * 256, 128)
        assert model.config.care is not None and model.config.care.size == (300, 300)
        assert models.active_model(connection, "cli-refit").config.care_area == model.config.care_area
    server, api = start_api(env, tmp_path / "server.log", ready="/health")
    try:  # the category page's refit: the version's parts and its target per part along
        refit = api.post("/categories/cli-bottle/refit", json={"exclude_image_ids": []})
    finally:
        api.close()
        server.terminate()
        server.wait(20)
    assert refit.status_code == 201, refit.text
    assert refit.json()["state"] == "queued" and refit.json()["parts"] == 6 and refit.json()["images"] == 12
    assert refit.json()["options"]["per"] == "part" and refit.json()["options"]["tile"] == 128
    refused = subprocess.run(
        [sys.executable, "-m", "ingest", "enqueue", "--category", "cli-tiles", "--folder", str(folder),
         "--tile", "100"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and refused.stderr.startswith("error: tile (100) must be"), refused.stderr
    (folder / "strip.png").write_bytes(_png(900, 3))  # a file the worker's check would fail the job on
    refused = subprocess.run(
        [sys.executable, "-m", "ingest", "enqueue", "--category", "cli-strips", "--folder", str(folder)],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "1 problem(s) found before queueing the job" in refused.stderr, refused.stderr
    assert f"{folder / 'strip.png'}: a 900x3 image has an aspect ratio of 300:1" in refused.stderr
    with psycopg.connect(env["DATABASE_URL"]) as connection:  # nothing queued for a worker to fail on
        queued = connection.execute("SELECT count(*) FROM fit_jobs WHERE category IN ('cli-tiles', 'cli-strips')")
        assert queued.fetchone()[0] == 0


def test_a_category_s_good_images_leave_the_database_as_files(api, env, tmp_path):
    """What the database keeps of a product made from uploads (the job's images, the files of good images added
    since) leaves it as those very files: a zip from the category page (Chromium's download) and the API, a folder
    from ``python -m ingest export``, each with a manifest; names that would collide (case only; bytewise order
    decides which keeps its own) or climb out of the folder are made safe, never overwrite. The command it prints
    fits the category from that folder; the database then keeps no file of the new fit's images, and both ways
    say so (409, exit 2)."""
    from playwright.sync_api import sync_playwright

    sent = {"a.png": TRAIN[0], "A.png": TRAIN[1], "../up.png": TRAIN[2], **{p.name: p for p in TRAIN[3:6]}}
    worker = start_worker(env, tmp_path / "worker.log", "w")
    try:
        created = api.post("/jobs", json={"category": "exports", "coreset_ratio": 0.05})
        job_id = created.json()["id"]
        files = [("files", (name, path.read_bytes(), "image/png")) for name, path in sent.items()]
        assert api.post(f"/jobs/{job_id}/images", files=files).status_code == 200
        assert api.post(f"/jobs/{job_id}/start").status_code == 200
        assert _wait(api, job_id, _finished)["state"] == "succeeded"
    finally:
        worker.terminate()
        worker.wait(20)
    taught = api.post("/categories/exports/normals", files=_files(TRAIN[6:8]))
    assert taught.status_code == 200, taught.text
    held = {name.rsplit("/", 1)[-1] if name != "a.png" else "a-2.png": path.read_bytes() for name, path in sent.items()}

    zipped = api.get("/categories/exports/good-images.zip")
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip", zipped.text
    version = api.get("/categories/exports").json()["model_id"]
    assert f'filename="exports-version-{version}-good-images.zip"' in zipped.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        unpacked = {name.removeprefix("exports/"): archive.read(name) for name in archive.namelist()}
    manifest = json.loads(unpacked.pop("manifest.json"))
    added = {name: data for name, data in unpacked.items() if name.startswith("added-")}  # added-<image id>-<name>
    in_order = sorted(added, key=lambda name: int(name.split("-")[1]))
    assert [added[name] for name in in_order] == [p.read_bytes() for p in TRAIN[6:8]]  # byte for byte
    assert [name.split("-", 2)[2] for name in in_order] == [p.name for p in TRAIN[6:8]]
    held |= added
    assert unpacked == held
    assert sorted(f["split"] for f in manifest["files"]) == ["added"] * 2 + ["train"] * 6
    assert {f["file"]: f["sha256"] for f in manifest["files"]} == {
        name: hashlib.sha256(data).hexdigest() for name, data in held.items()
    }
    assert manifest["model_id"] == version and manifest["not_kept"] == []
    assert manifest["settings"]["coreset_ratio"] == 0.05 and manifest["settings"]["backbone"] == "resnet18"

    with sync_playwright() as driver:
        browser = launch_chromium(driver)
        page = browser.new_page()
        page.goto(str(api.base_url) + "/category?name=exports")
        page.wait_for_selector(".export-good")
        with page.expect_download() as download:
            page.click(".export-good")
        saved = tmp_path / "from-page.zip"
        download.value.save_as(saved)
        assert download.value.suggested_filename == f"exports-version-{version}-good-images.zip"
        page.wait_for_function("document.querySelector('.export-result').textContent.includes('manifest.json')")
        browser.close()
    with zipfile.ZipFile(saved) as archive:
        assert {name.removeprefix("exports/"): archive.read(name) for name in archive.namelist()} == {
            **held,
            "manifest.json": archive.read("exports/manifest.json"),
        }

    def export(out: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ingest", "export", "--category", "exports", "--out", str(out)],
            cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    done = export(tmp_path / "out")
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out" / "exports"
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "manifest.json"} == held
    again = export(tmp_path / "out")
    assert again.returncode == 2 and "not empty" in again.stderr and len(list(folder.iterdir())) == 9
    command = done.stdout.splitlines()[-1].removeprefix("fit from them: ")
    assert command.startswith(f"python -m ingest fit --folder {folder} --category exports --backbone resnet18 ")
    assert "--coreset-ratio 0.05" in command and f"--weights {WEIGHTS}" in command, command
    refitted = subprocess.run(
        [sys.executable, *shlex.split(command)[1:], "--out", str(tmp_path / "reports")],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert refitted.returncode == 0, refitted.stderr
    after = api.get("/categories/exports").json()
    assert after["images"] == {"train": 7, "holdout": 1} and after["settings"]["coreset_ratio"] == 0.05
    gone = api.get("/categories/exports/good-images.zip")
    assert gone.status_code == 409 and gone.json()["error"] == "no_stored_images", gone.text
    refused = export(tmp_path / "again")
    assert refused.returncode == 2 and "fitted from files" in refused.stderr, refused.stderr


def _loaded(api: httpx.Client) -> int:
    """Categories this API process holds loaded, from its metrics."""
    lines = api.get("/metrics").text.splitlines()
    return int(float(next(line for line in lines if line.startswith("inspect_models_loaded ")).split()[1]))


def test_a_deleted_product_leaves_nothing_but_its_logs(api, env, tmp_path):
    """A product made by a job and taught since is deleted from its category page (the name typed back; a wrong one
    deletes nothing) once its queued fit job is cancelled (before, 409 naming it): its versions, partitions, jobs and
    stored files go, the inspection log keeps its record and queries answer 404. Another, deleted by
    ``python -m ingest delete`` (which first only counts) while the API holds it loaded, answers 404 there too."""
    from playwright.sync_api import sync_playwright

    worker = start_worker(env, tmp_path / "worker.log", "w")
    try:
        made = [_job(api, name, paths, coreset_ratio=0.05) for name, paths in (("retired", TRAIN[:6]),
                                                                              ("by-cli", TRAIN[6:12]))]  # fmt: skip
        assert all(_wait(api, job["id"], _finished)["state"] == "succeeded" for job in made)
    finally:
        worker.terminate()
        worker.wait(20)
    assert api.post("/categories/retired/normals", files=_files(TRAIN[12:13])).status_code == 200
    good = {"file": ("g.png", (BOTTLE / "test" / "good" / "000.png").read_bytes())}
    answered = {name: api.post("/query", data={"category": name}, files=good) for name in ("retired", "by-cli")}
    assert all(answer.status_code == 200 for answer in answered.values())
    heatmap = f"/inspections/{answered['retired'].json()['inspection_id']}/heatmap"
    assert api.get(heatmap).headers["content-type"] == "image/png"
    assert _loaded(api) == 2
    with psycopg.connect(env["DATABASE_URL"]) as connection:
        ids = connection.execute(
            "SELECT array_agg(m.id) FROM models m JOIN categories c ON c.id = m.category_id WHERE c.name = 'retired'"
        ).fetchone()[0]
    waiting = _job(api, "retired", TRAIN[13:16])  # no worker: it stays queued
    refused = api.delete("/categories/retired")
    assert refused.status_code == 409 and refused.json()["error"] == "job_state", refused.text
    assert f"job {waiting['id']} is queued for retired" in refused.json()["detail"]
    assert api.post(f"/jobs/{waiting['id']}/cancel").json()["state"] == "cancelled"

    def delete(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ingest", "delete", *args], cwd=ROOT, env={**os.environ, **env},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    counted = delete("--category", "retired")
    assert counted.returncode == 1 and "Nothing is deleted without --yes" in counted.stdout, counted.stdout
    assert "2 versions, 7 good images" in counted.stdout and "2 fit jobs, 10 stored files" in counted.stdout
    miscased = delete("--category", "Retired", "--yes")  # the name meant, said; nothing deleted
    assert miscased.returncode == 2 and "Retired is not in the database (did you mean 'retired'?)" in miscased.stderr
    assert api.get("/categories/retired").status_code == 200

    answers: list[str] = []
    with sync_playwright() as driver:
        browser = launch_chromium(driver)
        page = browser.new_page()
        page.on("dialog", lambda dialog: dialog.accept(answers.pop(0)))
        page.goto(str(api.base_url) + "/category?name=retired")
        page.wait_for_selector(".delete-category")
        answers.append("retire")
        page.click(".delete-category")
        page.wait_for_function("document.querySelector('.delete-result').textContent.includes('nothing deleted')")
        assert api.get("/categories/retired").status_code == 200
        answers.append("retired")
        page.click(".delete-category")
        said = page.wait_for_selector(".deleted").inner_text()
        browser.close()
    assert "retired is deleted" in said and "2 versions, 7 good images" in said and "2 fit jobs" in said, said

    assert _loaded(api) == 1  # by-cli: retired was unloaded by its deletion, before any query of it
    gone = api.post("/query", data={"category": "retired"}, files=good)
    assert gone.status_code == 404 and gone.json()["error"] == "unknown_category", gone.text
    assert api.get("/categories/retired").status_code == 404 and api.delete("/categories/retired").status_code == 404
    drawn = api.get(heatmap)  # its kept answer: the record stays, no version is left to draw it
    assert drawn.status_code == 404 and drawn.json()["error"] == "unknown_category", drawn.text
    assert "answered for category retired, which has no fitted version now" in drawn.json()["detail"], drawn.text
    assert [c["name"] for c in api.get("/categories").json()] == ["by-cli"]
    with psycopg.connect(env["DATABASE_URL"]) as connection:
        partitions = [banks.partition_name(i, table) for i in ids for table in banks.TABLES]
        left = connection.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", (partitions,))
        assert left.fetchone()[0] == 0
        assert connection.execute("SELECT count(*) FROM models WHERE id = ANY(%s)", (ids,)).fetchone()[0] == 0
        assert connection.execute("SELECT count(*) FROM fit_jobs WHERE category = 'retired'").fetchone()[0] == 0
        assert connection.execute("SELECT count(*) FROM inspections WHERE category = 'retired'").fetchone()[0] == 1
        action, actor = connection.execute(
            "SELECT action, actor FROM category_changes ch JOIN categories c ON c.id = ch.category_id "
            "WHERE c.name = 'retired' ORDER BY ch.id DESC LIMIT 1"
        ).fetchone()
        assert action == "deleted" and actor.startswith("api "), (action, actor)

    assert "by-cli" in api.get("/ready").json()["categories"] and _loaded(api) == 1
    deleted = delete("--category", "by-cli", "--yes")
    assert deleted.returncode == 0 and deleted.stdout.startswith("deleted by-cli: 1 version,"), deleted.stdout
    stale = api.post("/query", data={"category": "by-cli"}, files=good)  # loaded here, deleted by another process
    assert stale.status_code == 404 and stale.json()["error"] == "unknown_category", stale.text
    assert _loaded(api) == 0 and api.get("/categories").json() == []  # the stale copy unloaded by its 404
    assert api.get("/ready").json()["loaded"] == []


def test_an_uploaded_camera_jpeg_is_checked_whole_though_read_small():
    """A job's uploads are checked at libjpeg's smallest scale, yet every byte is read: a camera-size JPEG cut short
    is refused by name, the whole one kept as sent."""
    from app.uploads import job_images
    from patchcore import ImageError

    buffer = io.BytesIO()
    Image.open(TRAIN[0]).convert("RGB").resize((3600, 2400)).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    kept, ignored = job_images([("camera.jpg", data)], 40_000_000, 1 << 26, 1 << 28)
    assert kept == [("camera.jpg", data)] and ignored == []
    with pytest.raises(ImageError, match=r"cut\.jpg: cannot decode the image"):
        job_images([("cut.jpg", data[: len(data) * 9 // 10])], 40_000_000, 1 << 26, 1 << 28)


def test_a_zip_s_hidden_members_are_passed_over_as_a_folder_s_are():
    """macOS's ``__MACOSX/`` resource forks, ``._`` files and dot-folders (a ``.thumbnails/`` cache) hold files with
    image suffixes that are no part's picture: ignored and listed, by the rule a folder of images is read by."""
    import zipfile

    from app.uploads import job_images

    image = TRAIN[0].read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("good/000.png", image)
        archive.writestr("good/._000.png", b"\x00\x05\x16\x07" + b"\x00" * 60)
        archive.writestr("__MACOSX/good/._000.png", b"\x00\x05\x16\x07" + b"\x00" * 60)
        archive.writestr("good/.thumbnails/000.png", b"not read")
        archive.writestr("good/notes.txt", b"shift 2")
    kept, ignored = job_images([("parts.zip", buffer.getvalue())], 40_000_000, 1 << 26, 1 << 28)
    assert kept == [("000.png", image)]
    assert sorted(ignored) == sorted(
        f"parts.zip: {name}"
        for name in ("good/._000.png", "__MACOSX/good/._000.png", "good/.thumbnails/000.png", "good/notes.txt")
    )


def test_a_job_of_another_network_than_the_services_gets_that_networks_own_weights(monkeypatch, capsys):
    """INSPECT_WEIGHTS is the service's network's file (INSPECT_BACKBONE): a job that chose another network on the
    page is given torchvision's ImageNet weights of it (here handed over in place of the download), not failed on
    tensors of another shape; where those cannot be had, the job's error says both; a file that does not fit the
    service's own network stays an error."""
    import torch
    import torchvision

    from config import Settings
    from ingest.worker import job_embedder
    from patchcore import backbone
    from patchcore.errors import WeightsError, WeightsMismatch
    from patchcore.model import PatchCoreConfig

    asked = []

    def torchvisions(network: str) -> dict:
        asked.append(network)
        return torchvision.models.resnet50().state_dict()

    monkeypatch.setattr(backbone, "_download_weights", torchvisions)
    service = Settings(backbone="resnet18", weights=str(WEIGHTS), device="cpu")
    picture = torch.zeros(1, 3, 64, 64)
    own, weights = job_embedder(PatchCoreConfig(backbone="resnet18"), service)
    assert weights == str(WEIGHTS) and own.extractor(picture).shape[-1] == 384 and asked == []
    other, weights = job_embedder(PatchCoreConfig(backbone="resnet50"), service)
    assert weights is None and other.extractor(picture).shape[-1] == 1536 and asked == ["resnet50"]
    assert "is not resnet50's: torchvision's weights of it" in capsys.readouterr().out

    def offline(network: str) -> dict:
        raise WeightsError(f"could not download the ImageNet weights of {network}")

    monkeypatch.setattr(backbone, "_download_weights", offline)
    with pytest.raises(WeightsError, match=r"INSPECT_WEIGHTS \(.*\) is not resnet50's weights .* could not download"):
        job_embedder(PatchCoreConfig(backbone="resnet50"), service)
    with pytest.raises(WeightsMismatch, match="lacks tensors"):  # the service's own network: its file is wrong
        job_embedder(PatchCoreConfig(backbone="resnet50"), Settings(backbone="resnet50", weights=str(WEIGHTS)))
