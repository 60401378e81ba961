"""Running on a factory network, over real HTTP and a real PostgreSQL: the inspection log, metrics, API keys, rate
limits, and a page that asks for a key."""

from __future__ import annotations

import csv
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from app.auth import Keys
from config import Settings
from config.keys import hash_key, parse_keys
from store import models
from store.database import connect
from store.migrate import upgrade
from tests.conftest import BOTTLE, launch_chromium, start_api

KEYS = {"viewer": ("inspect", "viewer-secret-1"), "boss": ("admin", "boss-secret-2"), "burst": ("inspect", "b-3")}
BROKEN = BOTTLE / "test" / "broken_large" / "000.png"
GOOD = BOTTLE / "test" / "good" / "000.png"


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name][1]}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_model, server_url):
    """An API with three keys, a rate limit, full images kept and a 1-second retention check, on a fresh database;
    it waits for every inspection record (``INSPECT_LOG_POLICY=wait``), so every answer it gives is recorded."""
    name = "ops_" + str(os.getpid())
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")
    base, _, query = server_url.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")
    upgrade(url)
    with connect(url) as connection:
        models.save_model(connection, "bottle", small_model, {}, Settings())
    log = tmp_path_factory.mktemp("ops") / "server.log"
    server, client = start_api(_environment(url, INSPECT_LOG_POLICY="wait"), log)
    yield client, url, log
    client.close()
    server.terminate()
    server.wait(20)
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _environment(url: str, **extra: str) -> dict[str, str]:
    keys = ",".join(f"{n}:{role}:{hash_key(secret)}" for n, (role, secret) in KEYS.items())
    return {
        "DATABASE_URL": url, "INSPECT_API_KEYS": keys, "INSPECT_RATE_LIMIT_PER_MINUTE": "600",
        "INSPECT_LOG_IMAGES": "full", "INSPECT_LOG_RETENTION_DAYS": "1", "INSPECT_LOG_RETENTION_CHECK_SECONDS": "1",
        "INSPECT_POOL_SIZE": "6", **extra,
    }  # fmt: skip


def _query(client: httpx.Client, path=BROKEN, key: str = "viewer", **headers) -> httpx.Response:
    return client.post("/query", files={"file": (path.name, path.read_bytes(), "image/png")},
                       data={"category": "bottle"}, headers={**_auth(key), **headers})  # fmt: skip


def test_every_auth_case_gets_its_status_and_message(served):
    client, _, _ = served
    assert client.get("/health").json()["auth"] == "keys"
    missing = client.get("/categories")
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert "Authorization: Bearer" in missing.json()["detail"] and missing.headers["www-authenticate"] == "Bearer"
    wrong = client.get("/categories", headers={"X-API-Key": "not-a-key"})
    assert wrong.status_code == 401 and "not one this service knows" in wrong.json()["detail"]
    assert client.get("/categories", headers={"X-API-Key": KEYS["viewer"][1]}).status_code == 200
    forbidden = client.put("/categories/bottle/threshold", json={"false_alarm_rate": 0.05}, headers=_auth("viewer"))
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"
    assert "viewer has the role inspect" in forbidden.json()["detail"]
    allowed = client.put("/categories/bottle/threshold", json={"false_alarm_rate": 0.05}, headers=_auth("boss"))
    assert allowed.status_code == 200, allowed.text
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200  # open: no data
    assert client.get("/favicon.ico").status_code == 200 and client.get("/static/icon.svg").status_code == 200
    tiff = io.BytesIO()  # a picture drawn as the service reads it changes nothing: the inspect key's, as a query
    Image.new("RGB", (40, 30), (90, 90, 90)).save(tiff, format="TIFF")
    drawn = client.post("/images/preview", files={"file": ("a.tif", tiff.getvalue())}, headers=_auth("viewer"))
    assert drawn.status_code == 200 and drawn.headers["x-image-width"] == "40", drawn.text
    statuses = []
    for _ in range(700):  # 600 a minute: the bucket holds 600, refills 10 a second
        response = client.get("/categories", headers=_auth("burst"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429 and statuses.count(200) >= 590, statuses[-3:]
    assert int(response.headers["retry-after"]) >= 1 and response.json()["error"] == "rate_limited"
    assert client.get("/categories", headers=_auth("viewer")).status_code == 200  # other keys are not limited


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch):
    import hmac

    keys = Keys(parse_keys(",".join(f"k{i}:inspect:{hash_key(f'secret-{i}')}" for i in range(5))))
    calls = []
    original = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or original(a, b))
    assert keys.identify("secret-0").name == "k0"
    assert len(calls) == 5  # the first key matched, and every other one was compared too
    calls.clear()
    assert keys.identify("nope") is None and len(calls) == 5
    with pytest.raises(ValueError, match="not name:role:sha256"):
        parse_keys("a:root:" + "0" * 64)
    with pytest.raises(ValueError, match="not name:role:sha256"):
        parse_keys("a:inspect:plaintext-key")


