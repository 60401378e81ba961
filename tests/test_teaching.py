"""Teaching a fitted category in a real PostgreSQL: added normals and the defect library, made as versions."""

from __future__ import annotations

import io
import threading
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from config import EXACT_ON_CPU_FLOATS, Settings
from patchcore import defects as library
from patchcore.errors import ImageShapeError
from patchcore.images import open_image
from patchcore.model import Embedder, exact_prediction
from revisions.defects import DefectUpload, add_defects
from revisions.normals import add_normals
from revisions.uploads import Upload
from serving.inspector import Inspector
from store import banks, changes, images, models
from store.database import connect
from store.search import search_defects
from tests.conftest import BOTTLE, WEIGHTS
from tests.test_store import _blocker, _save, _wait_for_blocked_attach, kill_at_attach

EXTRA = sorted((BOTTLE / "train" / "good").glob("*.png"))[12:15]  # good images the small model never saw


def _upload(path) -> Upload:
    return Upload(path.name, path.read_bytes(), str(path))


def _state(connection, category: str = "bottle") -> tuple[int, int, int]:
    model = models.active_model(connection, category)
    return model.id, model.memory_bank_size, banks.patch_count(connection, model.bank_segments)


def _loaded(connection, category: str = "bottle") -> tuple[models.StoredModel, banks.StoredBank]:
    model = models.active_model(connection, category)
    return model, banks.load_memory_bank(connection, model.bank_segments, model.dim)


@pytest.fixture(scope="module")
def embedder(small_model):
    return Embedder.load(small_model.config, str(WEIGHTS), "cpu")


def test_added_normals_grow_the_bank_by_what_is_new_once(database_url, small_model, embedder):
    old_id = _save(database_url, "bottle", small_model)
    with connect(database_url, autocommit=True) as connection:
        old, bank = _loaded(connection)
        assert old.coverage_radius == pytest.approx(small_model.coverage_radius) and old.coverage_radius > 0
        added = add_normals(connection, old, bank, embedder, [_upload(p) for p in EXTRA], Settings(), "test")
        models.retire_old_models(connection, "bottle", Settings().fits_kept)
        new, grown = _loaded(connection)
        assert new.id == added.model_id != old_id and new.bank_segments == (old_id, new.id)
        assert 0 < added.patches_added < added.candidate_patches == 3 * 28 * 28
        size = old.memory_bank_size + added.patches_added
        assert _state(connection) == (new.id, size, size)
        assert new.threshold == old.threshold and new.threshold_policy["good_scores"] == 12 + 3
        assert images.image_counts(connection, new.bank_segments) == {"train": 9, "holdout": 3, "added": 3}
        sources = connection.execute("SELECT source FROM images WHERE split = 'added' ORDER BY id").fetchall()
        assert [s[0] for s in sources] == [str(p) for p in EXTRA]
        # every patch of an added image is now within the coreset radius of the bank (the rule that chose them)
        for path in EXTRA:
            distances = exact_prediction(embedder.features(embedder.preprocess.tensor(open_image(path))[None])[0],
                                         grown.embeddings, new.config).patch_scores  # fmt: skip
            assert float(distances.max()) <= new.coverage_radius + 1e-4
        log = changes.changes(connection, new.category_id)
        assert log[0]["action"] == "add_normals" and log[0]["detail"]["patches_added"] == added.patches_added

        again = add_normals(connection, new, grown, embedder, [_upload(p) for p in EXTRA], Settings(), "test")
        assert again.model_id == new.id and again.duplicates == [p.name for p in EXTRA] and again.patches_added == 0
        buffer = io.BytesIO()
        Image.open(EXTRA[0]).save(buffer, format="PNG", compress_level=1)  # the same pixels, another file
        copy = add_normals(connection, new, grown, embedder, [Upload("copy.png", buffer.getvalue(), "t")],
                           Settings(), "test")  # fmt: skip
        assert copy.model_id != new.id and copy.patches_added == 0 and copy.duplicates == []
        assert _state(connection)[1:] == (new.memory_bank_size,) * 2


