"""A category over real HTTP: its description, thresholds, drift, good images, teaching and stored versions."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import psycopg
import pytest
from PIL import Image

from config import Settings
from patchcore import threshold
from store import images as stored_images
from store import models
from store.database import connect
from tests.api.conftest import BROKEN, EVALUATION, GOOD, file_field, png, post
from tests.conftest import BOTTLE, MVTEC, launch_chromium


def test_categories_docs_and_health(api, database):
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["auth"] == "open" and "NO API KEY" in health["warning"]
    ready = api.get("/ready").json()
    assert ready["categories"] == ready["loaded"] == ["bottle"]  # loaded at start
    summary = api.get("/categories").json()
    assert [c["name"] for c in summary] == ["bottle"] and summary[0]["embedding_dim"] == 384
    detail = api.get("/categories/bottle").json()
    assert detail["patches"] == detail["memory_bank_size"] > 10000
    assert detail["images"] == {"train": 188, "holdout": 21}
    assert detail["threshold_policy"]["kind"] == "false_alarm_rate" and detail["changes"][0]["action"] == "fit"
    assert detail["settings"]["backbone"] == "resnet18"
    with psycopg.connect(database[1]) as connection:  # the good scores the threshold was set from, highest first
        scores = [row[0] for row in connection.execute(
            "SELECT calibration_score FROM images WHERE model_id = ANY(%s) AND calibration_score IS NOT NULL "
            "ORDER BY calibration_score DESC", (detail["memory_bank_segments"],))]  # fmt: skip
    highest = detail["highest_good_scores"]
    assert len(scores) == 209 and [h["score"] for h in highest] == pytest.approx(scores[:10])
    assert [h["above_threshold"] for h in highest] == [s > detail["threshold"] for s in scores[:10]]
    assert {h["split"] for h in highest} <= {"train", "holdout"} and all(h["file_name"] for h in highest)
    assert api.get(f"/images/{highest[0]['image_id']}").headers["content-type"] == "image/jpeg"
    assert api.get("/docs").status_code == 200
    assert "/query" in api.get("/openapi.json").json()["paths"]


def test_a_threshold_set_over_http_is_a_new_version_served_at_once(api, database):
    """PUT /categories/bottle/threshold makes a new version without a refit: the next query is judged by it (same
    memory bank, same score), GET shows its policy and the change log, and bad requests get clear errors."""
    _, url = database
    before = api.get("/categories/bottle").json()
    assert before["threshold_policy"]["kind"] == "false_alarm_rate"
    assert before["threshold_policy"]["good_scores"] == 209  # 188 out of fold + 21 held out
    first = post(api, GOOD).json()
    assert first["model_id"] == before["model_id"] and first["threshold"] == before["threshold"]

    # looked at first: the version PUT would make, judged on the stored evaluation, and nothing written
    preview = api.get("/categories/bottle/threshold", params={"value": first["anomaly_score"] * 0.9})
    assert preview.status_code == 200, preview.text
    assert preview.json()["model_id"] == before["model_id"] == api.get("/categories/bottle").json()["model_id"]
    assert preview.json()["current_threshold"] == before["threshold"]
    put = api.put("/categories/bottle/threshold", json={"value": first["anomaly_score"] * 0.9})
    assert put.status_code == 200, put.text
    change = put.json()
    assert (preview.json()["threshold"], preview.json()["threshold_policy"]) == (
        change["threshold"],
        change["threshold_policy"],
    )
    assert preview.json()["evaluation"] == api.get("/categories/bottle").json()["evaluation"]
    assert change["previous_model_id"] == before["model_id"] != change["model_id"]
    assert change["threshold_policy"]["kind"] == "manual"
    judged = post(api, GOOD).json()
    assert judged["model_id"] == change["model_id"] and judged["is_anomalous"] is True  # now above the threshold
    assert judged["anomaly_score"] == pytest.approx(first["anomaly_score"], abs=1e-5)
    assert judged["p_value"] == pytest.approx(first["p_value"], rel=1e-4)  # the same good scores read it
    assert judged["p_value"] > 0.03  # a good part's score is not rare among good parts, whatever the threshold

    back = api.put("/categories/bottle/threshold", json={"false_alarm_rate": threshold.DEFAULT_FALSE_ALARM_RATE}).json()
    assert back["threshold"] == pytest.approx(before["threshold"], rel=1e-9)
    assert post(api, GOOD).json()["is_anomalous"] is False
    detail = api.get("/categories/bottle").json()
    assert detail["model_id"] == back["model_id"] and detail["memory_bank_segments"] == before["memory_bank_segments"]
    assert detail["patches"] == before["patches"] and detail["images"] == before["images"]
    assert [c["action"] for c in detail["changes"][:3]] == ["threshold", "threshold", "fit"]
    assert detail["changes"][0]["actor"].startswith("api")
    with psycopg.connect(url) as connection:  # versions share the bank: one partition, no copied rows
        kept = connection.execute(
            "SELECT count(DISTINCT m.bank_segments), count(*) FROM models m "
            "JOIN categories c ON c.id = m.category_id WHERE c.name = 'bottle'"
        ).fetchone()
        assert kept == (1, 3)  # one bank; every version of the fit is kept (each can be made active again)

    # the line's own answers judged at another threshold beside the active one, with what their reviews found: every
    # answer here is by a version of the one bank, so each is counted, by its score; a part by its worst view
    broken = post(api, BROKEN, part="P-1").json()
    assert post(api, GOOD, part="P-1").json()["part"] == "P-1"  # a second view of the same part, good
    assert api.post(f"/inspections/{first['inspection_id']}/review", json={"label": "good"}).status_code == 200
    assert api.post(f"/inspections/{broken['inspection_id']}/review", json={"label": "broken_large"}).status_code == 200
    records = api.get("/inspections", params={"category": "bottle", "limit": 500}).json()["inspections"]
    assert len(records) >= 4 and {r["model_id"] for r in records} >= {before["model_id"], change["model_id"]}
    now = api.get("/categories/bottle").json()["threshold"]
    for value in (first["anomaly_score"] * 0.9, broken["anomaly_score"] + 0.1):  # a good part flagged; a defect let by
        log = api.get("/categories/bottle/threshold", params={"value": value, "log_hours": 2}).json()["log"]

        def counted(at: float, label: str | None = None, flagged: bool = True) -> int:
            return sum((r["score"] > at) == flagged for r in records
                       if label is None or (r["review_label"] or "").startswith(label))  # fmt: skip

        worst: dict = {}  # each part's worst view: a record naming none is its own part
        for r in records:
            worst[r["part"] or r["id"]] = max(worst.get(r["part"] or r["id"], r["score"]), r["score"])
        assert len(worst) == len(records) - 1
        assert log == {
            "hours": 2, "answered": len(records), "flagged": counted(value), "flagged_now": counted(now),
            "reviewed_good": 1, "good_flagged": counted(value, "good"), "good_flagged_now": counted(now, "good"),
            "reviewed_defective": 1, "defects_passed": counted(value, "broken", False),
            "defects_passed_now": counted(now, "broken", False), "parts": len(worst),
            "parts_flagged": sum(w > value for w in worst.values()),
            "parts_flagged_now": sum(w > now for w in worst.values()),
            "other_banks": 0,  # every version here reads the fit's one bank
        }  # fmt: skip
        assert (
            log["good_flagged"] + log["defects_passed"] == 1
            and log["good_flagged_now"] + log["defects_passed_now"] == 0
        )

    for body, status, words in (
        ({}, 422, "exactly one"),
        ({"value": 1.0, "false_alarm_rate": 0.1}, 422, "exactly one"),
        ({"value": -1}, 422, "value"),
        ({"false_alarm_rate": 0.9}, 422, "false_alarm_rate"),
    ):
        bad = api.put("/categories/bottle/threshold", json=body)
        assert bad.status_code == status and words in bad.json()["detail"], bad.text
    missing = api.put("/categories/no_such_thing/threshold", json={"value": 1.0})
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_category"
    for params, words in (({}, "exactly one"), ({"value": 1.0, "false_alarm_rate": 0.1}, "exactly one"),
                          ({"false_alarm_rate": 0.9}, "false_alarm_rate")):  # fmt: skip
        bad = api.get("/categories/bottle/threshold", params=params)
        assert bad.status_code == 422 and words in bad.text, bad.text
    assert api.get("/categories/no_such_thing/threshold", params={"value": 1.0}).status_code == 404


def test_drift_counts_the_active_versions_recent_answers_against_its_calibration(api, database):
    """A threshold set another way starts an empty window (no warning), though the version before it answered; four
    broken bottles, all flagged, put the share's 90% interval far above the 2% its threshold predicts: the warning,
    in the report and in /metrics. Reviews say the false-alarm rate itself: one reject found good among four, with
    four passes, is 1 of 5 good parts. Passes that score above the good median far more often than half warn too,
    over HTTP, in /metrics and on the page. A good image taught then (a version recalibrated to the same 2%) keeps
    the window: its answers and the version before's are counted together."""
    before = post(api, BOTTLE / "test" / "good" / "005.png").json()  # an answer at the 3% setting, in the window
    fresh = api.put("/categories/bottle/threshold", json={"false_alarm_rate": 0.02})
    assert fresh.status_code == 200, fresh.text
    empty = api.get("/categories/bottle/drift").json()
    assert empty["model_id"] == fresh.json()["model_id"] and empty["inspections"] == 0
    assert empty["versions"] == [fresh.json()["model_id"]] and before["model_id"] != empty["model_id"]
    assert empty["warning"] is False and empty["flagged_share"] is None and empty["hours"] == []
    assert empty["predicted_false_alarm_rate"] == pytest.approx(0.02, abs=0.005) and len(empty["good_scores"]) == 209
    assert empty["parts"] is None  # no answer named a part
    broken = sorted((BOTTLE / "test" / "broken_large").glob("*.png"))[:4]
    answers = [post(api, path).json() for path in broken]
    assert all(a["is_anomalous"] for a in answers)
    report = api.get("/categories/bottle/drift").json()
    assert (report["inspections"], report["flagged"], report["flagged_share"]) == (4, 4, 1.0)
    assert report["interval"][0] > report["predicted_false_alarm_rate"] and report["warning"] is True
    assert sum(h["inspections"] for h in report["hours"]) == 4 and report["window_hours"] == 24
    assert report["parts"] is None
    assert sorted(report["scores"]) == pytest.approx(sorted(a["anomaly_score"] for a in answers))
    metrics = api.get("/metrics").text
    assert 'inspect_drift_warning{category="bottle"} 1.0' in metrics
    assert 'inspect_flagged_share{category="bottle"} 1.0' in metrics
    assert 'inspect_drift_window_inspections{category="bottle"} 4.0' in metrics
    assert 'inspect_drift_window_parts{category="bottle"} 0.0' in metrics
    assert report["reviews"] is None and 'inspect_reviewed_drift_warning{category="bottle"} 0.0' in metrics
    assert report["body"] is None  # no part passed yet: nothing said of where the passed parts' scores lie
    # reviews tell false alarms from defects: one of the four rejects found good, one of four passes checked
    good = [post(api, BOTTLE / "test" / "good" / f"00{i}.png").json() for i in range(4)]
    assert not any(a["is_anomalous"] for a in good)
    body = api.get("/categories/bottle/drift").json()["body"]  # the passes against the good median, as calibrated
    above = sum(a["anomaly_score"] > float(np.median(empty["good_scores"])) for a in good)
    assert (body["passed"], body["above_good_median"], body["share"]) == (4, above, above / 4)
    predicted = report["predicted_false_alarm_rate"]
    assert body["expected_share"] == pytest.approx((0.5 - predicted) / (1 - predicted))
    assert body["interval"][0] <= body["expected_share"] <= body["interval"][1] and body["warning"] is False
    scraped = api.get("/metrics").text
    assert f'inspect_passed_above_good_median_share{{category="bottle"}} {above / 4}' in scraped
    assert 'inspect_body_drift_warning{category="bottle"} 0.0' in scraped
    labels = ["broken_large", "broken_large", "broken_large", "good"]
    for answer, label in [*zip(answers, labels, strict=True), (good[0], "good")]:
        assert api.post(f"/inspections/{answer['inspection_id']}/review", json={"label": label}).status_code == 200
    reviews = api.get("/categories/bottle/drift").json()["reviews"]
    counts = [reviews[k] for k in ("flagged", "flagged_reviewed", "flagged_found_good")]
    assert counts + [reviews[k] for k in ("passed", "passed_reviewed", "passed_found_defective")] == [4, 4, 1, 4, 1, 0]
    assert reviews["false_alarm_rate"] == pytest.approx(1 / 5)  # 1 false alarm of 5 good parts (the passes good)
    low, high = reviews["interval"]
    assert low < 0.02 < high and reviews["warning"] is False  # five good parts cannot refute 2%
    metrics = api.get("/metrics").text
    assert 'inspect_reviewed_false_alarm_rate{category="bottle"} 0.2' in metrics
    # a line whose passed parts all score above the good median (one good bottle of p-value 0.08, ten times): the
    # passed parts no longer look like its good images, while no part more is flagged
    usual = post(api, BOTTLE / "test" / "good" / "001.png").json()
    assert usual["anomaly_score"] > float(np.median(empty["good_scores"])) and not usual["is_anomalous"]
    for _ in range(9):
        post(api, BOTTLE / "test" / "good" / "001.png")
    shifted = api.get("/categories/bottle/drift").json()
    assert shifted["body"]["passed"] == 14 and shifted["body"]["warning"] is True and shifted["flagged"] == 4
    assert shifted["body"]["interval"][0] > shifted["body"]["expected_share"]
    assert 'inspect_body_drift_warning{category="bottle"} 1.0' in api.get("/metrics").text
    assert api.get("/categories/nothing/drift").status_code == 404
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:  # the pages say it in words, beside the flagged share's warning
        browser = launch_chromium(driver)
        page = browser.new_page()
        page.goto(str(api.base_url) + "/")
        page.wait_for_function("document.querySelectorAll('#category option').length > 0")
        page.select_option("#category", "bottle")
        page.wait_for_selector(".drift-warning")
        said = page.inner_text(".drift-warning")
        browser.close()
    passes = shifted["body"]["above_good_median"]
    assert f"bottle: {passes} of 14 passed parts score above the good parts' median" in said
    assert "The parts it passes look less like its good images than they did" in said
    taught = api.post("/categories/bottle/normals", files=[file_field(BOTTLE / "test" / "good" / "010.png", "files")])
    assert taught.status_code == 200, taught.text
    version = taught.json()["model_id"]
    pooled = api.get("/categories/bottle/drift").json()
    assert pooled["model_id"] == version and pooled["versions"] == [fresh.json()["model_id"], version]
    assert (pooled["inspections"], pooled["flagged"]) == (18, 4) and pooled["warning"] is True
    assert pooled["body"]["passed"] == 14 and pooled["reviews"]["flagged_reviewed"] == 4
    taught_rate = api.get("/categories/bottle").json()["threshold_policy"]["estimated_false_alarm_rate"]
    assert taught_rate == pytest.approx(0.02, abs=0.005)  # recalibrated to the same target
    answer = post(api, BOTTLE / "test" / "good" / "006.png").json()
    assert answer["model_id"] == version
    weighed = api.get("/categories/bottle/drift").json()  # each version's prediction weighed by its answers
    expected = (18 * report["predicted_false_alarm_rate"] + taught_rate) / 19
    assert weighed["inspections"] == 19 and weighed["predicted_false_alarm_rate"] == pytest.approx(expected)
    assert sorted(weighed["scores"]) == pytest.approx(sorted([*pooled["scores"], answer["anomaly_score"]]))


