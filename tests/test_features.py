import pytest
import torch
import torchvision

from patchcore import WeightsError
from patchcore.backbone import RANDOM_WEIGHTS, TruncatedResNet, fold_batch_norms, load_backbone
from patchcore.features import PatchFeatureExtractor
from tests.conftest import WEIGHTS


def test_resnet18_real_weights_give_384_dims_on_a_28x28_grid():
    extractor = PatchFeatureExtractor(load_backbone("resnet18", ("layer2", "layer3"), WEIGHTS))
    features = extractor(torch.randn(2, 3, 224, 224))
    assert features.shape == (2, 28, 28, 384)
    assert "layer4" not in dict(extractor.network.body.named_children())


def test_wide_resnet50_random_weights_give_1536_dims():
    extractor = PatchFeatureExtractor(load_backbone("wide_resnet50_2", ("layer2", "layer3"), RANDOM_WEIGHTS))
    assert extractor(torch.randn(1, 3, 224, 224)).shape == (1, 28, 28, 1536)


def test_random_weights_are_the_same_network_in_every_load():
    torch.manual_seed(123)  # whatever the caller's generator state, a model fitted on random weights stays servable
    first = load_backbone("resnet18", ("layer2", "layer3"), RANDOM_WEIGHTS)
    second = load_backbone("resnet18", ("layer2", "layer3"), RANDOM_WEIGHTS)
    assert torch.equal(first.body["layer2"][0].conv1.weight, second.body["layer2"][0].conv1.weight)


def test_the_real_weights_are_loaded_not_random():
    network = load_backbone("resnet18", ("layer2", "layer3"), WEIGHTS)
    state = torch.load(WEIGHTS, weights_only=True)
    assert torch.equal(network.body["layer3"][1].conv2.weight, state["layer3.1.conv2.weight"])


