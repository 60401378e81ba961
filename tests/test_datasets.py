"""Reading a dataset the way other public sets lay it out: masks by either common name, in any image format."""

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest.inspect import images_of
from ingest.preflight import file_problems
from patchcore.datasets.category import Category
from patchcore.datasets.copies import distinct
from patchcore.datasets.files import image_files
from patchcore.datasets.folders import folder_category
from patchcore.datasets.mvtec import mvtec_categories, mvtec_category
from patchcore.evaluation import Scored, Scorer, evaluate
from patchcore.masks import mask_png, read_mask
from patchcore.views import Preprocess
from store.names import name_problem
from tests.conftest import BOTTLE, ROOT, SHARED, WEIGHTS


def _evaluate(
    data: Path, out: Path, *options: str, env: dict | None = None, command: str = "evaluate"
) -> subprocess.CompletedProcess:
    """``python -m ingest evaluate`` (or ``fit``, which stores) on ``data`` as a user runs it, which must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "ingest", command, "--data", str(data), "--backbone", "resnet18", "--weights",
         str(WEIGHTS), "--out", str(out), *options],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _link(target: Path, source: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


def test_an_evaluation_reads_its_files_ahead_and_scores_them_in_order_on_its_own_thread():
    """A scorer's ``read`` (a file's decode) runs on the read-ahead threads, finishing out of order; its ``score``
    (a served scorer's database connections) on the calling thread, each image's with its own mask."""
    samples = mvtec_category(SHARED / "datasets" / "mvtec_ad", "bottle").test[::7]
    reads, scored = [], []

    def read(path: Path) -> str:
        reads.append(threading.current_thread().name)
        time.sleep(0.002 * (len(samples) - len(reads)))  # the first read waits longest
        return str(path)

    def score(name: str) -> Scored:
        scored.append((name, threading.current_thread() is threading.main_thread()))
        mask = Preprocess().mask(next(s.mask for s in samples if str(s.path) == name), (900, 900))
        return Scored(float(mask.any()), mask.astype(np.float32))

    evaluation = evaluate(samples, Scorer(score, read), Preprocess(), 0.5, 0.03)
    assert [name for name, _ in scored] == [str(s.path) for s in samples] and all(main for _, main in scored)
    assert len(reads) == len(samples) and all(name.startswith("read-ahead") for name in reads)
    assert evaluation.figures["image_auroc"] == 1.0 and evaluation.figures["pixel_auroc"] == 1.0


def test_a_picture_stored_on_its_side_is_judged_against_its_mask_upright(tmp_path):
    """A camera that stores its pictures turned and says so in EXIF (orientation 6: turn 90 degrees clockwise to
    show): the model sees each upright, so a mask drawn over the picture as it is shown, upright, is its mask, in the
    check before a fit and in the evaluation."""
    source = SHARED / "datasets" / "non_square" / "bsdata_ballscrew"
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = tmp_path / "turned"

    def store(image: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)  # 452x184 upright, stored 184x452
        Image.open(image).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(target, exif=exif.tobytes())

    for image in sorted((source / "train" / "good").glob("*.png"))[:3]:
        store(image, turned / "train" / "good" / image.name)
    store(sorted((source / "test" / "good").glob("*.png"))[0], turned / "test" / "good" / "good.png")
    for mask in sorted((source / "ground_truth" / "defect").glob("*.png"))[:2]:
        stem = mask.name.removesuffix("_mask.png")
        store(source / "test" / "defect" / f"{stem}.png", turned / "test" / "defect" / f"{stem}.png")
        _link(turned / "ground_truth" / "defect" / mask.name, mask)  # upright, 452x184, as drawn over the picture

    category = mvtec_category(tmp_path, "turned")
    preprocess = Preprocess()
    assert file_problems(category, preprocess) == []  # was: "the mask is 452x184, its image 184x452"
    truth = {s.path: preprocess.mask(s.mask, (452, 184)) for s in category.test}

    def score(path: Path) -> Scored:  # the upright view's perfect map
        return Scored(float(truth[path].any()), truth[path].astype(np.float32))

    evaluation = evaluate(category.test, Scorer(score), preprocess, 0.5, 0.03)
    assert truth[category.test[0].path].shape == (144, 352) and evaluation.figures["pixel_auroc"] == 1.0


def test_images_in_folders_below_a_sets_folders_are_named_not_passed_over(tmp_path):
    """A line's own set with some good and some defective images in a day's folder within their folders: its layout
    reads each folder's own images, so the fit says which it did not read, on the terminal and in the report, rather
    than fitting and judging without them unsaid; where a good folder holds nothing else, the check before the fit
    says where its images are. MVTec 3D-AD's folders below (``rgb/`` read, ``gt/`` and ``xyz/`` beside) are its
    layout, not images passed over."""
    goods = sorted((BOTTLE / "train" / "good").glob("*.png"))
    line = tmp_path / "line" / "bottle"
    for path in goods[:3]:
        _link(line / "train" / "good" / path.name, path)
    for path in goods[3:5]:
        _link(line / "train" / "good" / "monday" / path.name, path)
    _link(line / "test" / "good" / "000.png", BOTTLE / "test" / "good" / "000.png")
    for stem in ("000", "001"):
        _link(line / "test" / "broken_large" / f"{stem}.png", BOTTLE / "test" / "broken_large" / f"{stem}.png")
    _link(line / "test" / "broken_large" / "night" / "002.png", BOTTLE / "test" / "broken_large" / "002.png")
    _link(line / "test" / "broken_large" / ".thumbs" / "000.png", BOTTLE / "test" / "broken_large" / "000.png")

    category = mvtec_category(tmp_path / "line", "bottle")
    assert [p.relative_to(line).as_posix() for p in category.unread] == [
        f"train/good/monday/{goods[3].name}", f"train/good/monday/{goods[4].name}", "test/broken_large/night/002.png"
    ]  # fmt: skip
    out = tmp_path / "reports"
    done = _evaluate(tmp_path / "line", out)
    assert f"not read: 3 images in folders below the set's own (as {line / 'train' / 'good' / 'monday'}" in done.stdout
    assert len(json.loads((out / "bottle" / "report.json").read_text())["not_read"]) == 3

    for path in goods[:3]:
        (line / "train" / "good" / path.name).unlink()
    problems = file_problems(mvtec_category(tmp_path / "line", "bottle"), Preprocess())
    assert problems[0].startswith("bottle: 0 good training image(s); a fit needs at least 3")
    first = line / "train" / "good" / "monday" / goods[3].name
    assert problems[0].endswith(f"3 images lie in folders below the set's own, which are not read (as {first})")

    rejects = tmp_path / "rejects"  # good parts in a folder, rejects beside them by type (--folder, --defects)
    _link(rejects / "broken_large" / "000.png", BOTTLE / "test" / "broken_large" / "000.png")
    _link(rejects / "broken_large" / "night" / "001.png", BOTTLE / "test" / "broken_large" / "001.png")
    _link(rejects / "broken_large" / "masks" / "000.png", BOTTLE / "ground_truth" / "broken_large" / "000_mask.png")
    given = folder_category(line / "train" / "good" / "monday", "bottle", rejects, rejects / "broken_large" / "masks")
    assert given.unread == [rejects / "broken_large" / "night" / "001.png"] and len(given.test) == 1

    cube = tmp_path / "mvtec3d" / "cable_gland"  # MVTec 3D-AD
    for split in ("train/good", "test/good", "test/bent"):
        _link(cube / split / "rgb" / "000.png", goods[0])
        _link(cube / split / "xyz" / "000.tiff", goods[0])
    _link(cube / "test" / "bent" / "gt" / "000.png", BOTTLE / "ground_truth" / "broken_large" / "000_mask.png")
    assert mvtec_category(tmp_path / "mvtec3d", "cable_gland").unread == []


def test_masks_are_found_by_either_name_and_missing_ones_are_counted(tmp_path):
    category = tmp_path / "bottle"
    for path in sorted((BOTTLE / "train" / "good").glob("*.png"))[:2]:
        _link(category / "train" / "good" / path.name, path)
    _link(category / "test" / "good" / "000.png", BOTTLE / "test" / "good" / "000.png")
    masks = BOTTLE / "ground_truth" / "broken_large"
    for stem in ("000", "001", "002"):
        _link(category / "test" / "broken_large" / f"{stem}.png", BOTTLE / "test" / "broken_large" / f"{stem}.png")
    _link(category / "ground_truth" / "broken_large" / "000_mask.png", masks / "000_mask.png")  # MVTec AD, MPDD
    _link(category / "ground_truth" / "broken_large" / "001.PNG", masks / "001_mask.png")  # VisA (anomalib), BTAD
    _link(category / "ground_truth" / "broken_large" / "002.png", masks / "001_mask.png")  # both: _mask wins
    _link(category / "ground_truth" / "broken_large" / "002_mask.png", masks / "002_mask.png")

    test = {(s.defect, s.path.stem): s.mask for s in mvtec_category(tmp_path, "bottle").test}
    assert test == {
        ("good", "000"): None,
        ("broken_large", "000"): category / "ground_truth" / "broken_large" / "000_mask.png",
        ("broken_large", "001"): category / "ground_truth" / "broken_large" / "001.PNG",
        ("broken_large", "002"): category / "ground_truth" / "broken_large" / "002_mask.png",
    }

    (category / "ground_truth" / "broken_large" / "002_mask.png").unlink()
    (category / "ground_truth" / "broken_large" / "002.png").unlink()
    samples = mvtec_category(tmp_path, "bottle").test
    preprocess = Preprocess("whole", pixels=64 * 64)
    truth = {s.path: preprocess.mask(s.mask, (900, 900)) for s in samples}

    def score(path: Path) -> Scored:
        """Perfect maps where the truth is known; the unmasked defect's map is high all over, which would read as
        false alarms if its image counted as defect-free."""
        defect = path.parent.name != "good"
        heat = np.ones_like(truth[path], dtype=np.float32) if path.stem == "002" else truth[path] * 1.0
        return Scored(float(defect), heat if defect else np.zeros_like(heat))

    evaluation = evaluate(samples, Scorer(score), preprocess, 0.5, 0.03)
    message = evaluation.figures["pixel_metrics"]
    assert evaluation.figures["pixel_auroc"] == 1.0 and evaluation.figures["pro"] > 0.99
    assert message.startswith("over 2 of 3 defective test images and every good one; left out: 1 without a ground")
    assert message.endswith("broken_large/002.png)")

    (category / "ground_truth" / "broken_large" / "000_mask.png").unlink()
    (category / "ground_truth" / "broken_large" / "001.PNG").unlink()
    evaluation = evaluate(mvtec_category(tmp_path, "bottle").test, Scorer(score), preprocess, 0.5, 0.03)
    assert evaluation.figures["pixel_auroc"] is None
    assert evaluation.figures["pixel_metrics"].startswith("absent: 3 of 3 defective test images")


def _bottle_images(count: int, split: str = "train/good") -> list[Path]:
    return sorted((BOTTLE / split).glob("*.png"))[:count]


def test_copies_are_left_out_each_named_with_what_it_copies(tmp_path):
    """Files of the same bytes are one picture of one part: a training copy would be fitted twice and, dealt to
    another fold, cover its twin exactly (the threshold falls), and a test image that is a training image is no
    part never seen. The later of equal files is left out and named with the one it copies, training images before
    the test split, unless the set marks one of them defective: then that one is kept and its good twins leave the
    good images (a defect among them, as the set's own label says); a fit from the command line says what it left
    out, and its report lists it."""
    base = tmp_path / "bottle"
    goods = _bottle_images(6)
    for path in goods:
        _link(base / "train" / "good" / path.name, path)
    _link(base / "train" / "good" / "000_again.png", goods[0])
    for path in _bottle_images(2, "test/good"):
        _link(base / "test" / "good" / path.name, path)
    _link(base / "test" / "good" / "seen.png", goods[1])
    broken = BOTTLE / "test" / "broken_large" / "000.png"
    _link(base / "test" / "broken_large" / "000.png", broken)
    _link(
        base / "ground_truth" / "broken_large" / "000_mask.png",
        BOTTLE / "ground_truth" / "broken_large" / "000_mask.png",
    )
    train, test = base / "train" / "good", base / "test"
    category = distinct(mvtec_category(tmp_path, "bottle"))
    assert category.copies == {
        train / "000_again.png": train / "000.png",
        test / "good" / "seen.png": train / "001.png",
    }
    assert category.train == [train / p.name for p in goods]
    assert sorted(s.path.name for s in category.test) == ["000.png", "000.png", "001.png"]
    assert distinct(category) == category  # nothing left to leave out
    alike = bytes(range(256)) * 512  # 128 KiB: files of one size whose first 64 KiB agree are read whole
    for name, data in (("a.raw", alike), ("b.raw", alike[:-1] + b"x"), ("c.raw", alike), ("d.raw", alike[:-1])):
        (tmp_path / name).write_bytes(data)
    raw = [tmp_path / name for name in ("a.raw", "b.raw", "c.raw", "d.raw")]
    assert distinct(Category("raw", raw, [])).copies == {raw[2]: raw[0]}
    _link(test / "broken_large" / "001.png", goods[2])  # a good training image the set marks defective as a test image
    category = distinct(mvtec_category(tmp_path, "bottle"))
    assert category.copies[train / "002.png"] == test / "broken_large" / "001.png"
    assert train / "002.png" not in category.train and test / "broken_large" / "001.png" in {
        s.path for s in category.test
    }
    out = tmp_path / "reports"
    done = _evaluate(tmp_path, out)
    assert "left out as copies (the same bytes as another image of bottle): 3 (as " in done.stdout
    assert (
        f"{train / '002.png'} has the bytes of the defective test image {test / 'broken_large' / '001.png'}"
        in done.stdout
    )
    report = json.loads((out / "bottle" / "report.json").read_text())
    assert report["copies_left_out"] == [
        {"file": str(train / "000_again.png"), "copy_of": str(train / "000.png")},
        {"file": str(test / "good" / "seen.png"), "copy_of": str(train / "001.png")},
        {
            "file": str(train / "002.png"),
            "copy_of": str(test / "broken_large" / "001.png"),
            "copy_of_defect": "broken_large",
        },
    ]
    assert report["train_images"] + report["holdout_images"] == 5 and report["test_images"] == 4


@pytest.mark.parametrize("layout", ["BTAD", "MVTec AD 2", "MVTec 3D-AD", "MVTec LOCO AD"])
def test_the_layouts_of_other_public_sets_are_read(tmp_path, layout):
    """Each layout as its set ships it: good parts named ``ok``, the test split as ``test_public`` with its masks
    beneath, pictures in ``rgb/`` with masks in ``gt/``, a folder of masks per image whose union is the truth; the
    good images of a validation split (MVTec AD 2, 3D-AD, LOCO AD) fitted with the training ones."""
    base = tmp_path / "part"
    good, test, defect = {"BTAD": ("ok", "test", "ko"), "MVTec AD 2": ("good", "test_public", "bad")}.get(
        layout, ("good", "test", "broken_large")
    )
    rgb = "rgb/" if layout == "MVTec 3D-AD" else ""
    for path in _bottle_images(3):
        _link(base / "train" / good / f"{rgb}{path.name}", path)
    validation = [] if layout == "BTAD" else [base / "validation" / good / f"{rgb}v{i}.png" for i in range(2)]
    for path, source in zip(validation, _bottle_images(5)[3:], strict=False):
        _link(path, source)
    for path in _bottle_images(2, "test/good"):
        _link(base / test / good / f"{rgb}{path.name}", path)
    masks = BOTTLE / "ground_truth" / "broken_large"
    for path in _bottle_images(2, "test/broken_large"):
        _link(base / test / defect / f"{rgb}{path.name}", path)
    if layout == "MVTec 3D-AD":
        (base / "train" / good / "xyz").mkdir()
        (base / test / defect / "xyz").mkdir()
    expected = {}
    for stem in ("000", "001"):
        if layout == "BTAD":
            mask = base / "ground_truth" / defect / f"{stem}.png"
        elif layout == "MVTec AD 2":
            mask = base / test / "ground_truth" / defect / f"{stem}_mask.png"
        elif layout == "MVTec 3D-AD":
            mask = base / test / defect / "gt" / f"{stem}.png"
        else:
            mask = base / "ground_truth" / defect / stem
            _link(mask / "000.png", masks / f"{stem}_mask.png")
            _link(mask / "001.png", masks / "002_mask.png")  # a second region of the same picture
        if layout != "MVTec LOCO AD":
            _link(mask, masks / f"{stem}_mask.png")
        expected[stem] = mask

    assert mvtec_categories(tmp_path) == ["part"]
    category = mvtec_category(tmp_path, "part")
    assert [p.name for p in category.train] == ["000.png", "001.png", "002.png"] + [p.name for p in validation]
    assert category.validation == validation
    assert sorted((s.defect, s.path.stem, s.mask) for s in category.test) == sorted(
        [("good", "000", None), ("good", "001", None)] + [(defect, stem, expected[stem]) for stem in ("000", "001")]
    )
    preprocess = Preprocess("whole", pixels=64 * 64)
    read = preprocess.mask(expected["000"], (900, 900))
    first = preprocess.mask(masks / "000_mask.png", (900, 900))
    if layout == "MVTec LOCO AD":
        second = preprocess.mask(masks / "002_mask.png", (900, 900))
        assert np.array_equal(read, first | second) and (read & ~first).any()
        assert mask_png(expected["000"]) and file_problems(category, preprocess) == []
    else:
        assert np.array_equal(read, first)
    if layout == "MVTec AD 2":  # the command line says which images came from the validation split
        done = _evaluate(tmp_path, tmp_path / "reports")
        assert f"of them 2 from the set's validation split ({base / 'validation' / 'good'})" in done.stdout
        report = json.loads((tmp_path / "reports" / "part" / "report.json").read_text())
        assert report["validation_images_fitted"] == [str(path) for path in validation]
        assert report["train_images"] + report["holdout_images"] == 5


def test_a_line_s_own_layout_a_train_folder_of_good_images_and_good_parts_by_any_usual_name(tmp_path):
    """``train/`` holding the good images themselves, the test split's good parts under ``Normal`` (any case of
    good, ok, normal) beside ``abnormal``: listed as a category, fitted from those images, and the good test parts
    judged as good, where before the root was refused and ``Normal`` would have been read as a defect type."""
    base = tmp_path / "part"
    for path in _bottle_images(3):
        _link(base / "train" / path.name, path)
    for path in _bottle_images(2, "test/good"):
        _link(base / "test" / "Normal" / path.name, path)
    for path in _bottle_images(2, "test/broken_large"):
        _link(base / "test" / "abnormal" / path.name, path)
    assert mvtec_categories(tmp_path) == ["part"]
    category = mvtec_category(tmp_path, "part")
    assert [p.name for p in category.train] == ["000.png", "001.png", "002.png"]
    assert sorted((s.defect, s.path.stem) for s in category.test) == [
        ("abnormal", "000"), ("abnormal", "001"), ("good", "000"), ("good", "001")
    ]  # fmt: skip
    (base / "train" / "OK").mkdir()  # a folder of good images, by another name, is what a train/ holds then
    _link(base / "train" / "OK" / "100.png", _bottle_images(4)[3])
    assert [p.name for p in mvtec_category(tmp_path, "part").train] == ["100.png"]


def test_a_train_folder_of_one_folder_by_any_name_is_the_good_images_and_so_is_its_namesake_in_test(tmp_path):
    """``train/defect_free`` alone: a training split is good images only, so its one folder is them whatever its
    name, and the test split's ``Defect_Free`` its good parts, not a defect type of that name; before, the root was
    refused ("none"). Two folders in ``train/`` (which are good?) stay refused, naming the layouts."""
    base = tmp_path / "part"
    for path in _bottle_images(3):
        _link(base / "train" / "defect_free" / path.name, path)
    (base / "train" / ".cache").mkdir()  # hidden: not a second folder
    for path in _bottle_images(2, "test/good"):
        _link(base / "test" / "Defect_Free" / path.name, path)
    for path in _bottle_images(2, "test/broken_large"):
        _link(base / "test" / "scratch" / path.name, path)
    _link(base / "validation" / "defect_free" / "v000.png", _bottle_images(3, "test/good")[2])
    assert mvtec_categories(tmp_path) == ["part"]
    category = mvtec_category(tmp_path, "part")
    assert [p.name for p in category.train] == ["000.png", "001.png", "002.png", "v000.png"]
    assert sorted((s.defect, s.path.stem) for s in category.test) == [
        ("good", "000"), ("good", "001"), ("scratch", "000"), ("scratch", "001")
    ]  # fmt: skip
    _link(base / "train" / "rejects" / "000.png", _bottle_images(1, "test/broken_large")[0])
    assert mvtec_categories(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="or of one folder of them"):
        mvtec_category(tmp_path, "part")


def test_hidden_files_beside_the_images_are_not_read_as_images(tmp_path):
    """A macOS copy leaves ``._<name>`` beside each image (a resource fork with the image's suffix): read as an image,
    it would stop a whole fit at its check of the files."""
    folder = tmp_path / "good"
    _link(folder / "000.png", BOTTLE / "train" / "good" / "000.png")
    (folder / "._000.png").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # AppleDouble's magic number
    _link(folder / ".thumbnails" / "001.png", BOTTLE / "train" / "good" / "001.png")
    assert image_files(folder) == [folder / "000.png"]
    assert images_of([tmp_path]) == [folder / "000.png"]


def test_too_few_good_images_are_named_before_any_fit(tmp_path):
    """Two good images cannot give the three good scores a threshold at a false-alarm rate needs: said at once."""
    for path in _bottle_images(2):
        _link(tmp_path / "part" / "train" / "good" / path.name, path)
    problems = file_problems(mvtec_category(tmp_path, "part"), Preprocess())
    assert problems == [
        "part: 2 good training image(s); a fit needs at least 3 (good scores of two memory-bank images and one held "
        "out set its threshold)"
    ]
    _link(tmp_path / "part" / "train" / "good" / "002.png", BOTTLE / "train" / "good" / "002.png")
    assert file_problems(mvtec_category(tmp_path, "part"), Preprocess()) == []


@pytest.mark.parametrize("name", ["", "metal plate", "-front", "screw\n", "x" * 101, "métal"])
def test_names_the_store_refuses_are_named_before_sql(name):
    """The rule of the schema's CHECK, newline included (Python's ``$`` matches before one; PostgreSQL's not)."""
    assert name_problem(name, "category").startswith(f"category {name!r} is not a name the store takes")
    assert name_problem("screw_01.v2-A", "category") is None and name_problem("x" * 100, "category") is None


def test_a_category_given_as_the_root_is_named_with_the_arguments_to_give():
    """``--data .../bottle`` (the category, not its parent) is the common slip: the error says what to give."""
    with pytest.raises(FileNotFoundError) as raised:
        mvtec_category(BOTTLE, "bottle")
    assert f"{BOTTLE} is itself a category; give --data {BOTTLE.parent} --category bottle" in str(raised.value)
    with pytest.raises(FileNotFoundError, match=r"categories found under .*: bottle"):
        mvtec_category(BOTTLE.parent, "botle")


def _visa(root: Path, rows: list[str]) -> None:
    """VisA as it ships, from bottle's images: ``candle/Data/Images/{Normal,Anomaly}/*.JPG``, label masks in
    ``candle/Data/Masks/Anomaly``, and the one-class split in ``split_csv/1cls.csv`` (``rows`` after its header)."""
    for index, path in enumerate(_bottle_images(3) + _bottle_images(2, "test/good")):
        _link(root / "candle" / "Data" / "Images" / "Normal" / f"{index:04d}.JPG", path)
    for path in _bottle_images(2, "test/broken_large"):
        _link(root / "candle" / "Data" / "Images" / "Anomaly" / f"{path.stem}.JPG", path)
        mask = BOTTLE / "ground_truth" / "broken_large" / f"{path.stem}_mask.png"
        _link(root / "candle" / "Data" / "Masks" / "Anomaly" / f"{path.stem}.png", mask)
    (root / "split_csv").mkdir()
    (root / "split_csv" / "1cls.csv").write_text("\n".join(["object,split,label,image,mask", *rows]) + "\n")


VISA_ROWS = [
    *(f"candle,train,normal,candle/Data/Images/Normal/{i:04d}.JPG," for i in (2, 0, 1)),
    *(f"candle,test,normal,candle/Data/Images/Normal/{i:04d}.JPG," for i in (3, 4)),
    *(f"candle,test,anomaly,candle/Data/Images/Anomaly/{s}.JPG,candle/Data/Masks/Anomaly/{s}.png"
      for s in ("000", "001")),
]  # fmt: skip


def test_visa_is_read_as_it_ships_by_its_split(tmp_path):
    """VisA's own layout and split, without anomalib's preparation: the categories its split names beside the MVTec
    AD ones, training images sorted, the test split labelled with its masks."""
    _visa(tmp_path, VISA_ROWS)
    for path in _bottle_images(3):
        _link(tmp_path / "bottle" / "train" / "good" / path.name, path)
    assert mvtec_categories(tmp_path) == ["bottle", "candle"]
    category = mvtec_category(tmp_path, "candle")
    images = tmp_path / "candle" / "Data" / "Images"
    assert category.train == [images / "Normal" / f"{i:04d}.JPG" for i in range(3)]
    masks = tmp_path / "candle" / "Data" / "Masks" / "Anomaly"
    assert [(s.path, s.defect, s.mask) for s in category.test] == [
        (images / "Normal" / "0003.JPG", "good", None),
        (images / "Normal" / "0004.JPG", "good", None),
        (images / "Anomaly" / "000.JPG", "anomaly", masks / "000.png"),
        (images / "Anomaly" / "001.JPG", "anomaly", masks / "001.png"),
    ]
    assert file_problems(category, Preprocess()) == []
    assert np.array_equal(
        Preprocess().mask(masks / "000.png", (900, 900)),
        Preprocess().mask(BOTTLE / "ground_truth" / "broken_large" / "000_mask.png", (900, 900)),
    )
    with pytest.raises(FileNotFoundError, match=r"give --data .* --category candle"):
        mvtec_category(tmp_path / "candle", "candle")


def test_a_visa_split_that_names_missing_files_or_defective_training_images_is_refused(tmp_path):
    _visa(
        tmp_path,
        [*VISA_ROWS, "candle,test,anomaly,candle/Data/Images/Anomaly/009.JPG,candle/Data/Masks/Anomaly/009.png"],
    )
    with pytest.raises(FileNotFoundError, match=r"2 files that .*1cls.csv names for candle are missing: .*009.JPG"):
        mvtec_category(tmp_path, "candle")
    (tmp_path / "split_csv" / "1cls.csv").write_text(
        "object,split,label,image,mask\ncandle,train,anomaly,candle/Data/Images/Anomaly/000.JPG,\n"
    )
    with pytest.raises(ValueError, match="1 images not labelled normal in candle's training split"):
        mvtec_category(tmp_path, "candle")
    (tmp_path / "split_csv" / "1cls.csv").write_text(
        "object,split,label,image,mask\ncandle,train,normal,candle/../../secret.png,\n"
    )
    with pytest.raises(ValueError, match=r"names 'candle/\.\./\.\./secret\.png', outside"):
        mvtec_category(tmp_path, "candle")
    (tmp_path / "split_csv" / "1cls.csv").write_text("object,kind,image\n")
    with pytest.raises(ValueError, match="no column label, split"):
        mvtec_categories(tmp_path)


def test_kolektorsdd2_is_read_as_it_ships_each_image_labelled_by_its_mask(tmp_path):
    """Each image beside its ``_GT`` mask in ``train/`` and ``test/``: an all-zero mask is a good part; the training
    split's defective images are left out of the fit and counted, not silently dropped."""
    base = tmp_path / "kolektor"
    empty = tmp_path / "empty.png"
    Image.new("L", (900, 900), 0).save(empty)
    defect = BOTTLE / "ground_truth" / "broken_large" / "000_mask.png"
    for index, path in enumerate(_bottle_images(3)):
        _link(base / "train" / f"1000{index}.png", path)
        _link(base / "train" / f"1000{index}_GT.png", empty)
    _link(base / "train" / "10009.png", BOTTLE / "test" / "broken_large" / "000.png")
    _link(base / "train" / "10009_GT.png", defect)
    for index, path in enumerate(_bottle_images(2, "test/good") + _bottle_images(1, "test/broken_large")):
        _link(base / "test" / f"2000{index}.png", path)
        _link(base / "test" / f"2000{index}_GT.png", defect if index == 2 else empty)

    assert mvtec_categories(tmp_path) == ["kolektor"]
    category = mvtec_category(tmp_path, "kolektor")
    assert category.train == [base / "train" / f"1000{i}.png" for i in range(3)]
    assert category.left_out == [base / "train" / "10009.png"]
    assert [(s.path.name, s.defect, s.mask) for s in category.test] == [
        ("20000.png", "good", None),
        ("20001.png", "good", None),
        ("20002.png", "defect", base / "test" / "20002_GT.png"),
    ]
    assert file_problems(category, Preprocess()) == []
    with pytest.raises(FileNotFoundError, match=r"give --data .* --category kolektor"):
        mvtec_category(base, "kolektor")
    out = tmp_path / "reports"
    done = _evaluate(tmp_path, out)
    assert "left out of the fit: 1 images of the training split that the set marks defective" in done.stdout
    report = json.loads((out / "kolektor" / "report.json").read_text())
    assert report["left_out_of_training"] == [str(base / "train" / "10009.png")]
    assert report["train_images"] + report["holdout_images"] == 3
    (base / "test" / "20001_GT.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 images without their _GT mask, as 20001\.png"):
        mvtec_category(tmp_path, "kolektor")


def test_kolektorsdd_is_read_as_it_ships_parts_held_out_whole_for_its_test_split(tmp_path, database_url):
    """KolektorSDD: a folder per physical part of its JPEGs beside their ``_label.bmp`` masks, no split of its own.
    A seeded fifth of the parts is held out whole (every view, good or not: parts never seen), the other parts'
    good images are fitted (their hold-out and folds by part) and their defective ones tested; each test image names
    its part, so the report judges the parts too, beside what the training parts predict; a threshold set later
    from the command line says it again; the set's folder given as ``--data`` is answered with what to give."""
    base = tmp_path / "KolektorSDD"
    sources = _bottle_images(20) + _bottle_images(2, "test/broken_large")  # no two views the same bytes
    defective = {("kos02", "Part1"), ("kos04", "Part3")}
    for index, (part, view) in enumerate((f"kos0{p}", f"Part{v}") for p in range(1, 6) for v in range(4)):
        (base / part).mkdir(parents=True, exist_ok=True)
        bad = (part, view) in defective
        source = sources[20 + sorted(defective).index((part, view))] if bad else sources[index]
        Image.open(source).resize((200, 200)).save(base / part / f"{view}.jpg")
        truth = BOTTLE / "ground_truth" / "broken_large" / f"{source.stem}_mask.png"
        mask = Image.open(truth).resize((200, 200)) if bad else Image.new("L", (200, 200), 0)
        mask.save(base / part / f"{view}_label.bmp")
    assert mvtec_categories(tmp_path) == ["KolektorSDD"]
    category = mvtec_category(tmp_path, "KolektorSDD")
    tested = {s.path for s in category.test}
    held = [part for part in sorted({s.part for s in category.test}) if len(list((base / part).glob("*.jpg")))
            == sum(s.part == part for s in category.test)]  # fmt: skip
    assert len(held) == 1  # a fifth of 5 parts, every view of it
    assert all(s.part == s.path.parent.name for s in category.test)
    assert {(s.path.parent.name, s.path.stem) for s in category.test if s.defect == "defect"} == defective
    assert all(s.mask == s.path.with_name(f"{s.path.stem}_label.bmp") for s in category.test if s.defect != "good")
    assert sorted(category.train) == sorted(
        p for p in base.glob("kos0*/*.jpg") if p not in tested and p.parent.name != held[0]
    ) and len(category.train) == 20 - 4 - len(defective - {(held[0], v) for v in ("Part0", "Part1", "Part2", "Part3")})
    assert file_problems(category, Preprocess()) == []
    with pytest.raises(FileNotFoundError, match=r"is itself a category; give --data .* --category KolektorSDD"):
        mvtec_category(base, "kos01")
    out = tmp_path / "reports"
    done = _evaluate(tmp_path, out, env={"DATABASE_URL": database_url}, command="fit")
    assert "the training images show 4 parts, several views each" in done.stdout
    report = json.loads((out / "KolektorSDD" / "report.json").read_text())
    assert report["test_images"] == len(category.test) and report["parts"]["parts"] == len(
        {s.part for s in category.test}
    )
    assert category.parts == {p: p.parent.name for p in category.train}
    assert report["training_parts"] == len(set(category.parts.values())) == 4
    assert report["threshold_policy"]["per_part"]["parts"] == 4  # what the threshold does per training part
    assert (
        report["parts"]["predicted_false_alarm_rate"]
        == report["threshold_policy"]["per_part"]["estimated_false_alarm_rate"]
    )  # the test parts' false alarms beside what the training parts predict
    again = subprocess.run(
        [sys.executable, "-m", "ingest", "threshold", "--category", "KolektorSDD", "--false-alarm-rate", "0.2",
         "--per", "part"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "DATABASE_URL": database_url},
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "per part (each of 4 training parts by its worst view): estimated 20.00% of good parts" in again.stdout
    _evaluate(tmp_path, tmp_path / "per_part", "--false-alarm-rate", "0.2", "--per", "part")  # the fit's own target
    policy = json.loads((tmp_path / "per_part" / "KolektorSDD" / "report.json").read_text())["threshold_policy"]
    assert policy["per"] == "part" and policy["per_part"]["estimated_false_alarm_rate"] == pytest.approx(0.2)


def _realiad(
    root: Path, train_class: str = "OK", extra: list[dict] | None = None, splits: str = "realiad_jsons/realiad_jsons"
) -> Path:
    """Real-IAD as it ships, from bottle's images: ``realiad_1024/bottle/OK/S0001/*.jpg`` and
    ``NG/AK/S0100/*.jpg`` beside its ``_mask.png``, split by ``<splits>/bottle.json`` (its archive of split files
    unpacked into a folder of its name, by default); returns the resolution folder, which ``--data`` names."""
    images = root / "realiad_1024"
    entry = {"category": "bottle", "anomaly_class": "OK", "mask_path": None}
    train, test = [], []
    for index, path in enumerate(_bottle_images(4) + _bottle_images(2, "test/good")):
        sample, camera = ((0, 1), (0, 2), (1, 1), (2, 1), (4, 5), (5, 1))[index]  # training sample 0 seen twice
        name = f"OK/S0001/bottle_000{sample}_OK_C{camera}_20230922093356.jpg"
        _link(images / "bottle" / name, path)
        (train if index < 4 else test).append({**entry, "image_path": name})
    train[0]["anomaly_class"] = train_class
    for path in _bottle_images(2, "test/broken_large"):
        name = f"NG/AK/S0100/bottle_0100_NG_C1_2023092209{path.stem}.jpg"
        _link(images / "bottle" / name, path)
        _link(images / "bottle" / name.replace(".jpg", "_mask.png"),
              BOTTLE / "ground_truth" / "broken_large" / f"{path.stem}_mask.png")  # fmt: skip
        test.append(
            {**entry, "anomaly_class": "AK", "image_path": name, "mask_path": name.replace(".jpg", "_mask.png")}
        )
    split = {"meta": {"prefix": "bottle", "normal_class": "OK"}, "train": train, "test": test + (extra or [])}
    (root / splits).mkdir(parents=True, exist_ok=True)
    (root / splits / "bottle.json").write_text(json.dumps(split))
    return images


def test_real_iad_is_read_as_it_ships_by_its_split(tmp_path):
    """Real-IAD's own layout and split: the category its split file names, training images sorted, the test split
    labelled by its classes (the set's codes) with its masks; the set's root and a category given as the root are
    answered with the --data to give; and an evaluation runs on it."""
    images = _realiad(tmp_path)
    assert mvtec_categories(images) == ["bottle"]
    category = mvtec_category(images, "bottle")
    base = images / "bottle"
    views = ("0_OK_C1", "0_OK_C2", "1_OK_C1", "2_OK_C1")
    assert category.train == [base / "OK" / "S0001" / f"bottle_000{view}_20230922093356.jpg" for view in views]
    assert [category.parts[p] for p in category.train] == ["bottle_0000_OK"] * 2 + ["bottle_0001_OK", "bottle_0002_OK"]
    assert [(s.path.parent.name, s.defect, s.mask and s.mask.name) for s in category.test] == [
        ("S0001", "good", None),
        ("S0001", "good", None),
        ("S0100", "AK", "bottle_0100_NG_C1_2023092209000_mask.png"),
        ("S0100", "AK", "bottle_0100_NG_C1_2023092209001_mask.png"),
    ]
    assert file_problems(category, Preprocess()) == []
    with pytest.raises(FileNotFoundError, match=r"give --data .*realiad_1024 --category bottle"):
        mvtec_category(base, "bottle")
    with pytest.raises(
        FileNotFoundError, match=r"is Real-IAD: give --data .*/<one of its image folders: realiad_1024>"
    ):
        mvtec_category(tmp_path, "bottle")
    out = tmp_path / "reports"
    _evaluate(images, out)
    report = json.loads((out / "bottle" / "report.json").read_text())
    assert report["train_images"] + report["holdout_images"] == 4 and report["test_images"] == 4
    assert report["training_parts"] == 3  # the hold-out and the folds dealt by sample
    assert set(report["per_defect_image_auroc"]) == {"AK"} and report["pixel_auroc"] is not None
    parts = ["bottle_0004_OK", "bottle_0005_OK", "bottle_0100_NG", "bottle_0100_NG"]  # the set's sample keys
    assert [row["part"] for row in report["images"]] == parts
    assert report["parts"]["parts"] == 3 and report["parts"]["views_per_part"] == 1.33  # its samples' figures too


def test_a_real_iad_split_that_names_missing_files_defective_training_images_or_paths_outside_is_refused(tmp_path):
    missing = {"category": "bottle", "anomaly_class": "AK", "image_path": "NG/AK/S0200/x.jpg", "mask_path": None}
    images = _realiad(tmp_path, extra=[missing])
    with pytest.raises(FileNotFoundError, match=r"1 files that .*bottle\.json names for bottle are missing: .*x\.jpg"):
        mvtec_category(images, "bottle")
    outside = {**missing, "image_path": "../../../secret.jpg"}
    images = _realiad(tmp_path / "outside", extra=[outside])
    with pytest.raises(ValueError, match=r"names '\.\./\.\./\.\./secret\.jpg', outside"):
        mvtec_category(images, "bottle")
    (tmp_path / "outside" / "realiad_jsons" / "realiad_jsons" / "bottle.json").write_text('{"train": []}')
    with pytest.raises(ValueError, match=r"is not a Real-IAD split .*KeyError: 'test'"):
        mvtec_category(images, "bottle")


@pytest.mark.parametrize("unpacked", ["as the set's instructions say", "into a folder of its name"])
def test_each_real_iad_protocol_is_read_where_its_split_files_were_unpacked(tmp_path, unpacked):
    """Real-IAD's split files come as one archive of a folder per protocol (multi-view ``realiad_jsons``, single
    view ``realiad_jsons_sv``, the noisy ``realiad_jsons_fuiad_<noise>``), unpacked beside the image folders or into
    a ``realiad_jsons`` folder of their own: either is read, the protocol chosen by name (the multi-view one by
    default). A noisy protocol's defective training images are left out of the fit and listed, not fitted as good;
    a protocol that is not there, one named for a set that is not Real-IAD, and the split files' folder given as
    ``--data`` are answered with what to give."""
    nested = unpacked == "into a folder of its name"
    above = "realiad_jsons/" if nested else ""
    images = _realiad(tmp_path, splits=f"{above}realiad_jsons")
    split = json.loads((tmp_path / f"{above}realiad_jsons" / "bottle.json").read_text())
    split["train"][0]["anomaly_class"] = "AK"  # as a noisy protocol has it
    (tmp_path / f"{above}realiad_jsons_sv").mkdir(parents=True)
    (tmp_path / f"{above}realiad_jsons_sv" / "bottle.json").write_text(json.dumps(split))
    assert mvtec_categories(images) == ["bottle"] == mvtec_categories(images, "realiad_jsons_sv")
    multi_view = mvtec_category(images, "bottle")
    assert len(multi_view.train) == 4 and multi_view.left_out == [] and len(multi_view.test) == 4
    single_view = mvtec_category(images, "bottle", "realiad_jsons_sv")
    assert single_view.left_out == multi_view.train[:1] and single_view.train == multi_view.train[1:]
    assert single_view.test == multi_view.test
    with pytest.raises(
        FileNotFoundError,
        match=r"protocol realiad_jsons_fuiad_0\.4 is not beside .*its split files: realiad_jsons, realiad_jsons_sv",
    ):
        mvtec_category(images, "bottle", "realiad_jsons_fuiad_0.4")
    with pytest.raises(FileNotFoundError, match=r"--real-iad-split realiad_jsons_sv: .* not one of Real-IAD's image"):
        mvtec_category(BOTTLE.parent, "bottle", "realiad_jsons_sv")
    with pytest.raises(FileNotFoundError, match=r"holds Real-IAD's split files; give --data .*/<one of its image "
                       r"folders: realiad_1024> --real-iad-split realiad_jsons_sv"):  # fmt: skip
        mvtec_category(tmp_path / f"{above}realiad_jsons_sv", "bottle")
    if nested:  # the protocol chosen on the command line; the left-out image in the report
        out = tmp_path / "reports"
        done = _evaluate(images, out, "--real-iad-split", "realiad_jsons_sv")
        assert "left out of the fit: 1 images of the training split that the set marks defective" in done.stdout
        report = json.loads((out / "bottle" / "report.json").read_text())
        assert report["train_images"] + report["holdout_images"] == 3 and report["test_images"] == 4
        assert report["left_out_of_training"] == [str(multi_view.train[0])]


def test_excluded_training_images_are_matched_by_name_or_path_ending_and_a_miss_is_refused():
    """``--exclude``: a file name or the end of a path, matched whole from a ``/``; a name that matches nothing, or
    several images of one category, is refused rather than fitted with the defect still in."""
    from patchcore.datasets.category import Category, excluding

    views = [Path(f"/sets/part/train/good/S{v}/{n:03d}.png") for v in (1, 2) for n in range(3)]
    part = Category("part", views, [])
    other = Category("other", [Path("/sets/other/train/good/001.png"), Path("/sets/other/train/good/x001.png")], [])
    narrowed = excluding([part, other], ["S2/001.png", "good/S1/000.png"])
    assert narrowed[0].excluded == [views[0], views[4]] and narrowed[0].train == [
        v for v in views if v not in narrowed[0].excluded
    ]
    assert narrowed[1].train == other.train and narrowed[1].excluded == []
    one = excluding([other], ["001.png"])[0]  # "x001.png" does not end with "/001.png"
    assert one.excluded == [other.train[0]] and one.train == [other.train[1]]
    with pytest.raises(ValueError, match=r"--exclude 001.png names 2 training images of part .*give more of its path"):
        excluding([part], ["001.png"])
    with pytest.raises(
        ValueError, match=re.escape("--exclude 1.png, S3/000.png: no training image of part is named so")
    ):
        excluding([part], ["S1/000.png", "1.png", "S3/000.png"])
    assert excluding([part], []) == [part]


def test_parts_named_by_a_pattern_on_the_file_names():
    """``--part REGEX``: its first group (or its match) names each image's part, training and test alike, replacing a
    set's own names; a pattern that does not compile, or that an image's name does not match (or gives an empty
    part, which would put every such image in one part), is refused naming it."""
    from patchcore.datasets.category import Category, Sample, part_namer, parted

    train = [Path(f"/sets/tiles/train/good/roll{r}_{t}.png") for r in (1, 2) for t in range(3)]
    test = [Sample(Path("/sets/tiles/test/good/roll7_0.png"), "good", None, "other"),
            Sample(Path("/sets/tiles/test/cut/roll8_2.png"), "cut", None)]  # fmt: skip
    category = Category("tiles", train, test)
    named = parted([category], part_namer(r"^(roll\d+)_\d+"))[0]
    assert named.parts == {p: p.name.split("_")[0] for p in train} and named.train == train
    assert [s.part for s in named.test] == ["roll7", "roll8"] and named.test[1].defect == "cut"
    assert parted([category], part_namer(r"roll\d"))[0].parts[train[3]] == "roll2"  # no group: the match
    assert parted([category], None) == [category]
    with pytest.raises(ValueError, match=re.escape("--part '^(roll[1-7])_' does not match roll8_2.png (/sets/tiles/")):
        parted([category], part_namer("^(roll[1-7])_"))
    with pytest.raises(ValueError, match=r"--part '\(roll' is not a regular expression"):
        parted([category], part_namer("(roll"))
    with pytest.raises(ValueError, match=re.escape("--part '^(roll[12])?' does not match roll7_0.png")):
        parted([category], part_namer("^(roll[12])?"))  # it matches every name, but no part of roll7_0.png


def test_parts_listed_in_a_file_an_export_s_manifest_or_a_plain_mapping(tmp_path):
    """``--parts FILE``: the part of each image by its file name, from an export's manifest (the files it names a part
    for) or a JSON object; images it does not name are their own parts. Refused: a file of neither shape, an empty
    part, a list that names none of the training images (another set's), and ``--part`` beside it."""
    import argparse

    from ingest.sets import categories, listed_parts

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": [{"file": "000.png", "part": "p0"}, {"file": "001.png"}]}))
    assert listed_parts(manifest) == {"000.png": "p0"}
    folder = tmp_path / "good"
    for path in sorted((BOTTLE / "train" / "good").glob("*.png"))[:4]:
        _link(folder / path.name, path)
    plain = tmp_path / "parts.json"
    plain.write_text(json.dumps({"000.png": "p0", "001.png": "p0", "other.png": "p9"}))
    args = argparse.Namespace(folder=folder, category=["good"], defects=None, masks=None, exclude=[], part=None)
    read = categories(argparse.Namespace(**vars(args), parts=plain))[0]
    assert read.parts == {folder / "000.png": "p0", folder / "001.png": "p0"}  # 002 and 003: parts of their own
    for text, words in (("[1, 2]", "not a manifest.json of an export"), ('{"000.png": ""}', "names no part")):
        plain.write_text(text)
        with pytest.raises(ValueError, match=words):
            categories(argparse.Namespace(**vars(args), parts=plain))
    plain.write_text(json.dumps({"zzz.png": "p0"}))
    with pytest.raises(ValueError, match="names none of the training images of good"):
        categories(argparse.Namespace(**vars(args), parts=plain))
    with pytest.raises(ValueError, match="--part and --parts both name"):
        categories(argparse.Namespace(**{**vars(args), "part": "^(0)"}, parts=plain))


def test_views_named_only_by_their_file_names_are_fitted_and_judged_as_parts(tmp_path):
    """An MVTec AD layout whose files say which part they show (``p1_v0.png``...): with ``--part`` the fit deals
    whole parts to its hold-out and folds, the report judges the test parts, and a target per part is the fit's."""
    base = tmp_path / "tiles"
    for index, path in enumerate(_bottle_images(12)):
        _link(base / "train" / "good" / f"p{index // 3}_v{index % 3}.png", path)
    for index, path in enumerate(_bottle_images(4, "test/good")):
        _link(base / "test" / "good" / f"g{index // 2}_v{index % 2}.png", path)
    for index, path in enumerate(_bottle_images(2, "test/broken_large")):
        _link(base / "test" / "broken_large" / f"d{index}_v0.png", path)
        _link(base / "ground_truth" / "broken_large" / f"d{index}_v0_mask.png",
              BOTTLE / "ground_truth" / "broken_large" / f"{path.stem}_mask.png")  # fmt: skip
    out = tmp_path / "reports"
    done = _evaluate(tmp_path, out, "--category", "tiles", "--part", r"^(.+)_v\d", "--false-alarm-rate", "0.2",
                     "--per", "part")  # fmt: skip
    assert "the training images show 4 parts, several views each" in done.stdout
    report = json.loads((out / "tiles" / "report.json").read_text())
    assert report["training_parts"] == 4 and report["parts"]["parts"] == 4  # g0, g1, d0, d1
    assert report["threshold_policy"]["per"] == "part"
    assert report["threshold_policy"]["per_part"]["estimated_false_alarm_rate"] == pytest.approx(0.2)


def test_dagm_is_read_as_it_ships_each_defective_image_by_its_label_mask(tmp_path):
    """DAGM 2007: ``Class1/{Train,Test}/<stem>.PNG`` with a ``Label/<stem>_label.PNG`` mask for each defective
    image (``Labels.txt`` beside them); the training split's defective images are left out of the fit and counted,
    the test split is labelled by its masks; a mask of no image is refused by name."""
    base = tmp_path / "DAGM2007" / "Class1"
    defect = BOTTLE / "ground_truth" / "broken_large" / "000_mask.png"
    for split, goods, bad in (("Train", _bottle_images(3), "0009"), ("Test", _bottle_images(2, "test/good"), "0003")):
        for index, path in enumerate(goods):
            _link(base / split / f"000{index}.PNG", path)
        _link(base / split / f"{bad}.PNG", BOTTLE / "test" / "broken_large" / "000.png")
        _link(base / split / "Label" / f"{bad}_label.PNG", defect)
        (base / split / "Label" / "Labels.txt").write_text(f"1\n{bad}\t1\t{bad}.PNG\t{bad}_label.PNG\n")
    root = tmp_path / "DAGM2007"
    assert mvtec_categories(root) == ["Class1"]
    category = mvtec_category(root, "Class1")
    assert category.train == [base / "Train" / f"000{i}.PNG" for i in range(3)]
    assert category.left_out == [base / "Train" / "0009.PNG"]
    assert [(s.path.name, s.defect, s.mask) for s in category.test] == [
        ("0000.PNG", "good", None),
        ("0001.PNG", "good", None),
        ("0003.PNG", "defect", base / "Test" / "Label" / "0003_label.PNG"),
    ]
    assert file_problems(category, Preprocess()) == []
    with pytest.raises(FileNotFoundError, match=r"give --data .*DAGM2007 --category Class1"):
        mvtec_category(base, "Class1")
    out = tmp_path / "reports"
    done = _evaluate(root, out)
    assert "left out of the fit: 1 images of the training split that the set marks defective" in done.stdout
    report = json.loads((out / "Class1" / "report.json").read_text())
    assert report["test_images"] == 3 and report["image_auroc"] == 1.0 and report["pixel_auroc"] > 0.9
    (base / "Test" / "0003.PNG").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 masks of no image in .*Test, as 0003_label\.PNG"):
        mvtec_category(root, "Class1")


def test_a_folder_of_good_parts_is_judged_against_a_folder_of_rejects(tmp_path):
    """``--folder GOOD --defects REJECTS [--masks MASKS]``: a seeded fifth of the good parts (whole parts where
    ``--part`` names them) is held out of the fit as the test's good parts, the rejects are tested with their masks by
    stem, a folder per defect type where they have them; what cannot be read as meant is refused (masks beside
    the good images or the rejects among them)."""
    from patchcore.datasets.category import Category, holding_out
    from patchcore.datasets.folders import folder_category

    good, rejects, masks = tmp_path / "good", tmp_path / "rejects", tmp_path / "masks"
    for index, path in enumerate(_bottle_images(10)):
        _link(good / f"p{index // 2}_{index % 2}.png", path)
    for path in _bottle_images(2, "test/broken_large"):
        _link(rejects / "broken" / path.name, path)
        _link(masks / f"{path.stem}_mask.png", BOTTLE / "ground_truth" / "broken_large" / f"{path.stem}_mask.png")
    _link(rejects / "odd.png", BOTTLE / "test" / "contamination" / "000.png")
    category = folder_category(good, "bottle", rejects, masks)
    assert [(s.path.name, s.defect, s.mask) for s in category.test] == [
        ("odd.png", "rejects", None),  # no mask of that stem: judged by image only
        ("000.png", "broken", masks / "000_mask.png"),
        ("001.png", "broken", masks / "001_mask.png"),
    ]
    held = holding_out(category)
    assert len(held.train) == 8 and [s.defect for s in held.test[:2]] == ["good", "good"]
    by_part = holding_out(Category("bottle", category.train, [], parts={p: p.name[:2] for p in category.train}))
    assert {s.path.name[:2] for s in by_part.test} == {s.path.name[:2] for s in by_part.test[:1]}  # one whole part
    assert len(by_part.test) == 2 and set(by_part.parts) == set(by_part.train)
    with pytest.raises(ValueError, match="too few to hold one out"):
        holding_out(Category("bottle", category.train[:2], []))
    with pytest.raises(ValueError, match="--masks goes with --defects"):
        folder_category(good, "bottle", None, masks)
    within = tmp_path / "within"  # good images in the folder, rejects and masks in folders of it: read as given
    for path in sorted(good.iterdir()):
        _link(within / path.name, path)
    for path in rejects.rglob("*.png"):
        _link(within / "rejects" / path.relative_to(rejects), path)
    for path in masks.iterdir():
        _link(within / "masks" / path.name, path)
    assert len(folder_category(within, "bottle", within / "rejects", within / "masks").test) == 3
    for day, path in enumerate(_bottle_images(3)):  # more good images in a folder per day: not passed over
        _link(within / f"day{day % 2}" / path.name, path)
    _link(within / ".cache" / "x.png", path)  # hidden, as ls hides it
    with pytest.raises(ValueError, match=r"--folder .*within: 3 images lie in 2 folder\(s\) below it \(day0/: 2\)"):
        folder_category(within, "bottle", within / "rejects", within / "masks")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image in it"):
        folder_category(good, "bottle", tmp_path / "empty")
    _link(tmp_path / "mixed" / "good" / "000.png", _bottle_images(1)[0])
    with pytest.raises(ValueError, match="a defect type named 'good' would read its images as good parts"):
        folder_category(good, "bottle", tmp_path / "mixed")
    truth = BOTTLE / "ground_truth" / "broken_large" / "000_mask.png"  # masks beside their images: not parts
    _link(tmp_path / "masked" / "000.png", _bottle_images(1)[0])
    _link(tmp_path / "masked" / "000_mask.png", truth)
    with pytest.raises(ValueError, match=r"--folder .*masked: 1 of its images are the masks of images beside them"):
        folder_category(tmp_path / "masked", "bottle")
    queued = subprocess.run(
        [sys.executable, "-m", "ingest", "enqueue", "--folder", str(tmp_path / "masked"), "--category", "masked"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "DATABASE_URL": "postgresql://nowhere/x"},
    )  # fmt: skip
    assert queued.returncode != 0 and "1 of its images are the masks of images beside them" in queued.stderr
    _link(tmp_path / "beside" / "x.png", BOTTLE / "test" / "broken_large" / "000.png")
    _link(tmp_path / "beside" / "x_GT.png", truth)
    with pytest.raises(ValueError, match=r"--defects .*beside: 1 of its images are the masks .*x_GT\.png"):
        folder_category(good, "bottle", tmp_path / "beside")
    refused = subprocess.run(
        [sys.executable, "-m", "ingest", "evaluate", "--data", str(tmp_path), "--defects", str(rejects)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode != 0 and "--defects and --masks go with --folder" in refused.stderr
    out = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "ingest", "evaluate", "--folder", str(good), "--category", "bottle", "--defects",
         str(rejects), "--masks", str(masks), "--backbone", "resnet18", "--weights", str(WEIGHTS), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "bottle" / "report.json").read_text())
    assert report["test_images"] == 5 and report["train_images"] + report["holdout_images"] == 8
    assert report["image_auroc"] == 1.0 and "left out: 1 without a ground-truth mask" in report["pixel_metrics"]


def test_magnetic_tiles_are_read_as_they_ship_with_a_fifth_of_the_good_tiles_held_out(tmp_path):
    """Magnetic Tile Defect: ``MT_<type>/Imgs/<stem>.jpg`` beside its ``<stem>.png`` mask, ``MT_Free`` the good
    tiles (their masks empty); no split of its own, so a seeded fifth of the good tiles is tested beside the
    defects, each type named by its folder and judged with its mask."""
    base = tmp_path / "Magnetic-tile-defect"
    for folder, sources in (("MT_Free", _bottle_images(10)), ("MT_Crack", _bottle_images(2, "test/broken_large"))):
        (base / folder / "Imgs").mkdir(parents=True)
        for index, source in enumerate(sources):
            stem = f"exp{index}_num_{100 + index}"
            Image.open(source).convert("L").resize((196, 196)).save(base / folder / "Imgs" / f"{stem}.jpg")
            truth = BOTTLE / "ground_truth" / "broken_large" / f"{source.stem}_mask.png"
            mask = Image.open(truth).resize((196, 196)) if folder == "MT_Crack" else Image.new("L", (196, 196), 0)
            mask.save(base / folder / "Imgs" / f"{stem}.png")
    assert mvtec_categories(tmp_path) == ["Magnetic-tile-defect"]
    category = mvtec_category(tmp_path, "Magnetic-tile-defect")
    assert len(category.train) == 8 and all(p.suffix == ".jpg" for p in category.train)
    assert [(s.defect, s.mask.name if s.mask else None) for s in category.test] == [
        ("good", None), ("good", None), ("crack", "exp0_num_100.png"), ("crack", "exp1_num_101.png")
    ]  # fmt: skip
    assert file_problems(category, Preprocess()) == []
    with pytest.raises(FileNotFoundError, match=r"give --data .* --category Magnetic-tile-defect"):
        mvtec_category(base, "Magnetic-tile-defect")
    out = tmp_path / "reports"
    _evaluate(tmp_path, out)
    report = json.loads((out / "Magnetic-tile-defect" / "report.json").read_text())
    assert report["test_images"] == 4 and report["per_defect_image_auroc"].keys() == {"crack"}


def test_a_category_fitted_against_rejects_is_judged_again_through_the_served_path(tmp_path, database_url):
    """``evaluate-served --folder GOOD --defects REJECTS`` rebuilds the fit's seeded split, so the stored model is
    judged on the same good parts it never saw and the same rejects: the exact figures are the fit's own."""
    good, rejects = tmp_path / "good", tmp_path / "rejects"
    for path in _bottle_images(10):
        _link(good / path.name, path)
    for path in _bottle_images(2, "test/broken_large"):
        _link(rejects / path.name, path)
    env = {**os.environ, "DATABASE_URL": database_url}
    folder = ["--folder", str(good), "--category", "widget", "--defects", str(rejects)]
    fitted = subprocess.run(
        [sys.executable, "-m", "ingest", "fit", *folder, "--backbone", "resnet18", "--weights", str(WEIGHTS),
         "--out", str(tmp_path / "fit")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    fit = json.loads((tmp_path / "fit" / "widget" / "report.json").read_text())
    served = subprocess.run(
        [sys.executable, "-m", "ingest", "evaluate-served", *folder, "--out", str(tmp_path / "served")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert served.returncode == 0, served.stderr[-3000:]
    exact = json.loads((tmp_path / "served" / "widget" / "served_report.json").read_text())["exact"]
    assert (exact["good_images"], exact["defective_images"]) == (fit["good_images"], fit["defective_images"]) == (2, 2)
    assert exact["false_alarms"] == fit["false_alarms"] and exact["image_auroc"] == fit["image_auroc"]
    assert exact["best_f1_threshold"] == pytest.approx(fit["best_f1_threshold"], rel=1e-6)  # the same good parts
    alone = subprocess.run(
        [sys.executable, "-m", "ingest", "evaluate-served", "--folder", str(good), "--category", "widget"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert alone.returncode != 0 and "--folder needs --defects here" in alone.stderr


def test_aitex_is_read_as_it_ships_a_category_per_fabric(tmp_path):
    """AITEX: ``NODefect_images/<roll>/nnnn_000_ff.png`` the good strips, ``Defect_images/nnnn_ddd_ff.png`` the
    defective ones, ``Mask_images/<stem>_mask.png`` (or ``_mask1``, ``_mask2`` united); each fabric code a category,
    a fifth of its good strips held out to test. Real ball-screw strips stand in for fabric."""
    ballscrew = SHARED / "datasets" / "non_square" / "bsdata_ballscrew"
    good = sorted((ballscrew / "train" / "good").glob("*.png"))
    defects = sorted((ballscrew / "test" / "defect").glob("*.png"))
    root = tmp_path / "AITEX"
    for index, path in enumerate(good[:12]):
        fabric = index % 2
        _link(root / "NODefect_images" / f"roll-{fabric}" / f"{index + 1:04d}_000_{fabric:02d}.png", path)
    masks = root / "Mask_images"
    masks.mkdir(parents=True)
    for index, path in enumerate(defects[:4]):
        stem = f"{100 + index:04d}_{(2, 6)[index % 2]:03d}_{index // 2:02d}"
        _link(root / "Defect_images" / f"{stem}.png", path)
        truth = np.asarray(Image.open(ballscrew / "ground_truth" / "defect" / f"{path.stem}_mask.png").convert("L"))
        if index == 0:  # two masks of one strip, each with a half of its defect
            half = truth.shape[1] // 2
            left, right = truth.copy(), truth.copy()
            left[:, half:], right[:, :half] = 0, 0
            Image.fromarray(left).save(masks / f"{stem}_mask1.png")
            Image.fromarray(right).save(masks / f"{stem}_mask2.png")
            whole = truth
        else:
            Image.fromarray(truth).save(masks / f"{stem}_mask.png")
    _link(root / "Defect_images" / "0200_025_08.png", defects[5])  # a fabric without good strips: no category
    assert mvtec_categories(root) == ["fabric_00", "fabric_01"]
    fabric = mvtec_category(root, "fabric_00")
    assert len(fabric.train) == 4 and all(p.stem.endswith("_00") for p in fabric.train)
    assert [s.defect for s in fabric.test] == ["good", "good", "defect_002", "defect_006"]
    assert {s.path.stem[-2:] for s in fabric.test} == {"00"} and {s.path for s in fabric.test}.isdisjoint(fabric.train)
    assert [s.path.name for s in fabric.test[2:]] == ["0100_002_00.png", "0101_006_00.png"]
    first = fabric.test[2].mask
    assert [p.name for p in first] == ["0100_002_00_mask1.png", "0100_002_00_mask2.png"]
    united = np.asarray(read_mask(first)) > 0
    assert united.sum() == (whole > 0).sum() > 0 and np.array_equal(united, whole > 0)
    assert mask_png(first).startswith(b"\x89PNG") and file_problems(fabric, Preprocess()) == []
    with pytest.raises(FileNotFoundError, match=r"AITEX; its fabrics \(categories\) are fabric_00, fabric_01"):
        mvtec_category(root, "fabric_08")
    with pytest.raises(FileNotFoundError, match=r"give --data .*AITEX --category fabric_00 or fabric_01"):
        mvtec_category(tmp_path, "AITEX")
    _link(root / "NODefect_images" / "roll-0" / "odd.png", good[12])
    with pytest.raises(ValueError, match=r"odd\.png: AITEX names its images nnnn_ddd_ff"):
        mvtec_category(root, "fabric_00")
    (root / "NODefect_images" / "roll-0" / "odd.png").unlink()
    out = tmp_path / "reports"
    _evaluate(root, out, "--category", "fabric_00")
    report = json.loads((out / "fabric_00" / "report.json").read_text())
    assert report["test_images"] == 4 and report["per_defect_image_auroc"].keys() == {"defect_002", "defect_006"}
    assert report["pixel_auroc"] is not None


def test_every_file_a_set_cannot_use_is_named_before_any_fit(tmp_path):
    """What would stop a fit halfway, or judge a defect against a wrong mask, is found from the files' headers at
    once, each file named with why: a strip too thin to inspect, a file that is no picture, a mask that is no
    picture, a mask folder whose masks differ in size (MVTec LOCO AD's layout), a mask of another shape."""
    part = tmp_path / "part"
    for path in _bottle_images(3):
        _link(part / "train" / "good" / path.name, path)
    Image.new("RGB", (700, 10)).save(part / "train" / "good" / "strip.png")  # 70:1
    (part / "train" / "good" / "notes.png").write_text("not a picture")
    defects, truth = part / "test" / "broken_large", part / "ground_truth" / "broken_large"
    for stem in ("000", "001", "002"):
        _link(defects / f"{stem}.png", BOTTLE / "test" / "broken_large" / f"{stem}.png")
    truth.mkdir(parents=True)
    (truth / "000_mask.png").write_text("not a mask")
    for name, side in (("000.png", 900), ("001.png", 450)):  # one defect's masks, one a file, at two sizes
        (truth / "001").mkdir(exist_ok=True)
        Image.new("L", (side, side)).save(truth / "001" / name)
    Image.new("L", (300, 100)).save(truth / "002_mask.png")

    problems = file_problems(mvtec_category(tmp_path, "part"), Preprocess())
    assert len(problems) == 5, problems
    said = "\n".join(problems)
    assert f"{part / 'train' / 'good' / 'strip.png'}: a 700x10 image has an aspect ratio of 70:1" in said
    assert f"{part / 'train' / 'good' / 'notes.png'}: not a recognised image" in said
    assert f"{truth / '000_mask.png'}: not a readable mask" in said
    assert "its masks differ in size (000.png 900x900, 001.png 450x450)" in said
    assert f"{truth / '002_mask.png'}: the mask is 300x100, its image 900x900: not the image's shape" in said