def test_good_images_are_served_from_the_database_with_cache_headers(api, database):
    """The training images a verdict points at are shown from PostgreSQL (no dataset folder needed): the whole view
    and the patch the most anomalous patch was compared with."""
    body = post(api, BROKEN).json()
    nearest = body["most_anomalous_patch"]["nearest_normal"]
    whole = api.get(f"/images/{nearest['image_id']}")
    assert whole.status_code == 200 and whole.headers["content-type"] == "image/jpeg"
    assert "immutable" in whole.headers["cache-control"] and whole.headers["etag"]
    picture = Image.open(io.BytesIO(whole.content))
    assert picture.size == (224, 224) and 2_000 < len(whole.content) < 40_000
    stored = np.asarray(picture.convert("L"), dtype=np.float32)
    source = MVTEC / "bottle" / "train" / "good" / nearest["file_name"]
    expected = np.asarray(Image.open(source).convert("L").resize((224, 224), Image.BILINEAR), dtype=np.float32)
    assert np.abs(stored - expected).mean() < 4  # the same picture, JPEG noise aside
    again = api.get(f"/images/{nearest['image_id']}", headers={"If-None-Match": whole.headers["etag"]})
    assert again.status_code == 304
    patch = api.get(f"/images/{nearest['image_id']}/patch", params={"row": nearest["row"], "col": nearest["col"]})
    assert patch.status_code == 200 and patch.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(patch.content)).size == (64, 64)
    outside = api.get(f"/images/{nearest['image_id']}/patch", params={"row": 28, "col": 0})
    assert outside.status_code == 422 and "28x28" in outside.json()["detail"]
    missing = api.get("/images/999999999")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_image"
    with psycopg.connect(database[1]) as connection:
        views, images = connection.execute(
            "SELECT (SELECT count(*) FROM image_views v JOIN images i ON i.id = v.image_id WHERE i.model_id = %s), "
            "(SELECT count(*) FROM images WHERE model_id = %s)",
            (api.get("/categories/bottle").json()["memory_bank_segments"][0],) * 2,
        ).fetchone()
    assert views == images == 209  # every good image, hold-out included


