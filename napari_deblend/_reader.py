"""napari reader for FITS fields (npe2 ``readers`` contribution).

``get_reader(path)`` accepts FITS files (plain, gzipped, tile-compressed) and
lists of them (read as the bands of one field, as napari passes them when
opening several files "as a stack"). The reader function opens one image
layer per band:

- a file with one band gives one layer named after the file, ``field.fits``;
- a file with several bands (image extensions or cube planes) gives one layer
  per band, named ``field.fits [g]`` with the band name in brackets.

Each layer's ``metadata["napari_deblend"]`` holds the :class:`Field` of the
whole file (all bands, shared between the layers: the layer data is a view of
``field.data``), the layer's band index and the path. The layers use a gray
colormap with contrast limits and gamma from :func:`display_limits`, so that
both faint and bright galaxies are visible when the file opens.

A field with masked pixels (flagged by its mask plane, of zero weight, or
NaN) also gets a Labels layer ``field.fits mask`` showing them in red.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .field import Field, estimate_noise, has_fits_suffix, is_fits_file, read_field

__all__ = ["METADATA_KEY", "display_limits", "get_reader", "layer_data", "mask_layer_data", "read_fits"]

#: Key of the layer metadata entry that holds ``{"field", "band", "path"}``.
METADATA_KEY = "napari_deblend"

LayerData = tuple[np.ndarray, dict[str, Any], str]
PathOrPaths = str | PathLike | Sequence[str | PathLike]

# Display stretch: the background maps to this gray level (0 black, 1 white) ...
_BACKGROUND_LEVEL = 0.25
# ... the black point sits this many sigma below the background ...
_BLACK_SIGMA = 2.0
# ... and the white point at this percentile of the pixels, kept within these sigma above the background.
_WHITE_PERCENTILE = 99.95
_WHITE_SIGMA_RANGE = (20.0, 300.0)
# napari's gamma slider spans 0.2 - 2.
_GAMMA_RANGE = (0.2, 1.0)


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return the FITS reader function if napari-deblend can open ``path``, else None.

    Only the file names and the first bytes of each file are looked at.

    Parameters
    ----------
    path : str, path-like or list of those
        What napari asks about. A list is taken only if every entry is a FITS
        file; its files become the bands of one field.

    Returns
    -------
    callable or None
        :func:`read_fits`, or None for anything that is not an existing FITS
        file with a FITS name (``.fits``, ``.fit``, ``.fts``, optionally
        ``.gz``, or ``.fz``).
    """
    paths = [path] if isinstance(path, (str, PathLike)) else list(path)
    if not paths or not all(isinstance(p, (str, PathLike)) for p in paths):
        return None
    if all(has_fits_suffix(p) and is_fits_file(p) for p in paths):
        return read_fits
    return None


def read_fits(path: PathOrPaths) -> list[LayerData]:
    """Read FITS file(s) into napari image layer data, one layer per band.

    Parameters
    ----------
    path : str, path-like or list of those
        A FITS file, or several single-band files read as the bands of one field.

    Returns
    -------
    list of LayerData
        ``(data, kwargs, "image")`` tuples, see :func:`layer_data`.

    Raises
    ------
    FieldReadError
        The file passed :func:`get_reader` but cannot be read as a field
        (napari shows the message as a notification).
    """
    source = path if isinstance(path, (str, PathLike)) else list(path)
    field = read_field(source)
    _install_viewer_hooks()
    return layer_data(field)


def layer_data(field: Field) -> list[LayerData]:
    """napari image layer data for every band of a field.

    Parameters
    ----------
    field : Field
        Any field (from files or an array).

    Returns
    -------
    list of LayerData
        One ``(field.data[i], kwargs, "image")`` per band; ``kwargs`` holds
        ``name``, ``metadata={"napari_deblend": {"field", "band", "path"}}``,
        ``colormap="gray"``, ``contrast_limits`` and ``gamma``; then the mask
        layer of :func:`mask_layer_data` when some pixel is masked.
    """
    layers = []
    for band in range(field.n_bands):
        lo, hi, gamma = display_limits(field.data[band], field.noise[band], field.mask[band])
        path = field.path[band] if band < len(field.path) else None
        kwargs = {
            "name": _layer_name(field, band),
            "metadata": {METADATA_KEY: {"field": field, "band": band, "path": path}},
            "colormap": "gray",
            "contrast_limits": [lo, hi],
            "gamma": gamma,
        }
        layers.append((field.data[band], kwargs, "image"))
    mask = mask_layer_data(field)
    if mask is not None:
        layers.append(mask)
    return layers


