"""`python -m ingest inspect` while the category gets new versions (a threshold set from the browser, a refit): every
image judged by one version, the rest by the new one, each row naming it, as the API answers across versions."""

import argparse
import csv
import dataclasses

from config import Settings, get_settings
from ingest.inspect import run_inspect
from revisions.threshold import set_threshold
from serving import inspector as inspector_module
from store import models
from store.database import connect
from store.migrate import upgrade
from tests.conftest import BOTTLE


def _inspected(out, paths) -> list[dict]:
    args = argparse.Namespace(category="bottle", paths=paths, out=out, part=None, parts=None)
    assert run_inspect(args) == 0
    return list(csv.DictReader((out / "inspections.csv").open()))


def test_versions_made_during_a_run_judge_the_images_after_them(
    database_url, small_model, tmp_path, monkeypatch, capsys
):
    upgrade(database_url)
    with connect(database_url) as connection:
        first = models.save_model(connection, "bottle", small_model, {}, Settings())["model_id"]
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("INSPECT_BATCH_MAX", "4")  # two batches: a new version inside each
    get_settings.cache_clear()
    paths = (
        sorted((BOTTLE / "test" / "good").glob("*.png"))[:3]
        + sorted((BOTTLE / "test" / "broken_large").glob("*.png"))[:3]
    )
    try:
        before = _inspected(tmp_path / "before", paths)
        made: dict[int, int] = {}
        asked = 0
        lookalikes = inspector_module.lookalikes

        def replaced_meanwhile(*args, **kwargs):
            """Another user makes a new version just before the 2nd and the 8th image's answer is asked of the
            database (each image's look-alikes, which say whether its version is still the active one): a threshold
            of 0.5 (same memory bank), then a refit of half the bank at twice the fit's threshold."""
            nonlocal asked
            asked += 1
            if asked in (2, 8):
                with connect(database_url) as connection:
                    active = models.active_model(connection, "bottle")
                    if asked == 2:
                        made[2] = set_threshold(connection, active, "engineer", value=0.5)
                    else:
                        keep = small_model.memory_bank.shape[0] // 2
                        halved = dataclasses.replace(
                            small_model, memory_bank=small_model.memory_bank[:keep],
                            bank_image=small_model.bank_image[:keep], bank_position=small_model.bank_position[:keep],
                            threshold=small_model.threshold * 2,
                        )  # fmt: skip
                        made[6] = models.save_model(connection, "bottle", halved, {}, Settings())["model_id"]
            return lookalikes(*args, **kwargs)

        monkeypatch.setattr(inspector_module, "lookalikes", replaced_meanwhile)
        capsys.readouterr()
        during = _inspected(tmp_path / "during", paths)
        said = capsys.readouterr()
        monkeypatch.setattr(inspector_module, "lookalikes", lookalikes)
        after = _inspected(tmp_path / "after", paths)
    finally:
        get_settings.cache_clear()
    versions = [first, made[2], made[2], made[2], made[6], made[6]]
    # each batch's images searched together (the bank is searched in this process): the first batch's last three
    # asked again of the threshold's version, the second batch's two of the refit
    assert [int(row["model_id"]) for row in during] == versions and asked == 11
    thresholds = {first: small_model.threshold, made[2]: 0.5, made[6]: small_model.threshold * 2}
    for row, version in zip(during, versions, strict=True):
        assert float(row["threshold"]) == round(thresholds[version], 6)
        assert row["is_anomalous"] == str(float(row["anomaly_score"]) > thresholds[version]) and not row["error"]
    # the threshold's version kept the bank: its scores are the first version's; the refit's are its own
    assert [r["anomaly_score"] for r in during[:4]] == [r["anomaly_score"] for r in before[:4]]
    assert [r["anomaly_score"] for r in during[4:]] == [r["anomaly_score"] for r in after[4:]]
    halved, whole = [float(r["anomaly_score"]) for r in during[4:]], [float(r["anomaly_score"]) for r in before[4:]]
    assert all(h > w for h, w in zip(halved, whole, strict=True))  # half the bank: farther from each patch
    assert all(row["is_anomalous"] == "True" for row in during[1:4]) and before[0]["is_anomalous"] == "False"
    assert f"version {made[2]} replaced version {first} before {paths[1]}" in said.err
    assert f"version {made[6]} replaced version {made[2]} before {paths[4]}" in said.err
    assert f"bottle (versions {first}, {made[2]}, {made[6]}): 6 images" in said.out