def test_each_query_leaves_one_record_and_50_concurrent_leave_50(served):
    client, url, _ = served
    answer = _query(client, BROKEN, "viewer", **{"X-Request-ID": "line-3-cam-2-0001"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert answer.headers["x-request-id"] == "line-3-cam-2-0001" and answer.headers["x-inspection-id"]
    record = client.get(f"/inspections/{body['inspection_id']}", headers=_auth("viewer")).json()
    assert record["model_id"] == body["model_id"] and record["is_anomalous"] is True
    assert record["request_id"] == "line-3-cam-2-0001" and record["api_key"] == "viewer"
    assert record["format"] == "PNG" and (record["width"], record["height"]) == (900, 900)
    assert {"decode", "embed", "search"} <= set(record["stages_ms"]) and record["latency_ms"] > 0
    assert record["defect_regions"] == body["defect_regions"] and record["defect_regions"]  # where, kept
    assert record["p_value"] == body["p_value"] and 0 < body["p_value"] < 0.03  # how rare among good parts, kept
    kept = client.get(f"/inspections/{body['inspection_id']}/image", headers=_auth("viewer"))
    assert kept.status_code == 200 and kept.content == BROKEN.read_bytes()  # INSPECT_LOG_IMAGES=full
    with psycopg.connect(url) as connection:
        before = connection.execute("SELECT count(*) FROM inspections").fetchone()[0]
    # 20 good parts and 30 defective ones, so that the log holds both verdicts to filter by
    tests = sorted((BOTTLE / "test").glob("*/*.png"))
    images = [p for p in tests if p.parent.name == "good"][:20] + [p for p in tests if p.parent.name != "good"][:30]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda p: _query(client, p, "viewer"), images))
    assert all(a.status_code == 200 for a in answers)
    ids = [a.json()["inspection_id"] for a in answers]
    with psycopg.connect(url) as connection:
        after = connection.execute("SELECT count(*) FROM inspections").fetchone()[0]
        stored = connection.execute("SELECT id, is_anomalous FROM inspections WHERE id = ANY(%s)", (ids,)).fetchall()
    assert after - before == 50 and len(set(ids)) == 50
    assert dict(stored) == {a.json()["inspection_id"]: a.json()["is_anomalous"] for a in answers}
    with psycopg.connect(url) as connection:  # SQL over the log: each record's regions, none for a normal part
        kept = connection.execute(
            "SELECT id, jsonb_array_length(regions), regions -> 0 -> 'box' FROM inspections WHERE id = ANY(%s)",
            (ids,),
        ).fetchall()
    answered = {a.json()["inspection_id"]: a.json()["defect_regions"] for a in answers}
    assert {i: (n, box) for i, n, box in kept} == {i: (len(r), r[0]["box"] if r else None) for i, r in answered.items()}
    normal = client.get("/inspections", params={"category": "bottle", "verdict": "normal", "limit": 5},
                        headers=_auth("viewer")).json()  # fmt: skip
    assert 0 < len(normal["inspections"]) <= 5 and all(not r["is_anomalous"] for r in normal["inspections"])
    page = client.get("/inspections", params={"limit": 20}, headers=_auth("viewer")).json()
    more = client.get("/inspections", params={"limit": 20, "before": page["next_before"]}, headers=_auth("viewer"))
    first, second = [r["id"] for r in page["inspections"]], [r["id"] for r in more.json()["inspections"]]
    assert first == sorted(first, reverse=True) and max(second) < min(first) and len(second) == 20
    by_model = client.get("/inspections", params={"model_id": body["model_id"]}, headers=_auth("viewer")).json()
    assert all(r["model_id"] == body["model_id"] for r in by_model["inspections"])
    bad = client.get("/inspections", params={"verdict": "maybe"}, headers=_auth("viewer"))
    assert bad.status_code == 422


