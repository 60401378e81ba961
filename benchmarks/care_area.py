"""What a care area is worth where something beside the part varies: a set's pictures with clutter in one corner
(crops of another set's pictures, a different one in every picture, training and test alike: a tool, a cable, a
part of the next station), fitted with and without a care area that leaves the corner out, and the clean set the
same two ways (what the area costs where nothing varies outside it).

The corner is the top left quarter of each side; the clutter lies in its first 55%, three patch cells of bottle's
28x28 grid from the area's edge (a cell's features see beyond it: `tests/test_care.py`). Every figure is the
service's own: fit with defaults (ResNet-18, whole view, 10% coreset), exact scoring of the labelled test split,
the threshold from good training images alone.

    python benchmarks/care_area.py --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth \\
        --data ../shared/datasets/mvtec_ad --category bottle \\
        --clutter-from ../shared/datasets/image_level/mvtec_screw/train/good --plot docs/care_area.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from patchcore.care import CareArea
from patchcore.datasets.category import Category, Sample
from patchcore.datasets.mvtec import mvtec_category
from patchcore.evaluation import evaluate
from patchcore.images import image_files_in, open_image
from patchcore.model import Embedder, PatchCoreConfig, exact_scorer, fit

CORNER = 0.25  # of each side: the corner the care area leaves out
CLUTTER = 0.55  # of the corner: where the clutter lies


def cluttered(source: Path, target: Path, index: int, sources: list[Path]) -> None:
    """``source`` with a crop of one of ``sources`` (chosen and placed by ``index``) in its top left corner."""
    rng = np.random.default_rng(index)
    image = open_image(source)
    box = int(min(image.size) * CORNER * CLUTTER)
    with Image.open(sources[int(rng.integers(len(sources)))]) as picked:
        other = picked.convert("RGB")
    side = int(min(other.size) * rng.uniform(0.3, 0.7))
    left, top = (int(rng.integers(0, s - side + 1)) for s in other.size)
    size = int(box * rng.uniform(0.6, 1.0))
    crop = other.crop((left, top, left + side, top + side)).resize((size, size))
    image.paste(crop, tuple(int(rng.integers(0, box - size + 1)) for _ in range(2)))
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)


def cluttered_set(category: Category, folder: Path, sources: list[Path]) -> Category:
    """The category with clutter in every picture, written under ``folder`` (the masks stay where they are)."""
    train = []
    for i, path in enumerate(category.train):
        train.append(folder / "train" / path.name)
        cluttered(path, train[-1], i, sources)
    test = []
    for i, sample in enumerate(category.test):
        target = folder / "test" / sample.defect / sample.path.name
        cluttered(sample.path, target, 100_000 + i, sources)
        test.append(Sample(target, sample.defect, sample.mask, sample.part))
    return Category(category.name, train, test)


def care_area_of(path: Path) -> CareArea:
    """The area that leaves out the corner, at the size of the set's pictures."""
    width, height = open_image(path).size
    mask = np.ones((height, width), dtype=bool)
    corner = int(min(width, height) * CORNER)
    mask[:corner, :corner] = False
    return CareArea(mask)


def run(category: Category, weights: str, care: CareArea | None) -> tuple[dict, object, Embedder]:
    config = PatchCoreConfig(backbone="resnet18", care_area=care.png() if care is not None else None)
    embedder = Embedder.load(config, weights)
    model = fit(config, category.train, weights, embedder=embedder)
    evaluation = evaluate(
        category.test, exact_scorer(model, embedder), model.config.preprocess, model.threshold,
        config.false_alarm_rate, good_scores=model.good_scores, care=model.config.care,
    )  # fmt: skip
    figures = evaluation.figures
    labels = evaluation.labels
    row = {
        "image_auroc": figures["image_auroc"],
        "pixel_auroc": figures.get("pixel_auroc_whole_image") or figures.get("pixel_auroc") or float("nan"),
        "threshold": model.threshold,
        "f1": figures["f1"],
        "recall": figures["recall"],
        "false_alarms": f"{int((evaluation.scores[~labels] > model.threshold).sum())} of {int((~labels).sum())}",
        "bank": int(model.memory_bank.shape[0]),
        "fit_seconds": model.timings["fit_seconds"],
    }
    return row, model, embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", type=Path, required=True, help="an MVTec AD layout root")
    parser.add_argument("--category", required=True)
    parser.add_argument("--clutter-from", type=Path, required=True, help="a folder of pictures to crop clutter from")
    parser.add_argument("--plot", type=Path, default=None, help="a good test picture's heatmaps, both ways (PNG)")
    args = parser.parse_args()
    clean = mvtec_category(args.data, args.category)
    sources = image_files_in(args.clutter_from)
    care = care_area_of(clean.train[0])
    rows, kept = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        sets = {"clean": clean, "cluttered": cluttered_set(clean, Path(scratch), sources)}
        for name, category in sets.items():
            for area in (None, care):
                row, model, embedder = run(category, args.weights, area)
                rows.append({"set": name, "care area": "none" if area is None else f"{area.share:.1%}", **row})
                kept[(name, area is not None)] = (model, embedder)
                print(rows[-1], flush=True)
        if args.plot is not None:
            good = next(s.path for s in sets["cluttered"].test if s.defect == "good")
            plot(good, kept, care, args.plot)
    print(f"\n{args.category}: clutter in the top left {CORNER:.0%} of each side, care area without it\n")
    print("| set | care area | image AUROC | pixel AUROC | threshold | F1 | recall | false alarms | bank | fit s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['set']} | {r['care area']} | {r['image_auroc']:.4f} | {r['pixel_auroc']:.4f} | {r['threshold']:.4f}"
            f" | {r['f1']:.3f} | {r['recall']:.3f} | {r['false_alarms']} | {r['bank']:,} | {r['fit_seconds']:.1f} |"
        )


def plot(path: Path, kept: dict, care: CareArea, out: Path) -> None:
    """A cluttered good test picture, its anomaly map without and with the care area (outlined), the threshold at
    full scale's half as the verdict draws it."""
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    image = open_image(path)
    axes[0].imshow(image)
    axes[0].contour(care.mask, levels=[0.5], colors="yellow", linewidths=1.5)
    axes[0].set_title(f"{path.parent.name}/{path.name}, care area outlined")
    for axis, with_area in zip(axes[1:], (False, True), strict=True):
        model, embedder = kept[("cluttered", with_area)]
        preprocess = model.config.preprocess
        tensor = preprocess.tensor(preprocess.decode(path))
        prediction = model.score(embedder.features(tensor[None])[0])
        heat = prediction.anomaly_map(tuple(tensor.shape[1:])).numpy()
        axis.imshow(preprocess.cropped(image))
        axis.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=2 * model.threshold)
        verdict = "anomalous" if prediction.score > model.threshold else "normal"
        how = "with the care area" if with_area else "without a care area"
        axis.set_title(f"{how}: {prediction.score:.3f} ({verdict}; threshold {model.threshold:.3f})", fontsize=9)
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
