import pytest
import torch

from patchcore import scoring
from patchcore.rerank import CHUNK, rerank_worst
from patchcore.scoring import ExactSearch


def _case(seed: int = 0, metric: str = "l2"):
    generator = torch.Generator().manual_seed(seed)
    bank = torch.randn(500, 16, generator=generator)
    patches = torch.randn(200, 16, generator=generator)
    search = ExactSearch(bank, metric)
    exact, index = search.nearest(patches)
    return search, patches, exact[:, 0], index[:, 0]


def _missed(exact: torch.Tensor, index: torch.Tensor, search: ExactSearch, patches: torch.Tensor, which: list[int]):
    """Upper bounds as an approximate search gives them: for ``which``, a real but wrong bank row, farther away."""
    upper, rows = exact.clone(), index.clone()
    for i in which:
        far = int(torch.argmax(search.distances(patches[i][None])[0]))
        upper[i], rows[i] = search.distances(patches[i][None])[0, far], far
    return upper, rows


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_misses_that_look_worst_are_searched_until_none_can_be_worse(metric):
    search, patches, exact, index = _case(metric=metric)
    good = torch.argsort(exact)[:40].tolist()  # the best-matching patches, made to look like the worst by a miss
    upper, rows = _missed(exact, index, search, patches, good)
    assert upper.max() > exact.max() + 0.1  # without the re-rank the image would look far worse than it is
    reranked = rerank_worst(upper, rows, patches, search, cap=200)
    assert float(reranked.distances.max()) == float(exact.max())
    worst = int(torch.argmax(reranked.distances))
    assert int(reranked.nearest_index[worst]) == int(index[worst])
    # it stops once the next upper bound cannot beat the largest exact distance: the 40 misses and the true worst
    assert 41 <= reranked.searched <= 41 + CHUNK
    assert torch.all(reranked.distances <= upper + 1e-6)


def test_exact_upper_bounds_need_a_single_chunk():
    search, patches, exact, index = _case(1)
    reranked = rerank_worst(exact, index, patches, search, cap=200)
    assert reranked.searched == CHUNK and reranked.complete
    assert torch.equal(reranked.distances, exact)
    assert rerank_worst(exact, index, patches, search, cap=CHUNK).complete  # stopped by the bound, at the cap


def test_past_the_cap_the_maximum_is_never_below_the_exact_one():
    search, patches, exact, index = _case(2)
    upper, rows = _missed(exact, index, search, patches, torch.argsort(exact)[:40].tolist())
    reranked = rerank_worst(upper, rows, patches, search, cap=3)
    assert reranked.searched == 3 and not reranked.complete
    assert float(reranked.distances.max()) > float(exact.max())
    assert rerank_worst(upper, rows, patches, search, cap=200).complete


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_the_pass_that_reranks_also_finds_the_support_of_m_star(metric):
    """eq. 7 needs the neighbours of the worst patch's nearest bank row; the re-rank's pass brings them, and the
    score from them is the score from a search of their own."""
    search, patches, exact, index = _case(3, metric)
    upper, rows = _missed(exact, index, search, patches, torch.argsort(exact)[:20].tolist())
    reranked = rerank_worst(upper, rows, patches, search, cap=200, neighbours=3)
    searched_rows = {int(rows[i]) for i in torch.argsort(upper, descending=True)[: reranked.searched]}
    assert set(reranked.neighbours) == searched_rows
    for row, found in reranked.neighbours.items():
        assert found.tolist() == search.nearest(search.bank[row][None], k=3)[1][0].tolist()
    m_star = int(reranked.nearest_index[int(torch.argmax(reranked.distances))])
    assert m_star in reranked.neighbours
    args = (reranked.distances, reranked.nearest_index, patches, search, 3)
    assert scoring.image_score(*args, reranked.neighbours) == pytest.approx(scoring.image_score(*args), rel=1e-6)
    farthest = torch.argsort(search.distances(search.bank[m_star][None])[0], descending=True)[:2]
    elsewhere = {m_star: torch.cat([torch.tensor([m_star]), farthest])}
    assert scoring.image_score(*args, elsewhere) > scoring.image_score(*args) + 1e-3  # the rows given are the ones used
    assert rerank_worst(upper, rows, patches, search, cap=200).neighbours == {}
