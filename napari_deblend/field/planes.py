"""Noise and mask planes of a field: found beside the science image or given as separate files.

Noise planes become one per-pixel variance (image units squared):

- ``VARIANCE`` / ``VAR`` (HSC, LSST): the variance itself;
- ``IVAR`` / ``INVVAR``: an inverse variance;
- ``ERR`` / ``ERROR`` / ``SIGMA`` / ``RMS`` / ``NOISE`` (HST, JWST): a standard deviation;
- ``WEIGHT`` / ``WGT`` / ``WHT`` (DES, HST drizzle): a *relative* inverse
  variance, rescaled so that the background noise of ``image * sqrt(weight)``
  is 1, as SExtractor's ``WEIGHT_TYPE MAP_WEIGHT`` does (a weight map already
  in absolute units gets a scale of about 1);
- ``VAR_POISSON + VAR_RNOISE + VAR_FLAT`` (JWST) when nothing above is there.

The first kind present in that order is used. Mask planes (``MASK``, ``MSK``,
``DQ``, ``BPM``, ``FLAGS``, ``BADPIX``) flag pixels: for HSC/LSST masks with
``MP_*`` bit names, the bits in :data:`BAD_MASK_PLANES`; for a JWST ``DQ``,
``DO_NOT_USE``; otherwise any non-zero value. Pixels of zero weight, zero or
non-finite variance or error are no data and are masked too. A noise plane of
another shape than its image, a negative variance, weight or error, or a
weight plane of all zeros is a :class:`~napari_deblend.errors.FieldReadError`
naming the file and HDU.

Separate files (``weight=``, ``mask=`` of :func:`~napari_deblend.read_field`)
follow SExtractor's ``WEIGHT_IMAGE`` / ``WEIGHT_TYPE``: ``weight``,
``variance`` or ``rms``.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from ..errors import FieldReadError
from .files import as_list, hdu_kind, open_fits, short, warn, where
from .hdus import PLANE_KINDS, BandSource, drop_degenerate_axes, extname

#: Noise plane kinds in order of preference.
NOISE_KINDS = ("variance", "ivar", "rms", "weight", "variance_part")
#: ``weight_type`` values of separate weight files (SExtractor's WEIGHT_TYPE, lower case).
WEIGHT_TYPES = ("weight", "variance", "rms")
#: HSC / LSST mask planes (``MP_<name>`` bit numbers) that make a pixel unusable.
BAD_MASK_PLANES = ("BAD", "SAT", "CR", "NO_DATA", "SUSPECT", "EDGE", "SENSOR_EDGE", "UNMASKEDNAN")
_JWST_DO_NOT_USE = 1
_CHUNK_PIXELS = 1 << 22


@dataclass
class Plane:
    """One noise or mask plane and the band(s) it belongs to."""

    kind: str
    path: str
    hdu_index: int
    hdu: Any
    lead: tuple[int, ...]
    shape: tuple[int, ...]
    primary: fits.Header

    @property
    def where(self) -> str:
        """File and HDU, for messages."""
        return where(self.path, self.hdu_index, self.hdu)

    def band_lead(self, plane: int | None) -> tuple[int, ...]:
        """Index prefix selecting the 2-D image of a band (a cube plane picks its layer)."""
        if len(self.shape) == 3:
            return (*self.lead, 0 if plane is None else plane)
        return self.lead


def _plane(kind: str, path: str, hdul: fits.HDUList, index: int) -> Plane:
    hdu = hdul[index]
    shape = drop_degenerate_axes(tuple(int(n) for n in hdu.shape), where(path, index, hdu))
    lead = (0,) * (len(hdu.shape) - len(shape))
    primary = hdul[0].header if index != 0 else fits.Header()
    return Plane(kind=kind, path=path, hdu_index=index, hdu=hdu, lead=lead, shape=shape, primary=primary)


def file_planes(path: str, hdul: fits.HDUList, science: list[int]) -> dict[int, list[Plane]]:
    """The noise and mask planes of each science HDU of one file (``science``: their indices).

    With one science HDU, every plane of the file is its own (the one whose
    EXTVER matches when a kind appears more than once). With several, a plane
    belongs to the science HDU of the same EXTVER when exactly one has it;
    other planes are left out with a warning.
    """
    candidates = [i for i, h in enumerate(hdul) if hdu_kind(h) == "image" and extname(h) in PLANE_KINDS]
    out: dict[int, list[Plane]] = {i: [] for i in science}
    if not candidates or not science:
        return out
    versions = {i: int(hdul[i].ver or 1) for i in [*science, *candidates]}
    skipped = []
    for index in science:
        by_name: dict[str, list[int]] = {}
        for c in candidates:
            by_name.setdefault(extname(hdul[c]), []).append(c)
        for name, group in by_name.items():
            same = [c for c in group if versions[c] == versions[index]]
            owners = [s for s in science if versions[s] == versions[index]]
            if len(science) == 1 and len(group) == 1:
                chosen = group[0]
            elif len(same) == 1 and len(owners) == 1:
                chosen = same[0]
            else:
                skipped.extend(c for c in group if c not in skipped)
                continue
            out[index].append(_plane(PLANE_KINDS[name], path, hdul, chosen))
    used = {p.hdu_index for planes in out.values() for p in planes}
    left = [c for c in skipped if c not in used]
    if left:
        names = ", ".join(where(path, c, hdul[c]).split(" ", 1)[1] for c in left)
        warn(f"{where(path)}: cannot tell which image {names} belong(s) to; left out (give --weight / --mask "
             f"files, or match the planes' EXTVER to their image)")
    return out


def external_planes(files: Any, kind: str, n_files: int, stack: ExitStack, option: str) -> list[Plane | None]:
    """Planes from separate files, one per input file (or one for all): ``kind`` is a plane kind."""
    paths = as_list(files) if files is not None else []
    if not paths:
        return [None] * n_files
    if len(paths) not in (1, n_files):
        raise FieldReadError(
            f"{option}: {len(paths)} file(s) for {n_files} field file(s): expected one, or one per field file"
        )
    planes = []
    for path in paths:
        hdul = open_fits(str(path), stack)
        images = [i for i, h in enumerate(hdul) if hdu_kind(h) == "image"]
        if not images:
            raise FieldReadError(f"cannot read {where(str(path))} ({option}): no image HDU in it")
        planes.append(_plane(kind, str(path), hdul, images[0]))
    return planes * n_files if len(paths) == 1 and n_files > 1 else planes


def _check_shape(plane: Plane, source: BandSource, n_planes: int) -> None:
    if tuple(plane.shape[-2:]) != tuple(source.shape) or (len(plane.shape) == 3 and plane.shape[0] != n_planes):
        raise FieldReadError(
            f"cannot read {plane.where}: its {plane.kind} plane has shape {plane.shape}, the image "
            f"{source.where} {(n_planes, *source.shape) if n_planes > 1 else source.shape}: a noise or mask "
            f"plane must match its image pixel for pixel"
        )


def _chunks(plane: Plane, lead: tuple[int, ...], height: int, width: int):
    """Row chunks ``(start, stop, values)`` of one 2-D plane, read through ``section``."""
    step = max(1, _CHUNK_PIXELS // max(width, 1))
    for start in range(0, height, step):
        stop = min(height, start + step)
        try:
            values = np.asarray(plane.hdu.section[(*lead, slice(start, stop), slice(None))])
        except Exception as exc:
            raise FieldReadError(f"cannot read {plane.where}: its pixel data is unreadable ({short(exc)})") from None
        yield start, stop, values


def _bad_bits(plane: Plane) -> int | None:
    """Bits of a mask plane that flag a pixel (None: any non-zero value)."""
    header = plane.hdu.header
    named = {key[3:]: header[key] for key in header if str(key).startswith("MP_")}
    if named:
        bits = 0
        for name in BAD_MASK_PLANES:
            if isinstance(named.get(name), (int, np.integer)):
                bits |= 1 << int(named[name])
        return bits
    telescope = str(plane.primary.get("TELESCOP", header.get("TELESCOP", ""))).upper()
    if extname(plane.hdu) == "DQ" and telescope == "JWST":
        return _JWST_DO_NOT_USE
    return None


def read_mask_plane(plane: Plane, source: BandSource, n_planes: int, mask: np.ndarray) -> None:
    """OR the flagged pixels of a mask plane into ``mask`` (one band, ``(H, W)``)."""
    _check_shape(plane, source, n_planes)
    bits = _bad_bits(plane)
    lead = plane.band_lead(source.plane)
    for start, stop, values in _chunks(plane, lead, *mask.shape):
        if values.dtype.kind == "f":
            flagged = ~np.isfinite(values) | (np.nan_to_num(values) != 0)
            if bits is not None:
                flagged = (np.nan_to_num(values).astype(np.int64) & bits) != 0
        else:
            flagged = values != 0 if bits is None else (values.astype(np.int64) & bits) != 0
        mask[start:stop] |= flagged


def _convert(kind: str, values: np.ndarray, plane: Plane, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk of a noise plane as variance (or, for weights, the weight) and its no-data pixels."""
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    negative = finite & (values < 0)
    if negative.any():
        y, x = np.argwhere(negative)[0]
        what = {"variance": "variance", "variance_part": "variance", "ivar": "inverse variance",
                "rms": "error (rms)", "weight": "weight"}[kind]
        raise FieldReadError(
            f"cannot read {plane.where}: {int(negative.sum())} negative {what} value(s) in rows {start}.."
            f"{start + values.shape[0] - 1} (first {values[y, x]:.4g} at pixel y={start + y}, x={x}): "
            f"a {what} cannot be negative"
        )
    nodata = ~finite | (values == 0)
    safe = np.where(nodata, 1.0, values)
    if kind in ("variance", "variance_part", "weight"):
        converted = safe
    elif kind == "ivar":
        converted = 1.0 / safe
    else:  # rms
        converted = safe * safe
    return np.where(nodata, 0.0, converted), nodata