def test_a_part_named_on_its_views_gets_one_verdict_over_them_and_its_records(served):
    """Views sent with ``part`` are found by it: ``GET /parts/{part}`` is anomalous when any of its views was, counts
    them and their reviews, and lists them newest first with the file names they were sent with; a name the log
    never saw is a 404, a bad one (a control character, past 200 characters) a 422 before any work."""
    client, _, _ = served

    def view(path, part, name):
        answer = client.post("/query", files={"file": (name, path.read_bytes(), "image/png")},
                             data={"category": "bottle", "part": part}, headers=_auth("viewer"))  # fmt: skip
        assert answer.status_code == 200, answer.text
        return answer.json()

    flagged = [view(GOOD, "lot 7/SN-0001", "cam-top.png"), view(BROKEN, "lot 7/SN-0001", "cam-side.png")]
    calm = [view(GOOD, "SN-0002", "cam-top.png"), view(GOOD, "SN-0002", "cam-side.png")]
    assert flagged[1]["is_anomalous"] and [a["part"] for a in flagged + calm] == ["lot 7/SN-0001"] * 2 + ["SN-0002"] * 2
    part = client.get("/parts/lot 7/SN-0001", headers=_auth("viewer"))
    assert part.status_code == 200, part.text
    body = part.json()
    assert body["is_anomalous"] is True and body["views"] == 2 and body["categories"] == ["bottle"]
    assert body["anomalous_views"] == sum(a["is_anomalous"] for a in flagged)
    assert [r["id"] for r in body["inspections"]] == [flagged[1]["inspection_id"], flagged[0]["inspection_id"]]
    assert [r["file_name"] for r in body["inspections"]] == ["cam-side.png", "cam-top.png"]
    assert body["first_at"] <= body["last_at"] and body["reviewed_views"] == 0
    other = client.get("/parts/SN-0002", headers=_auth("viewer")).json()
    assert other["is_anomalous"] is any(a["is_anomalous"] for a in calm) and other["views"] == 2
    # how rare each part is among good parts: its views times its rarest view's p-value (the union bound), at most 1
    for found, answers in ((body, flagged), (other, calm)):
        assert found["p_value"] == pytest.approx(min(1.0, 2 * min(a["p_value"] for a in answers)))
    assert body["p_value"] < other["p_value"]  # the broken view makes its part the rarer
    sheet = {r["part"]: r for r in csv.DictReader(io.StringIO(
        client.get("/parts.csv", params={"category": "bottle"}, headers=_auth("viewer")).text))}  # fmt: skip
    assert float(sheet["SN-0002"]["p_value"]) == pytest.approx(other["p_value"])
    listed = client.get("/inspections", params={"part": "SN-0002"}, headers=_auth("viewer")).json()["inspections"]
    assert sorted(r["id"] for r in listed) == sorted(a["inspection_id"] for a in calm)
    for inspection, label in ((flagged[1]["inspection_id"], "broken_large"), (flagged[0]["inspection_id"], "good")):
        reviewed = client.post(f"/inspections/{inspection}/review", json={"label": label}, headers=_auth("boss"))
        assert reviewed.status_code == 200, reviewed.text
    body = client.get("/parts/lot 7/SN-0001", params={"limit": 1}, headers=_auth("viewer")).json()
    assert (body["reviewed_views"], body["reviewed_defective_views"], len(body["inspections"])) == (2, 1, 1)
    assert body["is_defective_as_reviewed"] is True and body["defective_views_as_reviewed"] == 1
    # a person finds the flagged view good after all: still flagged by the service, no longer a reject as reviewed;
    # and a defect the service missed on the other part makes that part a reject as reviewed
    client.post(f"/inspections/{flagged[1]['inspection_id']}/review", json={"label": "good"}, headers=_auth("boss"))
    missed = next(a for a in calm if not a["is_anomalous"])
    client.post(f"/inspections/{missed['inspection_id']}/review", json={"label": "scratch"}, headers=_auth("boss"))
    body = client.get("/parts/lot 7/SN-0001", headers=_auth("viewer")).json()
    assert body["is_anomalous"] is True and body["is_defective_as_reviewed"] is False
    assert body["defective_views_as_reviewed"] == 0
    other = client.get("/parts/SN-0002", headers=_auth("viewer")).json()
    assert other["is_defective_as_reviewed"] is True
    assert other["defective_views_as_reviewed"] == 1 + sum(a["is_anomalous"] for a in calm)
    listed = {  # the listing filters on either verdict: a reject by the service is no longer one as reviewed
        (verdict, as_reviewed): [p["part"] for p in client.get(
            "/parts", params={k: v for k, v in (("verdict", verdict), ("verdict_as_reviewed", as_reviewed)) if v},
            headers=_auth("viewer"),
        ).json()["parts"]]
        for verdict, as_reviewed in (("defect", None), (None, "defect"), (None, "normal"), ("defect", "normal"))
    }  # fmt: skip
    assert listed[("defect", "normal")] == listed[(None, "normal")] == ["lot 7/SN-0001"]
    assert listed[(None, "defect")] == ["SN-0002"] and "lot 7/SN-0001" in listed[("defect", None)]
    ours = {a["inspection_id"] for a in flagged + calm}
    for path in ("/inspections", "/inspections.csv"):  # so do the records: the review's outcome, view by view
        for verdict, as_reviewed, expected in (
            ("normal", "defect", [missed]),  # the defect the service missed
            ("defect", "normal", [flagged[1]]),  # the false alarm a person cleared
            (None, "defect", [a for a in calm if a["is_anomalous"]] + [missed]),
        ):
            params = {k: v for k, v in (("verdict", verdict), ("verdict_as_reviewed", as_reviewed)) if v}
            answer = client.get(path, params=params, headers=_auth("viewer"))
            assert answer.status_code == 200, answer.text
            csv_rows = path.endswith(".csv")
            rows = list(csv.DictReader(io.StringIO(answer.text))) if csv_rows else answer.json()["inspections"]
            found = [int(r["id"]) for r in rows if int(r["id"]) in ours]
            assert found == sorted((a["inspection_id"] for a in expected), reverse=True), (path, verdict, as_reviewed)
    missing = client.get("/parts/lot 7/SN-0001", params={"category": "other"}, headers=_auth("viewer"))
    assert missing.status_code == 404 and missing.json()["error"] == "part_not_found"
    unnamed = client.post("/query", files={"file": ("a.png", GOOD.read_bytes(), "image/png")},
                          data={"category": "bottle", "part": ""}, headers=_auth("viewer"))  # fmt: skip
    assert unnamed.status_code == 200 and unnamed.json()["part"] is None  # an empty form field names nothing
    for bad in ("a\nb", "x" * 201):
        refused = client.post("/query", files={"file": ("a.png", GOOD.read_bytes(), "image/png")},
                              data={"category": "bottle", "part": bad}, headers=_auth("viewer"))  # fmt: skip
        assert refused.status_code == 422, bad