def mask_layer_data(field: Field) -> LayerData | None:
    """A Labels layer (1 = masked in any band, red, half transparent) of the field's bad pixels, or None."""
    masked = field.mask.any(axis=0)
    if not masked.any():
        return None
    from napari.utils.colormaps import DirectLabelColormap

    colormap = DirectLabelColormap(color_dict={None: (0.0, 0.0, 0.0, 0.0), 1: (1.0, 0.15, 0.1, 1.0)})
    base = Path(field.path[0]).name if field.path else field.name
    kwargs = {
        "name": f"{base} mask",
        "colormap": colormap,
        "opacity": 0.5,
        "metadata": {METADATA_KEY: {"mask_of": base, "masked_pixels": int(masked.sum())}},
    }
    return masked.astype(np.uint8), kwargs, "labels"


def _layer_name(field: Field, band: int) -> str:
    """``field.fits`` for a single band, ``field.fits [g]`` for each band of several."""
    base = Path(field.path[band]).name if band < len(field.path) else field.name
    if field.n_bands == 1:
        return base
    return f"{base} [{field.band_names[band]}]"


def display_limits(
    image: np.ndarray,
    noise: float | None = None,
    mask: np.ndarray | None = None,
    max_samples: int = 1_000_000,
) -> tuple[float, float, float]:
    """Contrast limits and gamma showing faint and bright galaxies at once.

    The stretch, ``((x - lo) / (hi - lo)) ** gamma``, approximates an asinh
    stretch: the black point ``lo`` is 2 sigma below the background (median),
    the white point ``hi`` is the 99.95th percentile of the pixels kept
    between 20 and 300 sigma above the background, and ``gamma`` makes the
    background a dark gray (0.25), so that sources a few sigma above the noise
    already stand out while bright galaxies keep their shape (only their
    cores saturate).

    Parameters
    ----------
    image : numpy.ndarray
        Image (any shape) to display.
    noise : float, optional
        Background sigma; estimated with
        :func:`~napari_deblend.field.estimate_noise` when missing or not finite.
    mask : numpy.ndarray, optional
        True for pixels to ignore.
    max_samples : int
        Largest number of pixels looked at.

    Returns
    -------
    lo, hi, gamma : float
        For napari's ``contrast_limits=[lo, hi]`` and ``gamma`` (0.2 to 1).
    """
    sample = _valid_sample(image, mask, max_samples)
    if sample.size == 0:
        return 0.0, 1.0, 1.0
    background = float(np.median(sample))
    sigma = float(noise) if noise is not None and math.isfinite(noise) and noise > 0 else math.nan
    if not math.isfinite(sigma):
        sigma = estimate_noise(sample)
    if not (math.isfinite(sigma) and sigma > 0):
        lo, hi = float(sample.min()), float(sample.max())
        return (lo, hi if hi > lo else lo + 1.0, 1.0)
    lo = background - _BLACK_SIGMA * sigma
    bright = float(np.percentile(sample, _WHITE_PERCENTILE))
    low_white, high_white = (background + k * sigma for k in _WHITE_SIGMA_RANGE)
    hi = min(max(bright, low_white), high_white)
    gamma = math.log(_BACKGROUND_LEVEL) / math.log((background - lo) / (hi - lo))
    return lo, hi, float(np.clip(gamma, *_GAMMA_RANGE))


def _valid_sample(image: np.ndarray, mask: np.ndarray | None, max_samples: int) -> np.ndarray:
    """A regular subsample of the finite, unmasked pixels, as float64."""
    flat = np.asarray(image).reshape(-1)
    step = max(1, math.ceil(flat.size / max_samples))
    values = flat[::step]
    if mask is not None:
        values = values[~np.asarray(mask).reshape(-1)[::step]]
    return values[np.isfinite(values)].astype(np.float64)


def _install_viewer_hooks() -> None:
    """Install the north-up camera and RA/Dec readout on the current viewer, if any."""
    try:
        from . import _viewer_hooks
    except ImportError:
        return
    try:
        import napari

        viewer = napari.current_viewer()
        if viewer is not None:
            _viewer_hooks.install(viewer)
    except Exception as exc:  # opening the file matters more than the extras
        warnings.warn(f"napari-deblend: viewer hooks not installed ({exc})", stacklevel=2)
