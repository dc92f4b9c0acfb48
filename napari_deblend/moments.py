"""Shapes of images: the isophotal region, unweighted second moments, ellipticity and centroid.

Multi-band images are measured on their band sum (the detection co-add),
whose noise is ``sigma * sqrt(C)``. Masked pixels (a ``mask`` of the
stamp's bad pixels) are left out of the isophote, hence of the moments.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import DeblendInputError

#: Isophote threshold, in units of the background sigma.
ISOPHOTE_NSIGMA = 3.0

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _band_sum(image: np.ndarray, noise: float) -> tuple[np.ndarray, float]:
    """A 2-D image (band sum of a ``(C, H, W)`` cube) and the noise of that sum."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:
        return image.sum(axis=0), float(noise) * np.sqrt(image.shape[0])
    if image.ndim != 2:
        raise DeblendInputError(f"image has shape {image.shape}: expected (H, W) or (C, H, W)")
    return image, float(noise)


def isophote_region(image: np.ndarray, noise: float, nsigma: float = ISOPHOTE_NSIGMA,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """The isophotal region: pixels above ``nsigma * noise`` 8-connected to the brightest pixel.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` image, or ``(C, H, W)`` (measured on the band sum, noise ``noise * sqrt(C)``).
    noise : float
        Background sigma per pixel (per band).
    nsigma : float
        Threshold in units of ``noise``.
    mask : numpy.ndarray, optional
        ``(H, W)`` (or ``(C, H, W)``, any band) bad pixels, never part of the region.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool mask; all False when the brightest pixel is not above the threshold.
    """
    image, noise = _band_sum(image, noise)
    above = image > nsigma * noise
    if mask is not None:
        bad = np.asarray(mask, dtype=bool)
        above &= ~(bad.any(axis=0) if bad.ndim == 3 else bad)
    if not above.any():
        return np.zeros(image.shape, dtype=bool)
    labels, _ = ndimage.label(above, structure=_EIGHT_CONNECTED)
    peak = np.unravel_index(int(np.argmax(np.where(above, image, -np.inf))), image.shape)
    return labels == labels[peak]


def second_moments(image: np.ndarray, region: np.ndarray) -> tuple[float, float, float]:
    """Unweighted, intensity-normalised central second moments over a region (pixel²).

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` (or ``(C, H, W)``, summed over bands) image.
    region : numpy.ndarray
        ``(H, W)`` bool mask of the pixels to use (e.g. :func:`isophote_region`).

    Returns
    -------
    mu20, mu02, mu11 : float
        ``sum I (x - xc)^2 / sum I``, ``sum I (y - yc)^2 / sum I`` and
        ``sum I (x - xc)(y - yc) / sum I`` with x along columns and y along rows;
        NaN if the region is empty or its flux is not positive.
    """
    image, _ = _band_sum(image, 1.0)
    region = np.asarray(region, dtype=bool)
    ys, xs = np.nonzero(region)
    weights = image[ys, xs]
    total = weights.sum()
    if len(weights) == 0 or not total > 0:
        return float("nan"), float("nan"), float("nan")
    xc = (weights * xs).sum() / total
    yc = (weights * ys).sum() / total
    dx, dy = xs - xc, ys - yc
    return (
        float((weights * dx * dx).sum() / total),
        float((weights * dy * dy).sum() / total),
        float((weights * dx * dy).sum() / total),
    )


def ellipticity(mu20, mu02, mu11):
    """Ellipticity ``e1 = (mu20 - mu02) / (mu20 + mu02)``, ``e2 = 2 mu11 / (mu20 + mu02)``.

    Works on scalars or arrays; NaN where ``mu20 + mu02`` is not positive.
    """
    mu20, mu02, mu11 = (np.asarray(m, dtype=float) for m in (mu20, mu02, mu11))
    trace = mu20 + mu02
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.where(trace > 0, (mu20 - mu02) / trace, np.nan)
        e2 = np.where(trace > 0, 2.0 * mu11 / trace, np.nan)
    if e1.ndim == 0:
        return float(e1), float(e2)
    return e1, e2


def centroid(image: np.ndarray, region: np.ndarray | None = None) -> tuple[float, float]:
    """Intensity-weighted centroid ``(y, x)`` (0-based pixels) of the positive pixels.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` (or ``(C, H, W)``, summed over bands) image.
    region : numpy.ndarray, optional
        Bool mask restricting the pixels used (default: the whole image).

    Returns
    -------
    y, x : float
        NaN when no pixel is positive.
    """
    image, _ = _band_sum(image, 1.0)
    weights = np.clip(image, 0.0, None)
    if region is not None:
        weights = np.where(np.asarray(region, dtype=bool), weights, 0.0)
    total = weights.sum()
    if not total > 0:
        return float("nan"), float("nan")
    ys, xs = np.indices(image.shape)
    return float((weights * ys).sum() / total), float((weights * xs).sum() / total)


def host_of(images: np.ndarray, index: int) -> int:
    """The image other than ``index`` of ``images`` ``(K, H, W)`` brightest at the centroid of ``images[index]``.

    The centroid is :func:`centroid`'s; an image with no positive pixel is taken at the stamp's centre.
    """
    cy, cx = centroid(images[index])
    h, w = images.shape[-2:]
    if not np.isfinite(cy):
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    y, x = min(max(int(round(cy)), 0), h - 1), min(max(int(round(cx)), 0), w - 1)
    levels = images[:, y, x].astype(np.float64).copy()
    levels[index] = -np.inf
    return int(np.argmax(levels))


def image_moments(
    images: np.ndarray, noise: float, nsigma: float = ISOPHOTE_NSIGMA, mask: np.ndarray | None = None
) -> np.ndarray:
    """``(K, 3)`` moments ``mu20, mu02, mu11`` of ``K`` images, each over its own isophote.

    Parameters
    ----------
    images : numpy.ndarray
        ``(K, H, W)`` or ``(K, C, H, W)`` components.
    noise : float
        Background sigma per pixel (per band).
    nsigma : float
        Isophote threshold in units of the noise.
    mask : numpy.ndarray, optional
        Bad pixels of the stamp, left out of every isophote.
    """
    images = np.asarray(images)
    out = np.full((len(images), 3), np.nan)
    for k, image in enumerate(images):
        out[k] = second_moments(image, isophote_region(image, noise, nsigma, mask))
    return out


