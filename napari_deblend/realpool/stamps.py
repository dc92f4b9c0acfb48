"""From one detected galaxy to a clean stamp at a survey preset.

Selection (:func:`select_galaxies`, reasons counted per image): a galaxy is
kept when its isophotal S/N reaches ``min_snr``, its dilated footprint touches
neither the image's edge nor a bad pixel, it is not saturated, it is resolved
(half-light radius above ``STAR_MARGIN`` times the stars'), the sources touching
it carry less than ``max_neighbour_ratio`` of its flux, it fits the stamp and
its segment holds no companion (:func:`~napari_deblend.realpool.detect.has_companion`).

Rendering (:func:`render_stamp`):

1. the footprint is the galaxy's sep segment dilated by half the PSF FWHM,
   minus the neighbours' segments (dilated the same way); pixels outside it
   are set to 0, so the stamp holds one galaxy;
2. the local background (median of the pixels no source covers around the
   galaxy) is subtracted inside the footprint;
3. the cut-out becomes a GalSim ``InterpolatedImage`` at the source's pixel
   scale times the magnification (a magnified galaxy is one seen nearer, a
   demagnified one farther: its angular size changes before the PSF
   matching), shifted so that its
   flux-weighted centroid is at the origin;
4. it is convolved with the kernel that takes the source PSF to the preset's
   (:func:`matching_kernel`) and drawn at the preset's pixel scale with the
   pixel response (flux-conserving resampling);
5. pixels outside the transformed footprint are set to 0 and the stamp is
   normalised to sum 1.

The noise left in a stamp is the source's noise through the same linear
operations: white noise of sigma 1 is pushed through them once per image and
magnification (:func:`noise_gain`).  The PSF of a stamp is measured the same
way, on the source's PSF pushed through the path (:func:`path_psf_fwhm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..measurements import centroid
from ..presets import SurveyPreset
from .detect import STAR_MARGIN, Detections, StellarLocus, has_companion, saturated

FOOTPRINT_THRESHOLD = 0.05  # fraction of a full footprint pixel kept after the transformation
STAMP_MARGIN = 2  # pixels between the transformed footprint and the stamp's border
INTERPOLANT = "lanczos3"


@dataclass(frozen=True)
class BuildSettings:
    """Choices of the builder (recorded in ``pool.json``).

    Parameters
    ----------
    stamp_size : int
        Side of the square stamps, preset pixels.
    min_snr : float
        Minimum isophotal S/N of a galaxy in its source image; a variant
        magnified ``m > 1`` times needs ``m`` times more (the S/N per PSF
        element falls as ``1/m``: its noise would otherwise pass for knots).
    max_neighbour_ratio : float
        Sources touching the galaxy's footprint may hold at most this fraction of its flux.
    star_margin : float
        Sources with a half-light radius below this times the stars' are stars.
    """

    stamp_size: int = 64
    min_snr: float = 30.0
    max_neighbour_ratio: float = 0.25
    star_margin: float = STAR_MARGIN


def dilation_pixels(locus: StellarLocus) -> int:
    """Footprint dilation (source pixels): half the PSF FWHM, at least 2."""
    return max(2, int(math.ceil(0.5 * locus.fwhm)))


def select_galaxies(det: Detections, locus: StellarLocus, img, settings: BuildSettings,
                    scale_factor: float) -> list[str | None]:
    """The reason each detection is rejected for, None for the galaxies kept.

    Parameters
    ----------
    det : Detections
        The image's sources.
    locus : StellarLocus
        Its stars.
    img : SourceImage
        The image (bad pixels, saturation).
    settings : BuildSettings
        Thresholds.
    scale_factor : float
        Source pixel scale over the preset's, times the source's smallest
        magnification: a galaxy whose footprint, so scaled, cannot fit the
        stamp is rejected here (:func:`render_stamp` has the last word, after
        the PSF matching).
    """
    reasons: list[str | None] = []
    dilation = dilation_pixels(locus)
    is_saturated = saturated(det, img)
    h, w = det.image.shape
    slices = ndimage.find_objects(det.segmentation)
    edge_or_bad = np.zeros((h, w), bool)
    edge_or_bad[[0, -1], :] = edge_or_bad[:, [0, -1]] = True
    edge_or_bad |= img.bad
    for i in range(len(det)):
        reason = None
        if not det.snr[i] >= settings.min_snr:
            reason = "faint"
        elif is_saturated[i]:
            reason = "saturated"
        elif not det.r50[i] >= settings.star_margin * locus.r50:
            reason = "star"
        elif slices[i] is None:
            reason = "faint"
        else:
            box, own = _footprint_box(det.segmentation, slices[i], i + 1, dilation + 1, (h, w))
            if (own & edge_or_bad[box]).any():
                reason = "edge"
            elif _neighbour_flux(det, box, own, i) > settings.max_neighbour_ratio * det.flux[i]:
                reason = "blended"
            elif _radius(own, det.image[box], box) * scale_factor > settings.stamp_size / 2.0 - STAMP_MARGIN:
                reason = "too_large"
            elif has_companion(det, i, box):
                reason = "companion"
        reasons.append(reason)
    return reasons


def _footprint_box(segmentation: np.ndarray, obj: tuple[slice, slice], label: int, grow: int,
                   shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray]:
    """A box around a segment grown by ``grow`` pixels, and the dilated segment inside it."""
    ys, xs = obj
    box = (slice(max(ys.start - grow - 1, 0), min(ys.stop + grow + 1, shape[0])),
           slice(max(xs.start - grow - 1, 0), min(xs.stop + grow + 1, shape[1])))
    own = ndimage.binary_dilation(segmentation[box] == label, iterations=grow)
    return box, own


def _neighbour_flux(det: Detections, box: tuple[slice, slice], own: np.ndarray, i: int) -> float:
    """Total flux of the sources whose segments reach into the galaxy's dilated footprint."""
    labels = np.unique(det.segmentation[box][own])
    labels = labels[(labels > 0) & (labels != i + 1)]
    return float(np.clip(det.flux[labels - 1], 0, None).sum()) if len(labels) else 0.0


