"""The PSF FWHM of a field: from its header, measured on its stars, or its survey preset's.

Stars are the stellar locus: among bright, unflagged sources, the smallest
FWHMs when at least :data:`MIN_STARS` of them lie within 5 % of each other
and at least three times as many as in the next 5 % above (the galaxies' sizes
rise smoothly from their smallest; stars pile up at one size). Each source's FWHM is the diameter of the disk of the area above half its
peak, measured on a 4x oversampled spline interpolation of its core. A field
without such a group (a simulation with galaxies only, say) has no measured
PSF; the preset's is then used.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sep
from scipy import ndimage

#: Smallest number of stars for a measurement.
MIN_STARS = 5
_OVERSAMPLE = 4
_CORE = 7  # half side of the cut-out around a star, pixels
_LOCUS_WIDTH = 0.05  # stars: within 5 % of the smallest FWHM of the group
_MIN_SNR = 50.0


def _source_fwhm(image: np.ndarray, x: float, y: float) -> float:
    """FWHM (pixels) of the source at ``(x, y)``: diameter of the area above half its (oversampled) peak."""
    grid = (np.arange(2 * _CORE * _OVERSAMPLE + 1) / _OVERSAMPLE) - _CORE
    # interpolate within a cut-out: the spline prefilter then costs the cut-out's pixels, not the image's
    margin = _CORE + 6
    y0, x0 = max(int(y) - margin, 0), max(int(x) - margin, 0)
    window = image[y0 : int(y) + margin + 1, x0 : int(x) + margin + 1]
    yy, xx = np.meshgrid(y - y0 + grid, x - x0 + grid, indexing="ij")
    values = ndimage.map_coordinates(window, [yy, xx], order=3, mode="constant", cval=0.0)
    peak = values.max()
    if not peak > 0:
        return float("nan")
    labels, _ = ndimage.label(values > 0.5 * peak)
    core = labels == labels[np.unravel_index(int(np.argmax(values)), values.shape)]
    area = core.sum() / _OVERSAMPLE**2
    return 2.0 * math.sqrt(area / math.pi)


def measure_psf_fwhm(image: np.ndarray, mask: np.ndarray | None = None, pixel_scale: float = 1.0,
                     min_stars: int = MIN_STARS) -> float | None:
    """PSF FWHM (arcsec) measured on the stars of a background-subtracted image, or None without stars.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` image, sky subtracted.
    mask : numpy.ndarray, optional
        Bad pixels.
    pixel_scale : float
        Arcseconds per pixel.
    min_stars : int
        Fewest stars in the stellar locus.
    """
    data = np.ascontiguousarray(image, dtype=np.float32)
    bad = None if mask is None else np.ascontiguousarray(mask, dtype=bool)
    try:
        background = sep.Background(data, mask=bad, bw=64, bh=64)
        sub = data - background.back()
        objects = sep.extract(sub, 10.0, err=background.globalrms, mask=bad, minarea=5)
    except Exception:  # sep's C errors: no measurement
        return None
    h, w = data.shape
    snr = objects["flux"] / (background.globalrms * np.sqrt(np.maximum(objects["npix"], 1)))
    inside = (objects["x"] > _CORE + 1) & (objects["x"] < w - _CORE - 2) \
        & (objects["y"] > _CORE + 1) & (objects["y"] < h - _CORE - 2)
    chosen = objects[(objects["flag"] == 0) & (snr > _MIN_SNR) & inside]
    if len(chosen) < min_stars:
        return None
    fwhm = np.array([_source_fwhm(sub, float(o["x"]), float(o["y"])) for o in chosen])
    fwhm = np.sort(fwhm[np.isfinite(fwhm) & (fwhm > 0.5)])
    for start in fwhm[:2]:  # stars are the smallest sources (one odd one below them is allowed)
        locus = fwhm[(fwhm >= start) & (fwhm <= start * (1 + _LOCUS_WIDTH))]
        above = fwhm[(fwhm > start * (1 + _LOCUS_WIDTH)) & (fwhm <= start * (1 + 2 * _LOCUS_WIDTH))]
        if len(locus) >= min_stars and len(locus) >= 3 * len(above):
            return float(np.median(locus)) * pixel_scale
    return None


def field_psf_fwhm(field: Any) -> tuple[float, str]:
    """The PSF FWHM of a field in arcsec and where it comes from (header, stars or preset).

    The measurement on stars is made once and kept in ``field.meta["psf_fwhm_measured"]``.
    """
    if field.psf_fwhm is not None:
        return float(field.psf_fwhm), "header"
    if "psf_fwhm_measured" not in field.meta:
        mask = field.mask.any(axis=0)
        image = field.data.sum(axis=0) if field.n_bands > 1 else field.data[0]
        field.meta["psf_fwhm_measured"] = measure_psf_fwhm(image, mask, float(field.pixel_scale))
    measured = field.meta["psf_fwhm_measured"]
    if measured is not None:
        return float(measured), "measured on stars"
    return float(field.preset.psf_fwhm), f"preset {field.preset.name} (no PSF in the header, no stars found)"