def test_batch_norms_folded_into_their_convolutions_give_the_same_features():
    """Folded, no batch norm is left to run, and the features are the network's as torchvision builds it: with batch
    norms of every kind of statistics (torchvision's weights for users; a random draw here, on both backbones), and
    from the shared file, whose batch norms are a bias alone."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 96, 128)
    for builder in (torchvision.models.resnet18, torchvision.models.wide_resnet50_2):
        plain = TruncatedResNet(builder(), ("layer2", "layer3")).eval()
        for norm in (m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.2, 3.0)
            norm.weight.data.uniform_(0.5, 1.5)
            norm.bias.data.uniform_(-0.5, 0.5)
        expected = PatchFeatureExtractor(plain)(images)
        folded = TruncatedResNet(builder(), ("layer2", "layer3")).eval()
        folded.load_state_dict(plain.state_dict())
        fold_batch_norms(folded)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        found = PatchFeatureExtractor(folded)(images)
        assert torch.allclose(found, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item()), builder
    shared = TruncatedResNet(torchvision.models.resnet18(), ("layer2", "layer3"))
    shared.load_checkpoint(torch.load(WEIGHTS, weights_only=True), "shared")
    expected = PatchFeatureExtractor(shared.eval())(images)
    found = PatchFeatureExtractor(load_backbone("resnet18", ("layer2", "layer3"), WEIGHTS))(images)
    assert torch.allclose(found, expected, rtol=0, atol=1e-6)


def test_a_weights_file_missing_a_used_tensor_names_it(tmp_path):
    state = torch.load(WEIGHTS, weights_only=True)
    del state["layer3.0.downsample.0.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(WeightsError, match=r"layer3\.0\.downsample\.0\.weight"):
        load_backbone("resnet18", ("layer2", "layer3"), broken)


def test_a_weights_file_that_is_not_a_state_dict_says_so(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not torch")
    with pytest.raises(WeightsError, match="not a torch state_dict"):
        load_backbone("resnet18", ("layer2", "layer3"), junk)
    with pytest.raises(WeightsError, match="does not exist"):
        load_backbone("resnet18", ("layer2", "layer3"), tmp_path / "absent.pth")


def test_a_failed_download_says_how_to_pass_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setattr(type(weights), "url", property(lambda self: "http://127.0.0.1:9/resnet18.pth"))
    with pytest.raises(WeightsError, match="--weights"):
        load_backbone("resnet18", ("layer2", "layer3"), None)


def test_tiles_cover_every_patch_once_and_match_one_pass():
    from patchcore.features import _cuts, _starts
    from patchcore.images import open_image
    from patchcore.views import Preprocess
    from tests.conftest import BOTTLE

    for length, tile, overlap in ((448, 224, 32), (640, 224, 64), (224, 224, 32), (160, 224, 32), (464, 128, 48)):
        starts = _starts(length, tile, overlap)
        spans = _cuts(starts, min(tile, length), length)
        covered = [p for s in starts for p in range(*spans[s])]
        assert covered == list(range(length)), (length, tile, overlap)
        assert all(s <= spans[s][0] and spans[s][1] <= s + min(tile, length) for s in starts)  # inside its tile

    extractor = PatchFeatureExtractor(load_backbone("resnet18", ("layer2", "layer3"), WEIGHTS))
    view = Preprocess("whole", pixels=448 * 448).tensor(open_image(BOTTLE / "test" / "good" / "000.png"))
    assert view.shape == (3, 448, 448)
    whole = extractor(view[None])[0]
    assert torch.equal(extractor.tiled(view, 448, 32), whole)  # one tile: the one pass itself
    tiled = extractor.tiled(view, 224, 64)
    assert tiled.shape == whole.shape == (56, 56, 384)
    similarity = torch.nn.functional.cosine_similarity(tiled, whole, dim=-1)
    assert similarity.mean() > 0.95 and similarity.min() > 0.6, (similarity.mean(), similarity.min())
    error = (tiled - whole).norm(dim=-1).mean()
    shifted = (tiled[:, 1:] - whole[:, :-1]).norm(dim=-1).mean()
    assert error < shifted / 3, (error, shifted)  # each patch sits at its own place, not a neighbour's


@pytest.mark.parametrize(
    ("field_of_view", "tile"), [("whole", 0), ("crop", 0), ("whole", 128)], ids=["whole", "crop", "tiled"]
)
def test_a_fit_sizes_its_features_from_headers_exactly(tmp_path, field_of_view, tile):
    """The fit writes each image's features into a matrix sized from the headers alone: the count must be exact for
    a strip, a rotated phone picture (EXIF) and any field of view."""
    from PIL import Image

    from patchcore.model import Embedder, PatchCoreConfig
    from tests.conftest import SHARED

    strip = sorted((SHARED / "datasets" / "non_square" / "bsdata_ballscrew" / "train" / "good").glob("*.png"))[0]
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees: the stored 300x700 is seen as 700x300
    Image.new("RGB", (300, 700), (90, 120, 150)).save(rotated, exif=exif)
    config = PatchCoreConfig(backbone="resnet18", field_of_view=field_of_view, tile=tile)
    embedder = Embedder.load(config, str(WEIGHTS), device="cpu")
    for item, path in zip(embedder.embed_files([strip, rotated], 1, "test"), [strip, rotated], strict=True):
        height, width, _ = item.features.shape
        assert embedder.patch_count(path) == height * width
        assert (height < width) == (field_of_view == "whole")


def test_a_fit_reads_its_files_ahead_in_order_within_a_window_and_names_a_failure():
    """The fit's files are decoded by threads ahead of the network: in their order whatever each one's decoding
    takes, never more than the window ahead (memory), and the first file that fails is raised as a loop would."""
    import random
    import time

    from patchcore import ImageError
    from patchcore.ahead import read_ahead

    pulled: list[int] = []

    def items():
        for item in range(40):
            pulled.append(item)
            yield item

    def read(item: int) -> int:
        time.sleep(random.Random(item).uniform(0, 0.004))  # finished out of order
        if item == 33:
            raise ImageError(f"{item}.png: cannot decode the image")
        return item * 2

    seen = []
    with pytest.raises(ImageError, match=r"33\.png"):
        for value in read_ahead(read, items(), 4):
            assert len(pulled) <= len(seen) + 5  # the one handed out, and at most 4 ahead of it
            seen.append(value)
    assert seen == [2 * item for item in range(33)]
