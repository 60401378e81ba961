"""An image inspected by a category's served version: embedded here, searched on the database's connections (or in
this process, by the search backend), once more with the new version when the category changed meanwhile. Shared by
``POST /query`` and the log's heatmaps."""

from __future__ import annotations

import time

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
