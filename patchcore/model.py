"""Fitting PatchCore and scoring with it in memory (the exact path).

A :class:`FittedModel` is everything a category learned: its settings, the coreset memory bank with each patch's
source image and grid position, the good images with an image-level embedding each, and the threshold calibrated
on held-out good images. The store persists exactly this object; nothing here knows about databases or HTTP.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from patchcore import cross_fit, progress, scoring, threshold
from patchcore.ahead import read_ahead
from patchcore.backbone import RANDOM_WEIGHTS, embedding_dim, load_backbone, weights_sha256
from patchcore.care import CareArea, care_area, inspected, spread
from patchcore.clustered import cpu_search
from patchcore.coreset import PROJECTION_DIM, coreset_size, greedy_selection, random_projection
from patchcore.evaluation import Scored, Scorer
from patchcore.features import PatchFeatureExtractor
from patchcore.images import header_size, jpeg, original_size, upright_size, white_level
from patchcore.scoring import BankSearch, Metric
from patchcore.spill import feature_matrix
from patchcore.views import ALIGN, Preprocess, colouring


@dataclass(frozen=True)
class PatchCoreConfig:
    """The settings of one category's model; stored with it so a server embeds queries exactly the same way."""

    backbone: str = "wide_resnet50_2"
    layers: tuple[str, ...] = ("layer2", "layer3")
    field_of_view: str = "whole"
    resize: int = 256
    crop: int = 224
    pixels: int = 224 * 224
    tile: int = 0
    tile_overlap: int = 32
    metric: Metric = "l2"
    coreset_ratio: float = 0.1
    num_neighbors: int = 9
    holdout_fraction: float = 0.1
    false_alarm_rate: float = threshold.DEFAULT_FALSE_ALARM_RATE
    seed: int = 0
    white_level: int | None = None  # None: found by the fit from the training images (images.white_level)
    jpeg_scaling: bool = True  # JPEGs decoded at a reduced DCT scale (Preprocess.least); off for versions fitted before
    care_area: bytes | None = None  # the mask of where the part is inspected, as a PNG (patchcore.care; None: all)

    def __post_init__(self) -> None:
        if self.metric not in scoring.METRICS:
            raise ValueError(f"metric must be one of {scoring.METRICS}, got {self.metric!r}")
        if self.num_neighbors < 1:
            raise ValueError("num_neighbors (b) must be at least 1")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError("holdout fraction must be in [0, 1)")
        threshold.check_rate(self.false_alarm_rate)
        Preprocess(self.field_of_view, self.resize, self.crop, self.pixels, self.white_level, self.jpeg_scaling)
        if self.tile and (self.tile < 64 or self.tile % ALIGN or self.tile_overlap % ALIGN):
            raise ValueError(f"tile ({self.tile}) must be at least 64 and, like its overlap, a multiple of {ALIGN}")
        if self.tile and not 0 <= self.tile_overlap < self.tile:
            raise ValueError(f"tile overlap {self.tile_overlap} must be at least 0 and less than the tile")
        coreset_size(1, self.coreset_ratio)
        if self.care_area is not None:
            care_area(self.care_area)
            if self.field_of_view != "whole":
                raise ValueError("a care area is drawn over the whole picture: it needs the whole field of view")

    @property
    def care(self) -> CareArea | None:
        """Where the part is inspected (``None``: every patch cell)."""
        return care_area(self.care_area) if self.care_area is not None else None

    @property
    def embedding_dim(self) -> int:
        return embedding_dim(self.backbone, self.layers)

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(self.field_of_view, self.resize, self.crop, self.pixels, self.white_level, self.jpeg_scaling)

    def as_dict(self) -> dict:
        care = self.care.summary() if self.care is not None else None
        return {**asdict(self), "layers": list(self.layers), "embedding_dim": self.embedding_dim, "care_area": care}


@dataclass
class ImageRecord:
    """A good training image: ``split`` is ``train`` (in the memory bank) or ``holdout`` (kept out of it).

    ``score`` is its image score as an unseen image: against a coreset selected without its fold (``train``, see
    :mod:`patchcore.cross_fit`) or against the whole bank (``holdout``); these good scores set the threshold."""

    file_name: str
    split: str
    sha256: str
    width: int
    height: int
    score: float | None = None
    view_jpeg: bytes | None = None  # the view the model saw, so people can see it without the dataset
    view_size: tuple[int, int] | None = None  # its width and height
    part: str | None = None  # the part it is one view of, where the set says (None: a part of its own)
    colour: str | None = None  # grey, neutral or colour (views.colouring); None: not known