def _batch(client: httpx.Client, files: list[tuple[str, bytes]], key: str = "viewer", **form) -> httpx.Response:
    return client.post("/query/batch", files=[("file", (name, data, "image/png")) for name, data in files],
                       data={"category": "bottle", **form}, headers=_auth(key))  # fmt: skip


def test_a_batch_is_judged_image_by_image_and_recorded_together(served):
    """``POST /query/batch``: each image gets the answer ``POST /query`` gives it, in the order sent, each with its
    record; a part named once names every view, and its verdict over them is the log's (any view, the union bound);
    a part per file names each. Refused whole, before anything is judged or recorded: a file that is not an image
    (415, named) or of a shape the view refuses (422, named), more files than allowed, parts that do not match the
    files, a bad part name."""
    client, url, _ = served
    buffer = io.BytesIO()  # a view of another shape, embedded in a batch of its own shape
    Image.open(BOTTLE / "test" / "good" / "001.png").crop((0, 0, 900, 500)).save(buffer, format="PNG")
    views = [("top.png", GOOD.read_bytes()), ("side.png", BROKEN.read_bytes()), ("end.png", buffer.getvalue())]
    one_by_one = [
        client.post("/query", files={"file": view}, data={"category": "bottle"}, headers=_auth("viewer")).json()
        for view in views
    ]
    answer = _batch(client, views, part="SN-B1")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    answers = body["answers"]
    assert set(body["timings_ms"]) == {"read", "decode", "log", "total"}  # decoded side by side: the batch's own
    assert (answers[2]["view_width"], answers[2]["view_height"]) != (
        answers[0]["view_width"],
        answers[0]["view_height"],
    )
    verdicts = [a["is_anomalous"] for a in one_by_one]
    assert [a["is_anomalous"] for a in answers] == verdicts and verdicts[1] is True
    assert len({a["timings_ms"]["search"] for a in answers}) == 1  # searched here: the three in one search
    for batched, alone in zip(answers, one_by_one, strict=True):  # the same network, batched: float rounding only
        assert batched["anomaly_score"] == pytest.approx(alone["anomaly_score"], rel=1e-5)
        assert batched["model_id"] == alone["model_id"] and batched["part"] == "SN-B1"
    ids = [a["inspection_id"] for a in answers]
    records = [client.get(f"/inspections/{i}", headers=_auth("viewer")).json() for i in ids]
    assert [r["file_name"] for r in records] == ["top.png", "side.png", "end.png"] and len(set(ids)) == 3
    assert [r["is_anomalous"] for r in records] == verdicts and {r["part"] for r in records} == {"SN-B1"}
    (part,) = body["parts"]
    assert (part["part"], part["views"], part["is_anomalous"]) == ("SN-B1", 3, True)
    assert part["anomalous_views"] == sum(verdicts)
    assert part["p_value"] == pytest.approx(min(1.0, 3 * min(a["p_value"] for a in answers)))
    logged = client.get("/parts/SN-B1", headers=_auth("viewer")).json()
    assert (logged["views"], logged["is_anomalous"]) == (3, True)
    assert logged["p_value"] == pytest.approx(part["p_value"])
    tray = _batch(client, views[:2], part=["SN-T1", "SN-T2"], heatmap="true").json()
    assert [a["part"] for a in tray["answers"]] == ["SN-T1", "SN-T2"]
    assert all(a["anomaly_map"] for a in tray["answers"]) and answers[0]["anomaly_map"] is None  # asked, each has one
    expected = [("SN-T1", 1, verdicts[0]), ("SN-T2", 1, True)]
    assert [(p["part"], p["views"], p["is_anomalous"]) for p in tray["parts"]] == expected
    unnamed = _batch(client, views[:1]).json()
    assert unnamed["parts"] == [] and unnamed["answers"][0]["part"] is None
    some = _batch(client, views[:2], part=["", "SN-T3"]).json()  # an empty value names nothing, as on /query
    assert [a["part"] for a in some["answers"]] == [None, "SN-T3"] and [p["part"] for p in some["parts"]] == ["SN-T3"]
    with psycopg.connect(url) as connection:
        before = connection.execute("SELECT count(*) FROM inspections").fetchone()[0]
    not_image = _batch(client, [views[0], ("notes.png", b"not an image at all")])
    assert not_image.status_code == 415 and "notes.png" in not_image.json()["detail"], not_image.text
    two = _batch(client, [("first.png", b"not an image"), views[0], ("last.png", b"nor this")])  # the first named
    assert two.status_code == 415 and "first.png" in two.json()["detail"] and "last" not in two.json()["detail"]
    strip = io.BytesIO()
    Image.new("RGB", (900, 3)).save(strip, format="PNG")
    shaped = _batch(client, [views[0], ("strip.png", strip.getvalue())])  # a shape the view refuses: named too
    assert shaped.status_code == 422 and shaped.json()["error"] == "unsupported_image_shape", shaped.text
    assert shaped.json()["detail"].startswith("strip.png: a 900x3 image has an aspect ratio of 300:1")
    too_many = _batch(client, [views[0]] * (Settings().query_batch_files + 1))
    assert too_many.status_code == 422 and too_many.json()["error"] == "too_many_files"
    mismatched = _batch(client, views, part=["a", "b"])
    assert mismatched.status_code == 422 and "2 values for 3 files" in mismatched.json()["detail"]
    bad_name = _batch(client, views[:1], part="a\nb")
    assert bad_name.status_code == 422 and bad_name.json()["error"] == "invalid_request"
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT count(*) FROM inspections").fetchone()[0] == before