def _radius(own: np.ndarray, image: np.ndarray, box: tuple[slice, slice]) -> float:
    """Largest distance (pixels) from the flux-weighted centroid to a footprint pixel."""
    cy, cx = centroid(image, own)
    yy, xx = np.nonzero(own)
    return float(np.hypot(yy - cy, xx - cx).max()) + 0.5


def galaxy_cut(image: np.ndarray, sigma: np.ndarray, segmentation: np.ndarray, label: int,
               obj: tuple[slice, slice], dilation: int) -> tuple[np.ndarray, np.ndarray, float, tuple[int, int]]:
    """Cut one galaxy out: its footprint, the local background subtracted, 0 elsewhere.

    The footprint is the galaxy's segment dilated by ``dilation`` pixels minus
    the neighbours' segments dilated the same way; the local background is the
    median of the pixels no (dilated) source covers in a box around it.

    Parameters
    ----------
    image, sigma : numpy.ndarray
        Background-subtracted pixels and their noise sigma.
    segmentation : numpy.ndarray
        Segmentation map (``label`` is the galaxy's).
    obj : tuple of slice
        The segment's bounding box (``scipy.ndimage.find_objects``).
    dilation : int
        Footprint dilation, pixels.

    Returns
    -------
    tuple
        ``(cut, footprint, local_sigma, (row, column) of the cut's corner)``.
    """
    ys, xs = obj
    grow = 4 * dilation
    h, w = segmentation.shape
    y0, x0 = max(ys.start - grow, 0), max(xs.start - grow, 0)
    y1, x1 = min(ys.stop + grow, h), min(xs.stop + grow, w)
    seg = segmentation[y0:y1, x0:x1]
    own = seg == label
    footprint = ndimage.binary_dilation(own, iterations=dilation)
    others = (seg > 0) & ~own
    footprint &= ~ndimage.binary_dilation(others, iterations=dilation) | own
    sky = ~ndimage.binary_dilation(seg > 0, iterations=dilation)
    values = image[y0:y1, x0:x1]
    local = float(np.median(values[sky])) if sky.sum() >= 30 else 0.0
    cut = np.where(footprint, values - local, 0.0)
    local_sigma = float(np.median(sigma[y0:y1, x0:x1][footprint]))
    return cut, footprint, local_sigma, (y0, x0)


def render_stamp(cut: np.ndarray, footprint: np.ndarray, source_scale: float, magnification: float,
                 kernel, preset: SurveyPreset, size: int) -> tuple[np.ndarray, float] | None:
    """Resample and PSF-match one cut-out to the preset; None when its footprint leaves the stamp.

    Parameters
    ----------
    cut : numpy.ndarray
        Background-subtracted galaxy, 0 outside its footprint (source pixels).
    footprint : numpy.ndarray
        bool footprint of the same shape.
    source_scale : float
        Source arcseconds per pixel.
    magnification : float
        Angular-size factor.
    kernel : galsim.GSObject or None
        PSF-matching kernel (:func:`matching_kernel`).
    preset : SurveyPreset
        Target survey.
    size : int
        Stamp side (preset pixels).

    Returns
    -------
    tuple or None
        ``(size, size)`` float32 stamp summing to 1, centred on its flux-weighted
        centroid, and the drawn flux it was divided by (source units).
    """
    scale = source_scale * magnification
    cy, cx = centroid(cut, footprint)
    offset = np.array([cx - (cut.shape[1] - 1) / 2.0, cy - (cut.shape[0] - 1) / 2.0]) * scale  # arcsec
    drawn_mask = _draw(footprint.astype(np.float64), scale, offset, kernel, preset, size, (0.0, 0.0))
    full_pixel = (preset.pixel_scale / scale) ** 2
    mask = drawn_mask > FOOTPRINT_THRESHOLD * full_pixel
    border = np.ones_like(mask)
    border[STAMP_MARGIN:-STAMP_MARGIN, STAMP_MARGIN:-STAMP_MARGIN] = False
    if (mask & border).any():
        return None
    shift = (0.0, 0.0)
    for _ in range(2):  # draw, then correct the centroid left by the footprint cut and the interpolation
        stamp = np.where(mask, _draw(cut, scale, offset, kernel, preset, size, shift), 0.0)
        total = stamp.sum()
        if not total > 0:
            return None
        stamp /= total
        y, x = centroid(stamp)
        dy, dx = y - (size - 1) / 2.0, x - (size - 1) / 2.0
        if abs(dy) <= 0.25 and abs(dx) <= 0.25:
            break
        shift = (shift[0] - dx, shift[1] - dy)
    return stamp.astype(np.float32), float(total)


