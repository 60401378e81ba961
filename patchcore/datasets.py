"""Where the images are: the MVTec AD layout as the public sets vary it, or a plain folder of good images.

Read as they come, each by what it is rather than by its name: MVTec AD, MPDD and VisA as anomalib prepares it
(``train/good``, ``test/<type>``, ``ground_truth/<type>``); BTAD (good parts in ``ok`` folders); MVTec AD 2 (the
labelled test split is ``test_public``, its masks beneath it); MVTec 3D-AD (each folder's pictures in ``rgb/``, their
masks in ``gt/``); MVTec LOCO AD (a folder of masks per image, one per defect region, united); the good images of a
``validation`` split beside ``train`` (those three sets) fitted as good images too; VisA as it ships
(``<category>/Data/Images/{Normal,Anomaly}``, its split in ``split_csv/1cls.csv`` beside the categories);
KolektorSDD2 as it ships (``train/`` and ``test/`` holding each image beside its ``<stem>_GT`` mask, which says
whether it is good); KolektorSDD as it ships (a folder per part, ``kos01/Part0.jpg`` beside ``Part0_label.bmp``,
split by holding parts out); DAGM 2007 as it ships (``Class<k>/{Train,Test}/<stem>.PNG``, a defective image's
mask in its split's ``Label/<stem>_label.PNG``); Magnetic Tile Defect as it ships (``MT_<type>/Imgs/<stem>.jpg``
beside its ``<stem>.png`` mask, ``MT_Free`` good, split by holding good tiles out); Real-IAD as it ships
(``realiad_<resolution>/<category>/{OK,NG}/...``, split by ``<protocol>/<category>.json`` beside the resolution
folders, or one level down in ``realiad_jsons/`` where its archive of split files was unpacked into a folder of that
name: ``realiad_jsons`` (multi-view, the default), ``realiad_jsons_sv`` (single view), ``realiad_jsons_fuiad_<noise>``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from patchcore.images import image_files_in, read_mask

GOOD = "good"  # the defect type of every good image, whatever its folder is called
GOOD_FOLDERS = ("good", "ok")  # MVTec AD and most sets; BTAD
TEST_FOLDERS = ("test", "test_public")  # MVTec AD 2 publishes its labelled test split as test_public
GROUND_TRUTH = "ground_truth"
VALIDATION = "validation"  # MVTec AD 2, MVTec 3D-AD, MVTec LOCO AD: good images the set keeps for validation
PICTURES, MASKS_BESIDE = "rgb", "gt"  # MVTec 3D-AD: <folder>/rgb/<stem>.png, <folder>/gt/<stem>.png (xyz/ beside)
VISA_SPLIT = Path("split_csv") / "1cls.csv"  # VisA: object, split, label, image, mask per image, paths from the root
VISA_IMAGES = Path("Data") / "Images"  # VisA: <category>/Data/Images/{Normal,Anomaly}
VISA_DEFECT = "anomaly"  # VisA's label of a defective image (the one-class split names no defect types)
PAIRED_MASK, PAIRED_DEFECT = "_GT", "defect"  # KolektorSDD2: <split>/<stem>.png beside <stem>_GT.png; its one type
REALIAD_SAMPLE = re.compile(r"([a-zA-Z][a-zA-Z0-9_]*_[0-9]{4}_[A-Z][A-Z_]*[A-Z])_C[0-9]_")  # a sample's key
KOLEKTOR_MASK = "_label"  # KolektorSDD: <part>/<stem>.jpg beside <stem>_label.bmp, a folder per physical part
DAGM_SPLITS, DAGM_LABELS = ("Train", "Test"), "Label"  # DAGM 2007: Class<k>/{Train,Test}/<stem>.PNG, and in each
# split's Label/ folder a <stem>_label.PNG mask for every defective image (and Labels.txt, not needed)
TEST_SHARE = 0.2  # a set without a split (KolektorSDD, MTD, good parts beside rejects): the share held out to test
MTD_PREFIX, MTD_GOOD, MTD_IMAGES = "MT_", "MT_Free", "Imgs"  # Magnetic Tile Defect: MT_<type>/Imgs/<stem>.jpg beside
# its <stem>.png mask, MT_Free the good tiles
REALIAD_PREFIX = "realiad_"  # Real-IAD's image folders: realiad_256, realiad_512, realiad_1024, realiad_raw
REALIAD_JSONS = "realiad_jsons"  # beside them, its split files: a folder per protocol of <category>.json (meta,
# train, test): realiad_jsons (multi-view, the default), realiad_jsons_sv, realiad_jsons_fuiad_0.0 ... _0.4; its
# archive realiad_jsons.zip holds those folders, so they may also lie one level down, in realiad_jsons/


def image_files(folder: Path) -> list[Path]:
    """Image files of a folder, sorted, so fits are reproducible."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    return image_files_in(folder)


