"""The public ``deblend`` function: a Field + Blend, or a bare stamp, through any registered deblender.

A learned deblender sees the data on the grid it was trained on: when the
field's pixel scale, PSF (header, stars, or preset: :func:`~napari_deblend.psf.field_psf_fwhm`)
or flux units differ from its training preset's, the stamp is resampled and
PSF-matched first and the components are brought back with their flux
conserved (:mod:`napari_deblend.regrid`). A field's noise plane gives each
stamp its local noise, and per-pixel variance to deblenders that take it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .blends import Blend, cut_stamp, stamp_noise, stamp_origin, stamp_variances
from .checks import check_type
from .deblenders.base import Deblender, DeblendError, DeblendResult, get_deblender
from .errors import DeblendInputError
from .field import Field
from .field.calibration import preset_zero_point
from .presets import get_preset
from .regrid import GridMatch, deblend_on_grid, grid_match, trained_preset, warn_if_broader

DEFAULT_STAMP = 48
STAMP_MARGIN = 6
#: Largest stamp side a caller may ask for (a network on a larger stamp needs gigabytes).
MAX_STAMP_SIZE = 1024


def _check_stamp_size(stamp_size: Any, minimum: int) -> None:
    """A stamp side given by the caller: a whole number from the model's minimum to :data:`MAX_STAMP_SIZE`."""
    if stamp_size is None:
        return
    if isinstance(stamp_size, bool) or not isinstance(stamp_size, (int, np.integer)) \
            or not minimum <= stamp_size <= MAX_STAMP_SIZE:
        raise DeblendInputError(f"stamp_size={stamp_size!r}: expected a whole number of pixels from {minimum} to "
                                f"{MAX_STAMP_SIZE}")


def stamp_side(blend: Blend, minimum: int = DEFAULT_STAMP) -> int:
    """Side of the square stamp cut for a blend: its bounding box plus a margin, at least ``minimum``, even."""
    side = max(minimum, blend.size + 2 * STAMP_MARGIN)
    return side + side % 2


def stamp_window(blend: Blend, model: str = "peeling", device: str = "auto",
                 stamp_size: int | None = None) -> tuple[int, int, int]:
    """``(y0, x0, side)``: where :func:`deblend` cuts the stamp of ``blend`` for ``model``, in field pixels.

    Parameters
    ----------
    blend : Blend
        The blend.
    model : str
        Deblender name (its stamp size sets the minimum side).
    device : str
        Device to load the deblender on (it is cached for the deblending that follows).
    stamp_size : int, optional
        Side as passed to :func:`deblend`.
    """
    side = stamp_size or stamp_side(blend, get_deblender(model, device=device).stamp_size or DEFAULT_STAMP)
    y0, x0 = stamp_origin(blend, side)
    return y0, x0, side


def positions_in_window(points: np.ndarray, window: tuple[int, int, int]) -> np.ndarray:
    """The ``(y, x)`` field positions of ``points`` that fall on the stamp pixels of ``window``."""
    points = np.asarray(points, float).reshape(-1, 2)
    return points[_on_window(points, window)]


def _on_window(points: np.ndarray, window: tuple[int, int, int]) -> np.ndarray:
    y0, x0, side = window
    return (points[:, 0] >= y0 - 0.5) & (points[:, 0] <= y0 + side - 0.5) \
        & (points[:, 1] >= x0 - 0.5) & (points[:, 1] <= x0 + side - 0.5)


def _stamp_positions(field_positions: Any, origin: tuple[int, int], side: int, blend_id: int) -> np.ndarray:
    """Field ``(y, x)`` positions as stamp pixels, with an error naming those off the stamp."""
    try:
        pos = np.asarray(field_positions, dtype=float)
    except (TypeError, ValueError):
        pos = np.zeros((0, 3))
    if pos.ndim != 2 or pos.shape[1] != 2 or not np.isfinite(pos).all():
        raise DeblendInputError(
            f"field_positions has shape {np.shape(field_positions)}: expected finite (K, 2) (y, x) field pixels")
    y0, x0 = origin
    off = ~_on_window(pos, (y0, x0, side))
    if off.any():
        raise DeblendInputError(
            f"field_positions {pos[off].tolist()} lie outside blend {blend_id}'s {side}x{side} stamp "
            f"(field pixels y {y0}..{y0 + side - 1}, x {x0}..{x0 + side - 1}): expected (y, x) on the stamp")
    return pos - np.asarray(origin, dtype=float)


