import math

import torch

from patchcore.coreset import (
    _full_scan_greedy,
    _Start,
    coverage_radius,
    greedy_continued,
    greedy_coreset,
    greedy_selection,
    nearest_centre,
    nearest_centre_near,
    random_projection,
)


def _naive_greedy(points: torch.Tensor, k: int, first: int) -> list[int]:
    """Textbook greedy k-center (full scan every step), to check the pruned one picks the same centres."""
    nearest = torch.full((points.shape[0],), math.inf, dtype=torch.float64)
    chosen = [first]
    for _ in range(k - 1):
        nearest = torch.minimum(nearest, (points.double() - points[chosen[-1]].double()).norm(dim=1))
        chosen.append(int(torch.argmax(nearest)))
    return chosen


def _clustered(n: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(20, dim, generator=generator) * 5
    labels = torch.randint(20, (n,), generator=generator)
    return centres[labels] + torch.randn(n, dim, generator=generator)


def test_size_and_determinism():
    features = _clustered(3000, 64, 0)
    first = greedy_coreset(features, ratio=0.1, seed=3)
    again = greedy_coreset(features, ratio=0.1, seed=3)
    other = greedy_coreset(features, ratio=0.1, seed=4)
    assert first.numel() == 300
    assert first.unique().numel() == 300
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_pruned_selection_equals_the_textbook_greedy():
    features = _clustered(2000, 32, 1)  # 32 dims: no projection, so both run on the same points
    selected = greedy_coreset(features, ratio=0.05, seed=0)
    assert selected.tolist() == _naive_greedy(features, selected.numel(), int(selected[0]))


def test_gpu_full_scan_selects_the_same_centres_as_the_pruned_scan():
    features = _clustered(2000, 32, 3)  # the GPU path's loop, run on the CPU, against the CPU path
    pruned = greedy_coreset(features, ratio=0.05, seed=0)
    squared = (features * features).sum(1)
    start = _Start.fresh(features.shape[0], int(pruned[0]), features.device)
    full = _full_scan_greedy(features, squared, pruned.numel(), start, None).indices
    assert full.tolist() == pruned.tolist()


def test_a_greedy_selection_continued_from_its_first_centres_is_the_same_selection():
    """Continuing from a prefix of a greedy run, with the points' owners unknown, picks what the uninterrupted run
    picked, on both paths: the rule sees the chosen centres exactly as if it had chosen them itself."""
    points = _clustered(2000, 16, 5)
    whole = greedy_selection(points, 120, seed=0)
    unknown = torch.full((points.shape[0],), -1, dtype=torch.long)
    for prefix in (1, 40, 120):
        continued = greedy_continued(points, 120, whole.indices[:prefix], unknown)
        assert continued.indices.tolist() == whole.indices.tolist(), prefix
        assert torch.equal(continued.owner, whole.owner)
    chosen = whole.indices[:40]
    nearest = torch.cdist(points, points[chosen]).min(1)
    distance = nearest.values.index_fill(0, chosen, 0)
    start = _Start(chosen, distance, nearest.indices, int(torch.argmax(distance)))
    full_scan = _full_scan_greedy(points, (points * points).sum(1), 120, start, None)
    assert full_scan.indices.tolist() == whole.indices.tolist()


def test_a_continued_selection_covers_again_what_the_dropped_centres_covered():
    """Dropping the centres of some points and continuing without those points: the points left are covered as
    tightly as by a fresh selection of the same size over them alone (within the greedy rule's factor of 2)."""
    points = _clustered(3000, 16, 6)
    whole = greedy_selection(points, 150, seed=0)
    rest = torch.arange(1000, 3000)
    kept = whole.indices[whole.indices >= 1000] - 1000
    continued = greedy_continued(points[rest], 150, kept, whole.owner.new_full((2000,), -1))
    fresh = greedy_selection(points[rest], 150, seed=0)
    assert continued.indices.numel() == 150 and continued.indices.unique().numel() == 150
    radius = float(torch.cdist(points[rest], points[rest][continued.indices]).min(1).values.max())
    assert radius <= 2 * float(torch.cdist(points[rest], points[rest][fresh.indices]).min(1).values.max())


def test_the_nearest_centre_found_near_an_anchor_is_the_nearest_of_all():
    """Points whose centre was dropped, matched to the centres left near that dropped centre (their anchor), get
    the centre a full search gives; and so do points given anchors that are nowhere near them, since the bound
    holds for any anchor (it only prunes less)."""
    points = _clustered(4000, 32, 7)
    whole = greedy_selection(points, 200, seed=0)
    dropped = whole.indices[::5]
    kept = whole.indices[torch.arange(200) % 5 != 0]
    anchor_of_centre = torch.full((200,), -1, dtype=torch.long)
    anchor_of_centre[::5] = torch.arange(dropped.numel())
    lost = torch.nonzero(anchor_of_centre[whole.owner] >= 0).flatten()
    assert lost.numel() > 400
    expected = nearest_centre(points[lost], points[kept])
    found = nearest_centre_near(points[lost], points[dropped], anchor_of_centre[whole.owner[lost]], points[kept])
    assert torch.equal(found, expected)
    far = torch.randn(7, 32, generator=torch.Generator().manual_seed(1)) * 20
    anywhere = torch.randint(7, (lost.numel(),), generator=torch.Generator().manual_seed(2))
    assert torch.equal(nearest_centre_near(points[lost], far, anywhere, points[kept]), expected)


def test_far_outliers_are_always_selected():
    features = _clustered(5000, 384, 2)
    outliers = torch.full((3, 384), 40.0) * torch.tensor([[1.0], [-1.0], [0.5]])
    features = torch.cat([features, outliers])
    selected = set(greedy_coreset(features, ratio=0.01, seed=0).tolist())
    assert {5000, 5001, 5002} <= selected


def test_radius_is_no_worse_than_random_sampling_on_real_features(small_train):
    from patchcore.model import Embedder, PatchCoreConfig
    from tests.conftest import WEIGHTS

    embedder = Embedder.load(PatchCoreConfig(backbone="resnet18"), str(WEIGHTS))
    features = torch.cat([e.features.reshape(-1, 384) for e in embedder.embed_files(small_train[:4], 4, "test")])
    selected = greedy_coreset(features, ratio=0.1, seed=0)
    greedy_radius = coverage_radius(features, selected)
    for seed in range(3):
        random = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(seed))
        assert greedy_radius < coverage_radius(features, random[: selected.numel()])


def test_projection_is_seeded_and_reduces_dimension():
    features = torch.randn(100, 1536)
    assert random_projection(features, 128, 0).shape == (100, 128)
    assert torch.equal(random_projection(features, 128, 0), random_projection(features, 128, 0))
