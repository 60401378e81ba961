"""anomalib's PatchCore on the same sets and weights, for the figures the README sets beside this service's.

anomalib 2.7 as its users run it, with the setup of the GPU anchor in ``../shared/gpu``: ResNet-18 with the local
ImageNet weights loaded into its timm extractor (nothing downloaded), layer2 and layer3, 9 neighbours, its default
pre-processing (resize to 256x256, centre crop 224x224), every training image in the memory bank, the coreset at each
``--coreset-ratio``, seeded by each ``--seed``. Each set in the MVTec AD layout (``ROOT:NAME``), read with anomalib's
``Folder`` (masks where ``ground_truth`` has them), its whole test split scored (validation = test). Prints, per
set, ratio and seed: image AUROC of the raw scores, anomalib's own pixel AUROC in its view where there are masks, its
F1 at the adaptive threshold (chosen on those same test images: a yardstick, not a verdict) and the fit's seconds.

``--selection-dim D`` (repeatable) asks where a difference comes from: every training and test image embedded by
anomalib's own extractor in its own view, the test images scored by this project's eq. 7
(:func:`patchcore.scoring.image_score`) against anomalib's fitted memory bank (its AUROC again, if the two score
alike), then against this project's greedy coreset (:func:`patchcore.coreset.greedy_coreset`, the same seed and
ratio) chosen over those very embeddings in a projection to ``D`` dimensions (the features themselves where ``D`` is
their own 384): what the selection alone does to the image AUROC.

anomalib is not a dependency of this project: run this with the Python of an environment that has it, e.g.

    python -m venv /tmp/anomalib && echo "$PWD/.venv/lib/python3.11/site-packages" \\
        > /tmp/anomalib/lib/python3.11/site-packages/project.pth && /tmp/anomalib/bin/pip install anomalib==2.7.0
    /tmp/anomalib/bin/python benchmarks/anomalib_beside.py \\
        --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth \\
        --set ../shared/datasets/image_level:mvtec_screw --set ../shared/datasets/non_square:bsdata_ballscrew \\
        --coreset-ratio 0.01 --seed 0 --seed 1 --seed 2

(the ``.pth`` line lends it this project's torch and torchvision, so pip fetches only anomalib and what it adds).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch


def loaded(model, weights: Path) -> None:
    """The torchvision-named weights put into anomalib's timm extractor, every tensor it has, checked against
    torchvision's own ResNet-18 on one random batch (the two must compute the same layer3)."""
    import torchvision

    extractor = model.model.feature_extractor.feature_extractor
    state = torch.load(weights, map_location="cpu", weights_only=True)
    extractor.load_state_dict({key: state[key] for key in extractor.state_dict()}, strict=True)
    reference = torchvision.models.resnet18(weights=None).eval()
    reference.load_state_dict(state, strict=False)
    batch = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.model.feature_extractor(batch)["layer3"]
        stem = reference.maxpool(reference.relu(reference.bn1(reference.conv1(batch))))
        theirs = reference.layer3(reference.layer2(reference.layer1(stem)))
    assert float((ours - theirs).abs().max()) < 1e-4, "anomalib's extractor does not compute torchvision's layer3"


def selections(model, pre, data, ratio: float, seed: int, dims: list[int]) -> dict[str, float]:
    """Image AUROC of this project's eq. 7 on anomalib's embeddings: against its bank, and against this project's
    greedy coreset of them at each projection dimension."""
    import sys

    from sklearn.metrics import roc_auc_score

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # its environment lends the packages, not the project
    from patchcore.coreset import greedy_coreset
    from patchcore.scoring import ExactSearch, image_score

    network = model.model.eval()

    def embedded(dataset) -> tuple[torch.Tensor, list[int]]:
        rows, labels = [], []
        with torch.no_grad():
            loader = torch.utils.data.DataLoader(dataset, batch_size=32, collate_fn=dataset.collate_fn)
            for batch in loader:
                images, _ = pre.transform(batch.image, batch.gt_mask)
                layers = {k: network.feature_pooler(v) for k, v in network.feature_extractor(images).items()}
                embedding = network.generate_embedding(layers)
                rows.append(embedding.permute(0, 2, 3, 1).reshape(embedding.shape[0], -1, embedding.shape[1]))
                labels += batch.gt_label.int().tolist()
        return torch.cat(rows), labels

    train, _ = embedded(data.train_data)
    test, labels = embedded(data.test_data)
    patches = train.reshape(-1, train.shape[-1]).contiguous()

    def auroc(bank: torch.Tensor) -> float:
        search = ExactSearch(bank, "l2")
        scores = []
        for image in test:
            distances, nearest = search.nearest(image, 1)
            scores.append(image_score(distances[:, 0], nearest[:, 0], image, search, network.num_neighbors))
        return float(roc_auc_score(labels, scores))

    found = {"its bank": auroc(network.memory_bank)}
    for dim in dims:
        found[f"ours in {dim}"] = auroc(patches[greedy_coreset(patches, ratio, seed=seed, projection_dim=dim)])
    return found