def test_added_segments_are_searched_exactly_in_the_api_and_answer_as_hnsw_does(
    database_url, small_model, embedder, monkeypatch
):
    """Each segment more in the SQL search costs every query one more index scan per patch, whatever its size; the
    small segments that added normals append are searched exactly in the API process instead, the large ones by HNSW,
    with the same answers either way."""
    import serving.inspector as served

    _save(database_url, "bottle", small_model)
    with connect(database_url, autocommit=True) as connection:
        old, bank = _loaded(connection)
        added = add_normals(connection, old, bank, embedder, [_upload(p) for p in EXTRA[:2]], Settings(), "test")
        middle, bank = _loaded(connection)
        more = add_normals(connection, middle, bank, embedder, [_upload(EXTRA[2])], Settings(), "test")
        models.retire_old_models(connection, "bottle", Settings().fits_kept)
        model, grown = _loaded(connection)
        assert model.bank_segments == (old.id, middle.id, model.id)
        (fewer, smaller), (most, larger) = sorted([(added.patches_added, middle.id), (more.patches_added, model.id)])
        assert 0 < fewer < most
        # on a CPU a bank this small is searched exactly in the API process unless told (bottle's 10% bank is not:
        # tests/api/test_query.py)
        assert (
            grown.embeddings.numel() <= EXACT_ON_CPU_FLOATS and Inspector(model, grown, Settings()).backend == "exact"
        )
        hnsw_settings = Settings(search_backend="database")
        exact = Inspector(model, grown, hnsw_settings)
        assert exact.added_rows is not None and exact.added_rows.size == added.patches_added + more.patches_added
        assert set(grown.owners[exact.added_rows]) == {middle.id, model.id}
        assert f"IN ({old.id})" in exact.statement.as_string(connection)
        # a segment larger than the limit is searched by HNSW beside the fit's, the smaller one still here
        monkeypatch.setattr(served, "EXACT_SEGMENT_ROWS", fewer)
        mixed = Inspector(model, grown, hnsw_settings)
        assert set(grown.owners[mixed.added_rows]) == {smaller}
        assert f"IN ({old.id}, {larger})" in mixed.statement.as_string(connection)
        monkeypatch.setattr(served, "EXACT_SEGMENT_ROWS", 0)
        hnsw = Inspector(model, grown, hnsw_settings)
        assert hnsw.added is None and f"IN ({old.id}, {middle.id}, {model.id})" in hnsw.statement.as_string(connection)
        for path in (BOTTLE / "test" / "broken_large" / "000.png", BOTTLE / "test" / "good" / "000.png", *EXTRA):
            features = exact.embed(open_image(path))
            answers = [each.inspect_features([connection], features) for each in (exact, mixed, hnsw)]
            for one in answers[:2]:
                assert one.score == pytest.approx(answers[2].score, abs=1e-5) and one.worst == answers[2].worst, path
        # an added image's own patches are found in the segment that added it, by the exact pass
        for each, segment in ((exact, middle.id), (mixed, middle.id), (exact, model.id), (mixed, model.id)):
            image = EXTRA[0] if segment == middle.id else EXTRA[2]
            found = each.search([connection], each.embed(open_image(image)), top_k=1)
            assert segment in set(grown.owners[grown.rows(found.patch_ids)])


def test_a_reader_during_an_add_sees_one_whole_version(database_url, small_model, embedder):
    old_id = _save(database_url, "bottle", small_model)
    with connect(database_url, autocommit=True) as connection:
        old, bank = _loaded(connection)
    blocker = _blocker(database_url)
    done: list = []

    def add() -> None:
        with connect(database_url, autocommit=True) as connection:
            done.append(add_normals(connection, old, bank, embedder, [_upload(EXTRA[0])], Settings(), "test"))

    writer = threading.Thread(target=add)
    writer.start()
    try:
        _wait_for_blocked_attach(database_url)
        with connect(database_url, autocommit=True) as reader:
            assert _state(reader) == (old_id, old.memory_bank_size, old.memory_bank_size)
            assert images.image_counts(reader, old.bank_segments).get("added") is None
    finally:
        blocker.rollback()
        blocker.close()
        writer.join(60)
    with connect(database_url, autocommit=True) as reader:
        size = old.memory_bank_size + done[0].patches_added
        assert _state(reader) == (done[0].model_id, size, size)


