"""What reading a 12-bit camera's images at the category's white level is worth: each set as a 12-bit camera would
save it (the gray level times 16 plus the 4 low bits an 8-bit file drops, seeded, LSB-aligned in 16-bit PNGs; with
``--colour`` each of the red, green and blue samples so, a 16-bit colour PNG; masks as they are), written to a
temporary folder and fitted and evaluated with default settings three ways:

- the 8-bit original as it is (RGB or gray; the reference);
- 12-bit, read against the 16-bit file's full range (``--white-level 65535``: how every version before the white
  level read such files, nearly black and in 16 grey levels);
- 12-bit, read against the white level the fit finds from the training images (4,095; the default).

Prints one table row per set and way: the white level used, image and pixel AUROC, F1 at the automatic threshold and
the best F1 with at most 5% false alarms on the good test images (issue 19's yardstick).

    python benchmarks/high_bit_depth.py --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth \\
        --set ../shared/datasets/image_level:mvtec_screw --set ../shared/datasets/non_square:bsdata_ballscrew
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

from patchcore import threshold as thresholds
from patchcore.datasets.mvtec import mvtec_category
from patchcore.evaluation import evaluate
from patchcore.images import is_image_file
from patchcore.model import Embedder, PatchCoreConfig, exact_scorer, fit


def write_twelve_bit(source: Path, target: Path, rng: np.random.Generator, colour: bool = False) -> None:
    """``source`` as a 12-bit camera would save it to ``target``: each sample (the gray level, or with ``colour`` each
    of red, green and blue) times 16 plus the 4 low bits an 8-bit file drops (drawn from ``rng``), LSB-aligned in a
    16-bit PNG."""
    with Image.open(source) as image:
        eight = np.asarray(image.convert("RGB" if colour else "L"), dtype=np.uint16)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(imagecodecs.png_encode(eight * 16 + rng.integers(0, 16, eight.shape, dtype=np.uint16)))


def twelve_bit_copy(source: Path, target: Path, colour: bool = False) -> None:
    """Every image of the category folder ``source`` as 12-bit samples in a 16-bit PNG under ``target`` (RGB with
    ``colour``); the ground-truth masks copied as they are."""
    rng = np.random.default_rng(0)
    for path in sorted(source.rglob("*")):
        if not is_image_file(path):
            continue
        out = target / path.relative_to(source)
        if "ground_truth" in path.relative_to(source).parts:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(path.read_bytes())
            continue
        write_twelve_bit(path, out.with_suffix(".png"), rng, colour)


def row(root: Path, name: str, weights: str, white_level: int | None, ratio: float) -> dict:
    category = mvtec_category(root, name)
    config = PatchCoreConfig(backbone="resnet18", coreset_ratio=ratio, white_level=white_level)
    embedder = Embedder.load(config, weights)
    model = fit(config, category.train, weights, embedder=embedder, parts=category.parts)
    evaluation = evaluate(
        category.test, exact_scorer(model, embedder), model.config.preprocess, model.threshold,
        config.false_alarm_rate, good_scores=model.good_scores,
    )  # fmt: skip
    scores, labels = evaluation.scores, evaluation.labels
    return {
        "white": model.config.white_level,
        "image_auroc": evaluation.figures["image_auroc"],
        "pixel_auroc": evaluation.figures["pixel_auroc"],
        "f1": evaluation.figures["f1"],
        "yardstick": thresholds.best_f1(scores, labels, 0.05)[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="ResNet-18 weights file")
    parser.add_argument("--set", action="append", required=True, help="ROOT:CATEGORY (repeatable)")
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--colour", action="store_true", help="12-bit RGB copies (16-bit colour PNGs), not gray")
    args = parser.parse_args()
    print("| set | images | white level | image AUROC | pixel AUROC | F1 at the threshold | best F1 with <= 5% false "
          "alarms |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    kind = " RGB" if args.colour else ""
    with tempfile.TemporaryDirectory() as scratch:
        for spec in args.set:
            root, name = spec.rsplit(":", 1)
            copy = Path(scratch) / "twelve"
            twelve_bit_copy(Path(root) / name, copy / name, args.colour)
            for label, where, white in (
                ("8-bit original", Path(root), None),
                (f"12-bit{kind}, read against 65,535", copy, 65535),
                (f"12-bit{kind}, white level from the fit", copy, None),
            ):
                found = row(where, name, args.weights, white, args.coreset_ratio)
                pixel = "-" if found["pixel_auroc"] is None else f"{found['pixel_auroc']:.4f}"
                print(f"| {name} | {label} | {found['white'] or '-'} | {found['image_auroc']:.4f} | {pixel} | "
                      f"{found['f1']:.3f} | {found['yardstick']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