def pictures(folder: Path) -> list[Path]:
    """The pictures of a split's folder: its own images, or, where it has none, those of its ``rgb`` subfolder."""
    files = image_files(folder)
    if not files and (folder / PICTURES).is_dir():
        return image_files(folder / PICTURES)
    return files


def good_folder(split: Path) -> Path | None:
    """The folder of good images in a split (``train`` or the test split), by either name."""
    return next((split / name for name in GOOD_FOLDERS if (split / name).is_dir()), None)


@dataclass(frozen=True)
class Sample:
    """One labelled test image: its defect type (``good`` for normal) and its ground-truth mask, when the dataset
    has one (a split labelled per image only has none: its pixel metrics are absent, not an error). ``part``: the
    part it is one view of, where a set photographs each part several times (Real-IAD's samples, KolektorSDD's
    folders)."""

    path: Path
    defect: str
    mask: Path | None
    part: str | None = None

    @property
    def is_anomalous(self) -> bool:
        return self.defect != GOOD


@dataclass(frozen=True)
class Category:
    """A product: good training images, and a labelled test split when the dataset has one. ``left_out``: images of
    the training split that are not good (their masks mark a defect), kept out of the fit and said so; ``excluded``:
    training images the user named as not good (:func:`excluding`), kept out the same way. ``parts``: the part a
    training image is one view of, where the set says (as ``Sample.part``): the fit deals its hold-out and folds by
    part (:func:`patchcore.model.fit`). ``copies``: images left out because another image of the category has the
    same bytes (:func:`distinct`), each with the image it copies. ``validation``: the good images of the set's
    validation split, fitted with the training ones (they are good parts the service should learn from, and the
    threshold is set from every good image's score as unseen, so it needs no split of its own)."""

    name: str
    train: list[Path]
    test: list[Sample]
    left_out: list[Path] = field(default_factory=list)
    excluded: list[Path] = field(default_factory=list)
    parts: dict[Path, str] = field(default_factory=dict)
    copies: dict[Path, Path] = field(default_factory=dict)
    validation: list[Path] = field(default_factory=list)


def excluding(categories: list[Category], names: list[str]) -> list[Category]:
    """``categories`` with the training images ``names`` left out: a defect found among the good images (the fit
    names the good images that score highest) is refitted without, the dataset's folder untouched. A name is a file
    name or the end of a path (``S0001/0003.png``), matched whole from a ``/``. Refused: a name that matches no
    training image (a typo would otherwise fit with the defect still in), or several of one category (say more of
    its path)."""
    if not names:
        return categories
    found: dict[str, int] = dict.fromkeys(names, 0)
    narrowed = []
    for category in categories:
        dropped: set[Path] = set()
        for name in names:
            ending = "/" + name.strip("/")
            hits = [p for p in category.train if ("/" + p.as_posix()).endswith(ending)]
            if len(hits) > 1:
                raise ValueError(
                    f"--exclude {name} names {len(hits)} training images of {category.name} ({hits[0]}, {hits[1]}"
                    f"{', ...' if len(hits) > 2 else ''}); give more of its path"
                )
            found[name] += len(hits)
            dropped.update(hits)
        train = [p for p in category.train if p not in dropped]
        narrowed.append(replace(category, train=train, excluded=[p for p in category.train if p in dropped]))
    missing = [name for name, count in found.items() if count == 0]
    if missing:
        raise ValueError(
            f"--exclude {', '.join(missing)}: no training image of {', '.join(c.name for c in categories)} is named so"
        )
    return narrowed


def parted(categories: list[Category], pattern: str | None) -> list[Category]:
    """``categories`` with the part of every image named by ``pattern``, a regular expression searched in each file's
    name: its first group (or, without groups, what it matches) is the part the image is one view of. A set of one
    part photographed several times, from several cameras or cut into tiles, whose files say which part they show
    but whose layout does not (``part0007_cam2.png``: ``--part '^(part\\d+)_'``): the fit then holds out and
    cross-fits whole parts, as it does where a set names them (Real-IAD, KolektorSDD), and the evaluation judges
    parts too; it replaces a set's own names. Refused: a pattern that does not compile, and one that some image's
    name does not match (a part guessed for it would be a silent choice), each naming the first such image."""
    if pattern is None:
        return categories
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"--part '{pattern}' is not a regular expression: {exc}") from exc

    def part_of(path: Path) -> str:
        found = compiled.search(path.name)
        if found is None:
            raise ValueError(f"--part '{pattern}' does not match {path.name} ({path.parent}): every image needs a part")
        return found.group(1) if compiled.groups else found.group(0)

    return [
        replace(
            category,
            parts={path: part_of(path) for path in category.train},
            test=[replace(sample, part=part_of(sample.path)) for sample in category.test],
        )
        for category in categories
    ]


