"""Which detections are offered to a deblender: sep's blends, and every detection larger than a point source.

sep (SExtractor) splits a group of galaxies only when their isophotes are
separate enough; a close pair comes out as *one* detection, and a deblender
that only sees sep's blends never sees it.  So besides the blends (groups of
two or more detections, :func:`~napari_deblend.blends.find_blends`), single
detections are offered too, each as a one-member :class:`~napari_deblend.blends.Blend`,
and the deblender's own count (the peeling counter, the source finder) says how
many galaxies each holds.

Which single detections (``mode``):

``"blends"``
    none: only sep's blends are deblended (the behaviour before single
    detections were offered);
``"extended"`` (default)
    every detection whose isophotal footprint is larger than a point source's
    of the same peak signal-to-noise ratio: a star (or an unresolved galaxy)
    holds one source by construction, and its footprint cannot hide a second
    galaxy that sep would not also have seen;
``"all"``
    every detection.

The point-source criterion (:func:`point_source_footprint`): point sources of
the survey's PSF (Kolmogorov profile, the preset's FWHM at the field's pixel
scale) are drawn at 28 peak S/N between 2 and 5000, at random sub-pixel
positions, with Gaussian noise, and detected by sep with the *same* detection
parameters.  In bins of their measured peak S/N (``peak / rms``, what the
catalogue gives), the 97.5th percentile of their isophotal areas (``npix``) is
the largest footprint a point source has at that S/N; a detection with a
larger footprint is extended.  Bright point sources have large footprints
too (the Kolmogorov wings: ~170 pixels at peak S/N 300 at ``lsst-i``), which a
fixed area cut would call extended.  On a simulated 1024² ``lsst-i`` field of
the realistic morphology mix (seed 5, 465 detections) 83 % of the detections
were offered: 85-95 % of each galaxy family, 27 % of the compact galaxies and
2 of the 17 stars; on 36 Kolmogorov stars of peak S/N 5-2000 none (2.5 % of
point sources are extended by construction).  The table takes about a second
to make and is cached per PSF and detection parameters.

Numbering: the single detections are numbered after the blends (``B + 1``,
``B + 2``, ... for ``B`` blends), brightest ``flux_auto`` first, ties by
catalogue ``id``; the headless pipeline numbers them the same way.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from .blends import Blend, _bbox, kron_axes
from .detection import DetectionPreset, extract_with_preset
from .errors import DeblendInputError

#: Offering modes: name -> what a user is told.
CANDIDATE_MODES: dict[str, str] = {
    "blends": "sep's blends only",
    "extended": "sep's blends and every detection larger than a point source",
    "all": "sep's blends and every detection",
}
DEFAULT_CANDIDATES = "extended"
#: Fraction of point sources whose footprint is at most the limit at their S/N.
POINT_SOURCE_QUANTILE = 0.975
#: Peak S/N of the simulated point sources.
_PEAK_SNR = np.geomspace(2.0, 5000.0, 28)
#: Side of the images the point sources are drawn in, and the least number of sources per S/N.
_IMAGE_SIDE = 384
_MIN_SOURCES = 128
_SEED = 20260


@dataclass(frozen=True)
class PointSourceFootprint:
    """The largest isophotal area (pixels) a point source has, as a function of its peak S/N.

    Attributes
    ----------
    peak_snr : numpy.ndarray
        Peak S/N (``peak / rms``) at the table's nodes, increasing.
    npix : numpy.ndarray
        The :data:`POINT_SOURCE_QUANTILE` quantile of point-source ``npix`` there, non-decreasing.
    """

    peak_snr: np.ndarray
    npix: np.ndarray

    def limit(self, peak_snr: np.ndarray | float) -> np.ndarray:
        """The area limit at each peak S/N (log-log interpolation, extrapolated past the last node)."""
        snr = np.log(np.clip(np.asarray(peak_snr, float), 1e-3, None))
        nodes, area = np.log(self.peak_snr), np.log(self.npix)
        out = np.interp(snr, nodes, area)
        slope = (area[-1] - area[-2]) / (nodes[-1] - nodes[-2]) if len(nodes) > 1 else 0.0
        beyond = snr > nodes[-1]
        out = np.where(beyond, area[-1] + slope * (snr - nodes[-1]), out)
        return np.exp(out)


def check_mode(mode: str) -> str:
    """The offering mode, or a clear error naming the accepted ones."""
    if mode not in CANDIDATE_MODES:
        raise DeblendInputError(f"candidates {mode!r}: expected one of {', '.join(CANDIDATE_MODES)}")
    return mode


def psf_fwhm_pixels(survey_preset, pixel_scale: float | None = None) -> float:
    """PSF FWHM in pixels: the survey preset's FWHM (arcsec) over the pixel scale (the field's, else the preset's)."""
    scale = float(pixel_scale) if pixel_scale and np.isfinite(pixel_scale) and pixel_scale > 0 else None
    return float(survey_preset.psf_fwhm) / (scale or float(survey_preset.pixel_scale))


