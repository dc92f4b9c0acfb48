"""Detection of the sources of one real image with sep, and the stars' locus.

:func:`detect_sources` subtracts the background (sep's mesh, or nothing for
images already sky-subtracted), takes the noise from the image's noise map when
there is one (else sep's rms map, or the clipped scatter of the pixels no
source covers) and runs ``sep.extract`` with a segmentation map.  Every source
gets its isophotal flux and S/N and its half-light radius.

:func:`stellar_locus` finds the stars: among bright, unsaturated, isolated
sources the half-light radii of stars pile up at the smallest value (the PSF's);
a source is a star when its half-light radius is within ``STAR_MARGIN`` of the
locus.  The stars' FWHM is measured by fitting a circular Moffat profile to
each (the median is reported).  With a PSF image, the PSF's own half-light radius
and FWHM are used when there are too few stars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sep
from scipy import ndimage, optimize

from ..detection import SEXTRACTOR_KERNEL, gaussian_kernel
from ..errors import DeblendInputError
from .sources import SourceImage

DETECT_MINAREA = 5
STAR_MARGIN = 1.2  # a source with r50 < STAR_MARGIN x the stars' r50 is a star (or unresolved)
STAR_MIN_SNR = 50.0
MIN_STARS = 3
COMPANION_CONT = 0.005
COMPANION_FLUX = 0.02
COMPANION_DISTANCE = 4.0  # half-light radii
PAIR_FLUX = 0.3  # of the brightest piece
PAIR_DISTANCE = 4.0  # sizes of the brightest piece
JPEG_SATURATED_PIXELS = 4  # a picture's galaxy may have this many clipped core pixels (shapes only)
sep.set_sub_object_limit(4096)


@dataclass
class Detections:
    """The sources of one image.

    Attributes
    ----------
    image : numpy.ndarray
        Background-subtracted pixels (0 on bad pixels).
    sigma : numpy.ndarray
        Per-pixel noise sigma.
    segmentation : numpy.ndarray
        int32 map, 0 for sky, ``i + 1`` for source ``i``.
    x, y : numpy.ndarray
        Centroids (0-based pixels).
    flux, snr, r50, a : numpy.ndarray
        Isophotal flux, its S/N, half-light radius
        (pixels) and sep's semi-major axis (pixels) per source.
    flag : numpy.ndarray
        sep flags.
    kernel, thresh
        Detection filter and threshold (sigmas) used.
    """

    image: np.ndarray
    sigma: np.ndarray
    segmentation: np.ndarray
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    snr: np.ndarray
    r50: np.ndarray
    a: np.ndarray
    flag: np.ndarray
    kernel: np.ndarray
    thresh: float

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class StellarLocus:
    """The stars of one image: their half-light radius and FWHM (pixels).

    ``method`` is ``"stars"`` (measured on ``n_stars`` stars), ``"psf"`` (the
    PSF image's) or ``"table"`` (the source table's FWHM, no star found).
    """

    r50: float
    fwhm: float
    n_stars: int
    method: str


def detect_sources(img: SourceImage, reference_fwhm: float | None = None) -> Detections:
    """Detect the sources of one image (see the module docstring).

    Parameters
    ----------
    img : SourceImage
        The image.
    reference_fwhm : float, optional
        PSF FWHM in pixels, sizing the detection filter (default: the table's).

    Raises
    ------
    DeblendInputError
        If sep cannot process the image.
    """
    spec = img.spec
    data = np.ascontiguousarray(img.data, dtype=np.float64)
    bad = img.bad
    try:
        if spec.back_size:
            image, rms = _mesh_background(data, bad, int(min(spec.back_size, *data.shape)))
        else:
            image = data.copy()
            rms = np.full(data.shape, _difference_sigma(image, bad))
        sigma = img.noise if img.noise is not None else rms
        fwhm_px = reference_fwhm or (spec.psf_fwhm or 0.0) / img.pixel_scale
        fwhm_px = max(fwhm_px, spec.detect_fwhm / img.pixel_scale)
        kernel = gaussian_kernel(fwhm_px, 2 * int(math.ceil(fwhm_px)) + 1) if fwhm_px > 1.5 else SEXTRACTOR_KERNEL
        for _ in range(2 if not spec.back_size and img.noise is None else 1):
            objects, segmentation = sep.extract(
                image, spec.detect_thresh, err=np.ascontiguousarray(sigma, np.float64), mask=bad,
                minarea=DETECT_MINAREA, filter_kernel=kernel, deblend_cont=spec.deblend_cont,
                segmentation_map=True,
            )
            if not spec.back_size and img.noise is None:  # refine the noise on the pixels no source covers
                sky = ~ndimage.binary_dilation(segmentation > 0, iterations=3) & ~bad
                if sky.sum() > 200:
                    sigma = np.full(data.shape, 1.4826 * np.median(np.abs(image[sky] - np.median(image[sky]))))
    except Exception as exc:  # sep raises bare Exceptions with C-level messages
        raise DeblendInputError(f"{img.path}: sep could not detect sources ({exc})") from None
    return _measure(image, sigma, segmentation.astype(np.int32), objects, kernel, spec.detect_thresh)


def _mesh_background(data: np.ndarray, bad: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Background-subtracted image and rms map: sep's mesh, estimated again with the sources masked."""
    background = sep.Background(data, mask=bad, bw=size, bh=size, fw=3, fh=3)
    first = data - background.back()
    _, segmentation = sep.extract(first, 3.0, err=background.rms(), mask=bad, minarea=DETECT_MINAREA,
                                  filter_kernel=SEXTRACTOR_KERNEL, segmentation_map=True)
    sources = ndimage.binary_dilation(segmentation > 0, iterations=3)
    if (~sources & ~bad).mean() > 0.2:  # enough sky left to estimate the background around the sources
        background = sep.Background(data, mask=bad | sources, bw=size, bh=size, fw=3, fh=3)
    return np.where(bad, 0.0, data - background.back()), background.rms()


def _difference_sigma(image: np.ndarray, bad: np.ndarray) -> float:
    """Noise sigma from differences of pixels 3 apart (smooth light cancels)."""
    diff = image[:, 3:] - image[:, :-3]
    good = ~(bad[:, 3:] | bad[:, :-3])
    values = diff[good]
    return float(1.4826 * np.median(np.abs(values - np.median(values))) / math.sqrt(2.0)) or 1.0


def _measure(image: np.ndarray, sigma: np.ndarray, segmentation: np.ndarray, objects, kernel: np.ndarray,
             thresh: float) -> Detections:
    n = len(objects)
    labels = np.arange(1, n + 1)
    flux = np.asarray(ndimage.sum_labels(image, segmentation, labels), np.float64).reshape(n)
    variance = np.asarray(ndimage.sum_labels(sigma**2, segmentation, labels), np.float64).reshape(n)
    snr = np.where(variance > 0, flux / np.sqrt(np.maximum(variance, 1e-300)), 0.0)
    x, y = objects["x"].astype(np.float64), objects["y"].astype(np.float64)
    a = objects["a"].astype(np.float64)
    r50 = np.full(n, np.nan)
    if n:
        rmax = np.maximum(6.0 * a, 3.0)
        r50, _ = sep.flux_radius(image, x, y, rmax, 0.5, seg_id=labels.astype(np.int32),
                                 segmap=segmentation, subpix=5)
    return Detections(image, np.asarray(sigma, np.float64), segmentation, x, y, flux, snr,
                      np.asarray(r50, np.float64), a, objects["flag"].astype(np.int64), kernel, float(thresh))


def saturated(det: Detections, img: SourceImage) -> np.ndarray:
    """Sources with saturated pixels, or bright ones with a flat top.

    Saturated: more than ``JPEG_SATURATED_PIXELS`` (pictures) or any (FITS)
    pixels at the saturation level.  A flat top: at least 4 pixels within 1 %
    of the source's brightest (background-subtracted) pixel, for a source
    peaking above 100 sigma (clipped stars; unsaturated cores have one or two
    such pixels).
    """
    n = len(det)
    out = np.zeros(n, bool)
    if not n:
        return out
    inside = det.segmentation > 0
    if img.saturation:
        hits = inside & (img.data >= 0.999 * img.saturation)
        count = np.bincount(det.segmentation[hits], minlength=n + 1)[1:]
        out |= count > (JPEG_SATURATED_PIXELS if img.spec.jpeg else 0)
    if not img.spec.jpeg:
        labels = np.arange(1, n + 1)
        top = np.asarray(ndimage.maximum(det.image, det.segmentation, labels), np.float64).reshape(n)
        near_top = inside & (det.image >= 0.99 * top[np.maximum(det.segmentation - 1, 0)])
        count = np.bincount(det.segmentation[near_top], minlength=n + 1)[1:]
        out |= (count >= 4) & (top > 100.0 * float(np.median(det.sigma)))
    return out


def has_companion(det: Detections, index: int, box: tuple[slice, slice]) -> bool:
    """Whether a source's own segment holds a separate companion rather than knots.

    The segment alone is deblended again finely (contrast ``COMPANION_CONT``,
    unfiltered, at least 3 sigma);
    a piece with at least ``COMPANION_FLUX`` of the light whose centre lies
    more than ``COMPANION_DISTANCE`` half-light radii from the brightest piece
    is a companion, and so is a piece with ``PAIR_FLUX`` of the brightest
    piece's flux more than ``PAIR_DISTANCE`` times that piece's size
    (``sqrt(a b)``) away (a pair).  Knots, clumps and arms lie within the
    galaxy's body and are fainter.
    """
    own = det.segmentation[box] == index + 1
    image = np.ascontiguousarray(np.where(own, det.image[box], 0.0))
    try:
        pieces = sep.extract(image, max(det.thresh, 3.0), err=np.ascontiguousarray(det.sigma[box]), mask=~own,
                             minarea=DETECT_MINAREA, filter_kernel=None, deblend_cont=COMPANION_CONT)
    except Exception:  # sep raises bare Exceptions (e.g. too many pieces): no verdict, keep the galaxy
        return False
    if len(pieces) < 2:
        return False
    flux = np.clip(pieces["flux"], 0.0, None)
    main = int(np.argmax(flux))
    distance = np.hypot(pieces["x"] - pieces["x"][main], pieces["y"] - pieces["y"][main])
    outside = (flux > COMPANION_FLUX * flux.sum()) & (distance > COMPANION_DISTANCE * det.r50[index])
    main_size = float(np.sqrt(pieces["a"][main] * pieces["b"][main]))
    pair = (flux > PAIR_FLUX * flux[main]) & (distance > PAIR_DISTANCE * main_size)
    return bool((outside | pair).any())


def stellar_locus(det: Detections, img: SourceImage) -> StellarLocus:
    """The stars' half-light radius and FWHM (pixels) of one image (see the module docstring)."""
    usable = (det.snr > STAR_MIN_SNR) & ~saturated(det, img) & (det.flag == 0) & np.isfinite(det.r50)
    usable &= det.r50 > 0.5
    r50 = det.r50[usable]
    locus = _lowest_peak(r50)
    if locus is not None:
        members = np.flatnonzero(usable)[np.abs(np.log(r50 / locus)) < 0.1]
        if len(members) >= MIN_STARS:
            fwhm = [_moffat_fwhm(det.image, det.x[i], det.y[i], det.r50[i]) for i in members[:40]]
            fwhm = [f for f in fwhm if np.isfinite(f)]
            if fwhm:
                return StellarLocus(float(np.median(det.r50[members])), float(np.median(fwhm)),
                                    len(members), "stars")
    if img.psf is not None:
        return psf_locus(img.psf)
    fwhm = (img.spec.psf_fwhm or 0.0) / img.pixel_scale
    if not fwhm > 0:
        raise DeblendInputError(
            f"{img.path}: no stars found to measure the PSF: give psf_fwhm or a PSF image in its source entry"
        )
    return StellarLocus(0.5 * fwhm, fwhm, 0, "table")


def psf_locus(psf: np.ndarray) -> StellarLocus:
    """Half-light radius and FWHM (pixels) of a PSF image."""
    h, w = psf.shape
    cy, cx = ndimage.center_of_mass(np.clip(psf, 0, None))
    image = np.ascontiguousarray(psf, np.float64)
    r50, _ = sep.flux_radius(image, np.array([cx]), np.array([cy]), np.array([min(h, w) / 2.0]), 0.5, subpix=5)
    return StellarLocus(float(r50[0]), _moffat_fwhm(image, cx, cy, float(r50[0])), 0, "psf")


def _lowest_peak(r50: np.ndarray) -> float | None:
    """The smallest half-light radius around which at least MIN_STARS sources pile up (within ±10 %)."""
    if len(r50) < MIN_STARS:
        return None
    logs = np.sort(np.log(r50))
    counts = np.array([np.sum(np.abs(logs - v) < 0.1) for v in logs])
    dense = counts >= max(MIN_STARS, 0.5 * counts.max())
    if not dense.any():
        return None
    start = int(np.argmax(dense))  # first dense point; the locus is the densest point near it
    window = np.flatnonzero(np.abs(logs - logs[start]) < 0.2)
    return float(np.exp(logs[window[np.argmax(counts[window])]]))


def _moffat_fwhm(image: np.ndarray, x: float, y: float, r50: float) -> float:
    """FWHM (pixels) of a circular Moffat profile fitted to a star; NaN when the fit fails."""
    half = int(np.clip(math.ceil(3.0 * r50), 4, 25))
    iy, ix = int(round(y)), int(round(x))
    y0, x0 = iy - half, ix - half
    if y0 < 0 or x0 < 0 or iy + half >= image.shape[0] or ix + half >= image.shape[1]:
        return float("nan")
    cut = image[y0 : iy + half + 1, x0 : ix + half + 1]
    yy, xx = np.mgrid[: cut.shape[0], : cut.shape[1]]
    peak = float(cut.max())
    if not peak > 0:
        return float("nan")

    def model(p):
        amp, cy, cx, fwhm, beta = p
        alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
        return amp * (1.0 + ((yy - cy) ** 2 + (xx - cx) ** 2) / alpha**2) ** (-beta)

    start = [peak, y - y0, x - x0, max(2.0 * r50 * 0.8, 1.0), 3.0]
    bounds = ([0.0, 0.0, 0.0, 0.3, 1.2], [10 * peak, cut.shape[0], cut.shape[1], 4.0 * half, 20.0])
    try:
        fit = optimize.least_squares(lambda p: (model(p) - cut).ravel(), start, bounds=bounds)
    except ValueError:
        return float("nan")
    return float(fit.x[3]) if fit.success else float("nan")