HEAD_BYTES = 1 << 16  # what is read of a file first to tell it from another of its size


def _digest(path: Path, head: bool) -> bytes:
    with path.open("rb") as file:
        return hashlib.sha256(file.read(HEAD_BYTES)).digest() if head else hashlib.file_digest(file, "sha256").digest()


def _alike(paths: list[Path]) -> list[list[Path]]:
    """The groups of ``paths`` (two or more each, in their order) that hold the same bytes. Files are told apart by
    their size, then by the digest of their first :data:`HEAD_BYTES`, and only those still alike are read whole: a
    set's images rarely share a size unless stored uncompressed, and then their first rows tell two pictures apart,
    so a set is read once more only where it holds copies."""
    groups = [paths]
    for key in (lambda path: path.stat().st_size, lambda path: _digest(path, True), lambda path: _digest(path, False)):
        alike: list[list[Path]] = []
        for group in groups:
            keyed: dict[object, list[Path]] = {}
            for path in group:
                keyed.setdefault(key(path), []).append(path)
            alike += [same for same in keyed.values() if len(same) > 1]
        groups = alike
    return groups


def distinct(category: Category) -> Category:
    """``category`` with one image of each picture: of files with the same bytes only one is kept, and each other is
    named in ``copies`` with the one kept. Two files of the same bytes are one picture of one part. A training copy
    would be fitted twice, and dealt to another fold its patches cover its twin's look in that fold's bank, so the
    twin's cross-fitted score says nothing of how a new part scores and pulls the threshold down; a test image that is a
    training image is no part the model has never seen, so its verdict would flatter the evaluation. Kept: the first
    (training images first, in their order, then the test split), unless the set marks one of the files defective
    (a test image of a defect type): then that one, and its good twins leave the training images and the good test
    images, as a defect among the good images would (the set's own label is the evidence; learnt as good, it would
    teach the model that defect). The service's own paths already keep one of equal files (a fit job's uploads,
    added normals: by sha256); a fit from files now does too (:func:`_alike` says which files it reads)."""
    defective = {sample.path for sample in category.test if sample.is_anomalous}
    copies: dict[Path, Path] = {}
    for group in _alike(list(dict.fromkeys([*category.train, *(sample.path for sample in category.test)]))):
        kept = next((path for path in group if path in defective), group[0])
        copies.update((path, kept) for path in group if path != kept)
    if not copies:
        return category
    return replace(
        category,
        train=[path for path in category.train if path not in copies],
        test=[sample for sample in category.test if sample.path not in copies],
        parts={path: part for path, part in category.parts.items() if path not in copies},
        copies=copies,
    )


def not_found(root: Path, realiad_split: str = REALIAD_JSONS) -> str:
    """What is under a dataset root that holds no such category, said so that the fix is plain: the categories
    there, or, when the root is itself a category (a common slip), the ``--data`` and ``--category`` to give."""
    splits = _realiad_folder(root.parent.parent, realiad_split) if root.parent.name.startswith(REALIAD_PREFIX) else None
    realiad = splits is not None and (splits / f"{root.name}.json").is_file()
    if root.is_dir() and (good_folder(root / "train") or (root / VISA_IMAGES).is_dir() or _paired(root / "train")
                          or realiad or _kolektor_parts(root) or _dagm(root) or _mtd(root)):  # fmt: skip
        return f"{root} is itself a category; give --data {root.parent} --category {root.name}"
    if (root / REALIAD_JSONS).is_dir():
        return f"{root} is Real-IAD: give --data {root}/<one of its image folders: {_image_folders(root)}>"
    if _is_split_folder(root.name) and any(root.glob("*.json")):
        real_iad = root.parent.parent if root.parent.name == REALIAD_JSONS else root.parent
        return (
            f"{root} holds Real-IAD's split files; give --data {real_iad}/<one of its image folders: "
            f"{_image_folders(real_iad)}> --real-iad-split {root.name}"
        )
    found = ", ".join(mvtec_categories(root, realiad_split)) if root.is_dir() else ""
    layouts = (
        f"a category is a folder holding train/good, or train/ of images beside their {PAIRED_MASK} masks "
        f"(KolektorSDD2), or folders of images beside their {KOLEKTOR_MASK} masks (KolektorSDD), or "
        f"{'/'.join(DAGM_SPLITS)} each with a {DAGM_LABELS} folder of masks (DAGM 2007), or {MTD_GOOD}/{MTD_IMAGES} "
        f"beside {MTD_PREFIX}<type>/{MTD_IMAGES} (Magnetic Tile Defect), or VisA's "
        f"{VISA_IMAGES} with {VISA_SPLIT} in the root, or, under a Real-IAD "
        f"{REALIAD_PREFIX}<resolution> folder, one that ../{realiad_split}/<category>.json splits"
    )
    return f"categories found under {root}: {found or f'none ({layouts})'}"


