"""The anomaly map as colours: a PNG for clients to draw over the image (``POST /query``), and the same colours
drawn over the view the model saw, its defect regions boxed (``python -m ingest inspect``, the log's heatmaps, drawn
again from what a record keeps)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw

from patchcore.scoring import anomaly_map
from patchcore.views import Preprocess

REGION_COLOUR = (255, 235, 59)  # the inspect page's dashed outline, solid here
NO_IMAGE = (128, 128, 128)  # what a heatmap is drawn over where the log kept no image


def coloured(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W, 3) uint8 ``jet`` colours of the map; twice the image threshold is full scale, so maps compare."""
    scaled = np.clip(anomaly_map / (2 * threshold), 0, 1) if threshold > 0 else np.zeros_like(anomaly_map)
    return (colormaps["jet"](scaled)[..., :3] * 255).astype(np.uint8)


def heatmap_png(anomaly_map: np.ndarray, threshold: float) -> str:
    """Base64 PNG of the coloured map."""
    buffer = io.BytesIO()
    Image.fromarray(coloured(anomaly_map, threshold)).save(buffer, format="PNG", optimize=False, compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def overlay(
    view: Image.Image,
    anomaly_map: np.ndarray,
    threshold: float,
    boxes: Sequence[Sequence[int]] = (),
    alpha: float = 0.45,
) -> Image.Image:
    """The coloured map over ``view`` (the RGB view the model saw), half transparent, at the view's size, each
    defect region's box drawn (left, top, right, bottom in the view's pixels, right and bottom exclusive: an answer's
    ``box_in_view``)."""
    heat = Image.fromarray(coloured(anomaly_map, threshold)).resize(view.size, Image.BILINEAR)
    drawn = Image.blend(view.convert("RGB"), heat, alpha)
    pen = ImageDraw.Draw(drawn)
    for left, top, right, bottom in boxes:
        pen.rectangle((left, top, right - 1, bottom - 1), outline=REGION_COLOUR, width=2)
    return drawn


def as_answered(
    preprocess: Preprocess, image: Image.Image | None, size: tuple[int, int], patch_scores: Sequence[Sequence[float]],
    threshold: float, boxes: Sequence[Sequence[int]],
) -> Image.Image:  # fmt: skip
    """The heatmap an answer saw, drawn again from what its record keeps: its (rows, columns) patch distances over
    the view that ``preprocess`` (the judging version's) makes of an upload of ``size`` (width, height), the kept
    ``image`` (the file, or a thumbnail of it; None: none kept, plain grey) brought to that view's size, the answer's
    region ``boxes`` drawn. Nothing is judged again, so the map, the boxes and the threshold they are coloured
    against are the answer's."""
    view = preprocess.view(*size)
    seen = Image.new("RGB", (view.width, view.height), NO_IMAGE) if image is None else preprocess.cropped(image)
    if seen.size != (view.width, view.height):  # a thumbnail's view may differ from the file's by a pixel
        seen = seen.resize((view.width, view.height), Image.BILINEAR)
    heat = anomaly_map(torch.tensor(patch_scores, dtype=torch.float32), (view.height, view.width)).numpy()
    return overlay(seen, heat, threshold, boxes)