def test_a_batch_counts_each_image_against_the_rate_limit(tmp_path, served):
    """Each image of a batch is a request to the rate limit: at 4 a minute a batch of 3 passes, then one of 2 is
    refused with the seconds to wait, and one of 5 is refused as more than a minute allows."""
    _, url, _ = served
    server, client = start_api(_environment(url, INSPECT_RATE_LIMIT_PER_MINUTE="4"), tmp_path / "server.log")
    try:
        image = [("top.png", GOOD.read_bytes())]
        assert _batch(client, image * 3).status_code == 200
        refused = _batch(client, image * 2)
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited", refused.text
        assert int(refused.headers["retry-after"]) >= 1
        never = _batch(client, image * 5, key="boss")
        assert never.status_code == 429 and "more than the 4 requests a minute" in never.json()["detail"]
    finally:
        client.close()
        server.terminate()
        server.wait(20)


def test_the_log_as_csv_holds_every_record_the_filters_select_and_no_formula(served):
    """``GET /inspections.csv``: every record of a selection larger than one page read (2,500 of them, written by
    SQL as a month of a line would be), newest first, each once; the filters of ``GET /inspections``; a part named
    like a spreadsheet formula comes out as text."""
    client, url, _ = served
    formula = '=HYPERLINK("http://x")'
    answer = client.post("/query", files={"file": ("=cmd.png", GOOD.read_bytes(), "image/png")},
                         data={"category": "bottle", "part": formula}, headers=_auth("viewer"))  # fmt: skip
    assert answer.status_code == 200, answer.text
    with psycopg.connect(url) as connection:
        connection.execute(
            "INSERT INTO inspections (request_id, category, model_id, is_anomalous, score, threshold, sha256, bytes, "
            "format, width, height, latency_ms, image_kind, part) SELECT 'bulk-' || i, 'bulk', 0, i % 7 = 0, 1.0, "
            "2.0, '', 1, 'PNG', 8, 8, 1.0, 'none', 'P' || (i % 10) FROM generate_series(1, 2500) AS i"
        )
        expected = [r[0] for r in connection.execute("SELECT id FROM inspections WHERE category = 'bulk' "
                                                     "ORDER BY id DESC").fetchall()]  # fmt: skip

    def table(**params) -> list[dict]:
        response = client.get("/inspections.csv", params=params, headers=_auth("viewer"))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        return list(csv.DictReader(io.StringIO(response.text)))

    bulk = table(category="bulk")
    assert [int(r["id"]) for r in bulk] == expected and len(expected) == 2500
    flagged = table(category="bulk", verdict="defect", part="P0")
    assert len(flagged) == len([i for i in range(1, 2501) if i % 7 == 0 and i % 10 == 0])
    assert all(r["is_anomalous"] == "True" and r["part"] == "P0" for r in flagged)
    mine = table(category="bottle", part=formula)
    body = answer.json()
    said = [(int(r["id"]), r["part"], r["file_name"]) for r in mine]
    assert said == [(body["inspection_id"], "'" + formula, "'=cmd.png")]
    assert mine[0]["regions"] == str(len(body["defect_regions"])) and mine[0]["score"] == repr(body["anomaly_score"])
    assert mine[0]["p_value"] == repr(body["p_value"])
    assert mine[0]["notes"] == "" and body["notes"] == []
    thumbnail = io.BytesIO()  # an answer with a note: the record keeps it, the CSV gives it
    with Image.open(GOOD) as image:
        image.resize((40, 40), Image.BILINEAR).save(thumbnail, format="PNG")
    noted = client.post("/query", files={"file": ("thumb.png", thumbnail.getvalue(), "image/png")},
                        data={"category": "bottle", "part": "thumb"}, headers=_auth("viewer")).json()  # fmt: skip
    assert noted["notes"] and noted["notes"][0].startswith("the image is 40x40 pixels, enlarged 5.60 times")
    record = client.get(f"/inspections/{noted['inspection_id']}", headers=_auth("viewer")).json()
    assert record["notes"] == noted["notes"]
    assert [r["notes"] for r in table(category="bottle", part="thumb")] == ["; ".join(noted["notes"])]
    assert client.get("/inspections.csv", params={"verdict": "maybe"}, headers=_auth("viewer")).status_code == 422