def _draw(values: np.ndarray, scale: float, offset: np.ndarray, kernel, preset: SurveyPreset, size: int,
          shift: tuple[float, float]) -> np.ndarray:
    import galsim

    profile = galsim.InterpolatedImage(galsim.Image(np.ascontiguousarray(values), scale=scale),
                                       x_interpolant=INTERPOLANT, normalization="flux")
    profile = profile.shift(-offset[0], -offset[1])
    if kernel is not None:
        profile = galsim.Convolve(profile, kernel)
    return profile.drawImage(nx=size, ny=size, scale=preset.pixel_scale, offset=shift).array.astype(np.float64)


def matching_kernel(preset: SurveyPreset, source_fwhm: float, psf_image: np.ndarray | None,
                    source_scale: float, magnification: float):
    """GalSim kernel taking the (magnified) source PSF to the preset's Kolmogorov PSF; None when broader.

    With a PSF image: the preset PSF convolved with the inverse of the PSF
    image (exact where the source PSF is narrower).  With a FWHM only, the
    source PSF is taken as Kolmogorov, and the kernel between two Kolmogorov
    profiles is a Kolmogorov of FWHM ``(f_t^(5/3) - f_s^(5/3))^(3/5)``.

    Parameters
    ----------
    source_fwhm : float
        Source PSF FWHM, arcsec, before magnification.
    """
    import galsim

    fwhm = source_fwhm * magnification
    target = preset.psf_fwhm
    if fwhm >= 0.98 * target:
        return None
    if psf_image is not None:
        psf = galsim.InterpolatedImage(galsim.Image(np.ascontiguousarray(psf_image, np.float64),
                                                    scale=source_scale * magnification),
                                       x_interpolant=INTERPOLANT, normalization="flux")
        return galsim.Convolve(galsim.Kolmogorov(fwhm=target), galsim.Deconvolve(psf))
    return galsim.Kolmogorov(fwhm=(target ** (5 / 3) - fwhm ** (5 / 3)) ** 0.6)


def source_star(psf_image: np.ndarray | None, fwhm_pixels: float) -> np.ndarray:
    """A star as the source images it: its PSF image, or a Kolmogorov of the measured FWHM."""
    if psf_image is not None:
        return np.asarray(psf_image, np.float64)
    import galsim

    size = int(2 * math.ceil(4 * fwhm_pixels) + 1)
    return galsim.Kolmogorov(fwhm=fwhm_pixels).drawImage(nx=size, ny=size, scale=1.0, method="no_pixel").array


def path_psf_fwhm(star: np.ndarray, source_scale: float, magnification: float, kernel,
                  preset: SurveyPreset, size: int) -> float:
    """FWHM (arcsec) of a source star pushed through the stamp path (flux, resampling, PSF matching)."""
    from .detect import _moffat_fwhm

    image = _draw(star, source_scale * magnification, np.zeros(2), kernel, preset, size, (0.0, 0.0))
    cy, cx = (size - 1) / 2.0, (size - 1) / 2.0
    return _moffat_fwhm(image, cx, cy, 2.0) * preset.pixel_scale


def noise_gain(source_scale: float, magnification: float, kernel, preset: SurveyPreset, size: int,
               seed: int = 0) -> float:
    """Per-pixel sigma in a stamp per unit sigma of white noise in the source (same path, no normalisation)."""
    scale = source_scale * magnification
    n = int(math.ceil(size * preset.pixel_scale / scale)) + 16
    noise = np.random.default_rng(seed).normal(size=(n, n))
    drawn = _draw(noise, scale, np.zeros(2), kernel, preset, size, (0.0, 0.0))
    inner = drawn[size // 4 : -size // 4, size // 4 : -size // 4]
    return float(inner.std())


def half_light_radius(stamp: np.ndarray, pixel_scale: float) -> float:
    """Radius (arcsec) around the flux-weighted centroid holding half the flux of a normalised stamp."""
    cy, cx = centroid(stamp)
    yy, xx = np.indices(stamp.shape)
    r = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(r)
    cumulative = np.cumsum(stamp.ravel()[order]) / stamp.sum()
    at = int(np.searchsorted(cumulative, 0.5))
    return float(r[order][min(at, len(r) - 1)] * pixel_scale)
