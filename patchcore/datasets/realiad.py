"""Real-IAD as it ships: ``realiad_<resolution>/<category>/{OK,NG}/...``, split by ``<protocol>/<category>.json``
beside the resolution folders, or one level down in ``realiad_jsons/`` where its archive of split files was unpacked
into a folder of that name: ``realiad_jsons`` (multi-view, the default), ``realiad_jsons_sv`` (single view),
``realiad_jsons_fuiad_<noise>``. Each image names its sample, the part its five views show."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

from patchcore.datasets.category import GOOD, Category, Sample
from patchcore.datasets.files import refuse_missing, within

REALIAD_SAMPLE = re.compile(r"([a-zA-Z][a-zA-Z0-9_]*_[0-9]{4}_[A-Z][A-Z_]*[A-Z])_C[0-9]_")  # a sample's key
REALIAD_PREFIX = "realiad_"  # Real-IAD's image folders: realiad_256, realiad_512, realiad_1024, realiad_raw
REALIAD_JSONS = "realiad_jsons"  # beside them, its split files: a folder per protocol of <category>.json (meta,
# train, test): realiad_jsons (multi-view, the default), realiad_jsons_sv, realiad_jsons_fuiad_0.0 ... _0.4; its
# archive realiad_jsons.zip holds those folders, so they may also lie one level down, in realiad_jsons/


def is_split_folder(name: str) -> bool:
    return name.startswith(REALIAD_JSONS)


def image_folders(real_iad: Path) -> str:
    folders = [p.name for p in real_iad.glob(f"{REALIAD_PREFIX}*") if p.is_dir() and not is_split_folder(p.name)]
    return ", ".join(sorted(folders)) or "none found"


def realiad_folder(parent: Path, split: str) -> Path | None:
    """The folder of Real-IAD's ``split`` protocol beside its image folders in ``parent``: ``parent/<split>`` as
    the set's own instructions unpack it, or ``parent/realiad_jsons/<split>`` where its archive of split files was
    unpacked into a folder of its name; whichever holds split files."""
    for folder in (parent / split, parent / REALIAD_JSONS / split):
        if folder.is_dir() and any(folder.glob("*.json")):
            return folder
    return None


def realiad_splits(root: Path, split: str = REALIAD_JSONS) -> list[Path]:
    """Real-IAD's split files of protocol ``split`` when ``root`` is one of its image folders (``realiad_1024``...),
    else none. A protocol other than the default that is not there is refused, naming the ones that are."""
    if not root.name.startswith(REALIAD_PREFIX) or is_split_folder(root.name):
        if split != REALIAD_JSONS:
            raise FileNotFoundError(f"--real-iad-split {split}: {root} is not one of Real-IAD's image folders")
        return []
    folder = realiad_folder(root.parent, split)
    if folder is None and split != REALIAD_JSONS:
        there = sorted(
            {p.name for base in (root.parent, root.parent / REALIAD_JSONS) if base.is_dir() for p in base.iterdir()
             if is_split_folder(p.name) and realiad_folder(p.parent, p.name) == p}
        )  # fmt: skip
        raise FileNotFoundError(
            f"Real-IAD's protocol {split} is not beside {root} (its split files: {', '.join(there) or 'none found'})"
        )
    return sorted(folder.glob("*.json")) if folder is not None else []


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
    training = [(base / within(image, split, base), kind, _realiad_part(image)) for image, kind, _ in entries["train"]]
    parts = {path: part for path, kind, part in training if kind == normal}
    train = sorted(parts)
    left_out = sorted(path for path, kind, _ in training if kind != normal)
    test = [
        Sample(base / within(image, split, base), GOOD if kind == normal else kind,
               base / within(mask, split, base) if mask and kind != normal else None, _realiad_part(image))
        for image, kind, mask in entries["test"]
    ]  # fmt: skip
    refuse_missing([*train, *(s.path for s in test), *(s.mask for s in test if s.mask)], split, name)
    return Category(name, train, test, left_out, parts=parts)
