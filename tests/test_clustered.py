"""The CPU's exact search (`patchcore.clustered`): clusters decide only what is read, so it finds what a search of
every row finds, on real patch features and on banks built to defeat the clusters."""

import pytest
import torch

from patchcore.clustered import ClusteredSearch, cluster_count
from patchcore.images import open_image
from patchcore.model import Embedder
from patchcore.scoring import ExactSearch, image_score
from tests.conftest import BOTTLE, WEIGHTS


@pytest.fixture(scope="module")
def patches(small_model) -> torch.Tensor:
    """Every patch of six real bottle test images (good and broken), as a query would search them."""
    embedder = Embedder.load(small_model.config, str(WEIGHTS), "cpu")
    paths = [p for kind in ("good", "broken_large") for p in sorted((BOTTLE / "test" / kind).glob("*.png"))[:3]]
    views = [embedder.preprocess.tensor(open_image(p.read_bytes())) for p in paths]
    features = embedder.features(torch.stack(views))
    return features.reshape(-1, features.shape[-1]).float()


def _as_near(found: torch.Tensor, want: torch.Tensor, queries: torch.Tensor, bank: torch.Tensor, metric: str) -> bool:
    """Distances of rows found equally near within float32's rounding of the searches' arithmetic. An l2 search
    finds its nearest row by ``|q|^2 + |b|^2 - 2 q.b``, whose rounding grows with the squared norms, not with the
    distance, so two searches may pick two rows that near: compared as squares, within 64 float32 epsilons of
    ``|q|^2 + |b|^2`` (bottle's patches: up to 7 seen); a cosine distance is one minus a product of unit vectors,
    within 1e-4."""
    if metric == "cosine":
        return bool(torch.allclose(found, want, atol=1e-4))
    scale = (queries * queries).sum(1) + (bank * bank).sum(1).max()
    return bool(((found * found - want * want).abs() <= 64 * torch.finfo(torch.float32).eps * scale).all())


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_it_finds_every_patchs_nearest_row_as_a_search_of_every_row_does(small_model, patches, metric):
    bank = small_model.memory_bank
    clustered, every = ClusteredSearch(bank, metric), ExactSearch(bank, metric)
    assert clustered.centres.shape[0] == cluster_count(bank.shape[0]) > 1
    distances, rows = clustered.nearest_one(patches)
    want, want_rows = every.nearest_one(patches)
    assert _as_near(distances, want, patches, bank, metric) and (rows == want_rows).float().mean() >= 0.999
    same = rows == want_rows  # the same row found: the same distance, measured between the pair by both searches
    assert torch.allclose(distances[same], want[same], rtol=1e-6, atol=0)
    near, near_rows = clustered.nearest(patches[:40], k=9)
    most, most_rows = every.nearest(patches[:40], k=9)
    assert near == pytest.approx(most, abs=1e-3) and (near_rows == most_rows).float().mean() >= 0.99
    for image in range(0, patches.shape[0], 784):  # eq. 7 asks the clustered search what it asks the exact one
        one = slice(image, image + 784)
        scored = image_score(distances[one], rows[one], patches[one], clustered, 9)
        assert scored == pytest.approx(image_score(want[one], want_rows[one], patches[one], every, 9), rel=1e-4)


def test_clusters_that_overlap_or_hold_copies_still_give_the_exact_nearest():
    """A bank the clusters cannot split well (a wide Gaussian), one of copies of a row, a single row, and a plane
    filled evenly, where many nearest rows lie in the next cluster (a bound 10% short of the cluster's radius
    misses some there): the nearest is still every row's search's."""
    generator = torch.Generator().manual_seed(0)
    wide = torch.randn(3000, 16, generator=generator)
    queries = torch.randn(500, 16, generator=generator) * 1.5
    plane, on_plane = torch.rand(3000, 2, generator=generator), torch.rand(2000, 2, generator=generator)
    cases = [(wide, queries), (torch.ones(50, 16), queries), (wide[:1], queries), (plane, on_plane)]
    for bank, queries in cases:
        for metric in ("l2", "cosine"):
            clustered, every = ClusteredSearch(bank, metric), ExactSearch(bank, metric)
            distances, rows = clustered.nearest_one(queries)
            want, want_rows = every.nearest_one(queries)
            assert distances == pytest.approx(want, abs=1e-4)  # the row found is as near as every row's search's
            assert torch.allclose(
                every.pairwise(queries, bank[rows]), every.pairwise(queries, bank[want_rows]), atol=1e-5
            )
            near, _ = clustered.nearest(queries[:20], k=5)
            assert near == pytest.approx(every.nearest(queries[:20], k=5)[0], abs=1e-3)
