"""Source detection with ``sep`` (SExtractor): background, extraction presets, catalogue.

``detect(field)`` returns the catalogue (an astropy Table, one row per
detection, 0-based pixel coordinates) and the int32 segmentation map whose
labels equal the catalogue's ``id`` column.  Multi-band fields are detected on
an inverse-variance co-add (as DES does) and measured in every band.

A field with a noise plane (``Field.variance``) is detected against its
per-pixel noise (``sep.extract`` with an error map: the threshold is in units
of each pixel's sigma) and measured with it; masked pixels (``Field.mask``)
are left out of the background, the detection and the photometry, and a
source whose footprint or Kron aperture touches one gets :data:`FLAG_MASKED`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from dataclasses import field as dc_field
from typing import Any

import numpy as np
import sep
from astropy.table import Table

from .catalog_photometry import (  # noqa: F401  (re-exported: blends, tiles and the sextractor deblender use them)
    FLAG_MASKED,
    KRON_APERTURE_SCALE,
    KRON_INTEGRATION_RADIUS,
    KRON_MIN_RADIUS,
    build_catalog,
    calibration_meta,
    catalog_zero_point,
    kron_photometry,
)
from .errors import DetectionError
from .field import Field

_build_catalog = build_catalog  # the name the tiled pipeline imports

# sep's object limit is low for crowded fields; its pixel stack is sized per call (see _extract).
sep.set_sub_object_limit(4096)
DEFAULT_PIXSTACK = 300_000
#: Most multi-threshold deblending levels accepted (SExtractor's default is 32, DES uses 64).
MAX_DEBLEND_NTHRESH = 256

#: SExtractor's default.conv: 3x3 "pyramid" kernel.
SEXTRACTOR_KERNEL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32)



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
        Global rms of the detection image (the median per-pixel sigma with a noise plane).
    preset : DetectionPreset
        Parameters used.
    detection_error : numpy.ndarray or None
        ``(H, W)`` per-pixel sigma of the detection image, from the field's
        variance (None without a noise plane: ``detection_rms`` everywhere).
    """

    catalog: Table
    segmentation: np.ndarray
    background: np.ndarray
    subtracted: np.ndarray
    rms: np.ndarray
    detection_image: np.ndarray
    detection_rms: float
    preset: DetectionPreset
    detection_error: np.ndarray | None = None


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


def detection_image(
    subtracted: np.ndarray, rms: np.ndarray, variance: np.ndarray | None = None, mask: np.ndarray | None = None
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """The image detection runs on, its global rms and, with a noise plane, its per-pixel sigma.

    Parameters
    ----------
    subtracted : numpy.ndarray
        ``(C, H, W)`` background-subtracted bands.
    rms : numpy.ndarray
        ``(C,)`` global background rms per band.
    variance : numpy.ndarray, optional
        ``(C, H, W)`` per-pixel variance (0 where masked): the bands are then
        co-added with per-pixel inverse-variance weights.
    mask : numpy.ndarray, optional
        ``(H, W)`` masked pixels (their sigma is set to the median, sep ignores them).

    Returns
    -------
    image : numpy.ndarray
        ``(H, W)`` float32 co-add (the band itself for one band).
    rms : float
        Its global rms (the median per-pixel sigma with a noise plane).
    error : numpy.ndarray or None
        ``(H, W)`` float32 per-pixel sigma, or None without ``variance``.
    """
    if variance is None:
        image, global_rms = _coadd(subtracted, rms)
        return image, global_rms, None
    with np.errstate(divide="ignore"):
        weights = np.where(variance > 0, 1.0 / np.maximum(variance, 1e-30), 0.0).astype(np.float32)
    total = weights.sum(axis=0)
    valid = total > 0
    if mask is not None:
        valid &= ~mask
    image = np.zeros(subtracted.shape[1:], dtype=np.float32)
    np.divide((weights * subtracted).sum(axis=0), total, out=image, where=valid)
    error = np.zeros(image.shape, dtype=np.float32)
    np.divide(1.0, total, out=error, where=valid)
    np.sqrt(error, out=error)
    typical = float(np.median(error[valid])) if valid.any() else 1.0
    error[~valid] = typical  # any finite value: sep leaves masked pixels out
    return np.ascontiguousarray(image), typical, error


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

    variance = None if field.variance is None else np.ascontiguousarray(field.variance)
    detected, detection_rms, detection_error = detection_image(subtracted_arr, rms_arr, variance, mask_any)

    yield 1, n_steps, "extraction"
    err = detection_rms if detection_error is None else detection_error
    try:
        objects, segmentation = extract_with_preset(detected, err, params, mask=mask_any)
    except Exception as exc:
        raise DetectionError(f"{field.name}: source extraction failed ({exc}); try a higher thresh") from None
    segmentation = np.ascontiguousarray(segmentation, dtype=np.int32)
    if len(objects) == 0 and not allow_empty:
        raise DetectionError(
            f"{field.name}: no source found above thresh={params.thresh} sigma "
            f"with minarea={params.minarea}: expected at least one; try a lower thresh"
        )

    yield 2, n_steps, "photometry"
    catalog = build_catalog(objects, segmentation, field, subtracted_arr, detected, mask_any, rms_arr,
                             detection_error=detection_error, variance=variance)
    catalog.meta.update(
        {
            "field": field.name,
            "detection_preset": params.describe(),
            "detection_rms": detection_rms,
            "bands": list(field.band_names),
            **calibration_meta(field.zero_point, field.exposure, field.zero_point_source),
        }
    )
    yield n_steps, n_steps, f"{len(catalog)} sources"
    return DetectionResult(
        catalog=catalog,
        segmentation=segmentation,
        background=background,
        subtracted=subtracted_arr,
        rms=rms_arr,
        detection_image=detected,
        detection_rms=detection_rms,
        preset=params,
        detection_error=detection_error,
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
    image: np.ndarray, err: float | np.ndarray, preset: DetectionPreset, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``sep.extract`` with a preset's parameters; returns the objects and the int32 segmentation map.

    ``err`` is the background sigma, one number or a per-pixel ``(H, W)`` map;
    the preset's ``thresh`` is in its units (per pixel for a map). Masked
    pixels belong to no source in the segmentation map.
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
    segmentation = np.ascontiguousarray(segmentation, dtype=np.int32)
    if mask is not None:
        segmentation[np.asarray(mask, dtype=bool)] = 0  # sep's filtering can spill a footprint onto masked pixels
    return objects, segmentation


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
        ``mag_auto``, ``magerr_auto``, ``snr``, ``flags`` (sep's bits and
        :data:`FLAG_MASKED`), ``ra``, ``dec`` (deg, NaN without WCS), and per
        band ``flux_auto_<band>`` and ``mag_auto_<band>`` for multi-band
        fields. Fluxes are in the image's units; magnitudes are
        ``mag_zero_point - 2.5 log10(flux)``. ``meta`` holds
        ``mag_zero_point`` (AB magnitude of one image unit, see
        :mod:`napari_deblend.field.calibration`) and ``zero_point_source``,
        and the same calibration as a per-second ``zero_point`` with its
        ``exposure`` (``mag_zero_point = zero_point + 2.5 log10(exposure)``).
    segmentation : numpy.ndarray
        int32 ``(H, W)`` map; pixel value = catalogue ``id``, 0 = background.
    """
    allow_empty = bool(overrides.pop("allow_empty", False))
    result = run_detection(field, preset, allow_empty=allow_empty, **overrides)
    return result.catalog, result.segmentation
