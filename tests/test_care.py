"""A care area: the cells outside it are neither learnt nor scored, in the fit, by the exact scorer and as served."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from config import Settings
from patchcore.care import CareArea
from patchcore.images import open_image
from patchcore.model import Embedder, PatchCoreConfig, exact_prediction, fit
from revisions.normals import add_normals
from revisions.threshold import set_threshold
from revisions.uploads import Upload
from store import banks, models
from store.database import connect
from store.migrate import upgrade
from tests.conftest import BOTTLE, SHARED, WEIGHTS

CORNER = 225  # the top left 225x225 pixels of bottle's 900x900 pictures: a fixture, say (7x7 of its 28x28 cells)


def _care() -> CareArea:
    mask = np.ones((900, 900), dtype=bool)
    mask[:CORNER, :CORNER] = False
    return CareArea(mask)


def _cluttered(path) -> Image.Image:
    """A good bottle with seeded noise in the corner the care area leaves out, 3 cells from its edge (a cell's features
    see beyond it: noise up to 15 pixels from the edge raised the cells beside it above the threshold)."""
    image = open_image(path)
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    image.paste(Image.fromarray(noise), (10, 10))
    return image


def test_an_evaluation_says_how_much_of_the_defects_lies_outside_the_care_area():
    """The share of the test masks' defect pixels outside the area, the model's view's pixels pooled, as the masks
    themselves count it at their full size (within the resampling to the view); none without an area."""
    from patchcore.datasets.category import Sample
    from patchcore.evaluation import Scored, Scorer, evaluate
    from patchcore.views import Preprocess

    masks = sorted((BOTTLE / "ground_truth" / "broken_large").glob("*.png"))[:3]
    samples = [Sample(BOTTLE / "test" / "broken_large" / f"{m.stem[:3]}.png", "broken_large", m) for m in masks]
    samples.append(Sample(BOTTLE / "test" / "good" / "000.png", "good", None))
    left = np.ones((900, 900), dtype=bool)
    left[:, :450] = False  # the left half left out: a share of each broken bottle's defect lies there
    truth = [np.asarray(Image.open(m)) > 0 for m in masks]
    expected = sum(int(t[:, :450].sum()) for t in truth) / sum(int(t.sum()) for t in truth)  # 0.358

    def blank(_) -> Scored:  # the maps do not matter here
        return Scored(1.0, np.zeros((224, 224), dtype=np.float32))

    outside = evaluate(samples, Scorer(blank), Preprocess(), 2.0, 0.03, care=CareArea(left)).figures
    assert abs(outside["defect_pixels_outside_care_area"] - expected) < 0.01 and 0.3 < expected < 0.4
    assert "defect_pixels_outside_care_area" not in evaluate(samples, Scorer(blank), Preprocess(), 2.0, 0.03).figures


@pytest.fixture(scope="module")
def fitted(small_train):
    config = PatchCoreConfig(backbone="resnet18", holdout_fraction=0.25)
    return fit(config, small_train, str(WEIGHTS)), fit(
        PatchCoreConfig(backbone="resnet18", holdout_fraction=0.25, care_area=_care().png()), small_train, str(WEIGHTS)
    )


def test_the_cells_are_those_half_inside_the_mask_stretched_over_the_grid():
    care = _care()
    cells = care.cells(28, 28)
    grid = torch.zeros(28 * 28, dtype=torch.bool)
    grid[cells] = True
    grid = grid.reshape(28, 28)
    assert not grid[:7, :7].any() and grid[7:, :].all() and grid[:, 7:].all()
    # a 14x7 grid of a picture twice as wide (the mask stretched): its 7 columns' left 3.5 hold the corner's 1.75
    # cells of each side, the rows 3.5 of them: cells 0-1 of each, and cell 1's half is exactly at the boundary
    wide = torch.zeros(7 * 14, dtype=torch.bool)
    wide[care.cells(7, 14)] = True
    assert not wide.reshape(7, 14)[:1, :3].any() and wide.reshape(7, 14)[2:, :].all()
    with pytest.raises(ValueError, match="covers no patch cell"):
        CareArea(np.pad(np.ones((2, 2), dtype=bool), 449)).cells(28, 28)
    with pytest.raises(ValueError, match="marks nothing"):
        CareArea(np.zeros((900, 900), dtype=bool))
    with pytest.raises(ValueError, match="whole field of view"):
        PatchCoreConfig(backbone="resnet18", field_of_view="crop", care_area=care.png())
    assert CareArea.read(care.png()).mask.tolist() == care.mask.tolist()


def test_the_memory_bank_holds_only_the_care_areas_cells(fitted):
    everywhere, cared = fitted
    positions = cared.bank_position
    assert not ((positions[:, 0] < 7) & (positions[:, 1] < 7)).any()
    assert ((everywhere.bank_position[:, 0] < 7) & (everywhere.bank_position[:, 1] < 7)).any()
    assert cared.config.as_dict()["care_area"] == {"width": 900, "height": 900, "share": 0.9375}


def test_what_varies_outside_the_care_area_is_not_a_defect(fitted):
    """Noise where a fixture would be makes a good bottle anomalous, worst in that corner; with the corner out of
    the care area the same picture is judged as the clean one (its cells there at 0), and a broken bottle is still
    found."""
    everywhere, cared = fitted
    embedder = Embedder.load(everywhere.config, str(WEIGHTS), "cpu")
    good = BOTTLE / "test" / "good" / "000.png"
    cluttered = embedder.features(everywhere.config.preprocess.tensor(_cluttered(good))[None])[0]
    clean = embedder.features(everywhere.config.preprocess.tensor(open_image(good))[None])[0]
    seen = everywhere.score(cluttered)
    worst = int(torch.argmax(seen.patch_scores))
    assert seen.score > everywhere.threshold and worst // 28 < 7 and worst % 28 < 7
    ignored = cared.score(cluttered)
    assert ignored.score < cared.threshold
    assert (ignored.patch_scores[:7, :7] == 0).all() and (ignored.patch_scores[7:] > 0).all()
    assert ignored.score == pytest.approx(cared.score(clean).score, abs=1e-6)
    broken = BOTTLE / "test" / "broken_large" / "000.png"
    features = embedder.features(everywhere.config.preprocess.tensor(open_image(broken))[None])[0]
    assert cared.score(features).score > cared.threshold


def test_served_as_the_exact_model_scores_it_and_kept_by_every_version(fitted, database_url):
    """Both search backends give the exact model's score and its grid (0 outside the area; HNSW's distances elsewhere
    never below the exact ones), one image at a time and a batch together; the regions and the worst patch lie inside
    it; a threshold set and normals added keep the area, and the added normals' bank rows
    lie inside it."""
    from serving.inspector import Inspector

    _, cared = fitted
    upgrade(database_url)
    with connect(database_url) as connection:
        models.save_model(connection, "fixture", cared, {}, Settings())
    images = [
        _cluttered(BOTTLE / "test" / "good" / "000.png"),
        open_image(BOTTLE / "test" / "broken_large" / "000.png"),
    ]
    with connect(database_url, autocommit=True) as connection:
        model = models.active_model(connection, "fixture")
        assert model.config.care_area == cared.config.care_area
        bank = banks.load_memory_bank(connection, model.bank_segments, model.dim)
        for backend in ("database", "exact"):
            inspector = Inspector(model, bank, Settings(database_url=database_url, search_backend=backend), "cpu")
            assert inspector.backend == backend
            features = [inspector.embed(image) for image in images]
            together = inspector.inspect_features_all([connection], features, top_k=3)
            for one, answer in zip(features, together, strict=True):
                exact = exact_prediction(one, bank.embeddings, model.config)
                alone = inspector.inspect_features([connection], one, top_k=3)
                for served in (alone, answer):
                    assert served.score == pytest.approx(exact.score, abs=1e-4), backend
                    assert (served.patch_scores[:7, :7] == 0).all()
                    assert (served.patch_scores >= exact.patch_scores - 1e-4).all()  # HNSW never finds less
                    if backend == "exact":
                        assert served.patch_scores == pytest.approx(exact.patch_scores, abs=1e-4)
                    assert not (served.worst["row"] < 7 and served.worst["col"] < 7)
                    assert all(r.top >= 7 or r.left >= 7 for r in served.regions)
            assert [a.is_anomalous for a in together] == [False, True]
        set_threshold(connection, model, "test", value=model.threshold * 1.1)
        raised = models.active_model(connection, "fixture")
        assert raised.id != model.id and raised.config.care_area == model.config.care_area
        embedder = Embedder.load(raised.config, str(WEIGHTS), "cpu")
        extra = sorted((BOTTLE / "train" / "good").glob("*.png"))[-2:]
        uploads = [Upload(p.name, p.read_bytes(), "test") for p in extra]
        bank = banks.load_memory_bank(connection, raised.bank_segments, raised.dim)
        added = add_normals(connection, raised, bank, embedder, uploads, Settings(), "test", recalibrate=True)
        grown = models.active_model(connection, "fixture")
        assert added.patches_added > 0 and added.recalibrated and grown.config.care_area == model.config.care_area
        rows = connection.execute(
            "SELECT grid_row, grid_col FROM patches WHERE model_id = %s", (grown.bank_segments[-1],)
        ).fetchall()
        assert rows and not [(r, c) for r, c in rows if r < 7 and c < 7]


def test_pictures_turned_by_their_exif_are_fitted_by_the_cells_of_their_upright_view(tmp_path):
    """A fit sizes its features from the files' headers; a picture stored turned, with an EXIF orientation that turns
    it upright, has its header's sides swapped, and a care area keeps other cells of a turned grid: the fit counts
    those of the upright view, which the model sees (452x184 strips, left 30% out: 558 cells, 572 turned)."""
    strips = sorted((SHARED / "datasets" / "non_square" / "bsdata_ballscrew" / "train" / "good").glob("*.png"))[:6]
    for index, path in enumerate(strips):
        image = Image.open(path).convert("RGB")
        if index % 2:  # stored turned a quarter, the EXIF saying how to turn it upright again
            exif = Image.Exif()
            exif[0x0112] = 6
            image.transpose(Image.Transpose.ROTATE_90).save(tmp_path / path.name, exif=exif.tobytes())
        else:
            image.save(tmp_path / path.name)
    mask = np.ones((184, 452), dtype=bool)
    mask[:, : int(452 * 0.3)] = False
    care = CareArea(mask)
    assert care.cells(18, 44).numel() == 558 and care.cells(44, 18).numel() == 572
    config = PatchCoreConfig(backbone="resnet18", holdout_fraction=0.2, care_area=care.png())
    model = fit(config, sorted(tmp_path.glob("*.png")), str(WEIGHTS))
    assert model.grid == (18, 44) and (model.bank_position[:, 1] >= 13).all()