def test_a_killed_add_leaves_the_old_version(database_url, small_model):
    old_id = _save(database_url, "bottle", small_model)
    size = small_model.memory_bank.shape[0]
    kill_at_attach(
        database_url, ["add-normals", "--category", "bottle", *map(str, EXTRA)], {"INSPECT_WEIGHTS": str(WEIGHTS)}
    )
    with connect(database_url, autocommit=True) as connection:
        assert _state(connection) == (old_id, size, size)
        assert connection.execute("SELECT count(*) FROM images WHERE split = 'added'").fetchone()[0] == 0
        assert connection.execute("SELECT count(*) FROM models").fetchone()[0] == 1
        orphans = connection.execute(
            "SELECT count(*) FROM pg_class c WHERE c.relkind = 'r' AND c.relname ~ '^patches_model_[0-9]+$' "
            "AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)"
        ).fetchone()[0]
        assert orphans == 0


def _defect(kind: str, name: str = "000", mask: bool = True) -> DefectUpload:
    path = BOTTLE / "test" / kind / f"{name}.png"
    data = (BOTTLE / "ground_truth" / kind / f"{name}_mask.png").read_bytes() if mask else None
    return DefectUpload(_upload(path), kind, data)


def test_the_library_names_the_type_of_a_defect_it_holds_a_copy_of(database_url, small_model, embedder):
    _save(database_url, "bottle", small_model)
    kinds = ("broken_large", "broken_small", "contamination")
    with connect(database_url, autocommit=True) as connection:
        model, bank = _loaded(connection)
        result = add_defects(connection, model, bank, embedder, [_defect(k) for k in kinds], Settings(), "test")
        models.retire_old_models(connection, "bottle", Settings().fits_kept)
        model, bank = _loaded(connection)
        assert model.defect_segments == (result["model_id"],) and result["defect_patches"] > 3
        assert [e["defect_type"] for e in result["added"]] == list(kinds)
        stored = connection.execute("SELECT count(*) FROM defect_patches").fetchone()[0]
        assert stored == result["defect_patches"]
        inspector = Inspector(model, bank, Settings())
        for kind in kinds:
            inspection = inspector.inspect([connection], open_image(BOTTLE / "test" / kind / "000.png"))
            assert inspection.is_anomalous and inspection.defect is not None
            assert inspection.defect.defect_type == kind, inspection.defect
            assert inspection.defect.nearest[0]["defect_type"] == kind and inspection.defect.confidence > 0
        good = inspector.inspect([connection], open_image(BOTTLE / "test" / "good" / "000.png"))
        assert not good.is_anomalous and good.defect is None
        # every asked cell gets its neighbours even when the patch search runs at the smallest ef_search (the HNSW
        # scan forced: a library this small would otherwise be read whole)
        forced = ("enable_seqscan", "enable_bitmapscan", "enable_sort")
        for setting in forced:
            connection.execute(f"SET {setting} = off")
        asked = bank.embeddings[:3].numpy()
        found = Counter(n.query for n in search_defects(connection, inspector.defect_statement, asked, 1))
        assert result["defect_patches"] >= library.NEIGHBOURS and found == {q: library.NEIGHBOURS for q in range(3)}
        for setting in forced:
            connection.execute(f"RESET {setting}")
        again = add_defects(connection, model, bank, embedder, [_defect(kinds[0])], Settings(), "test")
        assert again["model_id"] == model.id and again["skipped"] == ["000.png"]
        # without a mask the example keeps its most anomalous cells by the model
        unmasked = add_defects(connection, model, bank, embedder, [_defect("broken_large", "001", mask=False)],
                               Settings(), "test")  # fmt: skip
        assert unmasked["added"][0]["cells_from"] == "model" and 1 <= unmasked["defect_patches"] <= 32
        library_rows = connection.execute("SELECT count(*) FROM defect_examples").fetchone()[0]
        assert library_rows == 4