def test_teaching_over_http_adds_normals_and_defects_as_versions(api, database, fitted):
    """Normals, defect examples and feedback over HTTP, each a new version served at once; bad inputs get 4xx."""
    with connect(database[1]) as connection:
        models.save_model(connection, "teach", fitted, {}, Settings())
    good = [BOTTLE / "test" / "good" / f"{n:03d}.png" for n in (1, 2, 3)]
    mask = BOTTLE / "ground_truth" / "broken_large" / "000_mask.png"
    unknown = api.post("/categories/nope/normals", files=[file_field(good[0], "files")])
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_category"
    small_mask = ("mask", ("m.png", png(100, 50), "image/png"))
    wrong = api.post(
        "/categories/teach/defects", files=[file_field(BROKEN), small_mask], data={"defect_type": "broken_large"}
    )
    assert wrong.status_code == 422 and "the mask is 100x50, its image 900x900" in wrong.json()["detail"], wrong.text
    for label in ("", "two words"):
        bad = api.post("/categories/teach/feedback", files=[file_field(BROKEN)], data={"label": label})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_request", bad.text
    text = api.post("/categories/teach/normals", files=[("files", ("notes.txt", b"hello", "text/plain"))])
    assert text.status_code == 415 and text.json()["error"] == "unsupported_image"
    strip = ("files", ("strip.png", png(900, 3), "image/png"))  # every file that cannot be taken named at once
    both = api.post("/categories/teach/normals", files=[("files", ("a.txt", b"hello", "text/plain")), strip])
    assert both.status_code == 415 and both.json()["detail"].startswith(
        "2 files cannot be taken, nothing was added: a.txt: "
    )
    assert "; strip.png: a 900x3 image has an aspect ratio of 300:1" in both.json()["detail"], both.text
    before = api.get("/categories/teach").json()
    assert before["coverage_radius"] > 0 and before["defect_library"] == []
    assert post(api, good[0], category="teach").json()["model_id"] == before["model_id"]  # loaded: then extended

    added = api.post("/categories/teach/normals", files=[file_field(good[0], "files"), file_field(good[1], "files")])
    assert added.status_code == 200, added.text
    body = added.json()
    assert body["model_id"] != before["model_id"] and body["images_added"] == ["001.png", "002.png"]
    assert body["threshold"] == before["threshold"] and body["patches_added"] <= body["candidate_patches"] == 2 * 784
    detail = api.get("/categories/teach").json()
    assert detail["images"]["added"] == 2 and detail["memory_bank_segments"] == [before["model_id"], body["model_id"]]
    assert detail["memory_bank_size"] == detail["patches"] == before["patches"] + body["patches_added"]
    answer = post(api, good[0], category="teach").json()
    assert answer["model_id"] == body["model_id"] and answer["is_anomalous"] is False
    assert answer["anomaly_score"] <= before["coverage_radius"] + 1e-4  # every patch of it is covered now
    log = api.get("/categories/teach/threshold", params={"value": answer["anomaly_score"] / 2}).json()["log"]
    assert (log["answered"], log["flagged"], log["flagged_now"]) == (1, 1, 0)  # the answer before searched another bank
    assert log["other_banks"] == 1  # ... counted apart
    with connect(database[1]) as connection:  # the added normals' good scores join those the p-value reads
        grown = stored_images.good_scores(connection, detail["memory_bank_segments"])[0]
    assert len(grown) == len(fitted.good_scores) + 2
    assert answer["p_value"] == pytest.approx(threshold.good_tail(grown, 0.03)(answer["anomaly_score"]), rel=1e-9)

    taught = api.post("/categories/teach/defects", files=[file_field(BROKEN), file_field(mask, "mask")],
                      data={"defect_type": "broken_large"})  # fmt: skip
    assert taught.status_code == 200, taught.text
    assert taught.json()["added"][0]["cells_from"] == "mask" and taught.json()["defect_patches"] > 0
    library = api.get("/categories/teach").json()["defect_library"]
    assert [(e["defect_type"], e["file_name"]) for e in library] == [("broken_large", "000.png")]
    answer = post(api, BROKEN, category="teach").json()
    assert answer["defect_type"] == "broken_large" and 0 < answer["defect_confidence"] <= 1
    assert answer["nearest_defects"][0]["defect_id"] == library[0]["id"]
    assert "defects" in answer["timings_ms"]
    picture = api.get(f"/defects/{library[0]['id']}")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
    assert api.get("/defects/999999").status_code == 404

    thumbnail = io.BytesIO()  # taught, and what it teaches said: blur and grey, which no good image before it had
    with Image.open(good[2]) as image:
        image.resize((50, 50), Image.BILINEAR).convert("L").save(thumbnail, format="PNG")
    small = ("file", ("small.png", thumbnail.getvalue(), "image/png"))
    feedback = api.post("/categories/teach/feedback", files=[small], data={"label": "good"})
    assert feedback.status_code == 200 and feedback.json()["taught"] == "normal", feedback.text
    assert body["notes"] == {} and list(feedback.json()["result"]["notes"]) == ["small.png"]  # the 900x900 ones: none
    said = feedback.json()["result"]["notes"]["small.png"]
    assert said[0].startswith("the image is 50x50 pixels, enlarged 4.48 ") and len(said) == 2, said
    assert said[1].startswith("the image is grey (a file of one channel), where every good image of the category has")
    contamination = BOTTLE / "test" / "contamination" / "000.png"
    feedback = api.post(
        "/categories/teach/feedback", files=[file_field(contamination)], data={"label": "contamination"}
    )
    assert feedback.status_code == 200 and feedback.json()["result"]["added"][0]["cells_from"] == "model"
    detail = api.get("/categories/teach").json()
    actions = ["add_defects", "add_normals", "add_defects", "add_normals", "fit"]
    assert [c["action"] for c in detail["changes"]] == actions
    assert all(c["actor"].startswith("api") for c in detail["changes"][:4])
    assert sorted(e["defect_type"] for e in detail["defect_library"]) == ["broken_large", "contamination"]


