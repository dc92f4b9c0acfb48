"""Source detection with ``sep`` (SExtractor): background, extraction presets, catalogue.

``detect(field)`` returns the catalogue (an astropy Table, one row per
detection, 0-based pixel coordinates) and the int32 segmentation map whose
labels equal the catalogue's ``id`` column.  Multi-band fields are detected on
an inverse-variance co-add (as DES does) and measured in every band.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from dataclasses import field as dc_field
from typing import Any

import numpy as np
import sep
from astropy import units as u
from astropy.table import Table

from .errors import DetectionError
from .field import Field

# sep's object limit is low for crowded fields; its pixel stack is sized per call (see _extract).
sep.set_sub_object_limit(4096)
DEFAULT_PIXSTACK = 300_000
#: Most multi-threshold deblending levels accepted (SExtractor's default is 32, DES uses 64).
MAX_DEBLEND_NTHRESH = 256

#: SExtractor's default.conv: 3x3 "pyramid" kernel.
SEXTRACTOR_KERNEL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32)

KRON_APERTURE_SCALE = 2.5  # SExtractor PHOT_AUTOPARAMS k
KRON_MIN_RADIUS = 3.5  # SExtractor PHOT_AUTOPARAMS minimum (in units of a, b)
KRON_INTEGRATION_RADIUS = 6.0  # SExtractor's fixed 6 isophotal radii


def gaussian_kernel(fwhm: float, size: int) -> np.ndarray:
    """Return a normalised ``size x size`` Gaussian kernel of full width at half maximum ``fwhm`` pixels."""
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    r = np.arange(size) - (size - 1) / 2.0
    kernel = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / sigma**2)
    return (kernel / kernel.sum()).astype(np.float32)


@dataclass(frozen=True)
class DetectionPreset:
    """Background and extraction parameters of ``sep``.

    Parameters
    ----------
    name : str
        Preset name.
    thresh : float
        Detection threshold in units of the background rms.
    minarea : int
        Minimum number of connected pixels above threshold.
    filter_kernel : numpy.ndarray or None
        Convolution kernel applied before thresholding.
    deblend_nthresh : int
        Number of multi-threshold deblending levels.
    deblend_cont : float
        Minimum contrast for a branch to become a separate object.
    clean : bool
        Remove spurious detections near bright objects.
    clean_param : float
        Cleaning efficiency.
    back_size : int
        Background mesh size, pixels.
    back_filter_size : int
        Median filter size of the background mesh, in meshes.
    """

    name: str
    thresh: float = 1.5
    minarea: int = 5
    filter_kernel: np.ndarray | None = dc_field(default_factory=lambda: SEXTRACTOR_KERNEL)
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    clean: bool = True
    clean_param: float = 1.0
    back_size: int = 64
    back_filter_size: int = 3

    def describe(self) -> dict[str, Any]:
        """Parameters as a JSON-friendly dict (kernel as its shape)."""
        out = asdict(self)
        kernel = out.pop("filter_kernel")
        out["filter_kernel"] = None if kernel is None else list(np.shape(kernel))
        return out


DETECTION_PRESETS: dict[str, DetectionPreset] = {
    # SExtractor 2.x defaults (default.sex, default.conv).
    "sextractor": DetectionPreset(name="sextractor"),
    # DES Y6 "sxdes" settings.
    "des": DetectionPreset(
        name="des",
        thresh=0.8,
        minarea=4,
        filter_kernel=gaussian_kernel(3.0, 7),
        deblend_nthresh=64,
        deblend_cont=0.001,
    ),
}

_PARAMETER_NAMES = {f for f in DetectionPreset.__dataclass_fields__ if f != "name"}


def get_detection_preset(preset: str | DetectionPreset = "sextractor", **overrides: Any) -> DetectionPreset:
    """Return a detection preset by name, with some parameters overridden.

    Raises
    ------
    DetectionError
        For an unknown preset or parameter name, or a value out of range.
    """
    if not isinstance(preset, DetectionPreset):
        try:
            preset = DETECTION_PRESETS[str(preset).lower()]
        except KeyError:
            raise DetectionError(
                f"unknown detection preset {preset!r}: expected one of {', '.join(DETECTION_PRESETS)}"
            ) from None
    unknown = set(overrides) - _PARAMETER_NAMES
    if unknown:
        raise DetectionError(
            f"unknown detection parameter(s) {', '.join(sorted(unknown))}: "
            f"expected some of {', '.join(sorted(_PARAMETER_NAMES))}"
        )
    overrides = {k: v for k, v in overrides.items() if v is not None}
    preset = replace(preset, **overrides)
    _check_preset(preset)
    return preset


def _check_preset(p: DetectionPreset) -> None:
    checks = [
        ("thresh", 0 < p.thresh < math.inf, "a positive number of background sigmas"),
        ("minarea", p.minarea >= 1, "an integer >= 1"),
        # sep crashes (no message) on very many levels: validated before it runs
        ("deblend_nthresh", 1 <= p.deblend_nthresh <= MAX_DEBLEND_NTHRESH, f"an integer from 1 to {MAX_DEBLEND_NTHRESH}"),
        ("deblend_cont", 0 <= p.deblend_cont <= 1, "a number between 0 and 1"),
        ("back_size", p.back_size >= 2, "an integer >= 2 pixels"),
        ("back_filter_size", p.back_filter_size >= 1 and p.back_filter_size % 2 == 1, "an odd integer >= 1"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise DetectionError(f"detection parameter {name}={getattr(p, name)!r}: expected {expected}")


@dataclass
class DetectionResult:
    """Everything a detection run produced.

    Attributes
    ----------
    catalog : astropy.table.Table
        One row per detection (see :func:`detect`).
    segmentation : numpy.ndarray
        ``(H, W)`` int32; 0 is background, otherwise the catalogue ``id``.
    background : numpy.ndarray
        ``(C, H, W)`` float32 background level per band.
    subtracted : numpy.ndarray
        ``(C, H, W)`` float32 background-subtracted bands.
    rms : numpy.ndarray
        ``(C,)`` global background rms per band.
    detection_image : numpy.ndarray
        ``(H, W)`` the (co-added) background-subtracted image detection ran on.
    detection_rms : float
        Global rms of the detection image.
    preset : DetectionPreset
        Parameters used.
    """

    catalog: Table
    segmentation: np.ndarray
    background: np.ndarray
    subtracted: np.ndarray
    rms: np.ndarray
    detection_image: np.ndarray
    detection_rms: float
    preset: DetectionPreset


def _background(image: np.ndarray, mask: np.ndarray, preset: DetectionPreset, where: str) -> sep.Background:
    h, w = image.shape
    if h < preset.back_size or w < preset.back_size:
        raise DetectionError(
            f"{where}: image of {h}x{w} pixels is smaller than the background mesh "
            f"back_size={preset.back_size}: expected back_size <= {min(h, w)}"
        )
    try:
        return sep.Background(
            image,
            mask=mask,
            bw=preset.back_size,
            bh=preset.back_size,
            fw=preset.back_filter_size,
            fh=preset.back_filter_size,
        )
    except Exception as exc:  # sep raises bare Exceptions with C-level messages
        raise DetectionError(f"{where}: background estimation failed ({exc})") from None


def _check_field(field: Field) -> None:
    """Refuse what has nothing to detect (run and detect both call this: they agree on it)."""
    if not isinstance(field, Field):
        raise DetectionError(f"detection needs a Field, got {type(field).__name__}: expected read_field(path) "
                             "or Field(array)")
    valid = ~field.mask
    if not valid.any():
        raise DetectionError(f"{field.name}: every pixel is masked (NaN/inf): nothing to detect")
    if not np.any(field.data[valid]):
        raise DetectionError(f"{field.name}: the image is all zero: nothing to detect")
    for band, image, good in zip(field.band_names, field.data, valid):
        values = image if good.all() else image[good]
        if values.size and values.min() == values.max():
            raise DetectionError(f"{field.name} band {band}: the image is constant ({float(values.flat[0]):g} "
                                 "everywhere): nothing to detect")


def _coadd(subtracted: np.ndarray, rms: np.ndarray) -> tuple[np.ndarray, float]:
    """Inverse-variance weighted co-add of background-subtracted bands, and its rms."""
    if subtracted.shape[0] == 1:
        return subtracted[0], float(rms[0])
    weights = 1.0 / np.maximum(rms, 1e-30) ** 2
    coadd = np.tensordot(weights / weights.sum(), subtracted, axes=1).astype(np.float32)
    return np.ascontiguousarray(coadd), float(1.0 / math.sqrt(weights.sum()))


def run_detection(
    field: Field,
    preset: str | DetectionPreset = "sextractor",
    *,
    allow_empty: bool = False,
    progress: Any = None,
    **overrides: Any,
) -> DetectionResult:
    """Subtract the background, extract sources and measure them.

    Parameters
    ----------
    field : Field
        The field to detect on (all bands).
    preset : str or DetectionPreset
        ``"sextractor"`` (SExtractor defaults) or ``"des"`` (DES Y6 sxdes).
    allow_empty : bool
        Return an empty catalogue instead of raising when nothing is found.
    progress : callable, optional
        Called as ``progress(step, n_steps, message)`` between stages.
    **overrides
        Any :class:`DetectionPreset` parameter (``thresh``, ``minarea``, ``back_size``, ...).

    Returns
    -------
    DetectionResult

    Raises
    ------
    DetectionError
        Bad parameters, an image too small for the background mesh, an image
        with nothing valid, or (unless ``allow_empty``) no detection.
    """
    stages = iter_detection(field, preset, allow_empty=allow_empty, **overrides)
    while True:
        try:
            step = next(stages)
        except StopIteration as done:
            return done.value
        if progress is not None:
            progress(*step)


def iter_detection(
    field: Field,
    preset: str | DetectionPreset = "sextractor",
    *,
    allow_empty: bool = False,
    **overrides: Any,
):
    """Generator form of :func:`run_detection`: yields ``(step, n_steps, message)``, returns the result.

    Widgets drive it from a worker thread to show progress; parameters as in :func:`run_detection`.
    """
    _check_field(field)
    params = get_detection_preset(preset, **overrides)
    n_steps = 4
    yield 0, n_steps, "background"
    mask_any = field.mask.any(axis=0)
    backgrounds, subtracted, rms = [], [], []
    for band, image in zip(field.band_names, field.data):
        bkg = _background(image, mask_any, params, f"{field.name} band {band}")
        level = bkg.back(dtype=np.float32)
        backgrounds.append(level)
        sub = image - level
        sub[mask_any] = 0.0
        subtracted.append(sub)
        rms.append(bkg.globalrms)
    background = np.stack(backgrounds)
    subtracted_arr = np.ascontiguousarray(np.stack(subtracted), dtype=np.float32)
    rms_arr = np.asarray(rms, dtype=float)
    detection_image, detection_rms = _coadd(subtracted_arr, rms_arr)

    yield 1, n_steps, "extraction"
    try:
        objects, segmentation = extract_with_preset(detection_image, detection_rms, params, mask=mask_any)
    except Exception as exc:
        raise DetectionError(f"{field.name}: source extraction failed ({exc}); try a higher thresh") from None
    segmentation = np.ascontiguousarray(segmentation, dtype=np.int32)
    if len(objects) == 0 and not allow_empty:
        raise DetectionError(
            f"{field.name}: no source found above thresh={params.thresh} sigma "
            f"with minarea={params.minarea}: expected at least one; try a lower thresh"
        )

    yield 2, n_steps, "photometry"
    catalog = _build_catalog(objects, segmentation, field, subtracted_arr, detection_image, mask_any, rms_arr)
    catalog.meta.update(
        {
            "field": field.name,
            "detection_preset": params.describe(),
            "detection_rms": detection_rms,
            "bands": list(field.band_names),
            "zero_point": field.zero_point,
            "exposure": field.exposure,
        }
    )
    yield n_steps, n_steps, f"{len(catalog)} sources"
    return DetectionResult(
        catalog=catalog,
        segmentation=segmentation,
        background=background,
        subtracted=subtracted_arr,
        rms=rms_arr,
        detection_image=detection_image,
        detection_rms=detection_rms,
        preset=params,
    )


def _extract(image: np.ndarray, thresh: float, **kwargs: Any):
    """``sep.extract`` with a pixel stack grown (and retried) as the image needs."""
    pixstack = max(DEFAULT_PIXSTACK, image.size // 16)
    while True:
        sep.set_extract_pixstack(int(pixstack))
        try:
            return sep.extract(image, thresh, **kwargs)
        except Exception as exc:
            if "pixel buffer full" not in str(exc) or pixstack >= image.size:
                raise
            pixstack = min(pixstack * 4, image.size)


def extract_with_preset(
    image: np.ndarray, err: float, preset: DetectionPreset, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``sep.extract`` with a preset's parameters; returns the objects and the int32 segmentation map.

    ``err`` is the background sigma; the preset's ``thresh`` is in its units.
    """
    objects, segmentation = _extract(
        image,
        preset.thresh,
        err=err,
        mask=mask,
        minarea=preset.minarea,
        filter_kernel=preset.filter_kernel,
        deblend_nthresh=preset.deblend_nthresh,
        deblend_cont=preset.deblend_cont,
        clean=preset.clean,
        clean_param=preset.clean_param,
        segmentation_map=True,
    )
    return objects, np.ascontiguousarray(segmentation, dtype=np.int32)


