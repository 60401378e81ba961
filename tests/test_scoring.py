import math

import pytest
import torch

from patchcore import scoring
from patchcore.clustered import ClusteredSearch
from tests.conftest import WEIGHTS


def test_eq7_matches_a_hand_computed_case():
    # worst patch at distance 2 from m*, and at 3 and 4 from the two other neighbours of m*
    expected = (1 - math.exp(2) / (math.exp(2) + math.exp(3) + math.exp(4))) * 2
    assert scoring.reweighted_score(2.0, torch.tensor([3.0, 4.0])) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1.8200, abs=1e-4)


def test_eq7_with_b_1_is_the_max_patch_score():
    assert scoring.reweighted_score(2.5, torch.tensor([])) == 2.5


def test_image_score_uses_the_neighbours_of_the_nearest_bank_patch():
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [10.0, 10.0]])
    patches = torch.tensor([[0.0, 1.0], [0.9, 0.0]])
    search = scoring.ExactSearch(bank, "l2")
    distances, index = search.nearest(patches)
    assert index[:, 0].tolist() == [0, 1]
    # worst patch (0, 1): nearest m* = (0, 0) at 1; N_3(m*) = {m*, (1, 0), (0, 3)} at sqrt(2) and 2 from it
    expected = (1 - math.exp(1) / (math.exp(1) + math.exp(math.sqrt(2)) + math.exp(2))) * 1
    assert scoring.image_score(distances[:, 0], index[:, 0], patches, search, b=3) == pytest.approx(expected, rel=1e-6)
    assert scoring.image_score(distances[:, 0], index[:, 0], patches, search, b=1) == pytest.approx(1.0)


def test_cosine_distance_is_what_pgvector_computes():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    assert scoring.ExactSearch(b, "cosine").distances(a).tolist()[0] == pytest.approx([1 - 1 / math.sqrt(2), 2.0])
    assert scoring.paired_distance(a.expand(2, -1), b, "cosine").tolist() == pytest.approx([1 - 1 / math.sqrt(2), 2.0])


@pytest.mark.parametrize("search", [scoring.ExactSearch, ClusteredSearch])
def test_a_search_reports_the_distance_to_the_row_it_found_at_any_scale_of_the_features(search):
    """Rows around a point 100 from the origin, each query's 4 nearest 0.021-0.029 away: the expansion |q|^2 + |b|^2
    - 2 q.b rounds at 1e4's float32 epsilon (about 1e-3), coarser than these squared distances, so a distance taken
    from it is noise. Each search finds its rows by a product but reports the distance measured between the query and
    the row found."""
    generator = torch.Generator().manual_seed(0)
    centre = torch.full((64,), 100.0 / 8)
    bank = centre + 0.003 * torch.randn(3000, 64, generator=generator)
    queries = centre + 0.003 * torch.randn(50, 64, generator=generator)
    found = search(bank, "l2")
    distances, rows = found.nearest_one(queries)
    measured = (queries.double() - bank[rows].double()).norm(dim=1)
    assert torch.allclose(distances.double(), measured, rtol=1e-5, atol=0)
    distances, rows = found.nearest(queries[:5], k=4)
    measured = (queries[:5, None].double() - bank[rows].double()).norm(dim=2)
    assert torch.allclose(distances.double(), measured, rtol=1e-5, atol=0)
    assert (distances.diff(dim=1) >= 0).all()  # nearest first


def test_anomaly_map_keeps_a_flat_map_flat_and_has_the_input_size():
    flat = scoring.anomaly_map(torch.full((28, 28), 0.5), (224, 224))
    assert flat.shape == (224, 224)
    assert torch.allclose(flat, torch.full_like(flat, 0.5), atol=1e-5)
    spot = torch.zeros(28, 28)
    spot[14, 14] = 1.0
    blurred = scoring.anomaly_map(spot, (224, 224))
    row, col = divmod(int(torch.argmax(blurred)), 224)
    assert abs(row - 116) <= 4 and abs(col - 116) <= 4
    assert blurred.max() < 1.0