def test_bad_defect_inputs_are_refused_before_anything_is_written(database_url, small_model, embedder):
    _save(database_url, "bottle", small_model)
    with connect(database_url, autocommit=True) as connection:
        model, bank = _loaded(connection)
        wrong = _defect("broken_large")
        small = io.BytesIO()
        Image.new("L", (100, 50), 255).save(small, format="PNG")
        with pytest.raises(ImageShapeError, match="the mask is 100x50, its image 900x900: not the image's shape"):
            add_defects(connection, model, bank, embedder, [DefectUpload(wrong.upload, "broken_large",
                        small.getvalue())], Settings(), "test")  # fmt: skip
        empty = io.BytesIO()
        Image.new("L", (900, 900), 0).save(empty, format="PNG")
        with pytest.raises(ValueError, match="marks no defect pixel"):
            add_defects(connection, model, bank, embedder, [DefectUpload(wrong.upload, "broken_large",
                        empty.getvalue())], Settings(), "test")  # fmt: skip
        for label in ("", "good label", "x" * 101):
            with pytest.raises(ValueError, match="is not a name"):
                add_defects(connection, model, bank, embedder, [DefectUpload(wrong.upload, label)], Settings(), "t")
        assert connection.execute("SELECT count(*) FROM models").fetchone()[0] == 1
        assert connection.execute("SELECT count(*) FROM defect_examples").fetchone()[0] == 0


def test_cells_from_a_mask_and_the_vote():
    mask = np.zeros((224, 224), dtype=bool)
    mask[0:8, 0:8] = True  # one whole cell
    mask[100:101, 100:101] = True  # one pixel: under a quarter of its cell
    assert library.cells_from_mask(mask, (28, 28)) == [(0, 0)]
    thin = np.zeros((224, 224), dtype=bool)
    thin[50, 60] = True
    assert library.cells_from_mask(thin, (28, 28)) == [(6, 7)]
    near = [library.Neighbour(0, 1, "crack", "a.png", 0.5), library.Neighbour(1, 2, "dent", "b.png", 0.4),
            library.Neighbour(2, 1, "crack", "a.png", 0.6), library.Neighbour(3, 2, "dent", "b.png", 9.0)]  # fmt: skip
    verdict = library.classify([1.0, 1.0, 1.0, 1.0], near, "l2")
    assert verdict.defect_type == "crack" and verdict.confidence == 0.5  # cell 3's defect is farther than good
    assert [n["defect_id"] for n in verdict.nearest] == [2, 1]
    assert library.classify([0.1, 0.1, 0.1, 0.1], near, "l2").defect_type is None  # nothing nearer than good
    assert library.classify([1.0], [], "l2").defect_type is None  # an empty library


def test_normals_of_other_shapes_are_added_each_in_its_own_grid(database_url, small_model, embedder):
    """A category fitted on square images takes good images of other aspect ratios: each is seen whole at the
    pixel budget, scored as unseen, and its added patches keep cells of its own grid."""
    _save(database_url, "bottle", small_model)
    uploads, grids = [], {}
    for path, size in zip(EXTRA[:2], ((900, 300), (450, 900)), strict=True):
        buffer = io.BytesIO()
        image = Image.open(path).resize(size)
        image.save(buffer, format="PNG")
        name = f"{size[0]}x{size[1]}.png"
        uploads.append(Upload(name, buffer.getvalue(), "t"))
        grids[name] = tuple(embedder.features(embedder.preprocess.tensor(image)[None])[0].shape[:2])
    assert grids["900x300.png"][1] > 28 > grids["900x300.png"][0]  # wider than the square grid, and lower
    with connect(database_url, autocommit=True) as connection:
        old, bank = _loaded(connection)
        added = add_normals(connection, old, bank, embedder, uploads, Settings(), "test")
        assert added.patches_added > 0 and all(score > 0 for score in added.scores.values())
        cells = connection.execute(
            "SELECT i.file_name, max(p.grid_row), max(p.grid_col) FROM patches p JOIN images i ON i.id = p.image_id "
            "WHERE p.model_id = %s GROUP BY i.file_name",
            (added.model_id,),
        ).fetchall()
    assert cells, "no patch was added"
    for name, row, col in cells:
        assert row < grids[name][0] and col < grids[name][1], (name, row, col, grids[name])
    assert any(col >= 28 for name, _, col in cells if name == "900x300.png")  # a cell only the wide grid has
