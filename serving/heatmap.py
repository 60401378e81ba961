"""The anomaly map as colours: a PNG for clients to draw over the image (``POST /query``), and the same colours
drawn over the view the model saw, its defect regions boxed (``python -m ingest inspect``, the log's heatmaps)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from patchcore.regions import Region

REGION_COLOUR = (255, 235, 59)  # the inspect page's dashed outline, solid here


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
    view: Image.Image, anomaly_map: np.ndarray, threshold: float, regions: Sequence[Region] = (), stride: int = 8,
    alpha: float = 0.45,
) -> Image.Image:  # fmt: skip
    """The coloured map over ``view`` (the RGB view the model saw), half transparent, at the view's size, each
    defect region boxed by its cells' bounds (``stride`` view pixels a cell)."""
    heat = Image.fromarray(coloured(anomaly_map, threshold)).resize(view.size, Image.BILINEAR)
    drawn = Image.blend(view.convert("RGB"), heat, alpha)
    pen = ImageDraw.Draw(drawn)
    for region in regions:
        box = (region.left * stride, region.top * stride, region.right * stride - 1, region.bottom * stride - 1)
        pen.rectangle(box, outline=REGION_COLOUR, width=2)
    return drawn
