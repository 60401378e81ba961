"""VisA as it ships: ``<category>/Data/Images/{Normal,Anomaly}``, its one-class split in ``split_csv/1cls.csv``
beside the categories."""

from __future__ import annotations

import csv
from pathlib import Path

from patchcore.datasets.category import GOOD, Category, Sample
from patchcore.datasets.files import refuse_missing, within

VISA_SPLIT = Path("split_csv") / "1cls.csv"  # VisA: object, split, label, image, mask per image, paths from the root
VISA_IMAGES = Path("Data") / "Images"  # VisA: <category>/Data/Images/{Normal,Anomaly}
VISA_DEFECT = "anomaly"  # VisA's label of a defective image (the one-class split names no defect types)


def visa_rows(root: Path) -> dict[str, list[dict[str, str]]]:
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
                within(row.get(column) or ".", split, root)
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
    refuse_missing([*train, *(s.path for s in test), *(s.mask for s in test if s.mask)], root / VISA_SPLIT, name)
    return Category(name, train, test)
