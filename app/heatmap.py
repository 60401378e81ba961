"""The anomaly map as a colour PNG, for clients to draw over the image."""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib import colormaps
from PIL import Image


def heatmap_png(anomaly_map: np.ndarray, threshold: float) -> str:
    """Base64 PNG of the map, ``jet`` coloured; twice the image threshold is full scale, so scales compare."""
    scaled = np.clip(anomaly_map / (2 * threshold), 0, 1) if threshold > 0 else np.zeros_like(anomaly_map)
    rgb = (colormaps["jet"](scaled)[..., :3] * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=False, compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
