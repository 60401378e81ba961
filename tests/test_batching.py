"""Micro-batches of the embedding (serving/batching.py), on the CPU with real weights and real bottle images: each
request gets its own features, as if embedded alone, while concurrent requests share forward passes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from pydantic import ValidationError

from config import Settings
from patchcore.images import open_image
from patchcore.model import Embedder, PatchCoreConfig
from serving.batching import EmbedBatcher
from tests.conftest import BOTTLE, SHARED, WEIGHTS

IMAGES = [p for kind in ("broken_large", "good") for p in sorted((BOTTLE / "test" / kind).glob("*.png"))[:6]]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load(PatchCoreConfig(backbone="resnet18"), str(WEIGHTS), "cpu")


def _views(embedder: Embedder, paths) -> list[torch.Tensor]:
    return [embedder.preprocess.tensor(open_image(p.read_bytes())) for p in paths]


def test_concurrent_requests_share_forward_passes_and_each_gets_its_own_features(embedder):
    views = _views(embedder, IMAGES)
    alone = [embedder.features(v[None])[0] for v in views]
    batcher = EmbedBatcher(wait_ms=500, max_batch=4)
    start = threading.Barrier(len(views))

    def request(view: torch.Tensor) -> torch.Tensor:
        start.wait()
        return batcher.features(embedder, view)

    with ThreadPoolExecutor(len(views)) as pool:
        batched = list(pool.map(request, views))
    assert batcher.views == len(views) and batcher.batches == 3  # 12 views, at most 4 a batch, all arriving at once
    for mine, reference in zip(batched, alone, strict=True):
        assert mine.shape == reference.shape == (28, 28, 384)
        assert torch.allclose(mine, reference, atol=1e-4), float((mine - reference).abs().max())


def test_views_of_other_shapes_go_in_batches_of_their_own_and_a_failure_reaches_every_request(embedder):
    strip = sorted((SHARED / "datasets" / "non_square" / "bsdata_ballscrew" / "test" / "good").glob("*.png"))[0]
    views = _views(embedder, [IMAGES[0], strip])
    assert views[0].shape != views[1].shape
    batcher = EmbedBatcher(wait_ms=300, max_batch=8)
    start = threading.Barrier(2)

    def request(view: torch.Tensor) -> torch.Tensor:
        start.wait()
        return batcher.features(embedder, view)

    with ThreadPoolExecutor(2) as pool:
        square, long = pool.map(request, views)
    assert batcher.batches == 2 and square.shape[:2] == (28, 28) and long.shape[:2] == (18, 44)

    broken = torch.full((3, 224, 224), float("nan"))
    failing = EmbedBatcher(wait_ms=300, max_batch=8)

    class Exploding(Embedder):
        def features(self, tensors: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("the device went away")

    bad = Exploding(embedder.config, embedder.extractor)
    start = threading.Barrier(3)

    def doomed(view: torch.Tensor) -> str:
        start.wait()
        with pytest.raises(RuntimeError, match="the device went away"):
            failing.features(bad, view)
        return "raised"

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(doomed, [broken, broken, broken])) == ["raised"] * 3
    assert failing.batches == 1


def test_batching_is_off_unless_asked(monkeypatch):
    monkeypatch.delenv("INSPECT_BATCH_WAIT_MS", raising=False)  # the default, whatever this shell or .env sets
    assert Settings(_env_file=None).batch_wait_ms == 0
    assert Settings(batch_wait_ms=5).batch_wait_ms == 5
    with pytest.raises(ValidationError):
        Settings(batch_wait_ms=-1)
