"""The :class:`Field` (bands, noise and mask planes, WCS, calibration) and the robust noise estimate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..presets import SurveyPreset, get_preset
from .calibration import magnitude, preset_zero_point


@dataclass
class Field:
    """A survey field: bands of one sky region on one pixel grid.

    Attributes
    ----------
    data : numpy.ndarray
        ``(C, H, W)`` float32 in native byte order, C-contiguous. Masked
        pixels are 0 here and True in ``mask``.
    mask : numpy.ndarray
        ``(C, H, W)`` bool, True where a pixel is not to be used: NaN/inf in
        the file, flagged in a mask plane (``MASK``, ``MSK``, ``DQ``, ...),
        or of zero weight / unusable variance.
    variance : numpy.ndarray or None
        ``(C, H, W)`` float32 per-pixel variance in image units squared, from
        the file's noise plane (``VARIANCE``, ``WGT``, ``ERR``, ...) or a
        separate weight file; 0 at masked pixels. None when the field has no
        noise plane (the noise is then ``noise``, one sigma per band).
    band_names : list of str
        One name per band (EXTNAME, FILTER or the preset's band).
    wcs : astropy.wcs.WCS or None
        Celestial WCS of the pixel grid (2-D), if the header has one.
    header : astropy.io.fits.Header
        Header of the (first) image HDU read.
    preset : SurveyPreset
        Survey preset the calibration defaults come from.
    pixel_scale : float
        Arcseconds per pixel (from the WCS or PIXSCALE when present).
    zero_point : float
        AB magnitude of one unit of this image: a flux ``F`` in image units
        has magnitude ``zero_point - 2.5 log10(F)`` (SExtractor's
        ``MAG_ZEROPOINT``). From the header (``MAGZERO``, ``ZEROPT``,
        ``FLUXMAG0``, ``PHOTFLAM``/``PHOTPLAM``, flux-density ``BUNIT``) or
        the preset's per-second zero point plus ``2.5 log10(exposure)``.
    zero_point_source : str
        Where ``zero_point`` came from, in words.
    exposure : float
        Exposure time in seconds (EXPTIME override).
    gain : float
        Electrons per ADU (GAIN override).
    psf_fwhm : float or None
        PSF full width at half maximum in arcseconds given by the header
        (``PSF_FWHM``, ``SEEING``, ...); None when the header does not say
        (:func:`napari_deblend.psf.field_psf_fwhm` then measures it on stars).
    noise : numpy.ndarray
        ``(C,)`` background noise sigma per band, image units; NaN until measured.
    path : list of str
        File(s) the bands came from (empty for arrays).
    hdu : list of str
        HDU of each band, as ``"name"`` or index.
    meta : dict
        Anything else: per-band calibration, the planes used (``"planes"``), ...
    """

    data: np.ndarray
    mask: np.ndarray | None = None
    band_names: list[str] = dc_field(default_factory=list)
    wcs: WCS | None = None
    header: fits.Header = dc_field(default_factory=fits.Header)
    preset: SurveyPreset = dc_field(default_factory=get_preset)
    pixel_scale: float | None = None
    zero_point: float | None = None
    exposure: float | None = None
    gain: float | None = None
    noise: np.ndarray | None = None
    path: list[str] = dc_field(default_factory=list)
    hdu: list[str] = dc_field(default_factory=list)
    meta: dict[str, Any] = dc_field(default_factory=dict)
    variance: np.ndarray | None = None
    psf_fwhm: float | None = None
    zero_point_source: str = ""

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim == 2:
            data = data[None]
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        if self.mask is None:
            self.mask = np.zeros(self.data.shape, dtype=bool)
        else:
            self.mask = np.broadcast_to(np.asarray(self.mask, dtype=bool), self.data.shape).copy()
        if self.variance is not None:
            variance = np.broadcast_to(np.asarray(self.variance, dtype=np.float32), self.data.shape)
            self.variance = np.ascontiguousarray(variance)
        n_bands = self.data.shape[0]
        if not self.band_names:
            self.band_names = [self.preset.band] if n_bands == 1 else [f"band{i}" for i in range(n_bands)]
        if self.pixel_scale is None:
            self.pixel_scale = self.preset.pixel_scale
        if self.exposure is None:
            self.exposure = self.preset.exposure
        if self.gain is None:
            self.gain = self.preset.gain
        if self.zero_point is None:
            self.zero_point, self.zero_point_source = preset_zero_point(self.preset, self.exposure)
        elif not self.zero_point_source:
            self.zero_point_source = "given"
        self.zero_point = float(self.zero_point)
        if self.noise is None:
            self.noise = np.full(n_bands, np.nan)
        self.noise = np.asarray(self.noise, dtype=float).reshape(n_bands)

    @property
    def n_bands(self) -> int:
        """Number of bands C."""
        return self.data.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(H, W)``."""
        return self.data.shape[1], self.data.shape[2]

    @property
    def name(self) -> str:
        """Short display name: the first file's name, or ``"array"``."""
        return Path(self.path[0]).name if self.path else "array"

    def magnitude(self, flux):
        """AB magnitude of a flux in image units: ``zero_point - 2.5 log10(flux)`` (NaN for flux <= 0)."""
        return magnitude(flux, self.zero_point)


def estimate_noise(image: np.ndarray, mask: np.ndarray | None = None, max_samples: int = 1_000_000) -> float:
    """Robust background sigma of an image: 1.4826 x MAD, with 3-sigma clipping.

    A regular subsample of at most ``max_samples`` valid pixels is used. Exact
    zeros are left out when they are more than 5 % of the sample (no-data
    padding, as in coadd borders, is not noise).

    Parameters
    ----------
    image : numpy.ndarray
        Image of any shape.
    mask : numpy.ndarray, optional
        True for pixels to ignore (same shape as ``image``).
    max_samples : int
        Largest number of pixels looked at.

    Returns
    -------
    float
        The sigma estimate; NaN if no valid pixel; the clipped standard
        deviation if more than half the pixels share one value (MAD = 0).
    """
    flat = np.asarray(image).reshape(-1)
    step = max(1, math.ceil(flat.size / max_samples))
    values = flat[::step]
    if mask is not None:
        values = values[~np.asarray(mask).reshape(-1)[::step]]
    values = values[np.isfinite(values)].astype(np.float64)
    zeros = values == 0
    if values.size and zeros.mean() > 0.05 and not zeros.all():
        values = values[~zeros]
    if values.size == 0:
        return float("nan")
    return _clipped_mad_sigma(values)


def _clipped_mad_sigma(values: np.ndarray, n_sigma: float = 3.0, max_iter: int = 5) -> float:
    """Iterate median / MAD with ``n_sigma`` clipping until the sigma settles.

    The MAD of a Gaussian clipped at ``n_sigma`` is a little smaller than the
    MAD of the full Gaussian; the factor turning it into sigma accounts for it.
    """
    clipped_factor = 1.0 / NormalDist().inv_cdf(0.5 + 0.25 * math.erf(n_sigma / math.sqrt(2.0)))
    median = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - median)))
    for _ in range(max_iter):
        if sigma == 0:
            break
        kept = values[np.abs(values - median) < n_sigma * sigma]
        median = float(np.median(kept))
        new_sigma = clipped_factor * float(np.median(np.abs(kept - median)))
        converged = abs(new_sigma - sigma) <= 1e-3 * sigma
        sigma = new_sigma
        if converged:
            break
    if sigma == 0:
        sigma = float(np.std(values))
    return sigma
