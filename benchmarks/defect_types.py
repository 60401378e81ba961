"""Which defect type? Leave-one-image-out accuracy of the known-defect library on a category's labelled test split.

    python benchmarks/defect_types.py --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth \
        --data ../shared/datasets/mvtec_ad --category bottle --plot docs/defect_types_bottle.png

Fits the category on its good training images, then for each defective test image builds the library from the
OTHER defective test images (their masks' cells, as ``add-defects`` stores them) and asks it, as ``/query`` does,
with the image's most anomalous cells (:mod:`patchcore.defects`; exact search here, HNSW when served). Prints the
confusion matrix, the accuracy and the baseline of always answering the most frequent type; plots the matrix.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from patchcore import defects as library
from patchcore.datasets.mvtec import mvtec_category
from patchcore.images import open_image
from patchcore.model import Embedder, PatchCoreConfig, exact_prediction, fit
from patchcore.scoring import ExactSearch

NONE = "(none)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()

    data = mvtec_category(args.data, args.category)
    config = PatchCoreConfig(backbone="resnet18")
    model = fit(config, data.train, args.weights, parts=data.parts)
    embedder = Embedder.load(config, args.weights)
    defective = [s for s in data.test if s.is_anomalous and s.mask is not None]
    cells, features, owners, asked, normal = [], [], [], [], []
    for i, sample in enumerate(tqdm(defective, desc="defect images", unit="img")):
        image = open_image(sample.path)
        grid = embedder.features(embedder.preprocess.tensor(image)[None])[0]
        mask = embedder.preprocess.mask(sample.mask, image.size)
        own = library.cells_from_mask(mask, tuple(grid.shape[:2]))
        cells.append(len(own))
        features += [grid[r, c] for r, c in own]
        owners += [i] * len(own)
        scores = exact_prediction(grid, model.memory_bank, config).patch_scores
        query = library.anomalous_cells(scores, model.threshold, library.QUERY_CELLS)
        asked.append(torch.stack([grid[r, c] for r, c in query]))
        normal.append([float(scores[r, c]) for r, c in query])
    bank = torch.stack(features)
    owner = torch.tensor(owners)
    search = ExactSearch(bank, config.metric)
    types = [s.defect for s in defective]
    predicted = []
    for i in range(len(defective)):
        distances = search.distances(asked[i])
        distances[:, owner == i] = float("inf")  # leave the image itself out of the library
        values, index = torch.topk(distances, library.NEIGHBOURS, dim=1, largest=False)
        neighbours = [
            library.Neighbour(q, int(owner[j]), types[int(owner[j])], defective[int(owner[j])].path.name, float(v))
            for q in range(values.shape[0])
            for v, j in zip(values[q], index[q], strict=True)
        ]
        verdict = library.classify(normal[i], neighbours, config.metric)
        predicted.append(verdict.defect_type or NONE)
    names = sorted(set(types))
    columns = [*names, NONE]
    matrix = np.array([[sum(1 for t, p in zip(types, predicted, strict=True) if t == a and p == b) for b in columns]
                       for a in names])  # fmt: skip
    accuracy = float(np.mean([t == p for t, p in zip(types, predicted, strict=True)]))
    common, count = Counter(types).most_common(1)[0]
    print(f"{args.category}: {len(defective)} defective test images, {len(bank)} library cells "
          f"({min(cells)}-{max(cells)} per image)\n")  # fmt: skip
    print("| true \\ answered | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in zip(names, matrix, strict=True):
        print(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    print(f"\naccuracy {accuracy:.3f} ({sum(t == p for t, p in zip(types, predicted, strict=True))}/{len(types)}); "
          f"always '{common}': {count / len(types):.3f}")  # fmt: skip
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.0, 4.2))
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(columns)), columns, rotation=20)
        ax.set_yticks(range(len(names)), names)
        for a in range(len(names)):
            for b in range(len(columns)):
                ax.text(b, a, str(matrix[a, b]), ha="center", va="center",
                        color="white" if matrix[a, b] > matrix.max() / 2 else "black")  # fmt: skip
        ax.set_xlabel("answered")
        ax.set_ylabel("true type")
        ax.set_title(f"{args.category}, leave one image out\naccuracy {accuracy:.3f} "
                     f"(always {common}: {count / len(types):.3f})", fontsize=11)  # fmt: skip
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
