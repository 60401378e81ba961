"""Magnetic Tile Defect as it ships: ``MT_<type>/Imgs/<stem>.jpg`` beside its ``<stem>.png`` mask, ``MT_Free``
the good tiles, split by holding good tiles out."""

from __future__ import annotations

from pathlib import Path

from patchcore.datasets.category import Category, Sample, holding_out
from patchcore.datasets.files import image_files

MTD_PREFIX, MTD_GOOD, MTD_IMAGES = "MT_", "MT_Free", "Imgs"  # Magnetic Tile Defect: MT_<type>/Imgs/<stem>.jpg beside
# its <stem>.png mask, MT_Free the good tiles


def is_mtd(base: Path) -> bool:
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
