"""One served inspection: embed with the category's own backbone -> every patch's nearest memory-bank patch -> eq. 7.

Two backends find the nearest patches, each where it is measured fastest (``INSPECT_SEARCH_BACKEND``, ``auto``):
``database``, one pgvector HNSW search then an exact re-rank of the worst-looking patches, and ``exact``, every patch
searched exactly in this process against its copy of the memory bank, on the model's torch device (0.41 ms on the
H200 of issue 22; on a CPU for a bank of at most :data:`EXACT_ON_CPU_FLOATS`, such as a 1% coreset's: 8.5-8.8 ms
against 20.5-20.9 by HNSW for bottle's 1,474 rows), while the database answers the look-alike good images in
parallel. A larger bank on a CPU is searched exactly in clusters (:mod:`patchcore.clustered`), which beats HNSW on
some parts and not on others, so ``auto`` times the two on the category's first queries and keeps the faster
(:mod:`serving.search_choice`). Both give the exact model's image score.

The formulas are :mod:`patchcore.scoring`'s, the re-rank :mod:`patchcore.rerank`'s and the SQL
:mod:`store.search`'s; this module only joins them, so the HTTP service and the served evaluation cannot drift
apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg
import torch
from PIL import Image

from config import EXACT_ON_CPU_FLOATS, Settings
from patchcore import WeightsError, regions, scoring
from patchcore import defects as library
from patchcore import threshold as thresholds
from patchcore.backbone import RANDOM_WEIGHTS, weights_sha256
from patchcore.care import inspected
from patchcore.clustered import ClusteredSearch, cpu_search
from patchcore.features import PatchFeatureExtractor
from patchcore.model import Embedder, load_extractor
from patchcore.regions import Region
from patchcore.rerank import Reranked, rerank_worst, settle_regions
from patchcore.scoring import BankSearch
from patchcore.views import View, colour_notes, most_enlarged, size_notes
from serving.activity import ACTIVITY
from serving.batching import shared_batcher
from serving.search_choice import SearchChoice
from store.banks import StoredBank
from store.models import StoredModel
from store.search import (
    SearchResult,
    defect_statement,
    lookalikes,
    lookalikes_statement,
    search,
    search_defects,
    search_statement,
)

log = logging.getLogger(__name__)
_PARTS = ThreadPoolExecutor(thread_name_prefix="hnsw-part")
SEARCHES = {"database": "by HNSW in the database", "exact": "in clusters in the API process"}
EXACT_SEGMENT_ROWS = 1536  # an added segment of at most these rows is searched in the API process, a larger by HNSW
_EXTRACTORS: dict[tuple, PatchFeatureExtractor] = {}
_EXTRACTORS_LOCK = threading.Lock()


class ModelReplaced(Exception):
    """The category got a new model between loading it and searching it: reload and ask again."""

    def __init__(self, model: StoredModel) -> None:
        super().__init__(
            f"version {model.id} of {model.category} is no longer its active version (a new threshold, added normals "
            "or a refit replaced it meanwhile): run the command again"
        )


@dataclass
class Inspection:
    """The verdict on one image, with what explains it."""

    score: float
    similarity: float
    threshold: float
    threshold_similarity: float
    is_anomalous: bool
    patch_scores: torch.Tensor
    view_size: tuple[int, int]
    worst: dict
    similar: list[dict]
    timings_ms: dict[str, float] = field(default_factory=dict)
    reranked: int = 0
    exact_worst: bool = True  # False: the re-rank's cap stopped it, the score may be too large (never too small)
    defect: library.DefectVerdict | None = None  # asked only of an anomalous image, when the library has examples
    regions: list[Region] = field(default_factory=list)  # an anomalous image's cells above the threshold
    p_value: float | None = None  # the share of good parts expected above the score (None: too few good scores)
    backend: str = "database"  # the search that found its patches' nearest rows: database (HNSW) or exact

    def anomaly_map(self) -> np.ndarray:
        """The (height, width) map over the view the model saw."""
        return scoring.anomaly_map(self.patch_scores, self.view_size).numpy()

    def worst_spot(self) -> tuple[float, float]:
        """(x, y) of the worst patch's centre in the view's pixels (``View.to_original`` places it in the image)."""
        stride = self.view_size[0] / self.patch_scores.shape[0]
        return (self.worst["col"] + 0.5) * stride, (self.worst["row"] + 0.5) * stride


def resolve_weights(model: StoredModel, settings: Settings) -> str | None:
    """The weights file a server should load for ``model``: the recorded path, else the same file name under
    ``INSPECT_WEIGHTS_DIR``, else ``INSPECT_WEIGHTS``, each accepted only if its sha256 matches the recorded one."""
    if model.weights in (None, RANDOM_WEIGHTS):
        return model.weights
    candidates = [Path(model.weights)]
    if settings.weights_dir is not None:
        candidates.append(settings.weights_dir / Path(model.weights).name)
    if settings.weights:
        candidates.append(Path(settings.weights))
    for candidate in candidates:
        if candidate.is_file() and (model.weights_sha256 is None or weights_sha256(candidate) == model.weights_sha256):
            return str(candidate)
    raise WeightsError(
        f"category {model.category} was fitted with weights {model.weights} (sha256 {model.weights_sha256}); "
        "no such file here: mount it at that path, or set INSPECT_WEIGHTS_DIR or INSPECT_WEIGHTS to a copy"
    )


def image_embedding(patches: torch.Tensor) -> np.ndarray:
    """What the look-alike good images are found by: the mean of an image's (P, D) inspected patches (the fit's
    image embeddings are its images' the same way)."""
    return patches.numpy().mean(0)


