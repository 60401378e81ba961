"""Served evaluation: the test split scored through pgvector HNSW (the ``POST /query`` path) beside exact search
over the very same stored memory bank, so the only difference measured is the approximate search."""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from config import get_settings
from ingest.report import table
from ingest.sets import categories
from ingest.stored import active_model
from patchcore.datasets.category import Category
from patchcore.evaluation import Scored, Scorer, evaluate
from patchcore.model import exact_prediction
from serving.inspector import Inspector
from store import banks, images, models
from store.database import connect, database_url, search_split
from store.migrate import upgrade

COMPARED = (
    "image_auroc", "pixel_auroc", "pro", "f1", "precision", "recall", "threshold", "regions.defects_found",
    "regions.regions_on_defects", "regions.pixel_f1", "eval_seconds",
)  # fmt: skip


def _signed(value: float | None, absent: str = "absent (no masks)") -> str:
    return absent if value is None else f"{value:+.4f}"


def evaluate_served(name: str, category: Category, out: Path, ef_search: int | None) -> dict:
    settings = get_settings()
    url = database_url(settings)
    with ExitStack() as stack:
        # as many connections as the API splits one query's search over, so the served timings are the API's
        connection = stack.enter_context(connect(url, autocommit=True))
        split = search_split(settings, connection)
        connections = [connection, *(stack.enter_context(connect(url, autocommit=True)) for _ in range(split - 1))]
        model = active_model(connection, name)
        bank = banks.load_memory_bank(connection, model.bank_segments, model.dim)
        inspector = Inspector(model, bank, settings)
        features: dict[Path, torch.Tensor] = {}  # each image embedded once, by the exact scoring, for both

        def decoded(path: Path) -> tuple[Path, Image.Image]:
            return path, inspector.embedder.preprocess.decode(path)

        def exact(read: tuple[Path, Image.Image]) -> Scored:
            path, image = read
            features[path] = inspector.embed(image)
            prediction = exact_prediction(features[path], bank.embeddings, model.config)
            size = tuple(s * inspector.embedder.extractor.stride for s in features[path].shape[:2])
            return Scored(prediction.score, prediction.anomaly_map(size).numpy(), prediction.patch_scores.numpy())

        searched: list[int] = []

        def served(path: Path) -> Scored:
            inspection = inspector.inspect_features(connections, features[path], top_k=1, ef_search=ef_search)
            searched.append(inspection.reranked)
            return Scored(inspection.score, inspection.anomaly_map(), inspection.patch_scores.numpy())

        preprocess = model.config.preprocess
        target = model.config.false_alarm_rate
        good, parts = images.good_scores(connection, model.bank_segments)
        care = model.config.care
        exact_eval = evaluate(
            category.test, Scorer(exact, decoded), preprocess, model.threshold, target, "exact", good, parts, care
        )
        served_eval = evaluate(
            category.test, Scorer(served), preprocess, model.threshold, target, "served", good, parts, care
        )
    exact_eval.figures["eval_seconds"] = exact_eval.seconds
    served_eval.figures["eval_seconds"] = served_eval.seconds
    agreement = float(np.mean(exact_eval.verdicts == served_eval.verdicts))
    result = {
        "category": name,
        "model_id": model.id,
        # as the API would choose it (INSPECT_SEARCH_BACKEND); with `auto` on a CPU, the first images served by each
        # search in turn, then by the faster (serving.search_choice): their median times, in ms
        "search_backend": inspector.backend,
        "search_trial_ms": inspector.choice.medians_ms() if inspector.choice is not None else None,
        "ef_search": ef_search or settings.hnsw_ef_search,
        "exact": exact_eval.figures,
        "served": served_eval.figures,
        "image_auroc_difference": (
            served_eval.figures["image_auroc"] - exact_eval.figures["image_auroc"]
            if exact_eval.figures["image_auroc"] is not None
            else None
        ),
        "pixel_auroc_difference": (
            served_eval.figures["pixel_auroc"] - exact_eval.figures["pixel_auroc"] if served_eval.has_masks else None
        ),
        "verdict_agreement": agreement,
        "max_score_difference": float(np.max(np.abs(exact_eval.scores - served_eval.scores))),
        # how far the HNSW graph is from exact: patches the re-rank searched exactly per image (one chunk is 8; 0 where
        # the backend is exact, which searches every patch exactly)
        "exact_searched_patches": {"median": float(np.median(searched)), "max": int(np.max(searched))},
        "exact_rerank_cap": settings.exact_rerank,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "served_report.json").write_text(json.dumps(result, indent=2))
    print(table({"exact": exact_eval.figures, f"served ({inspector.backend})": served_eval.figures}, COMPARED))
    image = _signed(result["image_auroc_difference"], "absent (one kind of test image)")
    print(
        f"{name}: served - exact image AUROC {image}, pixel AUROC "
        f"{_signed(result['pixel_auroc_difference'])}, same verdict on {agreement:.1%} of {len(category.test)} images "
        f"(largest score difference {result['max_score_difference']:.2g}); "
        f"patches searched exactly per image: median {np.median(searched):.0f}, max {np.max(searched)} (cap "
        f"{settings.exact_rerank}); report: {out / 'served_report.json'}"
    )
    return result


def run_served(args: argparse.Namespace) -> int:
    settings = get_settings()
    url = database_url(settings)
    upgrade(url)
    if args.folder is not None and args.defects is None:
        raise ValueError("--folder needs --defects here: a plain folder of good images has no test split to judge")
    if args.folder is None and not args.category:
        with connect(url) as connection:
            args.category = [m.category for m in models.active_models(connection)]
        if not args.category:
            print("no category is stored: nothing to judge (fit one first)")
            return 0
    for category in categories(args):
        evaluate_served(category.name, category, args.out / category.name, args.ef_search)
    return 0