@dataclass
class Embedded:
    """Patch features of one image, (H, W, D), with the facts about the file the store keeps."""

    features: torch.Tensor
    record: ImageRecord


@dataclass
class Prediction:
    """What the model says of one image."""

    score: float
    patch_scores: torch.Tensor

    def anomaly_map(self, size: tuple[int, int]) -> torch.Tensor:
        """The (height, width) map over the view."""
        return scoring.anomaly_map(self.patch_scores, size)


@dataclass
class FittedModel:
    """A fitted category: the object the store persists and the exact scorer evaluates."""

    config: PatchCoreConfig
    weights: str | None
    weights_sha256: str | None
    memory_bank: torch.Tensor
    bank_image: torch.Tensor
    bank_position: torch.Tensor
    images: list[ImageRecord]
    image_embeddings: torch.Tensor
    threshold: float
    grid: tuple[int, int]  # the training images' patch grid (the most common one where their shapes differ)
    timings: dict[str, float] = field(default_factory=dict)
    threshold_policy: dict = field(default_factory=dict)
    coverage_radius: float | None = None  # largest distance from a training patch to its nearest bank patch
    features_on_disk: bool = False  # the fit's features were mapped from a temporary file (patchcore.spill)
    parts: int | None = None  # parts the training images show, where some show one part (None: an image a part)

    @property
    def good_scores(self) -> list[float]:
        return [r.score for r in self.images if r.score is not None]

    @property
    def good_parts(self) -> list[str | None]:
        """The part of each good score's image (:attr:`good_scores`' order)."""
        return [r.part for r in self.images if r.score is not None]

    def score(self, features: torch.Tensor) -> Prediction:
        """Exact nearest-neighbour scoring of one image's (H, W, D) features."""
        return exact_prediction(features, self.memory_bank, self.config)


def exact_prediction(
    features: torch.Tensor, memory_bank: torch.Tensor, config: PatchCoreConfig, search: BankSearch | None = None
) -> Prediction:
    """Score (H, W, D) patch features against a memory bank by exact search, with the formulas of scoring. Each
    patch needs only its nearest bank row, so the square root is taken of the minima alone
    (:meth:`~patchcore.scoring.ExactSearch.nearest_one`); ``search``: one made ready for many images (on a CPU, in
    clusters: :func:`patchcore.clustered.cpu_search`), else every row is read. Where the category has a care area,
    only its cells are searched and scored; the others are at 0 in the grid (:mod:`patchcore.care`)."""
    height, width, _ = features.shape
    patches, cells = inspected(features, config.care)
    search = search or scoring.ExactSearch(memory_bank, config.metric)
    patch_scores, index = search.nearest_one(patches)
    score = scoring.image_score(patch_scores, index, patches, search, config.num_neighbors)
    return Prediction(score, spread(patch_scores, cells, height * width).reshape(height, width))


