"""Good images added to a fitted category without a refit: a new version whose memory bank grows by what is new.

What is reused and what is built: the new version reads every segment of the one before (no row copied, no index
rebuilt) plus one new segment holding only the added patches, with its own small HNSW index. The added patches are
those the bank does not already cover (:func:`patchcore.coreset.extend_coreset`, at the fit's coreset radius). The
added images are scored as unseen, exactly as a query against the bank before them: that bank's coreset was chosen
without them, as the bank a new good part meets was (the grown bank without their own rows would not be: the rows
chosen from an image are its most unusual patches, so removing them scores it too high, see
:mod:`patchcore.cross_fit`). Their scores join the good scores, and the threshold stays as it was unless
``recalibrate`` runs the false-alarm-rate policy again on all of them. The scores of the fit's own images are kept
as measured against the smaller bank: each is an upper bound of its score now, so a recalibrated threshold errs
towards fewer false alarms. Each added image's file is kept as it was sent (``image_originals``), so that a refit of
the category takes it along rather than forgetting what was taught.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import psycopg
import torch

from config import Settings
from patchcore import scoring
from patchcore import threshold as thresholds
from patchcore.care import inspected
from patchcore.coreset import extend_coreset
from patchcore.errors import ImageError, together
from patchcore.model import Embedder
from patchcore.views import colour_notes, most_enlarged, size_notes
from revisions.threshold import evaluation_at
from revisions.uploads import Upload, embed, original_name, sha256
from store import evaluations, images, versions
from store.banks import StoredBank, write_segment
from store.models import StoredModel


class NeedsRefit(Exception):
    """The version lacks what teaching needs (a coverage radius recorded by the fit): refit the category once."""


@dataclass
class AddedNormals:
    """What adding normals did: the new version (or the same one when every image was already known)."""

    category: str
    model_id: int
    previous_model_id: int
    images_added: list[str]
    duplicates: list[str]
    candidate_patches: int
    patches_added: int
    memory_bank_size: int
    threshold: float
    previous_threshold: float
    recalibrated: bool
    scores: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # added images that teach blur or grey (views)

    def as_dict(self) -> dict:
        return asdict(self)


def add_normals(
    connection: psycopg.Connection,
    model: StoredModel,
    bank: StoredBank,
    embedder: Embedder,
    uploads: Sequence[Upload],
    settings: Settings,
    actor: str,
    recalibrate: bool = False,
    progress: Callable[[int], object] | None = None,
) -> AddedNormals:
    """Add ``uploads`` as good images of ``model``'s category: ONE transaction makes the new version (see the
    module's docstring). ``bank`` must be ``model``'s memory bank. Raises ``VersionConflict`` when the category got
    a newer version meanwhile, an image error naming every unreadable or misshapen upload (nothing is written)."""
    if model.coverage_radius is None:
        raise NeedsRefit(
            f"{model.category} (version {model.id}) was fitted before the coreset radius was recorded; refit it once "
            "(python -m ingest fit) to add normals"
        )
    if not uploads:
        raise ValueError("no image to add")
    started = time.perf_counter()
    known = images.known_images(connection, model.bank_segments, [sha256(u.data) for u in uploads])
    fresh: list[Upload] = []
    duplicates: list[str] = []
    seen: set[str] = set(known)
    for upload in uploads:
        digest = sha256(upload.data)
        if digest in seen:
            duplicates.append(upload.name)
        else:
            seen.add(digest)
            fresh.append(upload)
    embedded, problems = [], []
    for upload in fresh:
        try:  # once one cannot be taken, the rest are only decoded: to name every such file, not to embed them
            if problems:
                embedder.preprocess.decode(upload.data, upload.name, settings.max_image_pixels)
            else:
                embedded.append(embed(embedder, upload, settings.max_image_pixels))
        except ImageError as exc:
            problems.append(exc)
        if progress is not None:
            progress(1)
    if problems:
        raise together(problems)
    embedded_at = time.perf_counter()
    if not embedded:
        return AddedNormals(
            model.category, model.id, model.id, [], duplicates, 0, 0, model.memory_bank_size, model.threshold,
            model.threshold, False, {}, {"embed": embedded_at - started},
        )  # fmt: skip

    config = model.config
    seen, colours = most_enlarged(embedder.preprocess, bank.good_sizes()), bank.good_colours()
    notes = {}  # an image enlarged more than the good images before it, or grey among colour: taught, and said
    for e in embedded:
        size = (e.record.width, e.record.height)
        if said := size_notes(embedder.preprocess.view(*size), size, seen) + colour_notes(e.record.colour, colours):
            notes[e.upload.name] = said
    grids = [tuple(e.features.shape[:2]) for e in embedded]  # one per image: their shapes may differ
    kept = [inspected(e.features.float(), config.care) for e in embedded]  # the care area's patches, or all
    patches = [p for p, _ in kept]
    grid_cells = [torch.arange(p.shape[0]) if c is None else c for p, c in kept]  # each row's cell in its grid
    candidates = torch.cat(patches)
    dim = candidates.shape[1]
    source_of_row = torch.repeat_interleave(torch.arange(len(patches)), torch.tensor([p.shape[0] for p in patches]))
    first_row = torch.tensor([0] + [p.shape[0] for p in patches]).cumsum(0)
    before = scoring.ExactSearch(bank.embeddings, config.metric)
    chosen = extend_coreset(candidates, before, model.coverage_radius)
    for item, image_patches in zip(embedded, patches, strict=True):
        distances, index = before.nearest_one(image_patches)
        item.record.score = scoring.image_score(distances, index, image_patches, before, config.num_neighbors)
    selected_at = time.perf_counter()

    good, parts = images.good_scores(connection, model.bank_segments)
    good, parts = good + [e.record.score for e in embedded], parts + [None] * len(embedded)  # added: parts of their own
    target = config.false_alarm_rate
    if recalibrate:
        per = model.threshold_policy.get("per", thresholds.PER_IMAGE)  # a target per part stays one
        threshold, policy = thresholds.false_alarm_threshold(good, target, parts, per)
        cells = evaluations.cells(connection, model.fit_id)
        evaluation = evaluation_at(model, threshold, target, False, good, cells, parts)
    else:
        threshold = model.threshold
        policy = {**model.threshold_policy, **thresholds.describe(threshold, good, parts, target)}
        evaluation = dict(model.evaluation)
    evaluation.setdefault("measured_with_memory_bank_segments", list(model.bank_segments))
    records = [e.record for e in embedded]
    image_embeddings = torch.stack([p.mean(0) for p in patches]).numpy()
    rows = chosen.tolist()
    places = []
    for row in rows:
        image = int(source_of_row[row])
        cell = int(grid_cells[image][row - int(first_row[image])])
        places.append((image, cell // grids[image][1], cell % grids[image][1]))
    bank_rows = candidates[chosen].numpy().astype(np.float32)

    def write(cursor: psycopg.Cursor, model_id: int) -> dict:
        sources = [e.upload.source for e in embedded]
        image_ids = images.write_images(cursor, model_id, records, image_embeddings, sources)
        originals = [(original_name(e.upload, i), e.upload.data) for e, i in zip(embedded, image_ids, strict=True)]
        images.write_originals(cursor, image_ids, originals)
        segment = write_segment(
            cursor, "patches", model_id, ("model_id", "image_id", "grid_row", "grid_col", "embedding"),
            ("int8", "int8", "int2", "int2", "vector"),
            (
                (model_id, image_ids[image], grid_row, grid_col, bank_rows[i])
                for i, (image, grid_row, grid_col) in enumerate(places)
            ),
            dim, config.metric, settings,
        )  # fmt: skip
        return {"index_seconds": segment["index_seconds"]}

    change = versions.Change(
        threshold, policy, evaluation, target, model.memory_bank_size + len(rows), adds="bank", write=write
    )
    detail = {
        "images": [e.upload.name for e in embedded],
        "sources": sorted({e.upload.source for e in embedded}),
        "duplicates": duplicates,
        "patches_added": len(rows),
        "candidate_patches": int(candidates.shape[0]),
        "recalibrated": recalibrate,
        "threshold": threshold,
        "previous_threshold": model.threshold,
    }
    model_id = versions.new_version(connection, model, change, actor, "add_normals", detail)
    stored_at = time.perf_counter()
    return AddedNormals(
        model.category, model_id, model.id, detail["images"], duplicates, int(candidates.shape[0]), len(rows),
        model.memory_bank_size + len(rows), threshold, model.threshold, recalibrate,
        {e.upload.name: e.record.score for e in embedded},
        {"embed": embedded_at - started, "select_and_score": selected_at - embedded_at,
         "store": stored_at - selected_at, "total": stored_at - started}, notes,
    )  # fmt: skip
