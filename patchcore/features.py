"""Locally aware patch features (PatchCore section 3.1).

Each used layer is averaged over its 3x3 neighbourhood (stride 1) so a patch carries its context, the deeper
layers are resized bilinearly onto the grid of the shallowest, and the channels are concatenated.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from patchcore.backbone import TruncatedResNet

STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


def aggregate(layer_outputs: dict[str, torch.Tensor], layers: tuple[str, ...]) -> torch.Tensor:
    """(B, D, H, W) patch features from the outputs of ``layers`` (the first one sets the grid)."""
    pooled = [F.avg_pool2d(layer_outputs[name], kernel_size=3, stride=1, padding=1) for name in layers]
    grid = pooled[0].shape[-2:]
    resized = [pooled[0]] + [F.interpolate(p, size=grid, mode="bilinear", align_corners=False) for p in pooled[1:]]
    return torch.cat(resized, dim=1)


class PatchFeatureExtractor(nn.Module):
    """Backbone plus aggregation: images (B, 3, H, W) to patch features (B, H / s, W / s, D), ``s`` the stride of
    the first used layer (8 for layer2)."""

    def __init__(self, network: TruncatedResNet) -> None:
        super().__init__()
        # channels-last convolutions: ResNet-18 to layer3 on 2 CPU cores, one 224 px image 38.2 -> 28.1 ms
        # (median of 40), a batch of 16 496 -> 381 ms; features equal to 1e-6. On an H100 (fp32, no TF32) a batch
        # of 64 takes 6.1 ms instead of 5.3, against 82-91 ms for the whole feature step with its host copies.
        self.network = network.to(memory_format=torch.channels_last)
        self.layers = network.layers

    @property
    def stride(self) -> int:
        return STRIDES[self.layers[0]]

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = aggregate(self.network(images.to(self.device, memory_format=torch.channels_last)), self.layers)
        return features.permute(0, 2, 3, 1).contiguous().float().cpu()

    def tiled(self, image: torch.Tensor, tile: int, overlap: int, batch_size: int = 8) -> torch.Tensor:
        """(H / s, W / s, D) features of one (3, H, W) image computed tile by tile, so the backbone's memory is that
        of one ``tile`` x ``tile`` batch whatever the image's size. Tiles overlap by ``overlap`` pixels; each patch
        takes its features from the tile in which it lies furthest from the border (the cut is in the middle of the
        overlap), so every patch has ``overlap / 2`` pixels of real context on each side, not a tile's padding."""
        _, height, width = image.shape
        rows, cols = _starts(height, tile, overlap), _starts(width, tile, overlap)
        boxes = [(top, left) for top in rows for left in cols]
        size = (min(tile, height), min(tile, width))
        parts = [
            self(torch.stack([image[:, t : t + size[0], c : c + size[1]] for t, c in boxes[i : i + batch_size]]))
            for i in range(0, len(boxes), batch_size)
        ]
        features = torch.cat(parts)
        stride = self.stride
        out = torch.empty(height // stride, width // stride, features.shape[-1])
        row_cuts, col_cuts = _cuts(rows, size[0], height), _cuts(cols, size[1], width)
        for (top, left), part in zip(boxes, features, strict=True):
            (r0, r1), (c0, c1) = row_cuts[top], col_cuts[left]
            out[r0 // stride : r1 // stride, c0 // stride : c1 // stride] = part[
                (r0 - top) // stride : (r1 - top) // stride, (c0 - left) // stride : (c1 - left) // stride
            ]
        return out


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of ``tile`` start along a side of ``length``, ``overlap`` apart; the last ends at the side."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return [*starts, length - tile]


def _cuts(starts: list[int], tile: int, length: int) -> dict[int, tuple[int, int]]:
    """The span each tile provides: from the middle of its overlap with the tile before to the middle of its
    overlap with the tile after."""
    bounds = [0] + [(nxt + start + tile) // 2 for start, nxt in itertools.pairwise(starts)] + [length]
    return {start: (bounds[i], bounds[i + 1]) for i, start in enumerate(starts)}