def test_parts_are_listed_newest_view_first_with_their_verdicts_and_paged(served):
    """``GET /parts``: every named part of a category once, the one with the newest view first, judged over its views
    (a defect when any view is), filtered by verdict and time, paged by its newest view's id."""
    client, url, _ = served
    with psycopg.connect(url) as connection:  # 12 parts of 3 views; T4's are flagged
        connection.execute(
            "INSERT INTO inspections (request_id, category, model_id, is_anomalous, score, threshold, sha256, bytes, "
            "format, width, height, latency_ms, image_kind, part) SELECT 'tray-' || i, 'tray', 0, i % 12 = 4, 1.0, "
            "2.0, '', 1, 'PNG', 8, 8, 1.0, 'none', 'T' || (i % 12) FROM generate_series(0, 35) AS i"
        )

    def parts(**params) -> dict:
        response = client.get("/parts", params={"category": "tray", **params}, headers=_auth("viewer"))
        assert response.status_code == 200, response.text
        return response.json()

    everything = parts()["parts"]
    assert [p["part"] for p in everything] == [f"T{i}" for i in range(11, -1, -1)]  # T11 holds the newest view
    assert all(p["views"] == 3 and p["categories"] == ["tray"] for p in everything)
    assert [p["part"] for p in everything if p["is_anomalous"]] == ["T4"]
    assert [p["part"] for p in parts(verdict="defect")["parts"]] == ["T4"]
    assert len(parts(verdict="normal")["parts"]) == 11
    pages, before = [], None
    while True:
        page = parts(limit=5, **({"before": before} if before else {}))
        pages += [p["part"] for p in page["parts"]]
        if (before := page["next_before"]) is None:
            break
    assert pages == [p["part"] for p in everything]
    sheet = client.get("/parts.csv", params={"category": "tray"}, headers=_auth("viewer"))  # for a spreadsheet
    assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(sheet.text)))
    assert [(r["part"], r["is_anomalous"], r["views"], r["categories"]) for r in rows] == [
        (p["part"], str(p["is_anomalous"]), "3", "tray") for p in everything
    ]  # fmt: skip
    with psycopg.connect(url) as connection:  # more parts than the CSV reads at a time, one named like a formula
        connection.execute(
            "INSERT INTO inspections (request_id, category, model_id, is_anomalous, score, threshold, sha256, bytes, "
            "format, width, height, latency_ms, image_kind, part) SELECT 'many-' || i, 'many', 0, false, 1.0, 2.0, '', "
            "1, 'PNG', 8, 8, 1.0, 'none', CASE WHEN i = 0 THEN '=SUM(A1)' ELSE 'M' || (i % 1500) END "
            "FROM generate_series(0, 2999) AS i"
        )
    many = list(csv.DictReader(io.StringIO(client.get("/parts.csv", params={"category": "many"},
                                                      headers=_auth("viewer")).text)))  # fmt: skip
    listed, before = [], None
    while True:
        page = parts(category="many", limit=500, **({"before": before} if before else {}))
        listed += page["parts"]
        if (before := page["next_before"]) is None:
            break
    assert len(many) == len(listed) == 1501 and [r["last_id"] for r in many] == [str(p["last_id"]) for p in listed]
    assert many[-1]["part"] == "'=SUM(A1)" and listed[-1]["part"] == "=SUM(A1)"  # text in a spreadsheet, not a formula
    with psycopg.connect(url) as connection:
        connection.execute("UPDATE inspections SET at = at - interval '2 days' WHERE request_id = ANY(%s)",
                           ([f"tray-{i}" for i in range(24, 36)],))  # fmt: skip
    recent = parts(since="2000-01-01T00:00:00Z")["parts"]  # a window: each part counts its views within it
    assert len(recent) == 12
    day = parts(since=(datetime.now(UTC) - timedelta(days=1)).isoformat())["parts"]
    assert [p["views"] for p in day] == [2] * 12


