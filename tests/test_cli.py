"""The ingest job as a user runs it: `python -m ingest ...` in a subprocess."""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import psycopg
import pytest
from PIL import Image

from tests.conftest import BOTTLE, ROOT, WEIGHTS


def _ingest(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_a_finer_view_is_advised_only_where_some_image_is_seen_smaller_than_its_own_pixels(capsys):
    """A patch steps 8 view pixels (ResNet-18's layer2): where it spans more of some image's own pixels, that image
    was shrunk and a finer view shows more; where it spans 8 or fewer of every image's, each was seen at its own
    pixels or enlarged, which adds no detail."""
    from ingest.fitting import _say_view

    def scale(image: list[int], view: list[int], coarsest: list[float]) -> dict:
        spans = [round(8 * i / v, 1) for i, v in zip(image, view, strict=True)]
        return {"image": image, "view": view, "patch_pixels": spans, "images": 9, "images_of_that_size": 8,
                "image_sizes": 2, "finest": {"image": image, "patch_pixels": spans},
                "coarsest": {"image": [64, 64], "patch_pixels": coarsest}}  # fmt: skip

    _say_view(scale([32, 32], [224, 224], [2.3, 2.3]), 8)  # a 32 px part enlarged 7 times, a 64 px one 3.5 times
    assert "one patch spans 1x1 pixels of 8 of 9 images (32x32)" in (said := capsys.readouterr().out)
    assert "every image is seen at its own pixels or larger, so a finer view would add no detail" in said
    _say_view(scale([32, 32], [224, 224], [8.6, 8.6]), 8)  # the larger images shrunk a little
    assert "a finer view: --pixels, --tile" in capsys.readouterr().out


def test_the_previews_line_counts_parts_where_queries_named_them():
    """A part a line rejects on any flagged view: where queries named parts, the preview's line on the log counts
    them beside the answers; where none did, each answer is its own part and the line says nothing more. Answers of
    the fit's other memory banks (images taught since) are left out, and the line says how many."""
    from ingest.threshold import _on_the_line
    from store.inspections import AtThresholds

    named = _on_the_line(AtThresholds(5, 3, 2, 0, 0, 0, 0, 0, 0, 3, 2, 1, other_banks=0))
    assert "3 flagged (now 2); 2 of 3 parts flagged on any view (now 1)" in named, named
    unnamed = _on_the_line(AtThresholds(5, 3, 2, 0, 0, 0, 0, 0, 0, 5, 3, 2, other_banks=0))
    assert unnamed.endswith("3 flagged (now 2)") and "parts" not in unnamed and "other" not in unnamed, unnamed
    # the answers before images were taught searched other rows: left out, and said
    emptied = _on_the_line(AtThresholds(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, other_banks=7))
    assert emptied == (
        "on the log's last week (0 answers by this memory bank; 7 by the fit's other memory banks left out, scored "
        "against other rows): nothing to judge again yet"
    ), emptied


def test_evaluate_writes_the_report_and_plots(mini_mvtec, tmp_path):
    """The report and plots of a fit; the good images that score highest are listed, and those above the threshold
    (a 40% target puts some there) are named on the terminal."""
    out = tmp_path / "reports"
    done = _ingest(
        "evaluate", "--data", str(mini_mvtec), "--backbone", "resnet18", "--weights", str(WEIGHTS),
        "--out", str(out), "--false-alarm-rate", "0.4",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "bottle" / "report.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "pro", "f1", "threshold", "memory_bank_size", "embedding_dim",
                "fit_seconds", "coreset_seconds"):  # fmt: skip
        assert key in report, key
    assert report["embedding_dim"] == 384
    assert report["memory_bank_size"] == 706  # ceil(0.1 * 9 images * 784 patches)
    assert report["image_auroc"] > 0.5 and 0.5 < report["pixel_auroc"] <= 1
    regions = report["regions"]  # where the defects are, at the verdict's threshold
    assert regions["threshold"] == report["threshold"] and 0 < report["best_pixel_f1"] <= 1
    assert regions["defects"] >= 3 and 0 < regions["defects_found"] <= 1 and 0 < regions["regions_on_defects"] <= 1
    assert (regions["regions_on_good_parts"] > 0) == (report["false_alarms"] > 0)  # only a false alarm has any
    assert "regions.defects_found" in done.stdout
    # how finely the view sees the images: a 900x900 bottle at 224x224, a patch of 8 view pixels spans 32 of its own
    assert report["view_scale"] == {
        "image": [900, 900], "images_of_that_size": 10, "images": 10, "image_sizes": 1, "view": [224, 224],
        "patch_pixels": [32.1, 32.1], "finest": {"image": [900, 900], "patch_pixels": [32.1, 32.1]},
        "coarsest": {"image": [900, 900], "patch_pixels": [32.1, 32.1]},
    }  # fmt: skip
    assert "seen at 224x224: one patch spans 32x32 pixels of the images (900x900); a defect much smaller" in done.stdout
    for name in ("roc.png", "scores.png", "heatmaps.png", "example.png"):
        assert (out / "bottle" / name).stat().st_size > 10_000
    assert "image_auroc" in done.stdout and "memory_bank_size" in done.stdout
    # off a terminal each stage's progress is whole lines (a log keeps them apart), its last with the count and rate
    assert "\r" not in done.stderr
    assert any(
        line.startswith("features: 100%") and "9/9" in line and "img/s" in line for line in done.stderr.splitlines()
    )
    good = report["good_scores"]["train"] + report["good_scores"]["holdout"]
    highest = report["highest_good_scores"]
    assert [h["score"] for h in highest] == sorted(good, reverse=True)  # all 10, highest first
    assert {h["file"] for h in highest} == {p.name for p in (mini_mvtec / "bottle" / "train" / "good").iterdir()}
    above = [h for h in highest if h["above_threshold"]]
    assert above == [h for h in highest if h["score"] > report["threshold"]] and 0 < len(above) < 10
    named = f"{len(above)} of 10 good images score above the threshold {report['threshold']:.4f} as unseen parts"
    assert named in done.stdout and f"{above[0]['file']} {above[0]['score']:.3f}" in done.stdout
    policy = report["threshold_policy"]  # and how far the good scores vouch for the threshold, interval included
    low, high = policy["observed_false_alarm_interval"]
    said = (f"threshold {report['threshold']:.4f} at a 40.0% target false-alarm rate (good images): "
            f"{policy['method']}; {policy['good_scores_above']} of 10 good scores above it")  # fmt: skip
    assert said in done.stdout and f"90% interval {low:.1%}-{high:.1%})" in done.stdout

    # the one that scores highest, refitted without (the folder untouched); a name that matches nothing is refused
    again = _ingest(
        "evaluate", "--data", str(mini_mvtec), "--backbone", "resnet18", "--weights", str(WEIGHTS),
        "--out", str(tmp_path / "without"), "--exclude", above[0]["file"],
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    without = json.loads((tmp_path / "without" / "bottle" / "report.json").read_text())
    assert without["excluded_from_training"] == [str(mini_mvtec / "bottle" / "train" / "good" / above[0]["file"])]
    assert len(without["highest_good_scores"]) == 9 and above[0]["file"] not in {
        h["file"] for h in without["highest_good_scores"]
    }
    assert f"excluded (--exclude): {without['excluded_from_training'][0]}" in again.stdout
    typo = _ingest("evaluate", "--data", str(mini_mvtec), "--exclude", "nope.png", "--out", str(tmp_path / "typo"))
    assert typo.returncode == 2 and "--exclude nope.png: no training image of bottle is named so" in typo.stderr


def test_fit_stores_and_refits_without_doubling(mini_mvtec, tmp_path, database_url):
    args = ("fit", "--data", str(mini_mvtec), "--backbone", "resnet18", "--weights", str(WEIGHTS),
            "--out", str(tmp_path))  # fmt: skip
    for kept in ("2", "1"):  # the second with one fit kept (INSPECT_FITS_KEPT): the first fit goes
        done = _ingest(*args, env={"DATABASE_URL": database_url, "INSPECT_FITS_KEPT": kept})
        assert done.returncode == 0, done.stderr
        assert "stored bottle" in done.stdout and f"({kept} fit(s) kept: INSPECT_FITS_KEPT)" in done.stdout
    assert "1 older version(s) retired" in done.stdout
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT count(*) FROM patches").fetchone()[0] == 706
        assert connection.execute("SELECT count(*) FROM models").fetchone()[0] == 1
        plots = dict(connection.execute("SELECT name, length(data) FROM model_plots").fetchall())
        assert set(plots) == {"roc", "scores", "heatmaps", "example"} and min(plots.values()) > 10_000
        fitted, cells = connection.execute(  # the refit's cells only: the first fit's went with it
            "SELECT m.evaluation, (SELECT count(*) FROM evaluation_cells) FROM active_models m"
        ).fetchone()
        assert cells == 1 and fitted["regions"]["threshold"] == fitted["threshold"]
    uri = _ingest("db-uri", env={"DATABASE_URL": database_url})
    assert uri.stdout.strip() == database_url
    hnsw = {"DATABASE_URL": database_url, "INSPECT_SEARCH_BACKEND": "database"}  # what this measures: the 706-row
    served = _ingest(  # bank would be searched exactly in the process unless told
        "evaluate-served", "--data", str(mini_mvtec), "--category", "bottle", "--ef-search", "10",
        "--out", str(tmp_path / "served"), env=hnsw,
    )  # fmt: skip
    assert served.returncode == 0, served.stderr
    report = json.loads((tmp_path / "served" / "bottle" / "served_report.json").read_text())
    assert report["ef_search"] == 10 and report["search_backend"] == "database"
    assert report["verdict_agreement"] == 1.0 and report["max_score_difference"] < 1e-4
    assert 1 <= report["exact_searched_patches"]["median"] <= report["exact_searched_patches"]["max"] <= 64
    exact, served_regions = report["exact"]["regions"], report["served"]["regions"]  # HNSW only adds cells
    assert served_regions["defects_found"] >= exact["defects_found"] and served_regions["defects"] == exact["defects"]
    assert "patches searched exactly per image" in served.stdout

    env = {"DATABASE_URL": database_url}
    _inspects_a_folder_as_the_api_would(mini_mvtec, tmp_path, env)
    # a new threshold judges the defect regions again from the fit's cells: at the fit's own threshold exactly as
    # the fit measured them from the masks, above every score none at all
    for value in (repr(fitted["threshold"]), "1000"):
        assert _ingest("threshold", "--category", "bottle", "--value", value, env=env).returncode == 0
        with psycopg.connect(database_url) as connection:
            again = connection.execute("SELECT evaluation FROM active_models").fetchone()[0]["regions"]
        assert again["threshold"] == float(value)
        if value == "1000":
            assert again["defects_found"] == 0 and again["regions_on_defective_parts"] == 0 and again["defects"] > 0
        else:
            assert again == fitted["regions"]
    preview = _ingest("threshold", "--category", "bottle", "--false-alarm-rate", "0.2", "--preview", env=env)
    assert preview.returncode == 0, preview.stderr
    assert "nothing was written" in preview.stdout and "f1" in preview.stdout  # the evaluation, before and after
    assert "on the log's last week (0 answers by this memory bank): nothing to judge again yet" in preview.stdout
    by_rate = _ingest("threshold", "--category", "bottle", "--false-alarm-rate", "0.2", env=env)
    assert by_rate.returncode == 0, by_rate.stderr
    set_to = re.search(r"threshold \S+ -> (\S+) ", by_rate.stdout).group(1)  # what the preview said, to the digit
    assert set_to == re.search(r"would be threshold \S+ -> (\S+) ", preview.stdout).group(1)
    # an evaluation stored by an earlier build keeps the figures of its regions' rule: a preview judges the active
    # version's regions again beside the new threshold's, so a preview of the active threshold itself changes nothing
    with psycopg.connect(database_url, autocommit=True) as connection:
        active = connection.execute(
            "UPDATE models SET evaluation = jsonb_set(evaluation, '{regions,pixel_f1}', '0.001') "
            "WHERE id = (SELECT id FROM active_models) RETURNING threshold"
        ).fetchone()[0]
    same = _ingest("threshold", "--category", "bottle", "--value", repr(active), "--preview", env=env)
    rows = [line.split() for line in same.stdout.splitlines() if line.startswith("regions.")]
    assert (
        len(rows) == 4
        and all(row[1] == row[2] for row in rows)
        and ["regions.pixel_f1", "0.0010"] not in [row[:2] for row in rows]
    ), same.stdout
    train = sorted((mini_mvtec / "bottle" / "train" / "good").iterdir())
    (mini_mvtec / "bottle" / "test" / "good" / "seen.png").symlink_to(train[0].resolve())  # a copy: not labelled
    labelled = _ingest("threshold", "--category", "bottle", "--labelled", str(mini_mvtec), env=env)
    assert labelled.returncode == 0, labelled.stderr
    assert "labelled_f1" in labelled.stdout and "version" in labelled.stdout
    with psycopg.connect(database_url) as connection:
        policy, evaluation = connection.execute("SELECT threshold_policy, evaluation FROM active_models").fetchone()
        assert policy["kind"] == "labelled_f1" and policy["labelled_images"] == 6
        assert evaluation["threshold_set_on_these_images"] is True
        assert connection.execute("SELECT count(*) FROM patches").fetchone()[0] == 706  # the bank was not copied
        actions = [r[0] for r in connection.execute("SELECT action FROM category_changes ORDER BY id")]
        assert actions == ["fit", "fit"] + ["threshold"] * 4
    wrong = _ingest("threshold", "--category", "Bottle", "--value", "1.5", env=env)  # the name meant, said
    assert wrong.returncode == 2 and "Bottle is not in the database (did you mean 'bottle'?)" in wrong.stderr

    # taught from the command line without a refit: good images, one of them already in the memory bank
    extra = sorted(BOTTLE.glob("train/good/*.png"))[50]
    thumb = tmp_path / "thumb.png"  # smaller than the good images before it: taught all the same, and said
    with Image.open(extra) as image:
        image.resize((50, 50), Image.BILINEAR).save(thumb)
    taught = (str(train[1]), str(extra), str(thumb))
    normals = _ingest("add-normals", "--category", "bottle", *taught, "--recalibrate", env=env)
    assert normals.returncode == 0, normals.stderr
    assert re.search(
        r"bottle: version \d+ \(was \d+\): 2 image\(s\) added, 1 already known; \d+ of \d+ patches "
        r"new, memory bank \d+; threshold \S+ -> \S+ \(recalibrated\)",
        normals.stdout,
    ), normals.stdout
    assert re.search(rf"  {extra.name}: score \d\.\d+ \(normal\)\n  thumb", normals.stdout), normals.stdout
    said = re.search(
        r"  thumb.png: score \d\.\d+ \([a-z ]+\)\n    note: the image is 50x50 pixels, enlarged 4.48 times",
        normals.stdout,
    )
    assert said and normals.stdout.count("note:") == 1, normals.stdout
    # the set's defects with their masks, then one picture of a type named by hand
    defects = _ingest("add-defects", "--category", "bottle", "--data", str(mini_mvtec), env=env)
    assert defects.returncode == 0, defects.stderr
    assert re.search(r"3 example\(s\) added \(broken_large 3\), \d+ defect patches, 0 already", defects.stdout)
    stain = BOTTLE / "test" / "contamination" / "000.png"
    one = _ingest(
        "add-defects", "--category", "bottle", "--image", str(stain), "--defect-type", "contamination", env=env
    )
    assert one.returncode == 0 and "1 example(s) added (contamination 1)" in one.stdout, one.stderr + one.stdout
    untyped = _ingest("add-defects", "--category", "bottle", "--image", str(stain), env=env)
    assert untyped.returncode == 2 and "--defect-type is needed with --image" in untyped.stderr, untyped.stderr
    with psycopg.connect(database_url) as connection:
        actions = [r[0] for r in connection.execute("SELECT action FROM category_changes ORDER BY id")]
        assert actions[-3:] == ["add_normals", "add_defects", "add_defects"]
        types = connection.execute("SELECT defect_type, count(*) FROM defect_examples GROUP BY 1 ORDER BY 1").fetchall()
        assert types == [("broken_large", 3), ("contamination", 1)]


def test_run_sh_s_fit_keeps_an_unchanged_category_with_what_was_taught_since(mini_mvtec, tmp_path, database_url):
    """``fit --if-changed`` (run.sh's, at every start) fits a category without a version, keeps one whose active
    version descends from a fit of the same good images with the same settings (a threshold set since stays: it is
    compared with the fit, not with the version), and fits again, saying why, for another setting or another image."""
    env = {"DATABASE_URL": database_url}
    args = ("fit", "--data", str(mini_mvtec), "--backbone", "resnet18", "--weights", str(WEIGHTS),
            "--out", str(tmp_path / "reports"), "--if-changed")  # fmt: skip

    def versions() -> list[int]:
        with psycopg.connect(database_url) as connection:
            return [row[0] for row in connection.execute("SELECT id FROM models ORDER BY id")]

    first = _ingest(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "stored bottle" in first.stdout and "fitted again" not in first.stdout
    assert _ingest("threshold", "--category", "bottle", "--false-alarm-rate", "0.2", env=env).returncode == 0
    assert versions() == [1, 2]
    kept = _ingest(*args, env=env)
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith("bottle: kept version 2: its fit was made from these 10 good images with these "
                                  "settings"), kept.stdout  # fmt: skip
    assert "stored" not in kept.stdout and versions() == [1, 2]
    finer = _ingest(*args, "--coreset-ratio", "0.2", env=env)
    assert finer.returncode == 0, finer.stderr
    assert "bottle: fitted again, for other settings than version 2's fit (version 1, fitted " in finer.stdout
    assert "): coreset_ratio 0.1 -> 0.2\n" in finer.stdout and versions() == [1, 2, 3]
    more = sorted((BOTTLE / "train" / "good").glob("*.png"))[10]
    (mini_mvtec / "bottle" / "train" / "good" / more.name).symlink_to(more)
    grown = _ingest(*args, "--coreset-ratio", "0.2", env=env)
    assert grown.returncode == 0, grown.stderr
    assert "good images than version 3's fit (version 3, fitted " in grown.stdout, grown.stdout
    assert f"): 1 new or changed ({more.name})\n" in grown.stdout and versions()[-1] == 4


def test_settings_that_differ_are_said_old_to_new_a_care_area_named_not_printed():
    """What ``fit --if-changed`` prints for a refit's settings: each as ``name old -> new``; a care area is a PNG's
    bytes, so it is said as a mask (two masks that differ: another mask), never printed."""
    from dataclasses import replace

    from ingest.unchanged import _settings_differ
    from patchcore.model import PatchCoreConfig

    def mask(level: int) -> bytes:
        out = io.BytesIO()
        Image.new("L", (8, 8), level).save(out, "PNG")
        return out.getvalue()

    fitted = PatchCoreConfig(backbone="resnet18")
    assert _settings_differ(fitted, fitted) == ""
    assert _settings_differ(replace(fitted, coreset_ratio=0.01), fitted) == "coreset_ratio 0.1 -> 0.01"
    assert _settings_differ(replace(fitted, care_area=mask(255)), fitted) == "care_area None -> a mask"
    drawn = replace(fitted, care_area=mask(254))
    assert _settings_differ(replace(fitted, care_area=mask(255)), drawn) == "care_area: another mask"
    assert _settings_differ(fitted, drawn) == "care_area a mask -> None"


def test_a_test_split_labelled_per_image_only_evaluates(mini_mvtec, tmp_path):
    shutil.rmtree(mini_mvtec / "bottle" / "ground_truth")
    done = _ingest(
        "evaluate", "--data", str(mini_mvtec), "--backbone", "resnet18", "--weights", str(WEIGHTS),
        "--out", str(tmp_path), "--calibrate-on-test",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "bottle" / "report.json").read_text())
    assert report["pixel_auroc"] is None and report["pro"] is None and report["pixel_metrics"].startswith("absent")
    assert 0 <= report["image_auroc"] <= 1 and report["f1"] == report["best_f1"]
    assert report["threshold_policy"]["kind"] == "labelled_f1" and report["threshold_set_on_these_images"] is True


def test_a_test_split_of_one_kind_of_image_evaluates_what_it_can(mini_mvtec, tmp_path, database_url):
    """A test split of defects only (with masks) measures what is caught and where, one of good parts only the false
    alarms; neither has an image AUROC or a best F1, and the fit is stored with its evaluation, not failed for it."""
    bottle = mini_mvtec / "bottle"
    for name, folders in (("defects", ("test/broken_large", "ground_truth")), ("goods", ("test/good",))):
        (mini_mvtec / name / "test").mkdir(parents=True)
        for folder in ("train", *folders):
            (mini_mvtec / name / folder).symlink_to(bottle / folder, target_is_directory=True)
    done = _ingest(
        "fit", "--data", str(mini_mvtec), "--category", "defects", "--category", "goods", "--backbone", "resnet18",
        "--weights", str(WEIGHTS), "--out", str(tmp_path),
    env={"DATABASE_URL": database_url})  # fmt: skip
    assert done.returncode == 0, done.stderr
    defects = json.loads((tmp_path / "defects" / "report.json").read_text())
    assert defects["image_auroc"] is None and defects["image_metrics"].startswith("no good test image")
    assert defects["recall"] == (3 - defects["missed_defects"]) / 3 and defects["defective_images"] == 3
    assert defects["false_alarm_rate"] is None and "best_f1" not in defects and defects["per_defect_image_auroc"] == {}
    assert 0.5 < defects["pixel_auroc"] <= 1 and 0 < defects["pro"] <= 1  # defect images hold good pixels too
    assert {p.name for p in (tmp_path / "defects").glob("*.png")} == {"roc.png", "scores.png", "heatmaps.png",
                                                                      "example.png"}  # fmt: skip
    goods = json.loads((tmp_path / "goods" / "report.json").read_text())
    assert goods["image_auroc"] is None and goods["image_metrics"].startswith("no defective test image")
    assert goods["false_alarm_rate"] == goods["false_alarms"] / 3 and goods["good_images"] == 3
    assert goods["recall"] is None and goods["f1"] is None and goods["pixel_auroc"] is None
    assert len(goods["false_alarm_interval"]) == 2 and goods["predicted_false_alarm_rate"] > 0
    assert goods["good_above_good_median"]["of"] == 3 and "good_above_good_median" not in defects  # p-values' check
    assert {p.name for p in (tmp_path / "goods").glob("*.png")} == {"scores.png", "heatmaps.png"}
    with psycopg.connect(database_url) as connection:
        stored = dict(connection.execute("SELECT category, evaluation FROM active_models").fetchall())
    assert stored["defects"]["recall"] == defects["recall"] and stored["goods"]["false_alarms"] == goods["false_alarms"]


def test_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nope")
    done = _ingest("evaluate", "--folder", str(tmp_path), "--backbone", "resnet18", "--weights", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:")
    missing = _ingest("evaluate", "--data", str(tmp_path), "--category", "nothing", "--backbone", "resnet18")
    assert missing.returncode == 2 and "train/good" in missing.stderr
    help_text = _ingest("fit", "--help").stdout
    for option in ("--weights", "--coreset-ratio", "--metric", "--holdout", "--neighbors", "--category",
                   "--false-alarm-rate", "--calibrate-on-test"):  # fmt: skip
        assert option in help_text


def test_a_care_area_is_fitted_and_reported(mini_mvtec, tmp_path):
    """``--care-area MASK``: the fit learns only the cells the mask keeps (the memory bank is 10% of them), says so
    and reports it; a mask that is not an image, or one with the centre crop, is one clear line."""
    from PIL import Image

    mask = Image.new("L", (900, 900), 255)
    mask.paste(0, (0, 0, 225, 225))  # the top left 7x7 of the 28x28 cells
    mask.save(tmp_path / "care.png")
    out = tmp_path / "reports"
    done = _ingest(
        "evaluate", "--data", str(mini_mvtec), "--backbone", "resnet18", "--weights", str(WEIGHTS),
        "--out", str(out), "--care-area", str(tmp_path / "care.png"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "care area: 93.8% of each picture (900x900 mask" in done.stdout
    report = json.loads((out / "bottle" / "report.json").read_text())
    assert report["memory_bank_size"] == 662  # ceil(0.1 * 9 images * 735 cells)
    assert report["config"]["care_area"] == {"width": 900, "height": 900, "share": 0.9375}
    (tmp_path / "text.png").write_text("not an image")
    for extra in (("--care-area", str(tmp_path / "text.png")),
                  ("--care-area", str(tmp_path / "care.png"), "--field-of-view", "crop")):  # fmt: skip
        refused = _ingest("evaluate", "--data", str(mini_mvtec), "--backbone", "resnet18", *extra)
        assert refused.returncode == 2 and refused.stderr.strip().startswith("error:"), refused.stderr
    assert (
        "text.png" in _ingest("evaluate", "--data", str(mini_mvtec), "--care-area", str(tmp_path / "text.png")).stderr
    )


def _inspects_a_folder_as_the_api_would(mini_mvtec, tmp_path, env) -> None:
    """`ingest inspect` over the test folders and one file that is not an image: a CSV row for each (the bad one
    naming why, exit 1), heatmaps over the model's view, the broken bottles scored above every good one."""
    import csv

    from PIL import Image

    junk = tmp_path / "more" / "not_an_image.png"
    junk.parent.mkdir()
    junk.write_bytes(b"this is not a PNG")
    with Image.open(mini_mvtec / "bottle" / "test" / "good" / "000.png") as image:  # a thumbnail: judged, and noted
        image.resize((40, 40), Image.BILINEAR).save(junk.parent / "thumbnail.png")
    out = tmp_path / "inspected"
    done = _ingest("inspect", "--category", "bottle", str(mini_mvtec / "bottle" / "test"), str(junk.parent),
                   "--out", str(out), env=env)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "8 images" in done.stdout and "1 not judged" in done.stdout
    rows = list(csv.DictReader((out / "inspections.csv").open()))
    assert len(rows) == 8
    noted = {r["file"].rsplit("/", 1)[1]: r["notes"] for r in rows if r["notes"]}  # as POST /query notes it
    assert list(noted) == ["thumbnail.png"] and noted["thumbnail.png"].startswith("the image is 40x40 pixels, enlarged")
    bad = [r for r in rows if r["error"]]
    assert [r["file"] for r in bad] == [str(junk)] and "not_an_image.png" in bad[0]["error"]
    judged = [r for r in rows if not r["error"]]
    for row in judged:
        assert row["is_anomalous"] == str(float(row["anomaly_score"]) > float(row["threshold"]))
        assert 0 <= int(row["worst_x"]) < 900 and 0 <= int(row["worst_y"]) < 900
        assert Image.open(out / row["heatmap"]).size == (224, 224)
        boxes = [[int(v) for v in box.split()] for box in row["region_boxes"].split(";") if box]
        assert len(boxes) == int(row["regions"]) and (len(boxes) > 0) == (row["is_anomalous"] == "True")
        assert all(0 <= left < right <= 900 and 0 <= top < bottom <= 900 for left, top, right, bottom in boxes)
        if boxes:  # the worst region holds the worst spot
            left, top, right, bottom = boxes[0]
            assert left <= int(row["worst_x"]) < right and top <= int(row["worst_y"]) < bottom
    broken = [float(r["anomaly_score"]) for r in judged if "broken_large" in r["file"]]
    good = [float(r["anomaly_score"]) for r in judged if "/good/" in r["file"]]
    assert len(broken) == len(good) == 3 and min(broken) > max(good)
    ranked = sorted(judged, key=lambda r: float(r["anomaly_score"]))  # how rare among good parts: falls as scores rise
    rarity = [float(r["p_value"]) for r in ranked]
    assert all(0 < p <= 1 for p in rarity) and rarity == sorted(rarity, reverse=True) and rarity[0] > rarity[-1]
    wrong = _ingest("inspect", "--category", "nothing", str(junk), env=env)
    assert wrong.returncode == 2 and "nothing is not in the database; run" in wrong.stderr  # no name near it
    # views of parts, named by their file names: p1 two good views, p2 a good and a broken one, p3 one not judged
    station = tmp_path / "station"
    station.mkdir()
    test = mini_mvtec / "bottle" / "test"
    views = {"p1_cam1.png": test / "good" / "000.png", "p1_cam2.png": test / "good" / "001.png",
             "p2_cam1.png": test / "good" / "002.png", "p2_cam2.png": test / "broken_large" / "000.png",
             "p3_cam1.png": junk}  # fmt: skip
    for name, target in views.items():
        (station / name).symlink_to(target.resolve())
    done = _ingest("inspect", "--category", "bottle", str(station), "--part", "^(p\\d)_", "--out", str(out), env=env)
    by_file = {r["file"].rsplit("/", 1)[1]: r for r in csv.DictReader((out / "inspections.csv").open())}
    assert {name: r["part"] for name, r in by_file.items()} == {name: name[:2] for name in views}
    flagged = {p: [by_file[f"{p}_cam{c}.png"]["is_anomalous"] == "True" for c in (1, 2)] for p in ("p1", "p2")}
    assert flagged["p2"][1]  # the broken bottle
    parts = {r["part"]: r for r in csv.DictReader((out / "parts.csv").open())}
    assert [(p["views"], p["judged"], p["is_anomalous"]) for p in parts.values()] == [
        ("2", "2", str(any(flagged["p1"]))), ("2", "2", "True"), ("1", "0", "")
    ]  # fmt: skip
    assert parts["p2"]["worst_file"].endswith("p2_cam2.png") and parts["p3"]["worst_file"] == ""
    rarest = {p: min(float(by_file[f"{p}_cam{c}.png"]["p_value"]) for c in (1, 2)) for p in ("p1", "p2")}
    for name in ("p1", "p2"):  # how rare the part is among good parts: its views times its rarest view's p-value
        assert float(parts[name]["p_value"]) == pytest.approx(min(1.0, 2 * rarest[name]), rel=1e-3)
    assert parts["p3"]["p_value"] == ""  # a view not judged has no p-value: nor has its part
    said = f"3 parts, {1 + any(flagged['p1'])} anomalous, {1 - any(flagged['p1'])} normal, 1 without a verdict"
    assert done.returncode == 1 and said in done.stdout, done.stdout
    unmatched = _ingest("inspect", "--category", "bottle", str(station), "--part", "^(q\\d)_", env=env)
    assert unmatched.returncode == 2 and "does not match p1_cam1.png" in unmatched.stderr