def field_noise(field: Field, preset_sigma: float) -> float:
    """Background sigma of a field's band sum (the preset's if the field has none measured)."""
    noise = np.asarray(field.noise, float)
    if noise.size and np.all(np.isfinite(noise) & (noise > 0)):
        return float(np.sqrt(np.sum(noise**2)) / np.sqrt(len(noise))) if len(noise) > 1 else float(noise[0])
    return float(preset_sigma)


def field_grid_match(field: Field, deblender: Deblender) -> GridMatch | None:
    """How a field's stamps must be resampled for a learned deblender (None: classical, or nothing to do)."""
    from .psf import field_psf_fwhm

    trained = trained_preset(deblender)
    if trained is None:
        return None
    psf, _ = field_psf_fwhm(field)
    match = grid_match(trained, float(field.pixel_scale), psf, float(field.zero_point))
    if match.identity:
        return None
    warn_if_broader(match, deblender.name, field.name)
    return match


def _stamp_grid_match(deblender: Deblender, preset: object) -> GridMatch | None:
    """The match of a bare stamp from ``preset``'s survey (None without a preset or when nothing to do)."""
    trained = trained_preset(deblender)
    if preset is None or trained is None:
        return None
    data = get_preset(preset)
    match = grid_match(trained, data.pixel_scale, data.psf_fwhm, preset_zero_point(data, data.exposure)[0])
    if match.identity:
        return None
    warn_if_broader(match, deblender.name, f"preset {data.name}")
    return match