def mvtec_categories(root: Path, realiad_split: str = REALIAD_JSONS) -> list[str]:
    """Category names under a dataset root: folders holding ``train/good`` (or ``train/ok``) or KolektorSDD2's
    ``train/`` of images and masks, VisA's objects that its split names, and the categories of Real-IAD's
    ``realiad_split`` protocol."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    found = {
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and (good_folder(p / "train") or _paired(p / "train") or _kolektor_parts(p) or _dagm(p) or _mtd(p))
    }
    found |= {name for name in _visa_rows(root) if (root / name / VISA_IMAGES).is_dir()}
    splits = _realiad_splits(root, realiad_split)
    return sorted(found | {split.stem for split in splits if (root / split.stem).is_dir()})


def _within(named: str, source: Path, root: Path) -> PurePosixPath:
    """A path that a split file names, refused when it would lead outside the set: absolute, or through ``..``."""
    path = PurePosixPath(named)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{source} names {named!r}, outside {root}: only paths within it are read")
    return path


def _refuse_missing(paths: list[Path], source: Path, name: str) -> None:
    """Name the files a split names that are not there, and how many: nothing is left out unsaid."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} files that {source} names for {name} are missing: {missing[0]}")


def _visa_rows(root: Path) -> dict[str, list[dict[str, str]]]:
    """The rows of VisA's one-class split under ``root`` by object (none when it is not there)."""
    split = root / VISA_SPLIT
    if not split.is_file():
        return {}
    rows: dict[str, list[dict[str, str]]] = {}
    with split.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        lacking = {"object", "split", "label", "image"} - {name.strip() for name in reader.fieldnames or []}
        if lacking:
            raise ValueError(
                f"{split} has no column {', '.join(sorted(lacking))} (VisA's: object,split,label,image,mask)"
            )
        for row in reader:
            row = {key.strip(): (value or "").strip() for key, value in row.items() if key}
            for column in ("image", "mask"):
                _within(row.get(column) or ".", split, root)
            rows.setdefault(row["object"], []).append(row)
    return rows


def visa_category(root: Path, name: str, rows: list[dict[str, str]]) -> Category:
    """A VisA category by its split's ``rows``: training images, and the test split labelled ``normal`` or
    ``anomaly`` with its masks (label numbers: any pixel not zero is a defect). A file the split names that is not
    there is named, with how many are missing: nothing is left out unsaid."""
    train = sorted(root / row["image"] for row in rows if row["split"] == "train" and row["label"] == "normal")
    defective = [row["image"] for row in rows if row["split"] == "train" and row["label"] != "normal"]
    if defective:
        raise ValueError(f"{root / VISA_SPLIT} puts {len(defective)} images not labelled normal in {name}'s "
                         f"training split, as {defective[0]}: a fit learns from good images only")  # fmt: skip
    test = [
        Sample(root / row["image"], GOOD if row["label"] == "normal" else VISA_DEFECT,
               root / row["mask"] if row.get("mask") else None)
        for row in rows if row["split"] == "test"
    ]  # fmt: skip
    _refuse_missing([*train, *(s.path for s in test), *(s.mask for s in test if s.mask)], root / VISA_SPLIT, name)
    return Category(name, train, test)


def _is_split_folder(name: str) -> bool:
    return name.startswith(REALIAD_JSONS)


def _image_folders(real_iad: Path) -> str:
    folders = [p.name for p in real_iad.glob(f"{REALIAD_PREFIX}*") if p.is_dir() and not _is_split_folder(p.name)]
    return ", ".join(sorted(folders)) or "none found"


def _realiad_folder(parent: Path, split: str) -> Path | None:
    """The folder of Real-IAD's ``split`` protocol beside its image folders in ``parent``: ``parent/<split>`` as
    the set's own instructions unpack it, or ``parent/realiad_jsons/<split>`` where its archive of split files was
    unpacked into a folder of its name; whichever holds split files."""
    for folder in (parent / split, parent / REALIAD_JSONS / split):
        if folder.is_dir() and any(folder.glob("*.json")):
            return folder
    return None