def test_a_review_of_a_thumbnail_is_recorded_but_cannot_teach(api):
    """With the log's default thumbnails, the feedback API refuses to teach from the log (409, naming the setting),
    while the review itself is recorded, with no version."""
    inspection_id = post(api, GOOD).json()["inspection_id"]
    refused = api.post("/categories/bottle/feedback", data={"inspection_id": str(inspection_id), "label": "good"})
    assert refused.status_code == 409 and "INSPECT_LOG_IMAGES=full" in refused.json()["detail"]
    assert api.get(f"/inspections/{inspection_id}").json()["reviewed_at"] is None
    recorded = api.post(f"/inspections/{inspection_id}/review", json={"label": "good"})
    assert recorded.status_code == 200, recorded.text
    assert recorded.json()["review_label"] == "good" and recorded.json()["review_model_id"] is None
    assert recorded.json()["reviewed_by"] == "api 127.0.0.1" and recorded.json()["reviewed_at"]


def test_a_stored_version_answers_again_as_it_was(api, database, fitted, tmp_path):
    """Every version of the kept fits stays stored: a threshold and a teaching later, the fit's version is made
    active again over HTTP (its threshold, its bank: the taught patches out), the step is undone the same way, an
    unknown version is 404; a refit keeps the fit before it, whose taught version the category page makes active
    again (the refit undone); made active again, the refit's page retires the fit before it (409 while that one
    answers), the known defects the refit reads staying."""
    from playwright.sync_api import sync_playwright

    with connect(database[1]) as connection:
        fitted_id = models.save_model(connection, "versions", fitted, EVALUATION, Settings())["model_id"]
    first = post(api, BROKEN, category="versions").json()
    assert first["model_id"] == fitted_id and first["is_anomalous"] is True
    raised = api.put("/categories/versions/threshold", json={"value": 5.0}).json()
    taught = api.post("/categories/versions/normals", files=[file_field(GOOD, "files")]).json()
    assert taught["threshold"] == 5.0 and post(api, BROKEN, category="versions").json()["is_anomalous"] is False
    detail = api.get("/categories/versions").json()
    assert [(v["model_id"], v["made_by"], v["active"]) for v in detail["versions"]] == [
        (taught["model_id"], "add_normals", True), (raised["model_id"], "threshold", False),
        (fitted_id, "fit", False)]  # fmt: skip
    assert detail["versions"][0]["memory_bank_segments"] == [fitted_id, taught["model_id"]]

    back = api.put("/categories/versions/active-version", json={"model_id": fitted_id})
    assert back.status_code == 200, back.text
    assert back.json() == {"category": "versions", "model_id": fitted_id, "previous_model_id": taught["model_id"],
                           "threshold": first["threshold"], "previous_threshold": 5.0,
                           "memory_bank_size": fitted.memory_bank.shape[0]}  # fmt: skip
    # the server loads the version made active in the background (INSPECT_VERSION_CHECK_SECONDS), with no query
    loaded = f'inspect_loaded_version{{category="versions"}} {float(fitted_id)}'
    deadline = time.monotonic() + 20
    while loaded not in (metrics := api.get("/metrics").text):
        assert time.monotonic() < deadline, [line for line in metrics.splitlines() if "loaded_version" in line]
        time.sleep(0.2)
    again = post(api, BROKEN, category="versions").json()
    assert again["model_id"] == fitted_id and again["is_anomalous"] is True
    assert again["anomaly_score"] == pytest.approx(first["anomaly_score"], abs=1e-9)
    after = api.get("/categories/versions").json()
    assert after["model_id"] == fitted_id and after["memory_bank_size"] == after["patches"] < detail["patches"]
    assert after["changes"][0]["action"] == "reactivated" and len(after["versions"]) == 3
    same = api.put("/categories/versions/active-version", json={"model_id": fitted_id}).json()
    assert same["model_id"] == same["previous_model_id"] == fitted_id
    unknown = api.put("/categories/versions/active-version", json={"model_id": 10**9})
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_version", unknown.text
    other = api.put("/categories/bottle/active-version", json={"model_id": taught["model_id"]})
    assert other.status_code == 404 and other.json()["error"] == "unknown_version"  # another category's version

    mask = ("mask", ("m.png", (BOTTLE / "ground_truth" / "broken_large" / "000_mask.png").read_bytes(), "image/png"))
    taught_known = api.post(
        "/categories/versions/defects", files=[file_field(BROKEN), mask], data={"defect_type": "broken_large"}
    )
    assert taught_known.status_code == 200, taught_known.text
    known = taught_known.json()
    with connect(database[1]) as connection:
        refit = models.save_model(connection, "versions", fitted, EVALUATION, Settings())["model_id"]
    with connect(database[1], autocommit=True) as connection:  # the fit before is kept (INSPECT_FITS_KEPT, 2)
        assert models.retire_old_models(connection, "versions", Settings().fits_kept) == 0
    both = api.get("/categories/versions").json()
    assert [(v["model_id"], v["fit"], v["active"]) for v in both["versions"]] == [
        (refit, refit, True), (known["model_id"], fitted_id, False), (taught["model_id"], fitted_id, False),
        (raised["model_id"], fitted_id, False), (fitted_id, fitted_id, False)]  # fmt: skip
    judged = {k: EVALUATION[k] for k in ("image_auroc", "recall", "false_alarms", "good_images")}
    assert both["versions"][-1]["evaluation"] == judged  # how the fit judged, listed to compare before going back
    with psycopg.connect(database[1]) as connection:  # what each kept fit holds on disk: its versions' partitions
        on_disk = {
            fit: sum(connection.execute("SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0)", (name,))
                     .fetchone()[0] for name in names)
            for fit, names in ((refit, [f"patches_model_{refit}"]), (fitted_id, [
                f"patches_model_{fitted_id}", f"patches_model_{taught['model_id']}",
                f"defect_patches_model_{known['model_id']}"]))
        }  # fmt: skip
    assert [(f["fit"], f["answering"], f["segment_bytes"], f["image_file_bytes"]) for f in both["fits"]] == [
        (refit, True, on_disk[refit], 0), (fitted_id, False, on_disk[fitted_id], GOOD.stat().st_size)]  # fmt: skip

    with sync_playwright() as driver:  # the refit undone from the page: a version of the fit before answers again
        browser = launch_chromium(driver)
        page = browser.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(str(api.base_url) + "/category?name=versions")
        page.wait_for_selector("tr.fit-row")
        fits = [page.inner_text(f"tr.fit-row[data-fit='{fit}'] th") for fit in (refit, fitted_id)]
        assert fits[0].endswith("the one answering") and fits[1].endswith("an earlier fit, kept"), fits
        assert f"({on_disk[refit] / 1e6:.1f} MB of patches and indexes, 0.0 MB of image files" in fits[0], fits
        said = page.inner_text(f"tr[data-version='{fitted_id}'] .judged")
        assert said == "recall 1.000 · 0 of 20 good flagged · AUROC 1.000", said
        changes = page.inner_text("xpath=//h2[text()='Changes']/..")  # in words: nothing unknown said, flags yes/no
        assert "version" in changes and not re.search(r" (null|true|false)\b", changes), changes
        page.click(f"tr[data-version='{taught['model_id']}'] .reactivate")
        said = f"version {taught['model_id']} is active again"
        page.wait_for_function(f"document.querySelector('.versions-result')?.textContent === '{said}'")
        assert page.inner_text(f"tr[data-version='{taught['model_id']}']").endswith("active")
        assert page.inner_text(f"tr.fit-row[data-fit='{fitted_id}'] th").endswith("the one answering")
        assert page.query_selector(f"tr.fit-row[data-fit='{fitted_id}'] .retire-fit") is None  # answering: no retire
        forth = post(api, BROKEN, category="versions").json()
        assert forth["model_id"] == taught["model_id"] and forth["threshold"] == 5.0
        answering = api.delete(f"/categories/versions/fits/{fitted_id}")
        assert answering.status_code == 409 and answering.json()["error"] == "fit_in_service", answering.text

        # the refit kept after all: its earlier fit retired from the page, the known defects it reads staying
        assert api.put("/categories/versions/active-version", json={"model_id": refit}).status_code == 200
        page.reload()
        page.click(f"tr.fit-row[data-fit='{fitted_id}'] .retire-fit")
        said = f"fit {fitted_id} retired: 3 versions went"
        page.wait_for_function(f"document.querySelector('.versions-result')?.textContent === '{said}'")
        assert (
            page.query_selector_all("tr.fit-row") and page.query_selector(f"tr.fit-row[data-fit='{fitted_id}']") is None
        )
        browser.close()
    kept = api.get("/categories/versions").json()
    assert [v["model_id"] for v in kept["versions"]] == [refit] and len(kept["defect_library"]) == 1
    assert [f["fit"] for f in kept["fits"]] == [refit] and kept["changes"][0]["action"] == "fit_retired"
    assert kept["changes"][0]["model_id"] == fitted_id and kept["changes"][0]["detail"] == {"versions": 3}
    with connect(database[1], autocommit=True) as connection:  # nothing left to retire: the refit reads the defects
        assert models.retire_old_models(connection, "versions", fits_kept=1) == 0
    for earlier in (fitted_id, known["model_id"]):  # a retired fit's versions, kept for its defects or not
        gone = api.put("/categories/versions/active-version", json={"model_id": earlier})
        assert gone.status_code == 404 and "a retired fit's went with it" in gone.json()["detail"], gone.text
    twice = api.delete(f"/categories/versions/fits/{fitted_id}")
    assert twice.status_code == 404 and twice.json()["error"] == "unknown_fit", twice.text