def deblend(
    data: Field | np.ndarray,
    blend: Blend | None = None,
    *,
    model: str = "peeling",
    device: str = "auto",
    preset: Any = None,
    positions: np.ndarray | None = None,
    noise: float | None = None,
    stamp_size: int | None = None,
    background: np.ndarray | None = None,
    field_positions: np.ndarray | None = None,
) -> DeblendResult:
    """Deblend one blend of a field, or a bare stamp.

    Parameters
    ----------
    data : Field or numpy.ndarray
        A Field (with ``blend``), or a stamp ``(H, W)`` / ``(C, H, W)`` in electrons, sky-subtracted.
    blend : Blend, optional
        The blend to cut from the field (required with a Field).
    model : str
        Deblender name (see :func:`~napari_deblend.available_deblenders`).
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cuda"``, ``"mps"`` or ``"cpu"``.
    preset : str, optional
        Survey preset (noise and calibration defaults); default: the field's, else ``lsst-i``.
        For a bare stamp, the survey it comes from: a learned deblender
        trained on another preset gets it resampled to its own grid.
    positions : numpy.ndarray, optional
        ``(K, 2)`` source positions ``(y, x)`` in stamp pixels (e.g. clicked by a
        user). Without them, a deblender that needs positions gets the
        catalogue positions of the blend's members, and the others find the
        sources themselves (``peeling`` by design, ``unet`` and ``vae`` with the
        learned source finder, which separates close pairs that sep merges).
    noise : float, optional
        Background sigma; default: the stamp's median noise from the field's
        variance plane, else the field's measured noise, else the preset's.
    stamp_size : int, optional
        Side of the stamp cut around the blend (default: :func:`stamp_side`).
    background : numpy.ndarray, optional
        ``(C, H, W)`` field background to subtract before cutting (from detection).
    field_positions : numpy.ndarray, optional
        With a Field: ``(K, 2)`` source positions ``(y, x)`` in *field* pixels (e.g.
        clicked in the viewer), instead of ``positions``; each must lie on the
        blend's stamp (see :func:`stamp_window`). Deblenders that find their own
        sources (``uses_positions`` False: ``peeling``, ``sextractor``) ignore them.

    Returns
    -------
    DeblendResult
        With ``origin`` (the stamp's place in the field), ``blend_id``,
        ``info["padded"]`` set when the stamp runs over the field's edge,
        ``info["stamp_mask"]`` (the stamp's bad pixels), ``info["stamp_variance"]``
        with a noise plane (``inf`` where masked) and, when the stamp was
        resampled, ``info["grid"]``.

    Warns
    -----
    GridWarning
        When the data's PSF is broader than the one a learned model was trained on.
    """
    if isinstance(data, Field):
        if blend is None:
            raise DeblendError("deblend(field, blend): a Blend is needed to cut a stamp from a Field")
        check_type(blend, Blend, "deblend(field, blend)", "a Blend from find_blends")
        preset = preset if preset is not None else data.preset
        deblender = get_deblender(model, device=device, preset=preset)
        _check_stamp_size(stamp_size, deblender.min_stamp_size)
        side = stamp_size or stamp_side(blend, deblender.stamp_size or DEFAULT_STAMP)
        stamp = cut_stamp(data.data, blend, size=side, mask=data.mask, variance=data.variance)
        pixels = stamp.data
        if background is not None:  # the background's stamp only, not the whole field per blend
            if np.shape(background) != np.shape(data.data):
                raise DeblendInputError(f"background has shape {np.shape(background)}: expected the field's "
                                        f"{np.shape(data.data)}")
            pixels = pixels - cut_stamp(background, blend, size=side).data
        pixels = np.where(stamp.mask, 0.0, pixels).astype(np.float32)
        sigma = noise if noise is not None else stamp_noise(stamp, field_noise(data, deblender.preset.background_sigma))
        given = positions
        if field_positions is not None:
            if positions is not None:
                raise DeblendInputError("deblend: give positions (stamp pixels) or field_positions, not both")
            given = _stamp_positions(field_positions, stamp.origin, side, blend.id)
        if given is None and (deblender.needs_positions or deblender.detection_hints):
            given = stamp.positions
        match = field_grid_match(data, deblender)
        if match is not None:
            result = deblend_on_grid(deblender, pixels[None], match, positions=[given], noise=sigma)[0]
        else:
            result = deblender.deblend_batch(pixels[None], positions=[given], noise=sigma,
                                             **stamp_variances(deblender, [stamp]))[0]
        result.origin = stamp.origin
        result.blend_id = blend.id
        result.info["padded"] = stamp.padded
        result.info["catalog_positions"] = stamp.positions
        result.info["stamp_mask"] = stamp.mask
        if stamp.variance is not None:  # for a SExtractor run on the same stamp (the Comparison panel's)
            result.info["stamp_variance"] = np.where(stamp.mask, np.inf, stamp.variance).astype(np.float32)
        return result
    if field_positions is not None:
        raise DeblendInputError("deblend: field_positions needs a Field and a Blend; with a bare stamp, give positions (stamp pixels)")
    if not isinstance(data, np.ndarray):
        check_type(data, (list, tuple), "deblend(data)", "a Field with a Blend, or a stamp array (H, W) or (C, H, W)")
    try:
        stamp = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError):
        raise DeblendError("deblend(data): cannot read it as a numeric array: expected a stamp (H, W) or "
                           "(C, H, W)") from None
    if stamp.ndim == 2:
        stamp = stamp[None]
    if stamp.ndim != 3:
        raise DeblendError(f"stamp has shape {np.shape(data)}: expected (H, W) or (C, H, W)")
    if max(stamp.shape[-2:]) > MAX_STAMP_SIZE:
        raise DeblendError(f"stamp of {stamp.shape[-2]}x{stamp.shape[-1]} pixels: expected at most "
                           f"{MAX_STAMP_SIZE} pixels a side (cut the blend out of the field)")
    deblender = get_deblender(model, device=device, preset=preset)
    match = _stamp_grid_match(deblender, preset)
    if match is not None and stamp.shape[-1] == stamp.shape[-2]:
        return deblend_on_grid(deblender, stamp[None], match, None if positions is None else [positions],
                               deblender.noise_levels(stamp[None], noise))[0]
    return deblender.deblend_batch(stamp[None], positions=None if positions is None else [positions], noise=noise)[0]
