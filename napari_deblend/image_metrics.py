"""Image metrics comparing a deblended component with its truth: PSNR and SSIM."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import DeblendInputError


def psnr(pred: np.ndarray, truth: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` in dB, ``R = max(truth) - min(truth)``.

    Returns ``inf`` for identical images.
    """
    pred, truth = _pair(pred, truth)
    rng = float(truth.max() - truth.min()) if data_range is None else float(data_range)
    mse = float(np.mean((pred - truth) ** 2))
    if mse == 0.0:
        return float("inf")
    if rng <= 0:
        return float("-inf")
    return float(10.0 * np.log10(rng**2 / mse))


def ssim(
    pred: np.ndarray,
    truth: np.ndarray,
    data_range: float | None = None,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity (Wang et al. 2004) with a Gaussian window.

    Local means, variances and covariance are Gaussian-weighted (``sigma``
    pixels, window truncated at 3.5 sigma, i.e. 11×11 for 1.5);
    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x² + mu_y² + C1)(s_x² + s_y² + C2))``
    with ``C1 = (k1 R)²``, ``C2 = (k2 R)²``, ``R = max(truth) - min(truth)``
    (1 if the truth is constant). The map is averaged away from a border of
    the window's radius; ``(C, H, W)`` inputs average the bands.

    Returns
    -------
    float
        1.0 for identical images.
    """
    pred, truth = _pair(pred, truth)
    rng = float(truth.max() - truth.min()) if data_range is None else float(data_range)
    if rng <= 0:
        rng = 1.0
    if pred.ndim == 3:
        return float(np.mean([_ssim2d(p, t, rng, sigma, k1, k2) for p, t in zip(pred, truth)]))
    return _ssim2d(pred, truth, rng, sigma, k1, k2)


def _ssim2d(x: np.ndarray, y: np.ndarray, rng: float, sigma: float, k1: float, k2: float) -> float:
    truncate = 3.5

    def smooth(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma, truncate=truncate, mode="reflect")

    c1, c2 = (k1 * rng) ** 2, (k2 * rng) ** 2
    mx, my = smooth(x), smooth(y)
    sxx = smooth(x * x) - mx * mx
    syy = smooth(y * y) - my * my
    sxy = smooth(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    r = int(truncate * sigma + 0.5)
    if min(x.shape) > 2 * r:
        smap = smap[r:-r, r:-r]
    return float(smap.mean())


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise DeblendInputError(f"images have shapes {pred.shape} and {truth.shape}: expected the same shape")
    if pred.ndim not in (2, 3):
        raise DeblendInputError(f"images have shape {pred.shape}: expected (H, W) or (C, H, W)")
    return pred, truth
