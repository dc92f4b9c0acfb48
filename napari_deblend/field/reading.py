"""``read_field``: FITS file(s) or an array into a :class:`~napari_deblend.field.Field`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from os import PathLike
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from ..errors import FieldReadError
from ..presets import SurveyPreset, get_preset
from .calibration import PIXEL_SCALE_KEYS, band_calibration, header_number
from .files import as_list, open_fits, short, warn, where
from .hdus import BandSource, check_same_grid, drop_degenerate_axes, file_bands, name_bands, select_bands
from .model import Field, estimate_noise
from .planes import (
    WEIGHT_TYPES,
    Plane,
    external_planes,
    file_planes,
    read_mask_plane,
    read_noise_plane,
    weights_to_variance,
)

# Pixels handled per chunk when copying an image (4 Mi pixels = 16 MB of float32).
_CHUNK_PIXELS = 1 << 22
_PathLike = str | PathLike


def read_field(
    paths_or_array: _PathLike | Sequence[_PathLike] | np.ndarray,
    preset: str | SurveyPreset = "lsst-i",
    hdu: int | str | Sequence[int | str] | None = None,
    bands: int | str | Sequence[int | str] | None = None,
    *,
    weight: _PathLike | Sequence[_PathLike] | None = None,
    weight_type: str = "weight",
    mask: _PathLike | Sequence[_PathLike] | None = None,
) -> Field:
    """Read a field from FITS file(s) or an array.

    Parameters
    ----------
    paths_or_array : str, path-like, list of those, or numpy.ndarray
        A FITS file (``.fits``, ``.fit``, ``.fts``, gzipped ``.gz`` or
        tile-compressed ``.fz``); several files, read as the bands of one field
        in the given order (same shape and WCS required); or an array
        ``(H, W)`` / ``(C, H, W)`` without WCS.
    preset : str or SurveyPreset
        Survey preset giving the calibration the headers do not.
    hdu : int, str or list of those, optional
        HDU(s) to read as bands, by index or EXTNAME (in every file). By
        default a file's science image is its one band (a cube gives one band
        per plane); several image HDUs are bands only when each names a
        distinct band (EXTNAME or FILTER); noise, mask and context planes
        (``MASK``, ``VARIANCE``, ``WGT``, ``ERR``, ``DQ``, ``CTX``, ...) never are.
    bands : int, str or list of those, optional
        Bands to keep, by index or name, in the order given; or, when no given
        name is a band's name and there is one name per band, new names.
    weight : path or list of paths, optional
        Noise map(s) in separate files (SExtractor's ``WEIGHT_IMAGE``): one
        for all bands, or one per input file. They replace the files' own noise planes.
    weight_type : {"weight", "variance", "rms"}
        What ``weight`` holds (SExtractor's ``WEIGHT_TYPE``): relative inverse
        variances (rescaled to the image's background noise), variances or
        standard deviations, in image units.
    mask : path or list of paths, optional
        Mask file(s), non-zero = bad pixel; added to the files' own mask planes.

    Returns
    -------
    Field
        Data ``(C, H, W)`` float32 (native byte order, C-contiguous, bad
        pixels set to 0 and True in ``mask``), per-pixel ``variance`` when a
        noise plane was found, WCS, calibration (see
        :mod:`napari_deblend.field.calibration`), per-band robust noise, and
        ``path`` / ``hdu`` per band; ``meta["planes"]`` lists the planes used.

    Raises
    ------
    FieldReadError
        Missing or non-FITS file; no image HDU; table, 1-D or 4-D data; an
        image with nothing but NaN or zeros; an unknown HDU or band; files
        with different shapes or WCS; noise or mask planes of another shape,
        with negative values, or weights all zero.
    """
    preset = get_preset(preset)
    if weight_type not in WEIGHT_TYPES:
        raise FieldReadError(f"weight_type={weight_type!r}: expected one of {', '.join(WEIGHT_TYPES)}")
    files = None
    if isinstance(paths_or_array, (str, PathLike)):
        files = [paths_or_array]
    elif _is_path_list(paths_or_array):
        if len(paths_or_array) == 0:
            raise FieldReadError("read_field: empty list of files: expected at least one FITS file")
        files = list(paths_or_array)
    if files is not None:
        return _read_files(files, preset, hdu, bands, weight=weight, weight_type=weight_type, mask=mask)
    if hdu is not None or weight is not None or mask is not None:
        raise FieldReadError("read_field: hdu=, weight= and mask= apply to FITS files, not to an array")
    return _read_array(paths_or_array, preset, bands)


def _is_path_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, (str, PathLike)) for v in value)


def _read_files(paths: list, preset: SurveyPreset, hdu: Any, bands: Any, *, weight: Any, weight_type: str,
                mask: Any) -> Field:
    """Read FITS files into one Field (pixels copied once)."""
    strict_grid = len(paths) > 1 or (hdu is not None and len(as_list(hdu)) > 1)
    with ExitStack() as stack:
        sources: list[BandSource] = []
        planes: list[list[Plane]] = []
        weights = external_planes(weight, weight_type, len(paths), stack, "--weight")
        masks = external_planes(mask, "mask", len(paths), stack, "--mask")
        for number, path in enumerate(paths):
            hdul = open_fits(str(path), stack)
            found = file_bands(str(path), hdul, hdu)
            own = file_planes(str(path), hdul, sorted({s.hdu_index for s in found}))
            for source in found:
                band_planes = list(own[source.hdu_index])
                if weights[number] is not None:
                    band_planes = [p for p in band_planes if p.kind == "mask"] + [weights[number]]
                if masks[number] is not None:
                    band_planes.append(masks[number])
                planes.append(band_planes)
            sources.extend(found)
        check_same_grid(sources, strict=strict_grid)
        name_bands(sources, preset, n_files=len(paths))
        keep, new_names = select_bands([b.name for b in sources], bands, where(str(paths[0])))
        sources = [sources[i] for i in keep]
        planes = [planes[i] for i in keep]
        if new_names is not None:
            for source, name in zip(sources, new_names):
                source.name = name
        data, bad = _read_pixels(sources)
        variance, used = _read_planes(sources, planes, data, bad)
    return _make_field(sources, data, bad, variance, used, preset)


def _planes_of_hdu(source: BandSource) -> int:
    """Number of planes of the band's HDU (1 for a 2-D image)."""
    shape = drop_degenerate_axes(tuple(int(n) for n in source.image_hdu.shape), source.where)
    return shape[0] if len(shape) == 3 else 1


def _read_planes(sources: list[BandSource], planes: list[list[Plane]], data: np.ndarray,
                 bad: np.ndarray) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
    """Read every band's noise and mask planes into the variance and the mask; describe what was used."""
    with_noise = [any(p.kind != "mask" for p in band) for band in planes]
    variance = np.zeros(data.shape, dtype=np.float32) if any(with_noise) else None
    used: list[dict[str, Any]] = []
    for c, (source, band_planes) in enumerate(zip(sources, planes)):
        n_planes = _planes_of_hdu(source)
        record: dict[str, Any] = {"mask": [], "noise": None}
        for plane in band_planes:
            if plane.kind == "mask":
                read_mask_plane(plane, source, n_planes, bad[c])
                record["mask"].append(plane.where)
        noise_planes = [p for p in band_planes if p.kind != "mask"]
        if noise_planes:
            kind = read_noise_plane(noise_planes, source, n_planes, variance[c], bad[c])
            record["noise"] = f"{kind}: " + ", ".join(p.where for p in noise_planes if p.kind == kind)
            if kind == "weight":
                record["weight_scale"] = weights_to_variance(variance[c], data[c], bad[c], noise_planes[0].where)
        elif variance is not None:
            warn(f"{source.where} has no noise plane while other bands have one; its variance is left at 0 "
                 f"(masked) — give --weight for it")
            bad[c] = True
        data[c][bad[c]] = 0.0
        if variance is not None:
            variance[c][bad[c]] = 0.0
        if bad[c].all():
            flagged = ", ".join(record["mask"]) or (record["noise"] or "its planes")
            raise FieldReadError(f"cannot read {source.where}: every pixel is flagged as bad (by {flagged}): "
                                 f"nothing to detect")
        if not data[c].any():
            raise FieldReadError(f"cannot read {source.where}: every usable pixel is zero: nothing to detect")
        used.append(record)
    return variance, used


def _read_pixels(sources: list[BandSource]) -> tuple[np.ndarray, np.ndarray]:
    """Copy every band once into a ``(C, H, W)`` float32 array, plus the NaN/inf mask."""
    height, width = sources[0].shape
    data = np.empty((len(sources), height, width), dtype=np.float32)
    bad = np.zeros(data.shape, dtype=bool)
    for i, source in enumerate(sources):
        try:
            nonzero = _copy_plane(source, data[i], bad[i])
        except Exception as exc:
            raise FieldReadError(
                f"cannot read {source.where}: its pixel data is unreadable, is the file truncated "
                f"or corrupt? ({short(exc)})"
            ) from None
        if not nonzero:
            plane = f" plane {source.plane}" if source.plane is not None else ""
            raise FieldReadError(
                f"cannot read {source.where}{plane}: every pixel is NaN, inf or zero: nothing to detect"
            )
    return data, bad


def _rows_per_chunk(hdu: Any, width: int) -> int:
    """Rows copied per chunk: about ``_CHUNK_PIXELS``, a multiple of the compression tile height."""
    rows = max(1, _CHUNK_PIXELS // max(width, 1))
    tile_shape = getattr(hdu, "tile_shape", None) if isinstance(hdu, fits.CompImageHDU) else None
    if tile_shape and len(tile_shape) >= 2:
        tile_rows = max(1, int(tile_shape[-2]))
        rows = max(tile_rows, rows // tile_rows * tile_rows)
    return rows


def _copy_plane(source: BandSource, out: np.ndarray, bad: np.ndarray) -> bool:
    """Copy one band in row chunks (scaled by BSCALE/BZERO); True if any valid pixel is non-zero.

    Each chunk is read from the file on its own, so that only the output and
    one chunk are in memory.
    """
    section = source.image_hdu.section
    height = out.shape[0]
    step = _rows_per_chunk(source.image_hdu, out.shape[1])
    nonzero = False
    for start in range(0, height, step):
        stop = min(height, start + step)
        chunk = out[start:stop]
        chunk[...] = section[(*source.lead, slice(start, stop), slice(None))]
        invalid = ~np.isfinite(chunk)
        if invalid.any():
            bad[start:stop] = invalid
            chunk[invalid] = 0.0
        nonzero = nonzero or bool(chunk.any())
    return nonzero


def _pixel_scale(source: BandSource, wcs: WCS | None) -> float | None:
    """Arcsec per pixel from the WCS (geometric mean of both axes) or PIXSCALE-like keywords."""
    if wcs is not None:
        scales = proj_plane_pixel_scales(wcs) * 3600.0
        return float(f"{np.sqrt(scales[0] * scales[1]):.12g}")  # 0.2, not 0.2000000000000016
    return header_number(source.headers, PIXEL_SCALE_KEYS, source.where, positive=True)


def _clean_header(header: fits.Header) -> fits.Header:
    """Copy of an HDU header without the scaling keywords (the data are physical values now)."""
    out = header.copy()
    for key in ("BSCALE", "BZERO", "BLANK"):
        out.remove(key, ignore_missing=True, remove_all=True)
    return out


def _make_field(sources: list[BandSource], data: np.ndarray, bad: np.ndarray, variance: np.ndarray | None,
                planes: list[dict[str, Any]], preset: SurveyPreset) -> Field:
    """Assemble the Field: WCS, calibration (first band, warning if bands disagree), noise."""
    first = sources[0]
    wcs = next((s.wcs for s in sources if s.wcs is not None), None)
    pixel_scale = _pixel_scale(first, wcs)
    scale = pixel_scale or preset.pixel_scale  # for a PSF FWHM given in pixels
    calibrations = [band_calibration(s.headers, preset, s.where, scale) for s in sources]
    for key in ("zero_point", "exposure", "gain", "psf_fwhm"):
        values = {c[key] for c in calibrations}
        if len(values) > 1:
            warn(
                f"{first.where}: bands have different {key.replace('_', ' ')}s "
                f"{[c[key] for c in calibrations]}; using {calibrations[0][key]} (per band in meta)"
            )
    noise = np.array([estimate_noise(data[i], bad[i]) for i in range(len(sources))])
    first_calibration = calibrations[0]
    field = Field(
        data=data,
        band_names=[s.name for s in sources],
        wcs=wcs,
        header=_clean_header(first.header),
        preset=preset,
        pixel_scale=pixel_scale,
        noise=noise,
        path=[s.path for s in sources],
        hdu=[s.hdu_label for s in sources],
        meta={"band_calibration": calibrations, "planes": planes, "unit": first_calibration["unit"]},
        zero_point=first_calibration["zero_point"],
        zero_point_source=first_calibration["zero_point_source"],
        exposure=first_calibration["exposure"],
        gain=first_calibration["gain"],
        psf_fwhm=first_calibration["psf_fwhm"],
    )
    field.mask = bad  # assigned after construction: the constructor would copy them
    field.variance = variance
    return field


def _read_array(array: Any, preset: SurveyPreset, bands: Any) -> Field:
    """Field from an ``(H, W)`` or ``(C, H, W)`` array (copied once, NaN/inf masked)."""
    here = "'array'"
    try:
        values = np.ma.getdata(array)
        given_mask = np.ma.getmaskarray(array) if np.ma.isMaskedArray(array) else None
        values = np.asarray(values)
    except Exception as exc:
        raise FieldReadError(f"cannot read {here}: not an array ({short(exc)})") from None
    if values.dtype.kind not in "biuf":
        raise FieldReadError(f"cannot read {here}: dtype {values.dtype} is not real numbers")
    if values.ndim == 0:
        raise FieldReadError(f"cannot read {here}: a scalar, expected a 2-D image (H, W) or a 3-D cube (C, H, W)")
    shape = drop_degenerate_axes(values.shape, here)
    values = values.reshape(shape)
    given_mask = None if given_mask is None else given_mask.reshape(shape)
    if values.ndim == 2:
        values = values[None]
        given_mask = None if given_mask is None else given_mask[None]
    if values.size == 0:
        raise FieldReadError(f"cannot read {here}: shape {values.shape} holds no pixel")
    n = values.shape[0]
    default_names = [preset.band] if n == 1 else [f"band{i}" for i in range(n)]
    keep, new_names = select_bands(default_names, bands, here)
    data = np.empty((len(keep), *values.shape[1:]), dtype=np.float32)
    bad = np.zeros(data.shape, dtype=bool)
    for out, index in enumerate(keep):
        data[out] = values[index]
        invalid = ~np.isfinite(data[out])
        if given_mask is not None:
            invalid |= given_mask[index]
        bad[out] = invalid
        data[out][invalid] = 0.0
        if not data[out].any():
            raise FieldReadError(f"cannot read {here} band {index}: every pixel is NaN, inf or zero: nothing to detect")
    field = Field(
        data=data,
        band_names=new_names or [default_names[i] for i in keep],
        preset=preset,
        noise=[estimate_noise(data[i], bad[i]) for i in range(len(keep))],
    )
    field.mask = bad
    return field
