"""Reading a dataset the way other public sets lay it out: masks by either common name, in any image format."""

from pathlib import Path

import numpy as np

from patchcore.datasets import mvtec_category
from patchcore.evaluation import Scored, evaluate
from patchcore.images import Preprocess
from tests.conftest import BOTTLE


def _link(target: Path, source: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


def test_masks_are_found_by_either_name_and_missing_ones_are_counted(tmp_path):
    category = tmp_path / "bottle"
    for path in sorted((BOTTLE / "train" / "good").glob("*.png"))[:2]:
        _link(category / "train" / "good" / path.name, path)
    _link(category / "test" / "good" / "000.png", BOTTLE / "test" / "good" / "000.png")
    masks = BOTTLE / "ground_truth" / "broken_large"
    for stem in ("000", "001", "002"):
        _link(category / "test" / "broken_large" / f"{stem}.png", BOTTLE / "test" / "broken_large" / f"{stem}.png")
    _link(category / "ground_truth" / "broken_large" / "000_mask.png", masks / "000_mask.png")  # MVTec AD, MPDD
    _link(category / "ground_truth" / "broken_large" / "001.PNG", masks / "001_mask.png")  # VisA (anomalib), BTAD
    _link(category / "ground_truth" / "broken_large" / "002.png", masks / "001_mask.png")  # both: _mask wins
    _link(category / "ground_truth" / "broken_large" / "002_mask.png", masks / "002_mask.png")

    test = {(s.defect, s.path.stem): s.mask for s in mvtec_category(tmp_path, "bottle").test}
    assert test == {
        ("good", "000"): None,
        ("broken_large", "000"): category / "ground_truth" / "broken_large" / "000_mask.png",
        ("broken_large", "001"): category / "ground_truth" / "broken_large" / "001.PNG",
        ("broken_large", "002"): category / "ground_truth" / "broken_large" / "002_mask.png",
    }

    (category / "ground_truth" / "broken_large" / "002_mask.png").unlink()
    (category / "ground_truth" / "broken_large" / "002.png").unlink()
    samples = mvtec_category(tmp_path, "bottle").test
    preprocess = Preprocess("whole", pixels=64 * 64)

    def score(path: Path) -> Scored:
        view = preprocess.view(900, 900)
        return Scored(float(path.stem != "000"), np.zeros((view.height, view.width), dtype=np.float32))

    evaluation = evaluate(samples, score, preprocess, 0.5, 0.03)
    message = evaluation.figures["pixel_metrics"]
    assert evaluation.figures["pixel_auroc"] is None and message.startswith("absent: 1 of 3 defective test images")
    assert message.endswith("broken_large/002.png)")