def test_cross_fitted_scores_are_exact_scores_against_a_coreset_made_without_the_fold():
    """Each image's good score is its exact score (eq. 7 too) against a coreset of the served bank's size that holds
    nothing of its fold: the served selection without the fold's centres, continued by the greedy rule over the
    other folds' patches; folds are balanced and cover all; images of different sizes each keep their own rows."""
    from patchcore.coreset import coreset_size, greedy_continued, greedy_selection, random_projection
    from patchcore.cross_fit import cross_fitted_scores, fold_of

    generator = torch.Generator().manual_seed(0)
    sizes = torch.tensor([50, 30, 50, 40, 64, 20, 56])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    flat = torch.randn(int(sizes.sum()), 16, generator=generator)
    projection = random_projection(flat, 8, 0)
    selection = greedy_selection(projection, coreset_size(flat.shape[0], 0.2), 1)
    fold = fold_of(torch.arange(7), 3, seed=1)
    assert sorted(torch.bincount(fold).tolist()) == [2, 2, 3]
    image_of_row = torch.repeat_interleave(torch.arange(7), sizes)
    for metric in scoring.METRICS:
        got = cross_fitted_scores(flat, offsets, projection, selection, metric, 3, seed=1, folds=3)
        for image in range(7):
            rows = torch.nonzero(fold[image_of_row] != fold[image]).flatten()
            kept = selection.indices[fold[image_of_row[selection.indices]] != fold[image]]
            start = torch.searchsorted(rows, kept)  # positions of the kept centres among the rows
            chosen = rows[
                greedy_continued(projection[rows], selection.indices.numel(), start, -torch.ones_like(rows)).indices
            ]
            assert chosen.unique().numel() == selection.indices.numel()
            assert (fold[image_of_row[chosen]] != fold[image]).all()  # nothing of the image's own fold
            search = scoring.ExactSearch(flat[chosen], metric)
            patches = flat[offsets[image] : offsets[image + 1]]
            distances, index = search.nearest(patches)
            expected = scoring.image_score(distances[:, 0], index[:, 0], patches, search, 3)
            assert got[image] == pytest.approx(expected, abs=1e-5)


def test_a_fold_that_held_every_served_centre_is_scored_against_a_fresh_selection_without_it():
    """Two images and a one-centre coreset: the fold that holds the only centre has its image scored against a
    selection made afresh over the other image's patches, the other image against that centre."""
    from patchcore.coreset import greedy_selection, random_projection
    from patchcore.cross_fit import cross_fitted_scores

    flat = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
    offsets = torch.tensor([0, 50, 100])
    projection = random_projection(flat, 8, 0)
    served = greedy_selection(projection, 1, 0).indices
    got = cross_fitted_scores(flat, offsets, projection, greedy_selection(projection, 1, 0), "l2", 3, seed=0)
    holder = int(served[0]) // 50
    other = 1 - holder
    rows = torch.arange(offsets[other], offsets[other + 1])
    for image, bank in ((holder, rows[greedy_selection(projection[rows], 1, 0).indices]), (other, served)):
        search = scoring.ExactSearch(flat[bank], "l2")
        patches = flat[offsets[image] : offsets[image + 1]]
        distances, index = search.nearest(patches)
        assert got[image] == pytest.approx(scoring.image_score(distances[:, 0], index[:, 0], patches, search, 3))


def test_an_image_score_from_projected_bounds_is_the_score_of_a_search_of_every_patch():
    """A held-out image's score, its patches searched in full only where their projected-nearest bank row leaves
    room for them to be the worst, is the score a search of every patch gives, in both metrics."""
    from patchcore.coreset import greedy_selection, random_projection
    from patchcore.cross_fit import held_out_score

    generator = torch.Generator().manual_seed(3)
    training = torch.randn(4000, 32, generator=generator)
    projection = random_projection(training, 8, 0)
    selection = greedy_selection(projection, 200, 0)
    for metric in scoring.METRICS:
        search = scoring.ExactSearch(training[selection.indices], metric)
        for image in range(4):
            patches = torch.randn(300, 32, generator=generator) * (1 + image / 2)
            distances, index = search.nearest(patches)
            expected = scoring.image_score(distances[:, 0], index[:, 0], patches, search, 3)
            projected = random_projection(patches, 8, 0)
            got = held_out_score(patches, projected, projection[selection.indices], search, 3)
            assert got == pytest.approx(expected, abs=1e-5)