def load_extractor(config: PatchCoreConfig, weights: str | None, device: str | None = None) -> PatchFeatureExtractor:
    """``config``'s backbone truncated at its layers, with ``weights``, on ``device`` (unset: cuda when available).

    On a GPU, cuDNN's TF32 convolutions are switched off: with them an H100's features of bottle images differed
    from the CPU's by up to 6e-3 (mean 1.4e-4), without by 4e-6, at the same speed (64 images: 82-91 ms either
    way), so a model fitted on a GPU and served on a CPU, or the reverse, sees the same features."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
    return PatchFeatureExtractor(load_backbone(config.backbone, config.layers, weights).to(device))


class Embedder:
    """Reads an image, applies the category's transform and returns its patch features."""

    def __init__(self, config: PatchCoreConfig, extractor: PatchFeatureExtractor) -> None:
        """``extractor`` must be ``config``'s backbone and layers; a server shares one between the categories
        that use the same network (see :func:`load_extractor`)."""
        self.config = config
        self.preprocess = config.preprocess
        self.extractor = extractor

    @classmethod
    def load(cls, config: PatchCoreConfig, weights: str | None, device: str | None = None) -> Embedder:
        return cls(config, load_extractor(config, weights, device))

    def features(self, tensors: torch.Tensor) -> torch.Tensor:
        """(B, H, W, D) features of (B, 3, h, w) views: in one pass, or tile by tile when the category tiles and
        the view is larger than a tile."""
        tile = self.config.tile
        if tile and max(tensors.shape[-2:]) > tile:
            return torch.stack([self.extractor.tiled(t, tile, self.config.tile_overlap) for t in tensors])
        return self.extractor(tensors)

    def patch_count(self, path: Path) -> int:
        """How many patches the view of the image at ``path`` has (those its care area inspects, where it has one),
        from its header alone: a fit sizes its feature matrix before reading any pixels, instead of joining
        per-image pieces into a second copy of it. An EXIF rotation swaps the view's sides, never their product; the
        cells a care area keeps of a turned grid may differ, so there the picture's upright size is read."""
        care = self.config.care
        view = self.preprocess.view(*(header_size(path) if care is None else upright_size(path)))
        stride = self.extractor.stride
        height, width = view.height // stride, view.width // stride
        return height * width if care is None else int(care.cells(height, width).numel())

    def batches(self, tensors: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
        """Features of a stream of (3, H, W) tensors, ``batch_size`` at a time, in order. Images of one category may
        differ in size (the whole field of view keeps each one's aspect ratio): a batch holds consecutive views of
        one size, and a view of another size starts the next batch."""
        batch: list[torch.Tensor] = []
        for tensor in tensors:
            if batch and (tensor.shape != batch[0].shape or len(batch) == batch_size):
                yield self.features(torch.stack(batch))
                batch = []
            batch.append(tensor)
        if batch:
            yield self.features(torch.stack(batch))

    def embed_files(
        self, paths: list[Path], batch_size: int, description: str, report: progress.Report | None = None
    ) -> Iterator[Embedded]:
        """Features of each file in order, with a progress bar (count and rate). The files are read and decoded by
        threads a batch ahead of the network (:func:`~patchcore.ahead.read_ahead`): decoding is most of a CPU's
        feature stage (a bottle PNG of 900 px: 12.4 ms decoded, 2.9 ms to its view; the network 7.6-8.1 ms a view in a
        batch of 8, docs/job.md)."""
        records: list[ImageRecord] = []

        def read(path: Path) -> tuple[ImageRecord, torch.Tensor]:
            data = path.read_bytes()
            image = self.preprocess.decode(data, name=str(path))
            view = self.preprocess.cropped(image)
            digest = hashlib.sha256(data).hexdigest()
            size, colour = original_size(image), colouring(image, view)
            record = ImageRecord(path.name, "train", digest, *size, None, jpeg(view), view.size, colour=colour)
            return record, self.preprocess.normalised(view)

        def tensors() -> Iterator[torch.Tensor]:
            for record, tensor in read_ahead(read, paths, batch_size):
                records.append(record)
                yield tensor

        done = 0
        with progress.stage(description, len(paths), "img", report) as update:
            for batch in self.batches(tensors(), batch_size):
                for features in batch:
                    yield Embedded(features, records[done])
                    done += 1
                update(len(batch))


def split_holdout(
    paths: list[Path], fraction: float, seed: int, parts: Mapping[Path, str] | None = None
) -> tuple[list[Path], list[Path]]:
    """(memory-bank images, held-out images): a seeded random ``fraction`` is held out for calibration, whole parts
    at a time where ``parts`` names the part an image is a view of (the others are each their own): a held-out
    image is scored against the bank as a new part is, with none of its part's other views in it."""
    count = math.floor(len(paths) * fraction + 0.5) if fraction > 0 else 0
    if fraction > 0 and len(paths) >= 2:
        count = max(count, 1)
    if len(paths) - count < 1:
        raise ValueError(f"{len(paths)} training images are too few to hold {count} out for calibration")
    group = part_groups(paths, parts)
    order = torch.randperm(int(group.max()) + 1, generator=torch.Generator().manual_seed(seed)).tolist()
    sizes = torch.bincount(group).tolist()
    held_groups: set[int] = set()
    held_images = 0
    stay = max(1, min(2, len(order) - 1))  # two parts stay in the bank, so that it can be cross-fitted, where 3 are
    for g in order[: len(order) - stay]:
        if held_images >= count:
            break
        held_groups.add(g)
        held_images += sizes[g]
    held = {i for i, g in enumerate(group.tolist()) if g in held_groups}
    return [p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held]


def part_groups(paths: list[Path], parts: Mapping[Path, str] | None) -> torch.Tensor:
    """(N,) a part number for each image (:func:`patchcore.threshold.part_numbers`): images ``parts`` names the same
    part share one, every other image is a part of its own."""
    named = [parts.get(p) if parts else None for p in paths]
    return torch.tensor(threshold.part_numbers(named), dtype=torch.long)


def fit(
    config: PatchCoreConfig,
    train: list[Path],
    weights: str | None = None,
    batch_size: int = 16,
    device: str | None = None,
    embedder: Embedder | None = None,
    report: progress.Report | None = None,
    features_in_memory_max: int | None = None,
    parts: Mapping[Path, str] | None = None,
    per: str = threshold.PER_IMAGE,
) -> FittedModel:
    """Fit one category from good images: features, coreset, image embeddings, every good image scored as unseen
    (cross-fitted, :mod:`patchcore.cross_fit`), and the threshold at the configured false-alarm rate
    (:mod:`patchcore.threshold`). ``report`` hears each stage's progress (:mod:`patchcore.progress`); an exception
    it raises stops the fit. A ``config`` without a white level gets the training images' own
    (:func:`patchcore.images.white_level`) in the returned model's config, which is what scores it from then on.
    A feature matrix of more than ``features_in_memory_max`` bytes (unset: half the memory available) is mapped from
    a temporary file (:mod:`patchcore.spill`): the same values, so the same model. ``parts`` names the part an image
    is a view of, where a set photographs each part several times: the hold-out and the cross-fit's folds then take
    whole parts, so no good score is taken with another view of its part in the bank (a new part has none there).
    ``per`` ``part``: the false-alarm rate is the share of good parts flagged on any view
    (:func:`patchcore.threshold.false_alarm_threshold`), refused before any work where no part has several views."""
    if not train:
        raise ValueError("no training images")
    shown = int(part_groups(train, parts).max()) + 1  # the parts the training images show
    if len(train) > 1 and shown == 1:
        raise ValueError(
            f"the {len(train)} training images are all views of one part ({parts[train[0]]}): a threshold from good "
            "images needs good parts the memory bank has not seen, so fit from views of several parts"
        )
    threshold.check_per(per)
    if per == threshold.PER_PART and shown == len(train):
        raise ValueError(threshold.PER_PART_NEEDS_VIEWS)
    started = time.perf_counter()
    if config.white_level is None and (found := white_level(train)) is not None:
        config = replace(config, white_level=found)
        embedder = Embedder(config, embedder.extractor) if embedder is not None else None
    embedder = embedder or Embedder.load(config, weights, device)
    bank_paths, holdout_paths = split_holdout(train, config.holdout_fraction, config.seed, parts)
    bank_parts = part_groups(bank_paths, parts)

    dim = config.embedding_dim
    sizes = torch.tensor([embedder.patch_count(path) for path in bank_paths], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    matrix = feature_matrix(int(offsets[-1]), dim, features_in_memory_max)
    features = matrix.features
    grids: list[tuple[int, int]] = []
    images: list[ImageRecord] = []
    image_embeddings = torch.empty(len(train), dim)
    cells: list[torch.Tensor] = []  # each image's cells in its rows (its whole grid, or its care area's cells)
    for i, item in enumerate(embedder.embed_files(bank_paths, batch_size, "features", report)):
        height, width, _ = item.features.shape
        patches, kept = inspected(item.features, config.care)
        if patches.shape[0] != sizes[i]:
            raise RuntimeError(f"{bank_paths[i]}: {height}x{width} patches, its header predicted {int(sizes[i])}")
        rows = features[offsets[i] : offsets[i + 1]]
        rows.copy_(patches)
        grids.append((height, width))
        cells.append(torch.arange(height * width) if kept is None else kept)
        image_embeddings[i] = rows.mean(0)
        images.append(item.record)
    image_of_row = torch.repeat_interleave(torch.arange(len(grids)), sizes)
    cell = torch.cat(cells)
    del cells
    widths = torch.tensor([w for _, w in grids])[image_of_row]
    position_of_row = torch.stack([cell // widths, cell % widths], dim=1)
    grid = Counter(grids).most_common(1)[0][0]
    feature_seconds = time.perf_counter() - started

    coreset_started = time.perf_counter()
    projection = random_projection(features, PROJECTION_DIM, config.seed, embedder.extractor.device)
    total = coreset_size(features.shape[0], config.coreset_ratio)
    with progress.stage("coreset", total, "patch", report) as update:
        selection = greedy_selection(projection, total, config.seed, progress=update)
    coreset_seconds = time.perf_counter() - coreset_started
    memory_bank = features[selection.indices].clone()
    bank_image = image_of_row[selection.indices]
    bank_position = position_of_row[selection.indices]
    del image_of_row, cell, widths, position_of_row

    out_of_fold_started = time.perf_counter()
    bank_search = scoring.ExactSearch(memory_bank, config.metric)
    radius = cross_fit.coverage_radius(features, bank_search, selection.owner)
    centre_points = projection.index_select(0, selection.indices.to(projection.device))
    if int(bank_parts.max()) > 0:  # two parts at least
        with progress.stage("cross-fitted good scores", len(bank_paths), "img", report) as update:
            out_of_fold = cross_fit.cross_fitted_scores(
                features,
                offsets,
                projection,
                selection,
                config.metric,
                config.num_neighbors,
                config.seed,
                progress=update,
                groups=bank_parts,
            )
        for record, score in zip(images, out_of_fold, strict=True):
            record.score = score
    matrix_on_disk = matrix.on_disk is not None
    del features, projection, matrix
    out_of_fold_seconds = time.perf_counter() - out_of_fold_started

    weights_hash = None if weights in (None, RANDOM_WEIGHTS) else weights_sha256(weights)
    model = FittedModel(
        config,
        weights,
        weights_hash,
        memory_bank,
        bank_image,
        bank_position,
        images,
        image_embeddings,
        math.inf,
        grid,
        coverage_radius=radius,
        features_on_disk=matrix_on_disk,
    )
    if shown < len(train):  # some part has several views
        model.parts = shown
        for record, path in zip(images, bank_paths, strict=True):  # kept where a part has several views
            record.part = parts.get(path)
    offset = len(bank_paths)
    held_out = embedder.embed_files(holdout_paths, batch_size, "held out", report) if holdout_paths else ()
    for i, item in enumerate(held_out):
        item.record.split = "holdout"
        item.record.part = parts.get(holdout_paths[i]) if parts and model.parts else None
        patches, _ = inspected(item.features, config.care)
        projected = random_projection(patches, PROJECTION_DIM, config.seed, centre_points.device)
        b = config.num_neighbors
        item.record.score = cross_fit.held_out_score(patches, projected, centre_points, bank_search, b)
        image_embeddings[offset + i] = patches.mean(0)
        images.append(item.record)
    model.threshold, model.threshold_policy = threshold.false_alarm_threshold(
        model.good_scores, config.false_alarm_rate, model.good_parts, per
    )
    model.timings = {
        "feature_seconds": feature_seconds,
        "coreset_seconds": coreset_seconds,
        "out_of_fold_seconds": out_of_fold_seconds,
        "fit_seconds": time.perf_counter() - started,
    }
    return model


def exact_scorer(model: FittedModel, embedder: Embedder) -> Scorer:
    """Score image files by exact nearest-neighbour search over the in-memory memory bank; each file is decoded to
    its view's tensor ahead of the scoring (:class:`~patchcore.evaluation.Scorer`)."""

    preprocess = model.config.preprocess  # the fit may have set the white level the embedder was loaded without
    bank = model.memory_bank
    search = cpu_search(bank, model.config.metric) if bank.device.type == "cpu" else None  # the served search's

    def read(path: Path) -> torch.Tensor:
        return preprocess.tensor(preprocess.decode(path))

    def score(tensor: torch.Tensor) -> Scored:
        prediction = exact_prediction(embedder.features(tensor[None])[0], bank, model.config, search)
        size = tuple(tensor.shape[1:])
        return Scored(prediction.score, prediction.anomaly_map(size).numpy(), prediction.patch_scores.numpy())

    return Scorer(score, read)