def _realiad_splits(root: Path, split: str = REALIAD_JSONS) -> list[Path]:
    """Real-IAD's split files of protocol ``split`` when ``root`` is one of its image folders (``realiad_1024``...),
    else none. A protocol other than the default that is not there is refused, naming the ones that are."""
    if not root.name.startswith(REALIAD_PREFIX) or _is_split_folder(root.name):
        if split != REALIAD_JSONS:
            raise FileNotFoundError(f"--real-iad-split {split}: {root} is not one of Real-IAD's image folders")
        return []
    folder = _realiad_folder(root.parent, split)
    if folder is None and split != REALIAD_JSONS:
        there = sorted(
            {p.name for base in (root.parent, root.parent / REALIAD_JSONS) if base.is_dir() for p in base.iterdir()
             if _is_split_folder(p.name) and _realiad_folder(p.parent, p.name) == p}
        )  # fmt: skip
        raise FileNotFoundError(
            f"Real-IAD's protocol {split} is not beside {root} (its split files: {', '.join(there) or 'none found'})"
        )
    return sorted(folder.glob("*.json")) if folder is not None else []


def _realiad_split_of(root: Path, name: str, split: str) -> Path:
    """The split file of category ``name`` in Real-IAD's ``split`` protocol, or why there is none."""
    for path in _realiad_splits(root, split):
        if path.stem == name:
            return path
    raise FileNotFoundError(f"Real-IAD's protocol {split} has no category {name} ({not_found(root, split)})")


def _realiad_part(image: str) -> str:
    """The sample (part) an image of Real-IAD shows, by the key the set's own evaluation groups its five views with
    (ADEval's ``--sample_key_pat``: ``audiojack_0030_NG_AK`` of ``audiojack_0030_NG_AK_C1_<time>.jpg``); the
    image's folder where a file is named otherwise."""
    found = REALIAD_SAMPLE.match(PurePosixPath(image).name)
    return found.group(1) if found else PurePosixPath(image).parent.as_posix()