def test_a_record_the_database_cannot_take_in_time_is_waited_for_refused_or_answered_as_the_policy_says(
    served, tmp_path_factory
):
    """With the log table locked: the default policy (refuse) answers 503 and records nothing (a batch's images
    alike: recorded together or not at all), ``answer`` answers without a record and says so, ``wait`` answers only
    once the lock is gone, with its record. Every count here holds by construction: the lock is held until the
    waiting query's turn, whatever the machine's speed."""
    waiting_client, url, _ = served
    folder = tmp_path_factory.mktemp("log-policy")
    started = [start_api(_environment(url, INSPECT_LOG_TIMEOUT_MS="300"), folder / "refuse.log"),
               start_api(_environment(url, INSPECT_LOG_POLICY="answer", INSPECT_LOG_TIMEOUT_MS="300"),
                         folder / "answer.log")]  # fmt: skip
    (_, refusing), (_, answering) = started
    try:
        with psycopg.connect(url) as connection:
            before = connection.execute("SELECT count(*) FROM inspections").fetchone()[0]
        with psycopg.connect(url) as blocker, ThreadPoolExecutor(max_workers=1) as pool:
            blocker.execute("LOCK TABLE inspections IN ACCESS EXCLUSIVE MODE")
            refused = _query(refusing, GOOD)
            answered = _query(answering, GOOD)
            batch_refused = _batch(refusing, [("a.png", GOOD.read_bytes()), ("b.png", BROKEN.read_bytes())])
            batch_answered = _batch(answering, [("a.png", GOOD.read_bytes()), ("b.png", BROKEN.read_bytes())])
            waiting = pool.submit(_query, waiting_client, GOOD)
            time.sleep(1.0)
            assert not waiting.done()  # its record cannot be written while the lock is held
            blocker.rollback()
            waited = waiting.result()
        assert refused.status_code == 503 and refused.json()["error"] == "not_recorded", refused.text
        assert batch_refused.status_code == 503 and batch_refused.json()["error"] == "not_recorded"
        assert _metric(refusing, "inspect_inspections_refused_total") == 2  # a request each
        assert answered.status_code == 200 and answered.json()["inspection_id"] is None
        assert answered.headers["x-inspection-logged"] == "false"
        assert [a["inspection_id"] for a in batch_answered.json()["answers"]] == [None, None]
        assert batch_answered.headers["x-inspection-logged"] == "false"
        assert _metric(answering, "inspect_inspections_unrecorded_total") == 3  # an answer each
        assert waited.status_code == 200 and waited.headers["x-inspection-id"] == str(waited.json()["inspection_id"])
        with psycopg.connect(url) as connection:
            after = connection.execute("SELECT count(*) FROM inspections").fetchone()[0]
            kept = connection.execute("SELECT count(*) FROM inspections WHERE id = %s",
                                      (waited.json()["inspection_id"],)).fetchone()[0]  # fmt: skip
        assert after - before == 1 and kept == 1  # the refused and the unrecorded answers left no record
    finally:
        for server, client in started:
            client.close()
            server.terminate()
            server.wait(20)


def test_retention_deletes_old_images_and_keeps_their_records(served):
    client, url, _ = served
    inspection = _query(client, GOOD).json()["inspection_id"]
    with psycopg.connect(url) as connection:
        connection.execute("UPDATE inspections SET at = now() - interval '2 days' WHERE id = %s", (inspection,))
    deadline = time.monotonic() + 15
    while client.get(f"/inspections/{inspection}/image", headers=_auth("viewer")).status_code == 200:
        assert time.monotonic() < deadline, "the service never deleted the old image"
        time.sleep(0.5)
    record = client.get(f"/inspections/{inspection}", headers=_auth("viewer")).json()
    assert record["image_kept"] is False and record["sha256"]  # the record stays
    fresh = _query(client, GOOD).json()["inspection_id"]
    assert client.get(f"/inspections/{fresh}/image", headers=_auth("viewer")).status_code == 200