def read_noise_plane(planes: list[Plane], source: BandSource, n_planes: int, out: np.ndarray,
                     mask: np.ndarray) -> str:
    """Fill ``out`` (one band, ``(H, W)``) with the variance from the preferred noise plane(s).

    Weights are left as weights (rescaled later by :func:`weights_to_variance`).
    Returns the kind used.
    """
    kind = next(k for k in NOISE_KINDS if any(p.kind == k for p in planes))
    chosen = [p for p in planes if p.kind == kind]
    out[...] = 0.0
    nodata = np.zeros(out.shape, dtype=bool) if kind == "variance_part" else None
    any_weight = False
    for plane in chosen:
        _check_shape(plane, source, n_planes)
        lead = plane.band_lead(source.plane)
        for start, stop, values in _chunks(plane, lead, *out.shape):
            converted, empty = _convert(kind, values, plane, start)
            any_weight = any_weight or not empty.all()
            if nodata is None:
                out[start:stop] = converted
                mask[start:stop] |= empty
            else:
                out[start:stop] += converted
                nodata[start:stop] |= ~np.isfinite(values)
    if nodata is not None:
        mask |= nodata | (out <= 0)
    if kind == "weight" and not any_weight:
        raise FieldReadError(
            f"cannot read {chosen[0].where}: every weight is zero, so no pixel would count: expected inverse "
            f"variances, > 0 where the image has data"
        )
    return kind


def weights_to_variance(weight: np.ndarray, image: np.ndarray, mask: np.ndarray, here: str) -> float:
    """Turn a relative weight map into a variance in place; return the scale ``s`` (variance = s² / weight).

    ``s`` is the robust sigma of ``image * sqrt(weight)`` over the valid pixels.
    """
    from .model import estimate_noise

    valid = ~mask & (weight > 0)
    if not valid.any():
        raise FieldReadError(f"cannot read {here}: no pixel has both data and a positive weight")
    scaled = image[valid].astype(np.float64) * np.sqrt(weight[valid].astype(np.float64))
    scale = estimate_noise(scaled)
    if not (np.isfinite(scale) and scale > 0):
        raise FieldReadError(f"cannot read {here}: the image has no noise to scale its weights by")
    np.divide(np.float32(scale**2), weight, out=weight, where=valid)
    weight[~valid] = 0.0
    return float(scale)
