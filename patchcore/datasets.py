"""Where the images are: the MVTec AD layout, or a plain folder of good images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from patchcore.images import IMAGE_SUFFIXES

GOOD = "good"


def image_files(folder: Path) -> list[Path]:
    """Image files of a folder, sorted, so fits are reproducible."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class Sample:
    """One labelled test image: its defect type (``good`` for normal) and its ground-truth mask, when the dataset
    has one (a split labelled per image only has none: its pixel metrics are absent, not an error)."""

    path: Path
    defect: str
    mask: Path | None

    @property
    def is_anomalous(self) -> bool:
        return self.defect != GOOD


@dataclass(frozen=True)
class Category:
    """A product: good training images, and a labelled test split when the dataset has one."""

    name: str
    train: list[Path]
    test: list[Sample]


def mvtec_categories(root: Path) -> list[str]:
    """Category names under an MVTec AD root: folders holding ``train/good``."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    return sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())


def mask_files(folder: Path) -> dict[str, Path]:
    """The masks of one defect type by image stem: ``<stem>_mask.<ext>`` (MVTec AD, MPDD) or ``<stem>.<ext>`` (VisA as
    anomalib prepares it, BTAD), any image format; where a folder holds both for one stem, ``_mask`` wins."""
    if not folder.is_dir():
        return {}
    files = image_files(folder)
    found = {p.stem: p for p in reversed(files)}
    found.update({p.stem.removesuffix("_mask"): p for p in reversed(files) if p.stem.endswith("_mask")})
    return found


def mvtec_category(root: Path, name: str) -> Category:
    """``ROOT/<name>/train/good``, ``test/<type>``, ``ground_truth/<type>/<stem>_mask.<ext>`` (or ``<stem>.<ext>``)."""
    base = root / name
    if not (base / "train" / GOOD).is_dir():
        found = ", ".join(mvtec_categories(root)) if root.is_dir() else "none"
        raise FileNotFoundError(f"{base / 'train' / GOOD} does not exist (categories found under {root}: {found})")
    test: list[Sample] = []
    test_root = base / "test"
    if test_root.is_dir():
        for defect_dir in sorted(p for p in test_root.iterdir() if p.is_dir()):
            masks = mask_files(base / "ground_truth" / defect_dir.name) if defect_dir.name != GOOD else {}
            test.extend(Sample(path, defect_dir.name, masks.get(path.stem)) for path in image_files(defect_dir))
    return Category(name, image_files(base / "train" / GOOD), test)


def folder_category(folder: Path, name: str) -> Category:
    """A plain folder of good images: training only, no evaluation."""
    return Category(name, image_files(folder), [])
