"""The MVTec AD layout as the public sets vary it, and the reader of a ``--data`` root that tells each set by what it
holds rather than by its name (the sets that ship otherwise have a module each).

MVTec AD, MPDD and VisA as anomalib prepares it (``train/good``, ``test/<type>``, ``ground_truth/<type>``); BTAD
(good parts in ``ok`` folders); MVTec AD 2 (the labelled test split is ``test_public``, its masks beneath it);
MVTec 3D-AD (each folder's pictures in ``rgb/``, their masks in ``gt/``); MVTec LOCO AD (a folder of masks per
image, one per defect region, united); the good images of a ``validation`` split beside ``train`` (those three
sets) fitted as good images too. A root that is AITEX holds a category per fabric (:mod:`~patchcore.datasets.aitex`).
A line's own layout too: a folder of good images is ``good``, ``ok`` or ``normal`` in any case, a ``train/`` that
holds images and none of those is the good images themselves (after every set above, whose folders hold images), and
a ``train/`` that holds one folder of images is that folder, by whatever name, and so is the test split's folder of
that name (a training split is good images only).
"""

from __future__ import annotations

from pathlib import Path

from patchcore.datasets.aitex import AITEX_DEFECTS, AITEX_GOOD, aitex_category, aitex_fabrics, is_aitex
from patchcore.datasets.category import GOOD, Category, Sample
from patchcore.datasets.dagm import DAGM_LABELS, DAGM_SPLITS, dagm_category, is_dagm
from patchcore.datasets.files import good_folder, good_images_folder, image_files, mask_files, sole_folder
from patchcore.datasets.kolektor import (
    KOLEKTOR_MASK,
    PAIRED_MASK,
    kolektor_category,
    kolektor_parts,
    paired,
    paired_category,
)
from patchcore.datasets.mtd import MTD_GOOD, MTD_IMAGES, MTD_PREFIX, is_mtd, mtd_category
from patchcore.datasets.realiad import (
    REALIAD_JSONS,
    REALIAD_PREFIX,
    image_folders,
    is_split_folder,
    realiad_category,
    realiad_folder,
    realiad_splits,
)
from patchcore.datasets.visa import VISA_IMAGES, VISA_SPLIT, visa_category, visa_rows
from patchcore.images import hidden, is_image_file

TEST_FOLDERS = ("test", "test_public")  # MVTec AD 2 publishes its labelled test split as test_public
GROUND_TRUTH = "ground_truth"
VALIDATION = "validation"  # MVTec AD 2, MVTec 3D-AD, MVTec LOCO AD: good images the set keeps for validation
PICTURES, MASKS_BESIDE = "rgb", "gt"  # MVTec 3D-AD: <folder>/rgb/<stem>.png, <folder>/gt/<stem>.png (xyz/ beside)


def pictures(folder: Path) -> list[Path]:
    """The pictures of a split's folder: its own images, or, where it has none, those of its ``rgb`` subfolder."""
    files = image_files(folder)
    if not files and (folder / PICTURES).is_dir():
        return image_files(folder / PICTURES)
    return files


def unread_below(folder: Path) -> list[Path]:
    """The images in folders below a split's folder (a day's or a camera's folder each), which :func:`pictures`
    does not read, so that a fit says it passed them over: none in MVTec 3D-AD's layout (``rgb/``, with ``gt/`` and
    ``xyz/`` beside it by design), nor masks kept beside the pictures in ``gt/``."""
    if not image_files(folder) and (folder / PICTURES).is_dir():
        return []
    below = (path for path in folder.rglob("*") if is_image_file(path))
    return sorted(
        path
        for path in below
        if len(inner := path.relative_to(folder).parts) > 1 and not hidden(inner) and inner[0] != MASKS_BESIDE
    )


def _test_folders(base: Path) -> tuple[Path | None, list[Path]]:
    """The test split's folder (``test`` or ``test_public``), and its folders of good and of defective images."""
    test_root = next((base / name for name in TEST_FOLDERS if (base / name).is_dir()), None)
    if test_root is None:
        return None, []
    return test_root, sorted(p for p in test_root.iterdir() if p.is_dir() and p.name != GROUND_TRUTH)


def test_split(base: Path, good_name: str | None = None) -> list[Sample]:
    """The test split's samples, its good parts in the folder named as the training split's (``good_name``) or by
    any usual name."""
    test_root, folders = _test_folders(base)
    if test_root is None:
        return []
    good = good_folder(test_root, good_name)
    test: list[Sample] = []
    for folder in folders:
        files = pictures(folder)
        if folder == good:
            test.extend(Sample(path, GOOD, None) for path in files)
            continue
        masks: dict[str, Path] = {}
        for where in (base / GROUND_TRUTH / folder.name, test_root / GROUND_TRUTH / folder.name, folder / MASKS_BESIDE):
            masks = masks or mask_files(where)
        test.extend(Sample(path, folder.name, masks.get(path.stem)) for path in files)
    return test


def realiad_split_of(root: Path, name: str, split: str) -> Path:
    """The split file of category ``name`` in Real-IAD's ``split`` protocol, or why there is none."""
    for path in realiad_splits(root, split):
        if path.stem == name:
            return path
    raise FileNotFoundError(f"Real-IAD's protocol {split} has no category {name} ({not_found(root, split)})")