def device_room(device: torch.device) -> int | None:
    """Bytes an exact copy of a memory bank may take on ``device``: its free memory less a quarter of its whole, kept
    for the networks' activations, the search's blocks (:data:`patchcore.scoring.BLOCK_BYTES`) and whatever other
    processes start there later; ``None`` where the device says nothing (a CPU: the bank is in host memory anyway).
    Read when a category is loaded, so every uvicorn worker and every category loaded before counts, whichever
    process holds it; what this process's allocator keeps cached but unused (a replaced version's copy, freed) is
    free to it too."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(0, free + cached - total // 4)


def search_backend(setting: str, device: torch.device, bank_floats: int, copy_bytes: int, room: int | None) -> str:
    """``auto``: the exact search in this process on an accelerator where its copy of the bank (``copy_bytes``) fits
    in the device's ``room`` (:func:`device_room`), and on a CPU for a memory bank of at most
    :data:`EXACT_ON_CPU_FLOATS` floats (a scan of every row beats HNSW's few hundred distances and its round trip);
    above it on a CPU, ``choose``: the faster of HNSW and the search in clusters, timed on the category's first
    queries (:mod:`serving.search_choice`: the clusters beat HNSW on bottle but lost on bsdata and the screws, as
    what they rule out depends on the parts, which no size can say). On an accelerator the exact
    search is the faster by far (docs/search.md), so only its memory sends a bank to the database: a bank too large
    for the device is served slower rather than failing every query on an out-of-memory error."""
    if setting != "auto":
        return setting
    if device.type != "cpu":
        return "exact" if room is None or copy_bytes <= room else "database"
    return "exact" if bank_floats <= EXACT_ON_CPU_FLOATS else "choose"


def shared_extractor(model: StoredModel, settings: Settings, device: str | None) -> PatchFeatureExtractor:
    """The network of ``model``, loaded once per process for every category that uses the same backbone, layers,
    weights and device: Wide-ResNet-50 to layer3 holds 95 MB of parameters (148 MB of RSS measured), so the 15
    MVTec AD categories would otherwise hold 15 copies. Inference never changes a network, so sharing is safe."""
    config = model.config
    key = (config.backbone, config.layers, model.weights_sha256 or model.weights, device)
    with _EXTRACTORS_LOCK:
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = load_extractor(config, resolve_weights(model, settings), device)
        return _EXTRACTORS[key]


def good_tail(good_scores: Sequence[float], target: float) -> Callable[[float], float] | None:
    """How rare a score is among good parts, read as the threshold is set (the category's target chooses the
    log-normal or the scores themselves); ``None`` where the good scores cannot say (fewer than three, or one of
    zero, which no log-normal holds)."""
    if thresholds.unreadable(good_scores) is not None:
        return None
    return thresholds.good_tail(good_scores, target)


class Inspector:
    """A stored model made ready to serve: its network (shared, see :func:`shared_extractor`), its search
    statements composed once, and a copy of its memory bank (all segments) for the exact search: of the worst
    patches after HNSW, or of every patch (on the network's device) with the ``exact`` backend. A stored version never
    changes, so the copy never goes stale; it costs 4 x patches x dimensions bytes: 23 MB for bottle with ResNet-18,
    90 MB with 1536 dimensions. ``previous``: the category's inspector this one replaces; a version that keeps its
    memory bank (a threshold set, a version made active again) keeps its copy and its search backend too, so a new
    threshold copies nothing to the accelerator."""

    def __init__(
        self,
        model: StoredModel,
        bank: StoredBank,
        settings: Settings,
        device: str | None = None,
        previous: Inspector | None = None,
    ) -> None:
        self.model = model
        self.bank = bank
        self.settings = settings
        self.embedder = Embedder(model.config, shared_extractor(model, settings, device or settings.device))
        self.device = self.embedder.extractor.device
        kept = (
            previous is not None
            and previous.bank is bank
            and previous.device == self.device
            and previous.model.config.metric == model.config.metric
            and previous.settings.search_backend == settings.search_backend
        )
        metric = model.config.metric
        if kept:
            self.rule, self.exact, self._here = previous.rule, previous.exact, previous._here
            self.choice = previous.choice
        else:
            floats = bank.embeddings.numel()
            copy_bytes = scoring.ExactSearch.copy_bytes(floats, metric)
            room = device_room(self.device)
            self.rule = search_backend(settings.search_backend, self.device, floats, copy_bytes, room)
            if self.rule == "exact" and self.device.type == "cpu":
                self.exact = cpu_search(bank.embeddings, metric)
            else:
                here = self.device if self.rule == "exact" else torch.device("cpu")
                self.exact = scoring.ExactSearch(bank.embeddings.to(here), metric)
            self._here = self.exact if self.rule == "exact" else None
            self.choice = SearchChoice(ClusteredSearch(bank.embeddings, metric)) if self.rule == "choose" else None
        self.batcher = shared_batcher(settings.batch_wait_ms, settings.batch_max) if settings.batch_wait_ms else None
        self.lookalikes_statement = lookalikes_statement(model)
        # the fit's segment is searched by HNSW in PostgreSQL; each segment that added normals appended is searched
        # where it costs a query less: one more HNSW index scan per patch in the SQL search costs whatever the
        # segment's size, an exact pass here grows with its rows; they cost the same at about 3,200 rows of 384
        # dimensions (8.1 ms a segment against 2.6 ms per 1,024 rows) and 1,850 of 1,536 (17.7 against 9.8;
        # benchmarks/segments_cost.py), so a segment of at most EXACT_SEGMENT_ROWS (every added image's or review's,
        # as a rule) is searched here, a larger one (a batch of many new images) by HNSW: many small segments never
        # cost an index scan each
        owners, rows = np.unique(bank.owners, return_counts=True)
        small = [
            int(s) for s, n in zip(owners, rows, strict=True) if s != model.bank_segments[0] and n <= EXACT_SEGMENT_ROWS
        ]
        added = np.flatnonzero(np.isin(bank.owners, small))
        self.added_rows = added if added.size else None
        self.added = None
        if self.added_rows is not None:
            self.added = scoring.ExactSearch(bank.embeddings[self.added_rows], model.config.metric)
        self.statement = search_statement(model, [s for s in model.bank_segments if s not in small])
        self.defect_statement = defect_statement(model, library.NEIGHBOURS)
        self.threshold_similarity = scoring.similarity(model.threshold, model.config.metric)
        self.tail = good_tail(bank.good_scores(), model.config.false_alarm_rate)
        self.care = model.config.care
        self.enlarged_at_most = most_enlarged(self.embedder.preprocess, bank.good_sizes())
        self.good_colours = bank.good_colours()

    def notes(self, inspection: Inspection, view: View, size: tuple[int, int], colour: str) -> list[str]:
        """What to know before acting on ``inspection`` of an image of ``size`` (width, height) seen as ``view``, in
        words: an image enlarged more than the good images were (:func:`size_notes`), a grey file where every good
        image has colour or the reverse (``colour``: :func:`~patchcore.views.colouring` of the image;
        :func:`colour_notes`), and a score the re-rank's cap left unproven."""
        said = size_notes(view, size, self.enlarged_at_most) + colour_notes(colour, self.good_colours)
        if not inspection.exact_worst:
            said.append(
                f"the exact re-rank reached its cap (INSPECT_EXACT_RERANK, {self.settings.exact_rerank}) before it "
                "could prove the worst patch: the score may be too large, never too small"
            )
        return said

    @property
    def backend(self) -> str:
        """The search that serves this version's queries (``database`` or ``exact``; ``choose`` while the two are
        timed on its first queries)."""
        if self.choice is None:
            return self.rule
        return self.choice.chosen or "choose"

    @property
    def here(self) -> BankSearch | None:
        """The search of every patch in this process (``None``: HNSW only); while a choice is made, the bank in
        clusters that it times."""
        return self.choice.here if self.choice is not None else self._here

    @property
    def search_parts(self) -> int | None:
        """Database connections one search wants: the exact search asks the database one small question; ``None``:
        the split of the patches over the pool's connections, which HNSW wants (and a trial, half its queries)."""
        return 1 if self.backend == "exact" else None

    def embed(self, image: Image.Image) -> torch.Tensor:
        """(H, W, D) patch features of a decoded image: alone, or in a batch with requests that arrive with it
        (:mod:`serving.batching`)."""
        return self.embed_all([self.embedder.preprocess.tensor(image)])[0]

    def embed_all(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """(H, W, D) patch features of each (3, h, w) view (``embedder.preprocess.tensor``), run through the network
        together where they share a shape (a request's images need no other requests to fill a batch), at most
        ``INSPECT_BATCH_MAX`` at a time; one view alone with whatever requests arrive with it, where batching is on."""
        with ACTIVITY.working():
            return self._embed_all(views)

    def _embed_all(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(views) == 1 and self.batcher is not None:
            return [self.batcher.features(self.embedder, views[0])]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, view in enumerate(views):
            by_shape.setdefault(tuple(view.shape), []).append(index)
        features: list[torch.Tensor | None] = [None] * len(views)
        step = self.settings.batch_max
        for indices in by_shape.values():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                embedded = self.embedder.features(torch.stack([views[i] for i in chunk]))
                for index, one in zip(chunk, embedded, strict=True):
                    features[index] = one
        return features

    def search(
        self,
        connections: Sequence[psycopg.Connection],
        features: torch.Tensor,
        top_k: int,
        ef_search: int | None = None,
    ) -> SearchResult:
        """HNSW search of every patch of (H, W, D) ``features`` (of the care area's cells, in the grid's order, where
        the category has one), the patches split over ``connections`` and searched at once, one part per database
        backend: a single backend uses one core, and the 784 searches of an image are independent (bottle, 2 cores:
        111-113 ms on one connection, 71-78 ms on two). The first part brings the look-alikes."""
        return self._search_patches(connections, inspected(features, self.care)[0], top_k, ef_search)

    def _search_patches(
        self,
        connections: Sequence[psycopg.Connection],
        patches: torch.Tensor,
        top_k: int,
        ef_search: int | None,
    ) -> SearchResult:
        flat = patches.numpy()
        parts = np.array_split(flat, len(connections))
        image = image_embedding(patches)
        ef = ef_search or self.settings.hnsw_ef_search
        others = [
            _PARTS.submit(search, connection, self.statement, part, image, 0, ef)
            for connection, part in zip(connections[1:], parts[1:], strict=True)
        ]
        try:
            results = [search(connections[0], self.statement, parts[0], image, top_k, ef)]
        finally:
            wait(others)  # each connection goes back to the pool only once its search is over
        results += [other.result() for other in others]
        if any(result is None for result in results):
            raise ModelReplaced(self.model)
        distances = np.concatenate([r.distances for r in results])
        patch_ids = np.concatenate([r.patch_ids for r in results])
        if self.added is not None:
            nearest, index = self.added.nearest_one(torch.from_numpy(flat))
            nearest, index = nearest.double().numpy(), index.numpy()
            closer = nearest < distances
            distances[closer] = nearest[closer]
            patch_ids[closer] = self.bank.ids[self.added_rows[index[closer]]]
        return SearchResult(distances, patch_ids, results[0].similar)

    def _search_here(
        self,
        here: BankSearch,
        connection: psycopg.Connection,
        batch: Sequence[torch.Tensor],
        patches: Sequence[torch.Tensor],
        top_k: int,
        ef_search: int | None,
    ) -> tuple[list[list[dict] | None], torch.Tensor, torch.Tensor]:
        """Every patch's exact nearest memory-bank row (``patches`` of each image, on the bank's device), the
        images' patches in one search in this process, while the database answers each image's look-alike good
        images (``batch``: its (P, D) patches in memory) on ``connection``, ``None`` for an image asked after this
        version was replaced. Returns the look-alikes, then the distances and rows of all the patches in order."""
        ef = ef_search or self.settings.hnsw_ef_search
        statement = self.lookalikes_statement
        asked = _PARTS.submit(lambda: [lookalikes(connection, statement, image_embedding(f), top_k, ef) for f in batch])
        try:
            distances, rows = here.nearest_one(patches[0] if len(patches) == 1 else torch.cat(list(patches)))
        finally:
            similar = asked.result()  # the connection goes back to the pool only once its queries are over
        return similar, distances, rows

    def inspect(
        self,
        connections: Sequence[psycopg.Connection],
        image: Image.Image,
        top_k: int = 10,
        ef_search: int | None = None,
    ) -> Inspection:
        started = time.perf_counter()
        features = self.embed(image)
        embed_ms = (time.perf_counter() - started) * 1000
        inspection = self.inspect_features(connections, features, top_k, ef_search)
        inspection.timings_ms = {"embed": embed_ms, **inspection.timings_ms}
        return inspection

    def inspect_features(
        self,
        connections: Sequence[psycopg.Connection],
        features: torch.Tensor,
        top_k: int = 10,
        ef_search: int | None = None,
    ) -> Inspection:
        """Score already embedded (H, W, D) features by the inspector's backend."""
        with ACTIVITY.working():
            return self._inspect_features(connections, features, top_k, ef_search)

    def inspect_features_all(
        self,
        connections: Sequence[psycopg.Connection],
        batch: Sequence[torch.Tensor],
        top_k: int = 10,
        ef_search: int | None = None,
    ) -> list[Inspection]:
        """Each of several images' (H, W, D) features scored as :meth:`inspect_features` scores one; where this
        version is served by the exact search in this process (its trial over), every image's patches in one search:
        larger products, fewer passes over the bank (bottle in clusters, 8 test images: 73-78 ms together against
        124-127 ms one by one, the same rows). Each answer's ``search`` timing is then the batch's. Returns the
        inspections of the images before the first one for which this version was found replaced: all of them,
        unless it was (the caller asks the new version about the rest)."""
        with ACTIVITY.working():
            if len(batch) > 1 and self.backend == "exact":
                return self._inspect_together(connections, batch, top_k, ef_search)
            done = []
            for features in batch:
                try:
                    done.append(self._inspect_features(connections, features, top_k, ef_search))
                except ModelReplaced:
                    break
            return done

    def _inspect_together(
        self,
        connections: Sequence[psycopg.Connection],
        batch: Sequence[torch.Tensor],
        top_k: int,
        ef_search: int | None,
    ) -> list[Inspection]:
        """The exact search of every image's patches at once (:meth:`_search_here`), each image then judged."""
        embedded = time.perf_counter()
        here = self.here
        device = here.bank.device
        kept = [inspected(features, self.care) for features in batch]
        patches = [features.reshape(-1, features.shape[-1]).float().to(device) for features in batch]
        asked = [whole if cells is None else whole.index_select(0, cells.to(device))
                 for whole, (_, cells) in zip(patches, kept, strict=True)]  # fmt: skip
        similar, distances, rows = self._search_here(
            here, connections[0], [k for k, _ in kept], asked, top_k, ef_search
        )
        searched = time.perf_counter()
        sizes = [p.shape[0] for p in asked]
        done = []
        for features, mine, (_, cells), alike, near, row in zip(
            batch, patches, kept, similar, distances.split(sizes), rows.split(sizes), strict=True
        ):
            if alike is None:
                break
            timings = {"search": (searched - embedded) * 1000}
            reranked = Reranked(near, row, 0).spread(cells, mine.shape[0])
            done.append(self._judged(connections, features, mine, alike, reranked, "exact", timings, ef_search))
        return done

    def _inspect_features(
        self,
        connections: Sequence[psycopg.Connection],
        features: torch.Tensor,
        top_k: int,
        ef_search: int | None,
    ) -> Inspection:
        embedded = time.perf_counter()
        alone = ACTIVITY.alone() if self.choice is not None else None  # a trial times only searches that ran alone
        config = self.model.config
        patches = features.reshape(-1, features.shape[-1]).float()
        kept, cells = inspected(features, self.care)  # the patches searched: the care area's, or every one
        here = self.here  # read before the choice: a choice of HNSW lets it go (and ends handing out the other)
        backend = self.choice.next() if self.choice is not None else self.rule
        if backend == "exact":
            patches = patches.to(here.bank.device)
            asked = patches if cells is None else patches.index_select(0, cells.to(patches.device))
            (similar,), distances, rows = self._search_here(here, connections[0], [kept], [asked], top_k, ef_search)
            if similar is None:
                raise ModelReplaced(self.model)
            reranked = Reranked(distances, rows, 0).spread(cells, patches.shape[0])
            searched = reranked_at = time.perf_counter()
        else:
            result = self._search_patches(connections, kept, top_k, ef_search)
            similar = result.similar
            searched = time.perf_counter()
            reranked = rerank_worst(
                torch.from_numpy(result.distances),
                torch.from_numpy(self.bank.rows(result.patch_ids)),
                kept.float(),
                self.exact,
                self.settings.exact_rerank,
                config.num_neighbors,
            ).spread(cells, patches.shape[0])
            reranked_at = time.perf_counter()
        timings = {
            "search": (searched - embedded) * 1000,
            **({"rerank": (reranked_at - searched) * 1000} if backend == "database" else {}),
        }
        searching_ms = (reranked_at - embedded) * 1000
        return self._judged(
            connections, features, patches, similar, reranked, backend, timings, ef_search, alone, searching_ms
        )

    def _judged(
        self,
        connections: Sequence[psycopg.Connection],
        features: torch.Tensor,
        patches: torch.Tensor,
        similar: list[dict],
        reranked: Reranked,
        backend: str,
        timings: dict[str, float],
        ef_search: int | None,
        alone: int | None = None,
        searching_ms: float = 0.0,
    ) -> Inspection:
        """The inspection of one image from its patches' nearest bank rows (``reranked``, by ``backend``): its score
        and verdict, its worst patch, regions and defect type. ``alone`` and ``searching_ms``: the trial's reading of
        this search (:class:`~serving.search_choice.SearchChoice`; its settling of regions counts too)."""
        reranked_at = time.perf_counter()
        config = self.model.config
        height, width = features.shape[:2]
        stride = self.embedder.extractor.stride
        score = scoring.image_score(
            reranked.distances, reranked.nearest_index, patches, self.exact, config.num_neighbors, reranked.neighbours
        )
        anomalous = score > self.model.threshold
        settled_at = time.perf_counter()
        if anomalous and backend == "database":
            shape, cap = (height, width), self.settings.exact_rerank
            settle_regions(reranked, patches, self.exact, self.model.threshold, shape, cap)
        if self.choice is not None:
            if ACTIVITY.still_alone(alone):
                self.choice.record(backend, searching_ms / 1000 + time.perf_counter() - settled_at)
            if self.choice.newly_chosen():
                self._said()
        patch_scores, nearest_index = reranked.distances.cpu(), reranked.nearest_index.cpu()
        ordinal = int(torch.argmax(patch_scores))
        row = int(nearest_index[ordinal])
        image_id = int(self.bank.image_ids[row])
        worst = {
            "row": ordinal // width,
            "col": ordinal % width,
            "distance": float(patch_scores[ordinal]),
            "nearest_normal": {
                "image_id": image_id,
                "file_name": self.bank.file_names[image_id],
                "row": int(self.bank.grid[row, 0]),
                "col": int(self.bank.grid[row, 1]),
                "patch_id": int(self.bank.ids[row]),
            },
        }
        grid = patch_scores.reshape(height, width)
        found = regions.find(grid, self.model.threshold, self.care) if anomalous else []
        scored_at = time.perf_counter()
        defect = None
        if anomalous and self.defect_statement is not None:
            cells = library.anomalous_cells(grid, self.model.threshold, library.QUERY_CELLS)
            asked = features[[r for r, _ in cells], [c for _, c in cells]].float().numpy()
            neighbours = search_defects(
                connections[0], self.defect_statement, asked, ef_search or self.settings.hnsw_ef_search
            )
            defect = library.classify([float(grid[r, c]) for r, c in cells], neighbours, config.metric)
        defects_at = time.perf_counter()
        return Inspection(
            score=score,
            similarity=scoring.similarity(score, config.metric),
            threshold=self.model.threshold,
            threshold_similarity=self.threshold_similarity,
            is_anomalous=anomalous,
            patch_scores=grid,
            view_size=(height * stride, width * stride),
            worst=worst,
            similar=similar,
            timings_ms={
                **timings,
                "score": (scored_at - reranked_at) * 1000,
                **({"defects": (defects_at - scored_at) * 1000} if defect is not None else {}),
            },
            reranked=reranked.searched,
            exact_worst=reranked.complete,
            defect=defect,
            regions=found,
            p_value=self.tail(score) if self.tail is not None else None,
            backend=backend,
        )

    def _said(self) -> None:
        """The trial's choice, in the log, with the times it rests on."""
        chosen, other = self.choice.chosen, next(b for b in SEARCHES if b != self.choice.chosen)
        medians, timed = self.choice.medians_ms(), self.choice.timed()
        said = {
            backend: f"median {medians[backend]:.1f} ms over {timed[backend]} queries" if backend in medians else
            "no query timed alone" for backend in SEARCHES
        }  # fmt: skip
        log.info("category %s: searched %s (%s) rather than %s (%s)", self.model.category, SEARCHES[chosen],
                 said[chosen], SEARCHES[other], said[other])  # fmt: skip