def _metric(client: httpx.Client, name: str, **labels) -> float:
    text = client.get("/metrics", headers=_auth("viewer")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_metrics_parse_and_move_as_queries_are_made(served):
    client, _, log = served
    assert client.get("/metrics").status_code == 401  # a key is needed here too
    route = {"route": "/query", "method": "POST", "status": "200"}
    before = _metric(client, "inspect_requests_total", **route)
    anomalous = _metric(client, "inspect_verdicts_total", category="bottle", verdict="anomalous")
    embed = _metric(client, "inspect_query_stage_seconds_count", stage="embed")
    _query(client, BROKEN)
    _query(client, BROKEN)
    assert _metric(client, "inspect_requests_total", **route) == before + 2
    assert _metric(client, "inspect_verdicts_total", category="bottle", verdict="anomalous") == anomalous + 2
    assert _metric(client, "inspect_query_stage_seconds_count", stage="embed") == embed + 2
    assert _metric(client, "inspect_db_pool_connections", state="size") >= 1
    assert _metric(client, "inspect_models_loaded") == 1
    assert _metric(client, "inspect_auth_refused_total", reason="missing") >= 1
    lines = [line for line in log.read_text().splitlines() if '"route": "/query"' in line]
    assert lines and '"request_id": ' in lines[-1] and '"key": "viewer"' in lines[-1] and '"status": 200' in lines[-1]


def test_the_page_asks_for_a_key_and_works_with_it(served):
    from playwright.sync_api import sync_playwright

    client, _, _ = served
    with sync_playwright() as driver:
        browser = launch_chromium(driver)
        page = browser.new_page()
        page.goto(str(client.base_url) + "/")
        page.wait_for_selector("#keyBar")
        assert "needs an API key" in page.inner_text("#keyBar")
        page.fill("#apiKey", KEYS["viewer"][1])
        page.click("#useKey")
        page.wait_for_function("document.querySelectorAll('#category option').length > 0")
        page.set_input_files("#files", str(BROKEN))
        page.wait_for_selector(".result .verdict")
        assert page.inner_text(".result .verdict") == "DEFECT"
        page.wait_for_function(
            "[...document.querySelectorAll('.result img.thumb')].every((i) => i.complete && i.naturalWidth > 0)"
        )
        page.goto(str(client.base_url) + "/review")  # the key stays with the tab
        page.wait_for_function("document.querySelector('.item img')?.naturalWidth > 0")  # the query just made
        fetched = []
        page.on("request", lambda r: fetched.append(r.resource_type) if ".csv?" in r.url else None)
        with page.expect_download() as download:  # a keyed service: the CSV fetched with the tab's key
            page.click("#csv")
        assert fetched == ["fetch"]
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert download.value.suggested_filename == "inspections.csv" and len(rows) >= 1
        page.goto(str(client.base_url) + "/new")
        page.wait_for_function("document.querySelector('#jobs').textContent === 'no fit job yet'")
        fresh = browser.new_page()  # another tab has no key: the pages load and ask for one
        for path in ("/review", "/new"):
            fresh.goto(str(client.base_url) + path)
            fresh.wait_for_selector("#keyBar")
            assert "needs an API key" in fresh.inner_text("#keyBar")
        browser.close()


def test_feedback_by_inspection_id_teaches_with_the_kept_file(served):
    client, url, _ = served
    answer = _query(client, GOOD).json()
    form = {"inspection_id": str(answer["inspection_id"]), "label": "good"}
    assert client.post("/categories/bottle/feedback", data=form, headers=_auth("viewer")).status_code == 403
    taught = client.post("/categories/bottle/feedback", data=form, headers=_auth("boss"))
    assert taught.status_code == 200 and taught.json()["taught"] == "normal", taught.text
    assert taught.json()["result"]["images_added"] == [f"inspection-{answer['inspection_id']}"]
    with psycopg.connect(url) as connection:
        source = connection.execute("SELECT source FROM images WHERE split = 'added'").fetchone()[0]
    assert source.endswith(f"inspection {answer['inspection_id']}") and "api" in source
    gone = client.post("/categories/bottle/feedback", data={"inspection_id": "999999", "label": "good"},
                       headers=_auth("boss"))  # fmt: skip
    assert gone.status_code == 404 and gone.json()["error"] == "unknown_inspection"
    reviewed = client.get(f"/inspections/{answer['inspection_id']}", headers=_auth("boss")).json()
    assert reviewed["review_label"] == "good" and reviewed["reviewed_by"].endswith("(key boss)")
    assert reviewed["review_model_id"] == taught.json()["result"]["model_id"]
    neither = client.post("/categories/bottle/feedback", data={"label": "good"}, headers=_auth("boss"))
    assert neither.status_code == 422 and "inspection_id" in neither.json()["detail"]