def test_the_coverage_radius_found_from_upper_bounds_is_the_exact_largest_nearest_distance():
    """Searched in decreasing order of the bound given by each patch's projected-nearest centre, stopped early: the
    same radius as a search of every patch, in both metrics."""
    from patchcore.coreset import greedy_selection, random_projection
    from patchcore.cross_fit import coverage_radius

    patches = torch.randn(3000, 32, generator=torch.Generator().manual_seed(2))
    selection = greedy_selection(random_projection(patches, 8, 0), 150, 0)
    for metric in scoring.METRICS:
        search = scoring.ExactSearch(patches[selection.indices], metric)
        expected = float(search.nearest(patches)[0].max())
        assert coverage_radius(patches, search, selection.owner, chunk=64) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_a_search_holds_one_bounded_block_of_distances_and_answers_the_same(metric, monkeypatch):
    generator = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(500, 16, generator=generator), torch.randn(300, 16, generator=generator)
    whole = scoring.ExactSearch(bank, metric)
    expected_one, expected = whole.nearest_one(queries), whole.nearest(queries, k=3)
    assert whole.block_rows >= queries.shape[0]  # the default block holds this search at once
    monkeypatch.setattr(scoring, "BLOCK_BYTES", 4 * 500 * 7)
    blocked = scoring.ExactSearch(bank, metric)
    assert blocked.block_rows == 7
    one, three = blocked.nearest_one(queries), blocked.nearest(queries, k=3)
    assert torch.equal(one[1], expected_one[1]) and torch.allclose(one[0], expected_one[0])
    assert torch.equal(three[1], expected[1]) and torch.allclose(three[0], expected[0])
    monkeypatch.setattr(scoring, "BLOCK_BYTES", 1)
    assert scoring.ExactSearch(bank, metric).block_rows == 1


def test_folds_and_the_hold_out_take_whole_parts_and_deal_images_as_before_without_them():
    """A part's views share a fold and are held out together; folds stay balanced in images (at most one part's
    size apart); without parts every image is its own, dealt exactly as a seeded permutation round robin."""
    from pathlib import Path

    from patchcore.cross_fit import fold_of
    from patchcore.model import PatchCoreConfig, fit, part_groups, split_holdout

    groups = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 5])
    fold = fold_of(groups, 3, seed=2)
    for part in groups.unique():
        assert fold[groups == part].unique().numel() == 1
    load = torch.bincount(fold, minlength=3)
    assert int(load.max() - load.min()) <= 3 and int(load.sum()) == 12
    order = torch.randperm(10, generator=torch.Generator().manual_seed(5))
    expected = torch.empty(10, dtype=torch.long)
    expected[order] = torch.arange(10) % 4
    assert torch.equal(fold_of(torch.arange(10), 4, seed=5), expected)

    paths = [Path(f"{i}.png") for i in range(20)]
    parts = {p: f"part{i // 4}" for i, p in enumerate(paths)}  # 5 parts of 4 views
    assert part_groups(paths, parts).tolist() == [i // 4 for i in range(20)]
    bank, held = split_holdout(paths, 0.1, seed=3, parts=parts)
    assert len(held) == 4 and len({parts[p] for p in held}) == 1 and not {parts[p] for p in bank} & {parts[held[0]]}
    order = torch.randperm(20, generator=torch.Generator().manual_seed(3)).tolist()
    assert split_holdout(paths, 0.1, seed=3)[1] == [p for i, p in enumerate(paths) if i in order[:2]]
    with pytest.raises(ValueError, match=r"the 20 training images are all views of one part \(kos01\)"):
        fit(PatchCoreConfig(), paths, parts=dict.fromkeys(paths, "kos01"))  # said before any image is read
    with pytest.raises(ValueError, match="a false-alarm rate per part needs good images that are views of parts"):
        fit(PatchCoreConfig(), paths, per="part")  # every image a part of its own: refused before any work too
    with pytest.raises(ValueError, match="per image or per part, not 'sample'"):
        fit(PatchCoreConfig(), paths, parts=parts, per="sample")


def test_a_fit_without_a_hold_out_scores_every_image_cross_fitted_and_reports_no_held_out_stage(small_train):
    """``--holdout 0`` (every good image in the memory bank, as the paper fits): each is scored as unseen by the
    cross-fit, and the progress a job or a terminal shows has no empty "held out" stage."""
    from patchcore.model import PatchCoreConfig, fit

    stages = []
    model = fit(
        PatchCoreConfig(backbone="resnet18", holdout_fraction=0), small_train[:6], str(WEIGHTS),
        report=lambda stage, done, total, unit: stages.append(stage),
    )  # fmt: skip
    assert [r.split for r in model.images] == ["train"] * 6 and len(model.good_scores) == 6
    assert all(r.score is not None for r in model.images) and model.threshold > 0
    assert "held out" not in stages and {"features", "coreset", "cross-fitted good scores"} <= set(stages)