def not_found(root: Path, realiad_split: str = REALIAD_JSONS) -> str:
    """What is under a dataset root that holds no such category, said so that the fix is plain: the categories
    there, or, when the root is itself a category (a common slip), the ``--data`` and ``--category`` to give."""
    splits = realiad_folder(root.parent.parent, realiad_split) if root.parent.name.startswith(REALIAD_PREFIX) else None
    realiad = splits is not None and (splits / f"{root.name}.json").is_file()
    train = root / "train"
    if root.is_dir() and (good_folder(train) or good_images_folder(train) or sole_folder(train)
                          or (root / VISA_IMAGES).is_dir() or paired(train) or realiad
                          or kolektor_parts(root) or is_dagm(root) or is_mtd(root)):  # fmt: skip
        return f"{root} is itself a category; give --data {root.parent} --category {root.name}"
    if is_aitex(root):
        return (
            f"{root} is AITEX, a category per fabric: give --data {root} --category {' or '.join(aitex_fabrics(root))}"
        )
    if (root / REALIAD_JSONS).is_dir():
        return f"{root} is Real-IAD: give --data {root}/<one of its image folders: {image_folders(root)}>"
    if is_split_folder(root.name) and any(root.glob("*.json")):
        real_iad = root.parent.parent if root.parent.name == REALIAD_JSONS else root.parent
        return (
            f"{root} holds Real-IAD's split files; give --data {real_iad}/<one of its image folders: "
            f"{image_folders(real_iad)}> --real-iad-split {root.name}"
        )
    found = ", ".join(mvtec_categories(root, realiad_split)) if root.is_dir() else ""
    layouts = (
        f"a category is a folder holding train/good (or ok, normal), or train/ of good images or of one folder of "
        f"them (its test/ folder of that name the good test parts), or train/ of "
        f"images beside their {PAIRED_MASK} masks "
        f"(KolektorSDD2), or folders of images beside their {KOLEKTOR_MASK} masks (KolektorSDD), or "
        f"{'/'.join(DAGM_SPLITS)} each with a {DAGM_LABELS} folder of masks (DAGM 2007), or {MTD_GOOD}/{MTD_IMAGES} "
        f"beside {MTD_PREFIX}<type>/{MTD_IMAGES} (Magnetic Tile Defect), or VisA's "
        f"{VISA_IMAGES} with {VISA_SPLIT} in the root, or, under a Real-IAD "
        f"{REALIAD_PREFIX}<resolution> folder, one that ../{realiad_split}/<category>.json splits; or the root "
        f"holds {AITEX_GOOD} and {AITEX_DEFECTS} (AITEX, a category per fabric)"
    )
    return f"categories found under {root}: {found or f'none ({layouts})'}"


def mvtec_categories(root: Path, realiad_split: str = REALIAD_JSONS) -> list[str]:
    """Category names under a dataset root: folders holding ``train/good`` (or ``train/ok``) or KolektorSDD2's
    ``train/`` of images and masks, VisA's objects that its split names, and the categories of Real-IAD's
    ``realiad_split`` protocol."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    if is_aitex(root):
        return aitex_fabrics(root)
    found = {
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and (
            good_folder(p / "train")
            or paired(p / "train")
            or good_images_folder(p / "train")
            or sole_folder(p / "train")
            or kolektor_parts(p)
            or is_dagm(p)
            or is_mtd(p)
        )
    }
    found |= {name for name in visa_rows(root) if (root / name / VISA_IMAGES).is_dir()}
    splits = realiad_splits(root, realiad_split)
    return sorted(found | {split.stem for split in splits if (root / split.stem).is_dir()})


def mvtec_category(root: Path, name: str, realiad_split: str = REALIAD_JSONS) -> Category:
    """``ROOT/<name>/train/good`` (and ``validation/good`` where the set has one), ``test/<type>``,
    ``ground_truth/<type>/<stem>_mask.<ext>``, and the variants of the module's docstring; a set that ships
    otherwise by its own module (Real-IAD by its ``realiad_split`` protocol)."""
    base = root / name
    if is_aitex(root):
        return aitex_category(root, name)
    if is_aitex(base):
        raise FileNotFoundError(not_found(base))
    if realiad_split != REALIAD_JSONS:  # a protocol named: only Real-IAD has one, so it is read as Real-IAD
        return realiad_category(root, name, realiad_split_of(root, name, realiad_split))
    train = good_folder(base / "train")
    if train is None:
        if paired(base / "train"):
            return paired_category(base, name)
        if kolektor_parts(base):
            return kolektor_category(base, name)
        if is_dagm(base):
            return dagm_category(base, name)
        if is_mtd(base):
            return mtd_category(base, name)
        visa = visa_rows(root).get(name)
        if visa and (base / VISA_IMAGES).is_dir():
            return visa_category(root, name, visa)
        realiad = [split for split in realiad_splits(root) if split.stem == name]
        if realiad:
            return realiad_category(root, name, realiad[0])
        train = good_images_folder(base / "train") or sole_folder(base / "train")  # a line's own, after the sets above
        if train is None:
            raise FileNotFoundError(f"{base / 'train' / GOOD} does not exist ({not_found(root, realiad_split)})")
    good_name = None if train == base / "train" else train.name
    validation = good_folder(base / VALIDATION, good_name)
    held = pictures(validation) if validation is not None else []
    read = [train, *([validation] if validation is not None else []), *_test_folders(base)[1]]
    unread = [path for folder in read for path in unread_below(folder)]
    return Category(name, pictures(train) + held, test_split(base, good_name), validation=held, unread=unread)