def point_source_footprint(fwhm_pixels: float, detection: DetectionPreset) -> PointSourceFootprint:
    """The point-source area limit for a PSF of ``fwhm_pixels`` and these detection parameters (cached).

    Parameters
    ----------
    fwhm_pixels : float
        FWHM of the (Kolmogorov) PSF, pixels.
    detection : DetectionPreset
        The detection parameters the catalogue was made with.

    Returns
    -------
    PointSourceFootprint
    """
    if not (np.isfinite(fwhm_pixels) and fwhm_pixels > 0):
        raise DeblendInputError(f"PSF FWHM of {fwhm_pixels!r} pixels: expected a positive number")
    kernel = None if detection.filter_kernel is None else np.asarray(detection.filter_kernel, np.float32)
    key = (round(float(fwhm_pixels), 3), detection.thresh, detection.minarea,
           None if kernel is None else (kernel.shape, kernel.tobytes()), detection.deblend_nthresh,
           detection.deblend_cont, detection.clean, detection.clean_param)  # fmt: skip
    if key not in _TABLES:
        _TABLES[key] = _footprint_table(key[0], detection)
    return _TABLES[key]


_TABLES: dict[tuple, PointSourceFootprint] = {}


def _footprint_table(fwhm: float, detection: DetectionPreset) -> PointSourceFootprint:
    rng = np.random.default_rng(_SEED)
    observed_snr, npix = [], []
    for snr in _PEAK_SNR:
        cell = _cell_side(fwhm, snr, detection.thresh)
        psfs = _psf_stamps(fwhm, cell)
        per_image = (_IMAGE_SIDE // cell) ** 2
        for _ in range(math.ceil(_MIN_SOURCES / per_image)):
            image, centres = _point_source_image(psfs, cell, snr, rng)
            objects, _ = extract_with_preset(image, 1.0, detection)
            if not len(objects):
                continue
            # keep the detections of the point sources (noise peaks elsewhere are no point source)
            d2 = (objects["x"][:, None] - centres[None, :, 1]) ** 2 + (objects["y"][:, None] - centres[None, :, 0]) ** 2
            near = d2.min(axis=1) <= 9.0
            observed_snr.append(np.asarray(objects["peak"], float)[near])
            npix.append(np.asarray(objects["npix"], float)[near])
    snr_obs, area = np.concatenate(observed_snr), np.concatenate(npix)
    edges = np.geomspace(max(snr_obs.min(), 1e-3), snr_obs.max() * 1.0001, 33)
    nodes, limits = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (snr_obs >= lo) & (snr_obs < hi)
        if inside.sum() >= 40:
            nodes.append(float(np.median(snr_obs[inside])))
            limits.append(float(np.quantile(area[inside], POINT_SOURCE_QUANTILE)))
    return PointSourceFootprint(np.asarray(nodes), np.maximum.accumulate(np.asarray(limits)))


def _cell_side(fwhm: float, snr: float, thresh: float) -> int:
    """A cell wide enough for a point source's footprint at this S/N (Kolmogorov wings fall as r^-11/3)."""
    radius = 1.5 * fwhm * max(snr / thresh, 1.0) ** (3.0 / 11.0)
    return int(min(max(32, 2 * math.ceil(radius) + 8), _IMAGE_SIDE // 2))


@functools.lru_cache(maxsize=32)
def _psf_stamps(fwhm: float, cell: int) -> np.ndarray:
    """``(16, cell, cell)`` Kolmogorov PSFs of unit peak at 16 sub-pixel offsets."""
    import galsim

    psf = galsim.Kolmogorov(fwhm=fwhm)
    stamps = []
    for dy in (-0.375, -0.125, 0.125, 0.375):
        for dx in (-0.375, -0.125, 0.125, 0.375):
            image = psf.drawImage(nx=cell, ny=cell, scale=1.0, offset=(dx, dy)).array
            stamps.append(image / image.max())
    return np.asarray(stamps, np.float32)


def _point_source_image(psfs: np.ndarray, cell: int, snr: float, rng: np.random.Generator):
    """An image (noise sigma 1) tiled with point sources of peak ``snr``; returns it and their ``(y, x)``."""
    n = _IMAGE_SIDE // cell
    image = rng.normal(0.0, 1.0, (_IMAGE_SIDE, _IMAGE_SIDE)).astype(np.float32)
    which = rng.integers(0, len(psfs), n * n)
    centres = []
    offsets = [(dy, dx) for dy in (-0.375, -0.125, 0.125, 0.375) for dx in (-0.375, -0.125, 0.125, 0.375)]
    for k, index in enumerate(which):
        y0, x0 = (k // n) * cell, (k % n) * cell
        image[y0:y0 + cell, x0:x0 + cell] += snr * psfs[index]
        dy, dx = offsets[index]
        centres.append((y0 + (cell - 1) / 2.0 + dy, x0 + (cell - 1) / 2.0 + dx))
    return np.ascontiguousarray(image), np.asarray(centres, float)


def extended_detections(cat: Table, detection_rms: float, fwhm_pixels: float,
                        detection: DetectionPreset) -> np.ndarray:
    """Whether each detection's footprint (``npix``) is larger than a point source's at its peak S/N.

    Parameters
    ----------
    cat : astropy.table.Table
        Catalogue from :func:`~napari_deblend.detect` (``npix``, ``peak``).
    detection_rms : float
        Background rms of the image detection ran on (``peak`` is in its units).
    fwhm_pixels : float
        PSF FWHM, pixels (:func:`psf_fwhm_pixels`).
    detection : DetectionPreset
        The detection parameters.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` bool.
    """
    if not len(cat):
        return np.zeros(0, bool)
    if not (np.isfinite(detection_rms) and detection_rms > 0):
        raise DeblendInputError(f"detection rms {detection_rms!r}: expected a positive number")
    table = point_source_footprint(fwhm_pixels, detection)
    snr = np.asarray(cat["peak"], float) / float(detection_rms)
    return np.asarray(cat["npix"], float) > table.limit(snr)


def offered_singles(cat: Table, mode: str, *, detection_rms: float = float("nan"), fwhm_pixels: float = float("nan"),
                    detection: DetectionPreset | None = None) -> np.ndarray:
    """Rows of the detections outside sep's blends that ``mode`` offers to the deblender.

    Parameters
    ----------
    cat : astropy.table.Table
        Catalogue after :func:`~napari_deblend.find_blends` (``blend_id`` 0: in no blend).
    mode : str
        ``"blends"``, ``"extended"`` or ``"all"`` (see the module docstring).
    detection_rms, fwhm_pixels, detection
        For ``"extended"``: see :func:`extended_detections`.

    Returns
    -------
    numpy.ndarray
        Row indices, brightest ``flux_auto`` first, ties by ``id``.
    """
    check_mode(mode)
    if mode == "blends" or not len(cat):
        return np.zeros(0, int)
    single = np.asarray(cat["blend_id"]) == 0 if "blend_id" in cat.colnames else np.ones(len(cat), bool)
    if mode == "extended":
        if detection is None:
            raise DeblendInputError("candidates 'extended': the detection parameters are needed")
        single &= extended_detections(cat, detection_rms, fwhm_pixels, detection)
    rows = np.flatnonzero(single)
    flux = np.nan_to_num(np.asarray(cat["flux_auto"], float)[rows], nan=-np.inf)
    return rows[np.lexsort((np.asarray(cat["id"])[rows], -flux))]


def single_blends(cat: Table, rows: np.ndarray, first_id: int, shape: tuple[int, int] | None = None) -> list[Blend]:
    """One-member blends of catalogue ``rows``, numbered ``first_id``, ``first_id + 1``, ... in that order."""
    if not len(rows):
        return []
    ka, _ = kron_axes(cat)
    flux = np.asarray(cat["flux_auto"], float)
    zp = (cat.meta or {}).get("zero_point", 27.78)
    exposure = (cat.meta or {}).get("exposure", 5520.0)
    out = []
    for number, row in enumerate(rows, start=first_id):
        one = np.array([row])
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = float(zp - 2.5 * np.log10(flux[row] / exposure)) if flux[row] > 0 else float("nan")
        out.append(Blend(id=number, members=np.array([int(cat["id"][row])]), bbox=_bbox(cat, one, ka, shape),
                         positions=np.array([[float(cat["y"][row]), float(cat["x"][row])]]),
                         fluxes=flux[one].copy(), blendedness=0.0, magnitude=mag,
                         member_blendedness=np.zeros(1)))
    return out


def find_candidates(cat: Table, blends: list[Blend], mode: str = DEFAULT_CANDIDATES, *,
                    detection_rms: float = float("nan"), fwhm_pixels: float = float("nan"),
                    detection: DetectionPreset | None = None,
                    shape: tuple[int, int] | None = None) -> list[Blend]:
    """The single detections offered to the deblender besides sep's blends, as one-member blends.

    Parameters
    ----------
    cat : astropy.table.Table
        Catalogue after :func:`~napari_deblend.find_blends`.
    blends : list of Blend
        sep's blends of the same catalogue (the singles are numbered after them).
    mode : str
        ``"blends"``, ``"extended"`` or ``"all"`` (see the module docstring).
    detection_rms, fwhm_pixels, detection
        For ``"extended"``: see :func:`extended_detections`.
    shape : tuple of int, optional
        Image shape, to clip the boxes to.

    Returns
    -------
    list of Blend
        One member each, ids ``len(blends) + 1, ...``, brightest first.
    """
    rows = offered_singles(cat, mode, detection_rms=detection_rms, fwhm_pixels=fwhm_pixels, detection=detection)
    first = max((b.id for b in blends), default=0) + 1
    return single_blends(cat, rows, first, shape)
