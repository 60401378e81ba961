"""Images inspected by a category's served version: embedded here (a request's images together), searched on the
database's connections (or in this process, by the search backend), once more with the new version when the category
changed meanwhile. Shared by ``POST /query``, ``POST /query/batch`` and the log's heatmaps."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from PIL import Image

from app.services import CategoryChanging, Services
from serving.inspector import Inspection, Inspector, ModelReplaced

ATTEMPTS = 4  # searches of one image, each by the version active when it began


def served(
    services: Services, inspector: Inspector, category: str, image: Image.Image, top_k: int
) -> tuple[Inspector, Inspection]:
    """The image inspected by the category's version; one replaced meanwhile is loaded and asked again, as often as
    versions keep replacing each other under it (an engineer moving the threshold while another teaches, on other
    servers) up to :data:`ATTEMPTS` searches, then :class:`~app.services.CategoryChanging`: an answer is always the
    verdict of one version that was active while it was searched, never a mix and never a 500."""
    for _ in range(ATTEMPTS - 1):
        try:
            return inspector, searched(services, inspector, image, top_k)
        except ModelReplaced:
            inspector = services.inspector(category, reload=True)
    try:
        return inspector, searched(services, inspector, image, top_k)
    except ModelReplaced as exc:
        raise CategoryChanging(f"{category} got a new version during each of {ATTEMPTS} searches") from exc


def searched(services: Services, inspector: Inspector, image: Image.Image, top_k: int) -> Inspection:
    """Embedded first, then searched on database connections held for the search only (the embedding is the
    longest stage, and a search a standby could not answer goes to the primary without embedding again)."""
    started = time.perf_counter()
    features = inspector.embed(image)
    embed_ms = (time.perf_counter() - started) * 1000
    inspection = services.run_search(inspector.inspect_features, features, top_k, parts=inspector.search_parts)
    inspection.timings_ms = {"embed": embed_ms, **inspection.timings_ms}
    return inspection


def served_all(
    services: Services,
    inspector: Inspector,
    category: str,
    views: list[torch.Tensor],
    image_for: Callable[[Inspector, int], Image.Image],
    top_k: int,
) -> list[tuple[Inspector, Inspection]]:
    """The views of one request's images (``inspector.embedder.preprocess.tensor``), each inspected by the
    category's version as :func:`served` inspects one, but embedded together first
    (:meth:`~serving.inspector.Inspector.embed_all`) and searched together where the version searches in this
    process (:meth:`~serving.inspector.Inspector.inspect_features_all`); each answer's ``embed`` timing is the whole
    batch's. Where a version replaced the one they were made for, that image and every later one are decoded again
    for the new version (``image_for(inspector, index)``: a refit may see them otherwise) and inspected one by one by
    :func:`served`, so each answer is still the verdict of one version."""
    started = time.perf_counter()
    batch = inspector.embed_all(views)
    embed_ms = (time.perf_counter() - started) * 1000
    done = services.run_search(inspector.inspect_features_all, batch, top_k, parts=inspector.search_parts)
    answers: list[tuple[Inspector, Inspection]] = []
    for inspection in done:
        inspection.timings_ms = {"embed": embed_ms, **inspection.timings_ms}
        answers.append((inspector, inspection))
    if len(done) < len(batch):
        current = services.inspector(category, reload=True)
        for index in range(len(done), len(batch)):
            current, inspection = served(services, current, category, image_for(current, index), top_k)
            answers.append((current, inspection))
    return answers
