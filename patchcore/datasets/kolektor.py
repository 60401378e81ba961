"""The two KolektorSDDs as they ship. KolektorSDD2: ``train/`` and ``test/`` holding each image beside its
``<stem>_GT`` mask, which says whether it is good. KolektorSDD: a folder per part, ``kos01/Part0.jpg`` beside
``Part0_label.bmp``, split by holding parts out."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from patchcore.datasets.category import GOOD, TEST_SHARE, Category, Sample
from patchcore.datasets.files import good_folder, image_files, marks_a_defect

PAIRED_MASK, PAIRED_DEFECT = "_GT", "defect"  # KolektorSDD2: <split>/<stem>.png beside <stem>_GT.png; its one type
KOLEKTOR_MASK = "_label"  # KolektorSDD: <part>/<stem>.jpg beside <stem>_label.bmp, a folder per physical part


def paired(folder: Path, suffix: str = PAIRED_MASK) -> dict[Path, Path]:
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


def kolektor_parts(base: Path) -> dict[str, dict[Path, Path]]:
    """KolektorSDD's parts: a folder per physical part (``kos01``...) of its images beside their ``_label`` masks;
    none where ``base`` is not laid out so."""
    if not base.is_dir() or (base / "train").is_dir():
        return {}
    parts = {folder.name: paired(folder, KOLEKTOR_MASK) for folder in sorted(base.iterdir()) if folder.is_dir()}
    return {name: images for name, images in parts.items() if images}


def kolektor_category(base: Path, name: str) -> Category:
    """A KolektorSDD category, which ships without a split: a seeded ``TEST_SHARE`` of its parts is held
    out whole for the test split (parts never seen, every view, good or not), and the good images of the others are
    fitted; their defective images (a mask that marks a defect) are tested too, never fitted. Each test image names
    its part, so the report judges the parts as a line does (``parts``)."""
    parts = kolektor_parts(base)
    names = sorted(parts)
    held = {names[i] for i in np.random.default_rng(0).permutation(len(names))[: math.ceil(len(names) * TEST_SHARE)]}
    train: dict[Path, str] = {}
    test: list[Sample] = []
    for part in names:
        for image, mask in parts[part].items():
            defective = marks_a_defect(mask)
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
    for image, mask in paired(base / "train").items():
        (left_out if marks_a_defect(mask) else train).append(image)
    test = [
        Sample(image, PAIRED_DEFECT, mask) if marks_a_defect(mask) else Sample(image, GOOD, None)
        for image, mask in paired(base / "test").items()
    ]
    return Category(name, train, test, left_out)
