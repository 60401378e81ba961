"""A fit whose features are mapped from a temporary file gives the model the in-memory fit gives."""

from __future__ import annotations

import shutil
import tempfile
from types import SimpleNamespace

import torch

from patchcore.model import PatchCoreConfig, fit
from patchcore.spill import available_bytes, feature_matrix
from tests.conftest import WEIGHTS


def test_a_fit_with_its_features_on_disk_is_the_fit_in_memory(small_train, small_model, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = PatchCoreConfig(backbone="resnet18", holdout_fraction=0.25)
    mapped = fit(config, small_train, str(WEIGHTS), features_in_memory_max=0)
    assert mapped.features_on_disk and not small_model.features_on_disk
    assert torch.equal(mapped.memory_bank, small_model.memory_bank)
    assert torch.equal(mapped.bank_position, small_model.bank_position)
    assert mapped.good_scores == small_model.good_scores and mapped.threshold == small_model.threshold
    assert mapped.coverage_radius == small_model.coverage_radius
    assert list(tmp_path.iterdir()) == []  # the file went with the fit


def test_a_matrix_goes_to_disk_only_above_its_limit_and_where_the_folder_has_room(tmp_path, monkeypatch):
    assert feature_matrix(10, 4, in_memory_max=160, directory=str(tmp_path)).on_disk is None
    on_disk = feature_matrix(10, 4, in_memory_max=159, directory=str(tmp_path))
    assert on_disk.on_disk is not None and on_disk.on_disk.startswith(str(tmp_path))
    on_disk.features[:] = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    assert float(on_disk.features.sum()) == sum(range(40)) and list(tmp_path.iterdir()) == []
    assert available_bytes() > 0
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: SimpleNamespace(total=100, used=100, free=0))
    assert feature_matrix(10, 4, in_memory_max=0, directory=str(tmp_path)).on_disk is None  # no room: memory