def detect(
    field: Field, preset: str | DetectionPreset = "sextractor", **overrides: Any
) -> tuple[Table, np.ndarray]:
    """Detect sources in a field with ``sep``.

    Parameters
    ----------
    field : Field
        Field from :func:`~napari_deblend.read_field`.
    preset : str or DetectionPreset
        ``"sextractor"`` or ``"des"``.
    **overrides
        Parameters replacing the preset's (``thresh``, ``minarea``, ``deblend_nthresh``,
        ``deblend_cont``, ``back_size``, ``back_filter_size``, ...), and
        ``allow_empty`` to return an empty catalogue rather than raise.

    Returns
    -------
    catalog : astropy.table.Table
        Columns: ``id`` (segmentation label), ``x``, ``y`` (0-based pixels),
        ``a``, ``b`` (pixels), ``theta`` (rad, from +x towards +y), ``x2``,
        ``y2``, ``xy`` (isophotal second moments, pixel²), ``npix``, ``peak``,
        ``flux_iso``, ``kron_radius``, ``flux_auto``, ``fluxerr_auto``,
        ``mag_auto``, ``magerr_auto``, ``snr``, ``flags``, ``ra``, ``dec``
        (deg, NaN without WCS), and per band ``flux_auto_<band>`` and
        ``mag_auto_<band>`` for multi-band fields.
    segmentation : numpy.ndarray
        int32 ``(H, W)`` map; pixel value = catalogue ``id``, 0 = background.
    """
    allow_empty = bool(overrides.pop("allow_empty", False))
    result = run_detection(field, preset, allow_empty=allow_empty, **overrides)
    return result.catalog, result.segmentation