def test_a_care_area_is_served_and_shown(api, database, small_train, tmp_path):
    """A category fitted with a care area (the top left corner of bottle's pictures left out): noise there is not a
    defect over HTTP either, where bottle's model finds its worst patch in it; a broken bottle still is one; the
    category says what share it inspects and serves the mask, its page shows both; a category without one answers
    404 naming the option."""
    from patchcore.care import CareArea
    from patchcore.model import PatchCoreConfig, fit
    from tests.conftest import WEIGHTS

    mask = np.ones((900, 900), dtype=bool)
    mask[:225, :225] = False
    care = CareArea(mask)
    _, url = database
    model = fit(PatchCoreConfig(backbone="resnet18", care_area=care.png()), small_train, str(WEIGHTS))
    with connect(url) as connection:
        models.save_model(connection, "fixture", model, {}, Settings())
    try:
        image = Image.open(GOOD).convert("RGB")
        image.paste(Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)), (10, 10))
        cluttered = io.BytesIO()
        image.save(cluttered, format="PNG")
        answers = {}
        for category in ("bottle", "fixture"):
            answer = post(api, data=cluttered.getvalue(), category=category)
            assert answer.status_code == 200, answer.text
            answers[category] = answer.json()
        seen, ignored = answers["bottle"], answers["fixture"]
        assert seen["is_anomalous"] and seen["most_anomalous_patch"]["row"] < 7 > seen["most_anomalous_patch"]["col"]
        worst = ignored["most_anomalous_patch"]
        assert not ignored["is_anomalous"] and (worst["row"] >= 7 or worst["col"] >= 7)
        broken = post(api, BROKEN, category="fixture").json()
        assert broken["is_anomalous"] and all(r["row"] >= 7 or r["col"] >= 7 for r in broken["defect_regions"])
        detail = api.get("/categories/fixture").json()
        assert detail["settings"]["care_area"] == {"width": 900, "height": 900, "share": 0.9375}
        served = api.get("/categories/fixture/care-area")
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        assert (np.asarray(Image.open(io.BytesIO(served.content))) == mask).all()
        none = api.get("/categories/bottle/care-area")
        assert none.status_code == 404 and none.json()["error"] == "no_care_area"
        assert "--care-area" in none.json()["detail"]
        # another area is a refit from the fit's stored images: a category fitted from files has none
        redrawn = api.put("/categories/fixture/care-area", files={"file": ("care.png", care.png(), "image/png")})
        assert redrawn.status_code == 409 and redrawn.json()["error"] == "no_stored_images", redrawn.text
        assert "--care-area MASK" in redrawn.json()["detail"]
        from playwright.sync_api import sync_playwright

        with sync_playwright() as driver:  # the category page says where it looks, and shows the mask
            browser = launch_chromium(driver)
            page = browser.new_page()
            page.goto(str(api.base_url) + "/category?name=fixture")
            page.wait_for_function(
                "document.querySelector('img.care-area') && document.querySelector('img.care-area').naturalWidth > 0"
            )
            said = page.inner_text("#content")
            assert page.query_selector(".care-redraw") is None  # nothing to refit from
            page.goto(str(api.base_url) + "/category?name=bottle")
            page.wait_for_selector("table.versions")
            everywhere = page.inner_text("#content")
            page.goto(str(api.base_url) + "/")  # the inspect page darkens what the answering version leaves out
            page.wait_for_function("document.querySelectorAll('#category option').length > 1")
            for category in ("fixture", "bottle"):
                (tmp_path / f"{category}.png").write_bytes(cluttered.getvalue())
                page.select_option("#category", category)
                page.set_input_files("#files", str(tmp_path / f"{category}.png"))
                page.wait_for_function(f"document.querySelectorAll('.result').length === {1 + (category == 'bottle')}")
            page.wait_for_function("document.querySelector('img.care-shade')?.naturalWidth === 900")
            page.wait_for_timeout(500)  # bottle's answer has asked for its own area by now, were it to show one
            count = "cards => cards.map((card) => card.querySelectorAll('img.care-shade').length)"
            shades = page.eval_on_selector_all(".result", count)
            browser.close()
        assert shades == [0, 1]  # newest first: bottle's answer, then the fixture's
        assert "Where it looks\t93.8% of each picture (a 900 x 900 mask, stretched over it)" in said
        assert "Where it looks\tall of each picture" in everywhere
    finally:
        assert api.delete("/categories/fixture").status_code == 200
