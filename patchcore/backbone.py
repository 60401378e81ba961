"""Pretrained torchvision backbones, cut after the deepest layer PatchCore uses.

Only the stem and the layers up to the deepest requested one are built and loaded, so a weights file holding
just those tensors (such as ``resnet18-imagenet1k-to-layer3.pth``) is complete, and layer4 / fc never run. Once
loaded, each batch norm is folded into the convolution before it (:func:`fold_batch_norms`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from patchcore.errors import WeightsError, WeightsMismatch

LAYER_ORDER = ("layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class BackboneSpec:
    """What PatchCore needs to know about a torchvision ResNet family member."""

    builder: str
    weights_enum: str
    channels: dict[str, int]


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(
        "resnet18", "ResNet18_Weights", {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
    ),
    "resnet50": BackboneSpec(
        "resnet50", "ResNet50_Weights", {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
    ),
    "wide_resnet50_2": BackboneSpec(
        "wide_resnet50_2",
        "Wide_ResNet50_2_Weights",
        {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
    ),
    "wide_resnet101_2": BackboneSpec(
        "wide_resnet101_2",
        "Wide_ResNet101_2_Weights",
        {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
    ),
}


def embedding_dim(backbone: str, layers: tuple[str, ...]) -> int:
    """Dimension of a patch feature: the channels of the used layers, concatenated."""
    spec = _spec(backbone)
    return sum(spec.channels[layer] for layer in layers)


def _spec(backbone: str) -> BackboneSpec:
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[backbone]


class TruncatedResNet(nn.Module):
    """A ResNet that stops after the deepest requested layer and returns the requested layers' outputs."""

    def __init__(self, resnet: nn.Module, layers: tuple[str, ...]) -> None:
        super().__init__()
        unknown = [layer for layer in layers if layer not in LAYER_ORDER]
        if unknown or not layers:
            raise ValueError(f"layers must be among {', '.join(LAYER_ORDER)}, got {layers}")
        self.layers = tuple(sorted(layers, key=LAYER_ORDER.index))
        deepest = LAYER_ORDER.index(self.layers[-1])
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.body = nn.ModuleDict({name: getattr(resnet, name) for name in LAYER_ORDER[: deepest + 1]})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        outputs: dict[str, torch.Tensor] = {}
        for name, layer in self.body.items():
            x = layer(x)
            if name in self.layers:
                outputs[name] = x
        return outputs

    def checkpoint_keys(self) -> list[str]:
        """Keys a torchvision state_dict must provide for this truncated network."""
        keys = [f"conv1.{k}" for k in self.stem[0].state_dict()] + [f"bn1.{k}" for k in self.stem[1].state_dict()]
        for name, layer in self.body.items():
            keys += [f"{name}.{k}" for k in layer.state_dict()]
        return keys

    def load_checkpoint(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load the used tensors from a full or partial torchvision state_dict; name anything missing."""
        needed = [k for k in self.checkpoint_keys() if not k.endswith("num_batches_tracked")]
        missing = [k for k in needed if k not in state]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise WeightsMismatch(f"{source} lacks tensors the backbone needs: {shown}")
        own = {"conv1": self.stem[0], "bn1": self.stem[1], **dict(self.body.items())}
        for prefix, module in own.items():
            sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
            try:
                module.load_state_dict(sub, strict=False)
            except RuntimeError as exc:
                raise WeightsMismatch(f"{source}: tensors of {prefix} do not fit the backbone ({exc})") from exc


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"weights file {path} is not a torch state_dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state_dict of tensors")
    return state


def _download_weights(backbone: str) -> dict[str, torch.Tensor]:
    enum = getattr(torchvision.models, _spec(backbone).weights_enum)
    try:
        return enum.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:
        raise WeightsError(
            f"could not download the ImageNet weights of {backbone} ({exc}); download them elsewhere and pass "
            f"--weights FILE (or INSPECT_WEIGHTS), a torchvision state_dict such as "
            f"resnet18-imagenet1k-to-layer3.pth, or use --random-weights for shape tests only"
        ) from exc


def weights_sha256(path: str | Path) -> str:
    """Content hash recorded with a fitted model, so a server can check it loads the same weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


RANDOM_WEIGHTS = "random"


def load_backbone(backbone: str, layers: tuple[str, ...], weights: str | Path | None = None) -> TruncatedResNet:
    """Build the truncated backbone in eval mode with frozen weights.

    ``weights``: ``None`` downloads torchvision's ImageNet weights (cached by torchvision), a path loads a
    state_dict file, and ``"random"`` keeps the (seeded) random initialisation (for shape and speed tests only).
    """
    spec = _spec(backbone)
    with torch.random.fork_rng(devices=[]):
        # Seeded, so "random" weights are the same network in the fitting job and in every server.
        torch.manual_seed(0)
        resnet = getattr(torchvision.models, spec.builder)(weights=None)
    network = TruncatedResNet(resnet, layers)
    if weights != RANDOM_WEIGHTS:
        state = _download_weights(backbone) if weights is None else _read_weights_file(Path(weights))
        network.load_checkpoint(state, source=str(weights) if weights else f"torchvision {backbone} weights")
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    fold_batch_norms(network)
    return network


def fold_batch_norms(module: nn.Module) -> None:
    """Fold every batch norm of an eval-mode torchvision ResNet into the convolution it follows (the stem's, each
    block's ``convN``/``bnN``, each downsample's), in place: a frozen batch norm is a per-channel scale and shift,
    which the convolution's weights and bias take exactly in arithmetic, so the network computes the same features
    (to float rounding; bit for bit from the shared ResNet-18 file, whose batch norms are already a bias alone) and
    skips a pass over every activation: ResNet-18 to layer3 on 2 CPU cores, a batch of 8 views 60.5-64.5 ms against
    70.8-78.3 (docs/search.md)."""
    for child in module.children():
        fold_batch_norms(child)
    if isinstance(module, nn.Sequential):
        for index in range(len(module) - 1):
            if isinstance(module[index], nn.Conv2d) and isinstance(module[index + 1], nn.BatchNorm2d):
                module[index] = fuse_conv_bn_eval(module[index], module[index + 1])
                module[index + 1] = nn.Identity()
    for number in (1, 2, 3):
        conv, norm = getattr(module, f"conv{number}", None), getattr(module, f"bn{number}", None)
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
            setattr(module, f"conv{number}", fuse_conv_bn_eval(conv, norm))
            setattr(module, f"bn{number}", nn.Identity())