def kron_photometry(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    theta: np.ndarray,
    ids: np.ndarray,
    segmentation: np.ndarray,
    err: float,
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
    err : float
        Background rms, for flux errors.
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


def _magnitudes(field: Field, flux: np.ndarray, fluxerr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mag = field.magnitude(flux)
    with np.errstate(divide="ignore", invalid="ignore"):
        magerr = np.where(flux > 0, 2.5 / np.log(10) * fluxerr / flux, np.nan)
    return np.atleast_1d(mag), magerr


def _build_catalog(
    objects: np.ndarray,
    segmentation: np.ndarray,
    field: Field,
    subtracted: np.ndarray,
    detection_image: np.ndarray,
    mask: np.ndarray,
    rms: np.ndarray,
) -> Table:
    n = len(objects)
    ids = np.arange(1, n + 1, dtype=np.int32)
    x, y = objects["x"].astype(float), objects["y"].astype(float)
    a, b, theta = objects["a"].astype(float), objects["b"].astype(float), objects["theta"].astype(float)
    det_rms = float(np.sqrt(1.0 / np.sum(1.0 / np.maximum(rms, 1e-30) ** 2)))
    flux_auto, fluxerr_auto, kron_radius, kflags = kron_photometry(
        detection_image, x, y, a, b, theta, ids, segmentation, det_rms, mask=mask
    )
    mag, magerr = _magnitudes(field, flux_auto, fluxerr_auto)
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
    cat["flags"] = objects["flag"].astype(np.int16) | kflags
    if field.n_bands > 1:
        for band, image, band_rms in zip(field.band_names, subtracted, rms):
            f, ferr, _, _ = kron_photometry(
                image, x, y, a, b, theta, ids, segmentation, float(band_rms), mask=mask, kron_radius=kron_radius
            )
            m, merr = _magnitudes(field, f, ferr)
            cat[f"flux_auto_{band}"] = f * u.electron
            cat[f"fluxerr_auto_{band}"] = ferr * u.electron
            cat[f"mag_auto_{band}"] = m * u.mag
    ra, dec = np.full(n, np.nan), np.full(n, np.nan)
    if field.wcs is not None and n:
        ra, dec = field.wcs.all_pix2world(x, y, 0)
    cat["ra"] = np.asarray(ra, float) * u.deg
    cat["dec"] = np.asarray(dec, float) * u.deg
    cat["blend_id"] = np.zeros(n, dtype=np.int32)
    return cat