def realiad_category(root: Path, name: str, split: Path) -> Category:
    """A Real-IAD category by its split file: the training images of the normal class (any other, as the noisy
    protocols ``realiad_jsons_fuiad_<noise>`` put there, left out of the fit and said so), and the test split
    labelled by each image's class (the set's defect codes: AK, BX, ...) with its mask. Paths in the file are read
    below ``root/<meta.prefix>`` (the category's folder), as the set's own loaders read them."""
    try:
        data = json.loads(split.read_text(encoding="utf-8"))
        meta = data.get("meta") or {}
        normal, base = str(meta.get("normal_class", "OK")), root / str(meta.get("prefix", name))
        entries = {
            part: [(e["image_path"], str(e["anomaly_class"]), e.get("mask_path")) for e in data[part]]
            for part in ("train", "test")
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{split} is not a Real-IAD split (meta, and train and test lists of image_path, anomaly_class and "
            f"mask_path): {type(exc).__name__}: {exc}"
        ) from exc
    training = [(base / _within(image, split, base), kind, _realiad_part(image)) for image, kind, _ in entries["train"]]
    parts = {path: part for path, kind, part in training if kind == normal}
    train = sorted(parts)
    left_out = sorted(path for path, kind, _ in training if kind != normal)
    test = [
        Sample(base / _within(image, split, base), GOOD if kind == normal else kind,
               base / _within(mask, split, base) if mask and kind != normal else None, _realiad_part(image))
        for image, kind, mask in entries["test"]
    ]  # fmt: skip
    _refuse_missing([*train, *(s.path for s in test), *(s.mask for s in test if s.mask)], split, name)
    return Category(name, train, test, left_out, parts=parts)


def _paired(folder: Path, suffix: str = PAIRED_MASK) -> dict[Path, Path]:
    """The images of a folder, each with its ``<stem><suffix>`` mask (KolektorSDD2's ``_GT``, KolektorSDD's
    ``_label``); none when the folder holds no such mask (another layout). An image without its mask is named:
    which of the two it is cannot be told."""
    if not folder.is_dir() or good_folder(folder):
        return {}
    files = image_files(folder)
    masks = {p.stem.removesuffix(suffix): p for p in files if p.stem.endswith(suffix)}
    if not masks:
        return {}
    images = [p for p in files if not p.stem.endswith(suffix)]
    lacking = [p for p in images if p.stem not in masks]
    if lacking:
        raise FileNotFoundError(f"{folder}: {len(lacking)} images without their {suffix} mask, as {lacking[0].name}")
    return {image: masks[image.stem] for image in images}


def _kolektor_parts(base: Path) -> dict[str, dict[Path, Path]]:
    """KolektorSDD's parts: a folder per physical part (``kos01``...) of its images beside their ``_label`` masks;
    none where ``base`` is not laid out so."""
    if not base.is_dir() or (base / "train").is_dir():
        return {}
    parts = {folder.name: _paired(folder, KOLEKTOR_MASK) for folder in sorted(base.iterdir()) if folder.is_dir()}
    return {name: images for name, images in parts.items() if images}


def kolektor_category(base: Path, name: str) -> Category:
    """A KolektorSDD category, which ships without a split: a seeded ``TEST_SHARE`` of its parts is held
    out whole for the test split (parts never seen, every view, good or not), and the good images of the others are
    fitted; their defective images (a mask that marks a defect) are tested too, never fitted. Each test image names
    its part, so the report judges the parts as a line does (``parts``)."""
    parts = _kolektor_parts(base)
    names = sorted(parts)
    held = {names[i] for i in np.random.default_rng(0).permutation(len(names))[: math.ceil(len(names) * TEST_SHARE)]}
    train: dict[Path, str] = {}
    test: list[Sample] = []
    for part in names:
        for image, mask in parts[part].items():
            defective = _marks_a_defect(mask)
            if defective or part in held:
                test.append(Sample(image, PAIRED_DEFECT if defective else GOOD, mask if defective else None, part))
            else:
                train[image] = part
    return Category(name, list(train), test, parts=train)


def paired_category(base: Path, name: str) -> Category:
    """A KolektorSDD2 category: the good images of ``train/`` (masks all zero) to fit, those whose masks mark a
    defect left out (and counted), and ``test/`` labelled by its masks."""
    train: list[Path] = []
    left_out: list[Path] = []
    for image, mask in _paired(base / "train").items():
        (left_out if _marks_a_defect(mask) else train).append(image)
    test = [
        Sample(image, PAIRED_DEFECT, mask) if _marks_a_defect(mask) else Sample(image, GOOD, None)
        for image, mask in _paired(base / "test").items()
    ]
    return Category(name, train, test, left_out)


def _dagm(base: Path) -> bool:
    return all((base / split / DAGM_LABELS).is_dir() for split in DAGM_SPLITS)


def _dagm_split(folder: Path) -> tuple[list[Path], dict[Path, Path]]:
    """(the good images, each defective image with its mask) of a DAGM 2007 split: an image is defective where its
    ``Label`` folder holds its ``<stem>_label`` mask (as the set's own readers take it). A mask of no image is named:
    a renamed or missing image would otherwise count as good."""
    masks = {
        path.stem.removesuffix(KOLEKTOR_MASK): path
        for path in image_files(folder / DAGM_LABELS)
        if path.stem.endswith(KOLEKTOR_MASK)
    }
    images = image_files(folder)
    orphans = sorted(set(masks) - {path.stem for path in images})
    if orphans:
        raise FileNotFoundError(
            f"{folder / DAGM_LABELS}: {len(orphans)} masks of no image in {folder}, as {masks[orphans[0]].name}"
        )
    return [path for path in images if path.stem not in masks], {p: masks[p.stem] for p in images if p.stem in masks}


def dagm_category(base: Path, name: str) -> Category:
    """A DAGM 2007 class as it ships (``--data DAGM2007 --category Class1``): the good images of ``Train`` to fit,
    its defective ones left out (and counted, as KolektorSDD2's), and ``Test`` labelled by its masks, one type."""
    train, left_out = _dagm_split(base / DAGM_SPLITS[0])
    good, defective = _dagm_split(base / DAGM_SPLITS[1])
    test = [Sample(path, GOOD, None) for path in good] + [
        Sample(path, PAIRED_DEFECT, mask) for path, mask in defective.items()
    ]
    return Category(name, train, sorted(test, key=lambda sample: sample.path), list(left_out))


def _mtd(base: Path) -> bool:
    return (base / MTD_GOOD / MTD_IMAGES).is_dir()


def _mtd_images(folder: Path) -> dict[Path, Path | None]:
    """The pictures of one Magnetic Tile Defect folder, each with its mask: a ``.png`` of the picture's stem beside
    it (the pictures are ``.jpg``); a ``.png`` of no other file's stem is a picture without a mask."""
    files = image_files(folder)
    pictures = [path for path in files if path.suffix.lower() != ".png"]
    stems = {path.stem for path in pictures}
    masks = {path.stem: path for path in files if path.suffix.lower() == ".png" and path.stem in stems}
    unmasked = [path for path in files if path.suffix.lower() == ".png" and path.stem not in stems]
    return dict(sorted(({path: masks.get(path.stem) for path in pictures} | dict.fromkeys(unmasked)).items()))


def mtd_category(base: Path, name: str) -> Category:
    """The Magnetic Tile Defect set as it ships (``--data PARENT --category Magnetic-tile-defect``): the tiles of
    ``MT_Free`` are the good parts, each other ``MT_<type>`` a defect type (``blowhole``, ``crack``...) with its masks
    beside its pictures; it has no split, so a seeded ``TEST_SHARE`` of the good tiles is held out to test
    (:func:`holding_out`)."""
    good = list(_mtd_images(base / MTD_GOOD / MTD_IMAGES))
    test = [
        Sample(path, folder.name.removeprefix(MTD_PREFIX).lower(), mask)
        for folder in sorted(base.glob(f"{MTD_PREFIX}*"))
        if folder.name != MTD_GOOD and (folder / MTD_IMAGES).is_dir()
        for path, mask in _mtd_images(folder / MTD_IMAGES).items()
    ]
    return holding_out(Category(name, good, test))


def _marks_a_defect(mask: Path) -> bool:
    return bool(np.asarray(read_mask(mask)).any())


def mask_files(folder: Path) -> dict[str, Path]:
    """The masks of one defect type by image stem: ``<stem>_mask.<ext>`` (MVTec AD, MPDD) or ``<stem>.<ext>`` (VisA as
    anomalib prepares it, BTAD, MVTec 3D-AD), any image format, or a folder ``<stem>/`` of masks to unite (MVTec
    LOCO AD); where one stem has several, ``_mask`` wins, then the plain file."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {p.name: p for p in sorted(folder.iterdir()) if p.is_dir()}
    files = image_files(folder)
    found.update({p.stem: p for p in reversed(files)})
    found.update({p.stem.removesuffix("_mask"): p for p in reversed(files) if p.stem.endswith("_mask")})
    return found


def _test_split(base: Path) -> list[Sample]:
    test_root = next((base / name for name in TEST_FOLDERS if (base / name).is_dir()), None)
    if test_root is None:
        return []
    good = good_folder(test_root)
    test: list[Sample] = []
    for folder in sorted(p for p in test_root.iterdir() if p.is_dir() and p.name != GROUND_TRUTH):
        files = pictures(folder)
        if folder == good:
            test.extend(Sample(path, GOOD, None) for path in files)
            continue
        masks: dict[str, Path] = {}
        for where in (base / GROUND_TRUTH / folder.name, test_root / GROUND_TRUTH / folder.name, folder / MASKS_BESIDE):
            masks = masks or mask_files(where)
        test.extend(Sample(path, folder.name, masks.get(path.stem)) for path in files)
    return test


def mvtec_category(root: Path, name: str, realiad_split: str = REALIAD_JSONS) -> Category:
    """``ROOT/<name>/train/good`` (and ``validation/good`` where the set has one), ``test/<type>``,
    ``ground_truth/<type>/<stem>_mask.<ext>``, and the variants of the module's docstring (VisA:
    :func:`visa_category`; Real-IAD by its ``realiad_split`` protocol)."""
    base = root / name
    if realiad_split != REALIAD_JSONS:  # a protocol named: only Real-IAD has one, so it is read as Real-IAD
        return realiad_category(root, name, _realiad_split_of(root, name, realiad_split))
    train = good_folder(base / "train")
    if train is None:
        if _paired(base / "train"):
            return paired_category(base, name)
        if _kolektor_parts(base):
            return kolektor_category(base, name)
        if _dagm(base):
            return dagm_category(base, name)
        if (base / MTD_GOOD / MTD_IMAGES).is_dir():
            return mtd_category(base, name)
        visa = _visa_rows(root).get(name)
        if visa and (base / VISA_IMAGES).is_dir():
            return visa_category(root, name, visa)
        realiad = [split for split in _realiad_splits(root) if split.stem == name]
        if realiad:
            return realiad_category(root, name, realiad[0])
        raise FileNotFoundError(f"{base / 'train' / GOOD} does not exist ({not_found(root, realiad_split)})")
    validation = good_folder(base / VALIDATION)
    held = pictures(validation) if validation is not None else []
    return Category(name, pictures(train) + held, _test_split(base), validation=held)


MASK_SUFFIXES = ("_mask", PAIRED_MASK, KOLEKTOR_MASK)  # how the sets name a mask after its image's stem
FOLDER_ADVICE = (
    "keep the masks in a folder of their own (--masks, for rejects), or give a set that ships so as --data "
    "(KolektorSDD, KolektorSDD2)"
)


def unmixed(what: str, files: list[Path], advice: str = FOLDER_ADVICE) -> list[Path]:
    """``files``, refused where some of them are the masks of images beside them (``<stem>_mask``, ``_GT``,
    ``_label`` beside ``<stem>``): a folder of good images or of rejects (or a fit job's uploads) read as it is would
    take each mask for a part, a black picture with a white blot, fitted as good or judged as a defect. ``what``
    names the files in the refusal, ``advice`` says what to do instead."""
    stems = {(path.parent, path.stem) for path in files}
    found = [
        p
        for p in files
        for end in MASK_SUFFIXES
        if p.stem.endswith(end) and (p.parent, p.stem.removesuffix(end)) in stems
    ]
    if found:
        raise ValueError(
            f"{what}: {len(found)} of its images are the masks of images beside them (as {found[0]}); {advice}"
        )
    return files


def folder_category(folder: Path, name: str, defects: Path | None = None, masks: Path | None = None) -> Category:
    """A plain folder of good images: training only, no evaluation; with ``defects``, a folder of defective images
    (or of a folder of them per defect type), those as a test split, each with its mask by stem from ``masks`` (the
    image's stem, or ``<stem>_mask``; in ``masks/<type>/`` where the types have folders of their own), the good test
    parts still to be held out (:func:`holding_out`). What a factory has at hand: its good parts and its rejects."""
    if defects is None and masks is not None:
        raise ValueError("--masks goes with --defects: the masks of which defective images?")
    good = unmixed(f"--folder {folder}", image_files(folder))
    if defects is None:
        return Category(name, good, [])
    folders = [sub for sub in sorted(defects.iterdir()) if sub.is_dir() and sub.name != GROUND_TRUTH]
    types = [(defects.name, defects)] + [(sub.name, sub) for sub in folders if masks is None or sub != masks]
    test: list[Sample] = []
    for kind, where in types:
        files = unmixed(f"--defects {where}", image_files(where))
        if kind == GOOD and files:
            raise ValueError(f"{where}: a defect type named {GOOD!r} would read its images as good parts")
        found = {} if masks is None else mask_files(masks / kind if (masks / kind).is_dir() else masks)
        test.extend(Sample(path, kind, found.get(path.stem)) for path in files)
    if not test:
        raise FileNotFoundError(f"--defects {defects}: no image in it nor in a folder of it")
    return Category(name, good, test)


def folder_set(
    folder: Path,
    name: str,
    defects: Path | None = None,
    masks: Path | None = None,
    exclude: Sequence[str] = (),
    part: str | None = None,
) -> Category:
    """A plain folder of good images as every command reads it (:func:`folder_category`, less the ``exclude``d
    images, parts by the ``part`` pattern), with its good test parts held out where ``defects`` gives a test split:
    the same split for the fit and for a later evaluation of the stored model, both seeded. Copies (the same
    bytes, :func:`distinct`) are left out before the good test parts are held out."""
    category = distinct(parted(excluding([folder_category(folder, name, defects, masks)], list(exclude)), part)[0])
    return holding_out(category) if defects is not None else category


def holding_out(category: Category, share: float = TEST_SHARE) -> Category:
    """``category`` with a seeded ``share`` of its good training parts (every view of one, :attr:`Category.parts`;
    each image its own where none are named) moved to its test split as good parts, so that its defects are judged
    beside good parts the fit has never seen (a set shipped without a split, as anomalib's folder sets, which hold out
    20% too). At least one part is held out, and at least two stay to fit."""
    part_of = [category.parts.get(path, str(path)) for path in category.train]
    names = list(dict.fromkeys(part_of))
    count = min(max(1, math.ceil(len(names) * share)), len(names) - 2)
    if count < 1:
        raise ValueError(f"{category.name}: {len(names)} good parts are too few to hold one out for the test split")
    held = {names[i] for i in np.random.default_rng(0).permutation(len(names))[:count]}
    moved = [part in held for part in part_of]
    good = [
        Sample(path, GOOD, None, category.parts.get(path))
        for path, out in zip(category.train, moved, strict=True)
        if out
    ]
    train = [path for path, out in zip(category.train, moved, strict=True) if not out]
    kept = set(train)
    parts = {path: part for path, part in category.parts.items() if path in kept}
    return replace(category, train=train, test=good + category.test, parts=parts)
