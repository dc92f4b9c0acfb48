"""The catalogue of a detection: Kron (``FLUX_AUTO``) photometry, flags, magnitudes and calibration metadata.

The same Kron photometry measures a field's detections and the SExtractor
baseline's components; every magnitude comes from
:func:`napari_deblend.field.magnitude`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sep
from astropy import units as u
from astropy.table import Table

from .field import Field, magnitude
from .field.calibration import magnitude_error, preset_zero_point

KRON_APERTURE_SCALE = 2.5  # SExtractor PHOT_AUTOPARAMS k
KRON_MIN_RADIUS = 3.5  # SExtractor PHOT_AUTOPARAMS minimum (in units of a, b)
KRON_INTEGRATION_RADIUS = 6.0  # SExtractor's fixed 6 isophotal radii

#: ``flags`` bits: sep's own (1 merged, 2 truncated at the image edge, 4 deblending overflow, 8 singular
#: moments, 16 aperture truncated, 32 aperture holds masked pixels, 64 aperture all masked, 128 aperture
#: flux not positive), and this one: the footprint (grown by one pixel) or Kron aperture touches a masked pixel.
FLAG_MASKED = 256


def kron_photometry(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    theta: np.ndarray,
    ids: np.ndarray,
    segmentation: np.ndarray,
    err: float | np.ndarray,
    mask: np.ndarray | None = None,
    kron_radius: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SExtractor ``FLUX_AUTO``: Kron photometry with neighbours masked by the segmentation.

    Parameters
    ----------
    image : numpy.ndarray
        Background-subtracted 2-D image (native byte order, C-contiguous).
    x, y, a, b, theta : numpy.ndarray
        Positions (0-based) and isophotal ellipse parameters from ``sep.extract``.
    ids : numpy.ndarray
        Segmentation labels of the objects.
    segmentation : numpy.ndarray
        int32 segmentation map.
    err : float or numpy.ndarray
        Background rms, one number or a per-pixel map, for flux errors.
    mask : numpy.ndarray, optional
        Bad pixels.
    kron_radius : numpy.ndarray, optional
        Precomputed Kron radii (e.g. from the detection image); computed here otherwise.

    Returns
    -------
    flux, fluxerr, kron_radius, flags : numpy.ndarray
        Flux in the Kron ellipse of ``2.5 r_kron`` (at least ``3.5`` isophotal
        radii), its error, the Kron radius, and sep's aperture flags.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    # sep needs a >= b > 0 and |theta| <= pi/2; sep.extract can give a or b = 0 on 1-pixel-wide objects.
    a = np.maximum(np.nan_to_num(np.asarray(a, float), nan=1.0), 0.5)
    b = np.clip(np.nan_to_num(np.asarray(b, float), nan=1.0), 0.5, a)
    theta = np.clip(np.nan_to_num(np.asarray(theta, float)), -np.pi / 2, np.pi / 2)
    seg_ids = np.asarray(ids, dtype=np.int32)
    flags = np.zeros(len(x), dtype=np.int16)
    if len(x) == 0:
        empty = np.zeros(0)
        return empty, empty, empty, flags
    if kron_radius is None:
        kron_radius, kflags = sep.kron_radius(
            image, x, y, a, b, theta, KRON_INTEGRATION_RADIUS, mask=mask, seg_id=seg_ids, segmap=segmentation
        )
        flags |= kflags.astype(np.int16)
    kron_radius = np.where(np.isfinite(kron_radius) & (kron_radius > 0), kron_radius, KRON_MIN_RADIUS)
    r = np.maximum(KRON_APERTURE_SCALE * kron_radius, KRON_MIN_RADIUS)
    flux, fluxerr, fflags = sep.sum_ellipse(
        image, x, y, a, b, theta, r, err=err, mask=mask, subpix=1, seg_id=seg_ids, segmap=segmentation
    )
    flags |= fflags.astype(np.int16)
    return np.asarray(flux), np.asarray(fluxerr), np.asarray(kron_radius), flags


def calibration_meta(zero_point: float, exposure: float, source: str = "") -> dict[str, Any]:
    """Catalogue metadata of a calibration: ``mag_zero_point`` (one image unit) and the per-second pair.

    ``zero_point`` and ``exposure`` describe the same calibration as a
    per-second zero point (``mag_zero_point - 2.5 log10(exposure)``), the form
    older catalogues and readers use.
    """
    return {
        "mag_zero_point": float(zero_point),
        "zero_point_source": source,
        "zero_point": float(zero_point) - 2.5 * math.log10(float(exposure)),
        "exposure": float(exposure),
    }


def catalog_zero_point(meta: dict[str, Any] | None, default: float | None = None) -> float:
    """AB magnitude of one image unit from a catalogue's metadata (see :func:`calibration_meta`).

    Older catalogues with only ``zero_point`` and ``exposure`` (per second)
    give ``zero_point + 2.5 log10(exposure)``; with neither, ``default`` or
    the ``lsst-i`` preset's.
    """
    from .presets import get_preset

    meta = meta or {}
    if "mag_zero_point" in meta:
        return float(meta["mag_zero_point"])
    if "zero_point" in meta:
        return float(meta["zero_point"]) + 2.5 * math.log10(float(meta.get("exposure", 1.0)))
    if default is not None:
        return float(default)
    preset = get_preset()
    return preset_zero_point(preset, preset.exposure)[0]


def masked_flags(segmentation: np.ndarray, ids: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """:data:`FLAG_MASKED` for each id whose footprint, grown by one pixel, touches a masked pixel."""
    flags = np.zeros(len(ids), dtype=np.int16)
    if mask is None or not mask.any() or len(ids) == 0:
        return flags
    from scipy import ndimage

    near_mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool))
    touching = np.unique(segmentation[near_mask & (segmentation > 0)])
    flags[np.isin(ids, touching)] = FLAG_MASKED
    return flags


def build_catalog(
    objects: np.ndarray,
    segmentation: np.ndarray,
    field: Field,
    subtracted: np.ndarray,
    detection_image: np.ndarray,
    mask: np.ndarray,
    rms: np.ndarray,
    *,
    detection_error: np.ndarray | None = None,
    variance: np.ndarray | None = None,
) -> Table:
    """The catalogue of ``objects`` found by ``sep.extract`` on ``detection_image`` (see :func:`~napari_deblend.detect`).

    ``subtracted`` holds the background-subtracted bands (measured one by one
    for multi-band fields), ``mask`` the ``(H, W)`` masked pixels, ``rms`` the
    bands' global rms; ``detection_error`` and ``variance`` the per-pixel
    sigma of the detection image and the bands' variance, with a noise plane.
    """

    n = len(objects)
    ids = np.arange(1, n + 1, dtype=np.int32)
    x, y = objects["x"].astype(float), objects["y"].astype(float)
    a, b, theta = objects["a"].astype(float), objects["b"].astype(float), objects["theta"].astype(float)
    det_rms = float(np.sqrt(1.0 / np.sum(1.0 / np.maximum(rms, 1e-30) ** 2)))
    det_err = det_rms if detection_error is None else detection_error
    flux_auto, fluxerr_auto, kron_radius, kflags = kron_photometry(
        detection_image, x, y, a, b, theta, ids, segmentation, det_err, mask=mask
    )
    mag = np.atleast_1d(magnitude(flux_auto, field.zero_point))
    magerr = magnitude_error(flux_auto, fluxerr_auto)
    cat = Table()
    cat["id"] = ids
    cat["x"] = x * u.pix
    cat["y"] = y * u.pix
    cat["a"] = a * u.pix
    cat["b"] = b * u.pix
    cat["theta"] = theta * u.rad
    cat["x2"] = objects["x2"].astype(float) * u.pix**2
    cat["y2"] = objects["y2"].astype(float) * u.pix**2
    cat["xy"] = objects["xy"].astype(float) * u.pix**2
    cat["npix"] = objects["npix"].astype(np.int32)
    cat["xmin"] = objects["xmin"].astype(np.int32)
    cat["xmax"] = objects["xmax"].astype(np.int32)
    cat["ymin"] = objects["ymin"].astype(np.int32)
    cat["ymax"] = objects["ymax"].astype(np.int32)
    cat["peak"] = objects["peak"].astype(float) * u.electron
    cat["flux_iso"] = objects["flux"].astype(float) * u.electron
    cat["kron_radius"] = kron_radius
    cat["flux_auto"] = flux_auto * u.electron
    cat["fluxerr_auto"] = fluxerr_auto * u.electron
    cat["mag_auto"] = mag * u.mag
    cat["magerr_auto"] = magerr * u.mag
    with np.errstate(divide="ignore", invalid="ignore"):
        cat["snr"] = np.where(fluxerr_auto > 0, flux_auto / fluxerr_auto, np.nan)
    flags = objects["flag"].astype(np.int16) | kflags | masked_flags(segmentation, ids, mask)
    flags[(kflags & sep.APER_HASMASKED) != 0] |= FLAG_MASKED
    cat["flags"] = flags
    if field.n_bands > 1:
        for c, (band, image, band_rms) in enumerate(zip(field.band_names, subtracted, rms)):
            band_err = float(band_rms) if variance is None else np.sqrt(variance[c]).astype(np.float32)
            f, ferr, _, _ = kron_photometry(
                image, x, y, a, b, theta, ids, segmentation, band_err, mask=mask, kron_radius=kron_radius
            )
            cat[f"flux_auto_{band}"] = f * u.electron
            cat[f"fluxerr_auto_{band}"] = ferr * u.electron
            cat[f"mag_auto_{band}"] = np.atleast_1d(magnitude(f, field.zero_point)) * u.mag
    ra, dec = np.full(n, np.nan), np.full(n, np.nan)
    if field.wcs is not None and n:
        ra, dec = field.wcs.all_pix2world(x, y, 0)
    cat["ra"] = np.asarray(ra, float) * u.deg
    cat["dec"] = np.asarray(dec, float) * u.deg
    cat["blend_id"] = np.zeros(n, dtype=np.int32)
    return cat
