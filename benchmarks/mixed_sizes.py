"""A mixed-size copy of an MVTec AD category, to measure what images of many sizes do to the job and the verdict.

Every image (and its mask, alike) is resized to one of five sizes by its index, from 1:3 to 3:1, each side between
a third of the original and all of it; ``--train`` limits the training images. Then run the job on it:

    python benchmarks/mixed_sizes.py --source ../shared/datasets/mvtec_ad/bottle --out /tmp/mixed
    python -m ingest evaluate --data /tmp/mixed --category bottle --backbone resnet18 \
        --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth [--field-of-view crop]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

# fractions of the original (width, height): 3:1, 1:3, 1:1, 3:2, 1:2 for a square original
SCALES = ((1.0, 1 / 3), (1 / 3, 1.0), (2 / 3, 2 / 3), (0.8, 0.533), (0.5, 1.0))


def make_copy(source: Path, out: Path, train: int | None = None) -> Path:
    """The mixed-size copy of the category folder ``source`` as ``out/<its name>``; returns ``out``."""
    category = out / source.name
    images = [(p, "train/good") for p in sorted((source / "train" / "good").glob("*.png"))[:train]]
    images += [(p, f"test/{p.parent.name}") for p in sorted((source / "test").glob("*/*.png"))]
    for i, (path, where) in enumerate(images):
        (category / where).mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            size = tuple(round(side * scale) for side, scale in zip(image.size, SCALES[i % len(SCALES)], strict=True))
            image.resize(size, Image.BILINEAR).save(category / where / path.name)
        mask = source / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
        if where.startswith("test/") and mask.is_file():
            (category / "ground_truth" / path.parent.name).mkdir(parents=True, exist_ok=True)
            with Image.open(mask) as image:
                image.resize(size, Image.NEAREST).save(category / "ground_truth" / path.parent.name / mask.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="a category folder in the MVTec AD layout")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, help="at most this many training images (default all)")
    args = parser.parse_args()
    print(make_copy(args.source, args.out, args.train))


if __name__ == "__main__":
    main()
