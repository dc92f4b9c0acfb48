"""Adding a postage stamp into a larger image, clipped at its edges."""

from __future__ import annotations

import numpy as np


def add_stamp(image: np.ndarray, stamp: np.ndarray, oy: int, ox: int) -> float:
    """Add ``stamp`` with its pixel (0, 0) at ``image[oy, ox]``, clipped to the image.

    Returns
    -------
    float
        The flux added to ``image``.
    """
    ny, nx = stamp.shape
    h, w = image.shape
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + nx, w), min(oy + ny, h)
    if x0 >= x1 or y0 >= y1:
        return 0.0
    part = stamp[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    image[y0:y1, x0:x1] += part
    return float(part.sum(dtype=np.float64))