def run(root: Path, name: str, weights: Path, ratio: float, seed: int, out: Path, dims: list[int]) -> dict:
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import Patchcore
    from lightning.pytorch import seed_everything
    from sklearn.metrics import roc_auc_score

    base = root / name
    defects = sorted(p.name for p in (base / "test").iterdir() if p.is_dir() and p.name != "good")
    masks = [f"ground_truth/{d}" for d in defects] if (base / "ground_truth").is_dir() else None
    seed_everything(seed)
    pre = Patchcore.configure_pre_processor(image_size=(256, 256), center_crop_size=(224, 224))
    model = Patchcore(backbone="resnet18", layers=["layer2", "layer3"], pre_trained=False,
                      coreset_sampling_ratio=ratio, num_neighbors=9, pre_processor=pre, visualizer=False)  # fmt: skip
    loaded(model, weights)
    data = Folder(name=name, root=base, normal_dir="train/good", abnormal_dir=[f"test/{d}" for d in defects],
                  normal_test_dir="test/good", mask_dir=masks, train_batch_size=32, eval_batch_size=32,
                  num_workers=0, val_split_mode="same_as_test", seed=seed)  # fmt: skip
    engine = Engine(default_root_dir=str(out), accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    started = time.perf_counter()
    engine.fit(model=model, datamodule=data)
    seconds = time.perf_counter() - started
    metrics = engine.test(model=model, datamodule=data, verbose=False)[0]
    scores, labels = [], []
    network = model.model.eval()
    with torch.no_grad():
        loader = torch.utils.data.DataLoader(data.test_data, batch_size=32, collate_fn=data.test_data.collate_fn)
        for batch in loader:
            images, _ = pre.transform(batch.image, batch.gt_mask)
            scores += network(images).pred_score.flatten().tolist()
            labels += batch.gt_label.int().tolist()
    return {
        "selections": selections(model, pre, data, ratio, seed, dims) if dims else {},
        "set": name, "ratio": ratio, "seed": seed, "bank": int(model.model.memory_bank.shape[0]),
        "image_auroc": float(roc_auc_score(labels, scores)), "pixel_auroc": metrics.get("pixel_AUROC"),
        "f1_chosen_on_test": float(metrics["image_F1Score"]), "fit_s": seconds,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--set", action="append", required=True, help="ROOT:NAME, a category in the MVTec AD layout")
    parser.add_argument("--coreset-ratio", type=float, action="append", default=None)
    parser.add_argument("--seed", type=int, action="append", default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/anomalib-beside"))
    parser.add_argument(
        "--selection-dim", type=int, action="append", default=[], help="also its embeddings against our coreset in D"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print("| set | coreset | seed | memory bank | image AUROC | pixel AUROC (its view) | F1 chosen on the test images "
          "| fit s |\n| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)  # fmt: skip
    for spec in args.set:
        root, name = spec.rsplit(":", 1)
        for ratio in args.coreset_ratio or [0.1]:
            for seed in args.seed or [42]:
                row = run(Path(root), name, args.weights, ratio, seed, args.out, args.selection_dim)
                pixel = "-" if row["pixel_auroc"] is None else f"{row['pixel_auroc']:.4f}"
                print(f"| {name} | {ratio:.0%} | {seed} | {row['bank']:,} | {row['image_auroc']:.4f} | {pixel} "
                      f"| {row['f1_chosen_on_test']:.3f} | {row['fit_s']:.1f} |", flush=True)  # fmt: skip
                if row["selections"]:
                    said = ", ".join(f"{key} {value:.4f}" for key, value in row["selections"].items())
                    print(f"  its embeddings, our eq. 7: {said}", flush=True)


if __name__ == "__main__":
    main()
