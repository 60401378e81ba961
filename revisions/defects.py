"""Labelled defect examples added to a category's library: a new version that reads one more library segment.

Each example keeps the cells that show its defect: those its mask covers, or without a mask its most anomalous
cells by the version's own memory bank (:mod:`patchcore.defects`). Nothing else changes: threshold, memory bank and
evaluation are the previous version's.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg

from config import Settings
from patchcore import defects as library
from patchcore.errors import ImageError, ImageShapeError
from patchcore.images import original_size
from patchcore.model import Embedder, exact_prediction
from revisions.uploads import Upload, embed, sha256
from store import defects, versions
from store.banks import StoredBank
from store.models import StoredModel
from store.names import name_problem


@dataclass(frozen=True)
class DefectUpload:
    """One labelled defect image, with its mask (of the image's size: every non-zero pixel is defect) or none."""

    upload: Upload
    defect_type: str
    mask: bytes | None = None


def check_defect_type(defect_type: str) -> str:
    problem = name_problem(defect_type, "defect type")
    if problem:
        raise ValueError(f"{problem} (good parts are taught as normals, not as a defect type)")
    return defect_type


def _mask(embedder: Embedder, data: bytes, size: tuple[int, int], name: str) -> np.ndarray:
    try:
        return embedder.preprocess.mask(io.BytesIO(data), size)
    except ImageShapeError:
        raise
    except Exception as exc:  # Pillow's many ways of saying "not an image"
        raise ImageError(f"the mask of {name} is not a readable image ({exc})") from exc


def add_defects(
    connection: psycopg.Connection,
    model: StoredModel,
    bank: StoredBank,
    embedder: Embedder,
    items: Sequence[DefectUpload],
    settings: Settings,
    actor: str,
    progress: Callable[[int], object] | None = None,
) -> dict:
    """Add ``items`` to the library of ``model``'s category in ONE transaction (a new version); an example already
    in the library with the same type is skipped. Returns what was done."""
    if not items:
        raise ValueError("no defect example to add")
    for item in items:
        check_defect_type(item.defect_type)
    started = time.perf_counter()
    known = defects.known_defects(connection, model.defect_segments, [sha256(i.upload.data) for i in items])
    examples: list[defects.DefectExample] = []
    skipped: list[str] = []
    for item in items:
        key = sha256(item.upload.data)
        if key in known:
            skipped.append(item.upload.name)
            continue
        known.add(key)
        embedded = embed(embedder, item.upload, settings.max_image_pixels)
        size = original_size(embedded.image)
        if item.mask is not None:
            grid = tuple(embedded.features.shape[:2])
            cells = library.cells_from_mask(_mask(embedder, item.mask, size, item.upload.name), grid)
            cells_from = "mask"
        else:
            prediction = exact_prediction(embedded.features, bank.embeddings, model.config)
            cells = library.anomalous_cells(prediction.patch_scores, model.threshold, library.EXAMPLE_CELLS)
            cells_from = "model"
        record = embedded.record
        example = defects.DefectExample(
            item.defect_type, record.file_name, record.sha256, record.width, record.height, item.upload.source,
            cells_from, record.view_jpeg, record.view_size,
            np.stack([embedded.features[r, c].numpy() for r, c in cells]), cells,
        )  # fmt: skip
        examples.append(example)
        if progress is not None:
            progress(1)
    if not examples:
        return {"category": model.category, "model_id": model.id, "previous_model_id": model.id, "added": [],
                "skipped": skipped, "defect_patches": 0}  # fmt: skip
    embedded_at = time.perf_counter()

    def write(cursor: psycopg.Cursor, model_id: int) -> dict:
        return defects.write_examples(cursor, model_id, examples, model.dim, model.config.metric, settings)

    change = versions.Change(
        model.threshold, model.threshold_policy, model.evaluation, model.config.false_alarm_rate,
        model.memory_bank_size, adds="defects", write=write,
    )  # fmt: skip
    detail = {
        "added": [{"file_name": e.file_name, "defect_type": e.defect_type, "cells": len(e.cells),
                   "cells_from": e.cells_from} for e in examples],
        "skipped": skipped,
    }  # fmt: skip
    model_id = versions.new_version(connection, model, change, actor, "add_defects", detail)
    return {
        "category": model.category,
        "model_id": model_id,
        "previous_model_id": model.id,
        **detail,
        "defect_patches": sum(len(e.cells) for e in examples),
        "seconds": {"embed": embedded_at - started, "total": time.perf_counter() - started},
    }
