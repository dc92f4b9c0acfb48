"""Field: a multi-band, sky-subtracted image with its WCS and photometric calibration.

Reading FITS files (``read_field``) and writing them (``write_field``) live
here too, so that a Field round-trips through FITS.

Reading rules (see :func:`read_field` for the details):

- a file's image HDUs (primary or extensions, tile-compressed or not, in a
  plain or gzipped file) become bands; a 3-D cube ``(C, H, W)`` gives C bands;
- several files given together are the bands of one field, in order, and must
  share one pixel grid (shape and WCS);
- pixels are copied once, in row chunks, into one native-byte-order float32
  ``(C, H, W)`` array; NaN/inf become 0 and True in ``Field.mask``;
- anything unusable raises one :class:`~napari_deblend.errors.FieldReadError`
  naming the file (and HDU) and what was expected.
"""

from __future__ import annotations

import bz2
import gzip
import math
import re
import shutil
import sys
import tempfile
import warnings
import zlib
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from dataclasses import field as dc_field
from os import PathLike
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from .errors import FieldReadError
from .presets import SurveyPreset, get_preset

__all__ = [
    "FITS_SUFFIXES",
    "Field",
    "FieldReadWarning",
    "estimate_noise",
    "has_fits_suffix",
    "is_fits_file",
    "read_field",
    "write_field",
]

#: File name endings read as FITS (compared case-insensitively).
FITS_SUFFIXES: tuple[str, ...] = (
    ".fits",
    ".fit",
    ".fts",
    ".fits.gz",
    ".fit.gz",
    ".fts.gz",
    ".fits.fz",
    ".fz",
)

_FITS_MAGIC = b"SIMPLE  ="
# Pixels handled per chunk when copying an image (4 Mi pixels = 16 MB of float32).
_CHUNK_PIXELS = 1 << 22
# EXTNAMEs that say nothing about the band.
_GENERIC_EXTNAMES = {"", "PRIMARY", "SCI", "IMAGE", "IMG", "DATA", "COMPRESSED_IMAGE", "FLUX"}
# EXTNAMEs of auxiliary planes that sit next to a science image in a MEF: not bands.
_AUX_EXTNAMES = {
    "MASK", "VARIANCE", "VAR", "WEIGHT", "WHT", "WGT", "ERR", "ERROR", "SIGMA", "RMS",
    "INVVAR", "IVAR", "BPM", "DQ", "FLAGS", "EXPMAP", "PSF",
}  # fmt: skip
_ZERO_POINT_KEYS = ("ZEROPT", "MAGZERO", "MAGZPT", "MAGZP", "PHOTZP")
_EXPOSURE_KEYS = ("EXPTIME",)
_GAIN_KEYS = ("GAIN",)
_PIXEL_SCALE_KEYS = ("PIXSCALE", "PIXSCAL1", "SECPIX")
# Header cards write_field does not carry over from Field.header: structure,
# scaling, WCS (rewritten from Field.wcs) and calibration aliases.
_NOT_CARRIED = re.compile(
    r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|XTENSION|PCOUNT|GCOUNT|BSCALE|BZERO|BLANK|EXTNAME|EXTVER"
    r"|CHECKSUM|DATASUM|INHERIT|WCSAXES\w?|CTYPE\d+\w?|CRVAL\d+\w?|CRPIX\d+\w?|CDELT\d+\w?"
    r"|CUNIT\d+\w?|CROTA\d+|CD\d+_\d+\w?|PC\d+_\d+\w?|PV\d+_\d+\w?|PS\d+_\d+\w?|CNAME\d+\w?"
    r"|LONPOLE\w?|LATPOLE\w?|RADESYS\w?|RADECSYS|EQUINOX\w?|EPOCH|WCSNAME\w?"
    r"|(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+)"
    r"|ZEROPT|MAGZERO|MAGZPT|MAGZP|PHOTZP|PIXSCALE|PIXSCAL1|SECPIX)$"
)


class FieldReadWarning(UserWarning):
    """Something in a FITS file was ignored or guessed while reading a Field."""


@dataclass
class Field:
    """A survey field: bands of one sky region on one pixel grid.

    Attributes
    ----------
    data : numpy.ndarray
        ``(C, H, W)`` float32 in native byte order, C-contiguous. Pixels
        that were NaN/inf in the file are 0 here and True in ``mask``.
    mask : numpy.ndarray
        ``(C, H, W)`` bool, True where the file had no valid value.
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
        AB magnitude of 1 electron per second (ZEROPT / MAGZERO override).
    exposure : float
        Exposure time in seconds (EXPTIME override).
    gain : float
        Electrons per ADU (GAIN override).
    noise : numpy.ndarray
        ``(C,)`` background noise sigma per band, electrons; NaN until measured.
    path : list of str
        File(s) the bands came from (empty for arrays).
    hdu : list of str
        HDU of each band, as ``"name"`` or index.
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

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim == 2:
            data = data[None]
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        if self.mask is None:
            self.mask = np.zeros(self.data.shape, dtype=bool)
        else:
            self.mask = np.broadcast_to(np.asarray(self.mask, dtype=bool), self.data.shape).copy()
        n_bands = self.data.shape[0]
        if not self.band_names:
            self.band_names = [self.preset.band] if n_bands == 1 else [f"band{i}" for i in range(n_bands)]
        if self.pixel_scale is None:
            self.pixel_scale = self.preset.pixel_scale
        if self.zero_point is None:
            self.zero_point = self.preset.zero_point
        if self.exposure is None:
            self.exposure = self.preset.exposure
        if self.gain is None:
            self.gain = self.preset.gain
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
        """AB magnitude of a flux in electrons: ``zp - 2.5 log10(flux / exposure)`` (NaN for flux <= 0)."""
        flux = np.asarray(flux, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = self.zero_point - 2.5 * np.log10(flux / self.exposure)
        mag = np.where(flux > 0, mag, np.nan)
        return mag if mag.ndim else float(mag)


# ---------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------


def has_fits_suffix(path: str | PathLike) -> bool:
    """Return True if the file name ends with one of :data:`FITS_SUFFIXES` (any case)."""
    return str(path).lower().endswith(FITS_SUFFIXES)


def _leading_bytes(path: Path, n: int) -> bytes:
    """First ``n`` bytes of a file, decompressed first if it is gzip or bzip2 (b"" on any error)."""
    try:
        with open(path, "rb") as raw:
            head = raw.read(max(n, 3))
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as stream:
                return stream.read(n)
        if head[:3] == b"BZh":
            with bz2.open(path, "rb") as stream:
                return stream.read(n)
        return head[:n]
    except (OSError, EOFError, ValueError):
        return b""


def is_fits_file(path: str | PathLike) -> bool:
    """Cheaply tell whether ``path`` is a FITS file (plain, gzip or bzip2).

    Only the first bytes are read (decompressed when needed) and compared
    with the mandatory ``SIMPLE  =`` card; the name is not looked at.

    Parameters
    ----------
    path : str or os.PathLike
        File to test.

    Returns
    -------
    bool
        False for a missing file, a directory or any other content.
    """
    path = Path(path)
    return path.is_file() and _leading_bytes(path, len(_FITS_MAGIC)) == _FITS_MAGIC


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


# ---------------------------------------------------------------------------
# read_field
# ---------------------------------------------------------------------------


@dataclass
class _Band:
    """Where one band of a field comes from, before its pixels are read."""

    path: str
    hdu_index: int
    hdu_label: str
    lead: tuple[int, ...]
    shape: tuple[int, int]
    image_hdu: Any
    header: fits.Header
    primary: fits.Header
    wcs: WCS | None
    candidate: str | None
    plane: int | None = None
    name: str = ""

    @property
    def where(self) -> str:
        """File and HDU, for messages."""
        return _where(self.path, self.hdu_index, self.image_hdu)


def read_field(
    paths_or_array: str | PathLike | Sequence[str | PathLike] | np.ndarray,
    preset: str | SurveyPreset = "lsst-i",
    hdu: int | str | Sequence[int | str] | None = None,
    bands: int | str | Sequence[int | str] | None = None,
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
        HDU(s) to read, by index or EXTNAME (in every file). By default: all
        image HDUs of the file when they share one shape and WCS (auxiliary
        planes named MASK, VARIANCE, WEIGHT, ... are left out), else the first
        image HDU, with a :class:`FieldReadWarning`.
    bands : int, str or list of those, optional
        Bands to keep, by index or name, in the order given; or, when no given
        name is a band's name and there is one name per band, new names.

    Returns
    -------
    Field
        Data ``(C, H, W)`` float32 (native byte order, C-contiguous, NaN/inf
        set to 0 and masked), WCS, calibration (header keywords ZEROPT /
        MAGZERO / MAGZPT, EXPTIME, GAIN, PIXSCALE or the WCS override the
        preset), per-band robust noise, and ``path`` / ``hdu`` per band.

    Raises
    ------
    FieldReadError
        Missing or non-FITS file; no image HDU; table, 1-D or 4-D data; an
        image with nothing but NaN or zeros; an unknown HDU or band; files
        with different shapes or WCS.
    """
    preset = get_preset(preset)
    if isinstance(paths_or_array, (str, PathLike)):
        return _read_files([paths_or_array], preset, hdu, bands)
    if _is_path_list(paths_or_array):
        if len(paths_or_array) == 0:
            raise FieldReadError("read_field: empty list of files: expected at least one FITS file")
        return _read_files(list(paths_or_array), preset, hdu, bands)
    if hdu is not None:
        raise FieldReadError("read_field: hdu= applies to FITS files, not to an array")
    return _read_array(paths_or_array, preset, bands)


def _is_path_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, (str, PathLike)) for v in value)


def _where(path: str, index: int | None = None, hdu: Any = None) -> str:
    """``'file.fits'`` or ``'file.fits' HDU 2 ('SCI')`` for messages."""
    text = repr(str(path))
    if index is not None:
        text += f" HDU {index}"
        name = getattr(hdu, "name", "") if hdu is not None else ""
        if name and not (index == 0 and name == "PRIMARY"):
            text += f" ({name!r})"
    return text


def _read_files(paths: list, preset: SurveyPreset, hdu: Any, bands: Any) -> Field:
    """Read FITS files into one Field (pixels copied once)."""
    strict_grid = len(paths) > 1 or (hdu is not None and len(_as_list(hdu)) > 1)
    with ExitStack() as stack:
        sources: list[_Band] = []
        for path in paths:
            hdul = _open_fits(str(path), stack)
            sources.extend(_file_bands(str(path), hdul, hdu))
        _check_same_grid(sources, strict=strict_grid)
        _name_bands(sources, preset, n_files=len(paths))
        keep, new_names = _select_bands([b.name for b in sources], bands, _where(str(paths[0])))
        sources = [sources[i] for i in keep]
        if new_names is not None:
            for source, name in zip(sources, new_names):
                source.name = name
        data, mask = _read_pixels(sources)
    return _make_field(sources, data, mask, preset)


def _open_fits(path: str, stack: ExitStack) -> fits.HDUList:
    """Open a FITS file (headers only; pixels are read later) or raise a FieldReadError."""
    file = Path(path)
    if not file.exists():
        raise FieldReadError(f"cannot read {_where(path)}: no such file")
    if not file.is_file():
        raise FieldReadError(f"cannot read {_where(path)}: it is a directory, expected a FITS file")
    head = _leading_bytes(file, 16)
    if head[: len(_FITS_MAGIC)] != _FITS_MAGIC:
        shown = f"it starts with {head!r}" if head else "it is empty"
        raise FieldReadError(
            f"cannot read {_where(path)}: not a FITS file ({shown}; a FITS file starts with 'SIMPLE  =')"
        )
    source = path
    if _stream_compression(path):
        source = _decompressed_copy(path, stack)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="File may have been truncated")
            # Pixels are read later through ``hdu.section`` in row chunks, straight into the
            # output array: one copy, whatever the format. A memory map would give the same
            # single copy but its pages would add the file size to the peak RSS
            # (benchmarks/bench_read.py: 2.2x instead of 1.3x the data size).
            hdul = fits.open(source, memmap=False, lazy_load_hdus=False)
    except Exception as exc:
        raise FieldReadError(f"cannot read {_where(path)}: corrupt FITS file ({_short(exc)})") from None
    stack.callback(hdul.close)
    return hdul


def _stream_compression(path: str) -> str | None:
    """``"gzip"`` or ``"bzip2"`` for a file compressed as a whole, else None."""
    with open(path, "rb") as raw:
        head = raw.read(3)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head == b"BZh":
        return "bzip2"
    return None


def _decompressed_copy(path: str, stack: ExitStack) -> str:
    """Decompress a gzip/bzip2 file, in blocks, into a temporary file; return its name.

    astropy reads such files through a stream that decompresses again from the
    start whenever it seeks backwards (once to find the HDUs, then once per
    read); one sequential decompression to disk is faster and lets the pixels
    be read in chunks like any plain file.
    """
    opener = gzip.open if _stream_compression(path) == "gzip" else bz2.open
    # Removed when the stack closes, after the HDU list opened on it (LIFO).
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="napari_deblend_"))
    copy = str(Path(folder) / "decompressed.fits")
    try:
        with opener(path, "rb") as stream, open(copy, "wb") as out:
            shutil.copyfileobj(stream, out, length=16 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        raise FieldReadError(
            f"cannot read {_where(path)}: corrupt or truncated compressed file ({_short(exc)})"
        ) from None
    return copy


def _as_list(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _hdu_kind(hdu: Any) -> str:
    """``"image"``, ``"empty"`` (image HDU without data), ``"table"`` or ``"other"``."""
    if isinstance(hdu, fits.CompImageHDU) or (
        isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)) and not isinstance(hdu, fits.GroupsHDU)
    ):
        shape = tuple(hdu.shape)
        return "image" if shape and all(n > 0 for n in shape) else "empty"
    if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
        return "table"
    return "other"


def _describe_hdu(index: int, hdu: Any) -> str:
    kind = _hdu_kind(hdu)
    if kind == "image":
        what = f"image {tuple(hdu.shape)}"
    elif kind == "table":
        what = "ascii table" if isinstance(hdu, fits.TableHDU) else "binary table"
    else:
        what = "no data" if kind == "empty" else type(hdu).__name__
    return f"{index} {hdu.name!r} ({what})"


def _hdu_listing(hdul: fits.HDUList) -> str:
    return "; ".join(_describe_hdu(i, h) for i, h in enumerate(hdul))


def _file_bands(path: str, hdul: fits.HDUList, hdu: Any) -> list[_Band]:
    """The bands a file contributes, for ``hdu=None`` or the given HDU(s)."""
    if hdu is None:
        indices = _auto_hdus(path, hdul)
    else:
        indices = [_resolve_hdu(path, hdul, h) for h in _as_list(hdu)]
    per_hdu = [_hdu_bands(path, hdul, i) for i in indices]
    if hdu is None and len(per_hdu) > 1:
        reference = per_hdu[0][0]
        for other in per_hdu[1:]:
            difference = _wcs_difference(reference, other[0])
            if difference:
                _warn(
                    f"{_where(path)}: image extensions have different WCS ({difference}): "
                    f"a mosaic, not bands; reading {reference.where} only; pass hdu= to choose"
                )
                return per_hdu[0]
    return [band for group in per_hdu for band in group]


def _auto_hdus(path: str, hdul: fits.HDUList) -> list[int]:
    """Image HDUs to read when no ``hdu`` is given."""
    images = [i for i, h in enumerate(hdul) if _hdu_kind(h) == "image"]
    if not images:
        if any(_hdu_kind(h) == "table" for h in hdul):
            raise FieldReadError(
                f"cannot read {_where(path)}: it holds only tables, expected an image HDU "
                f"(HDUs: {_hdu_listing(hdul)})"
            )
        raise FieldReadError(
            f"cannot read {_where(path)}: empty primary HDU and no image extension, expected an image "
            f"(HDUs: {_hdu_listing(hdul)})"
        )
    science = [i for i in images if hdul[i].name.upper() not in _AUX_EXTNAMES]
    images = science or images
    shapes = {tuple(hdul[i].shape) for i in images}
    if len(images) > 1 and len(shapes) > 1:
        _warn(
            f"{_where(path)}: image HDUs have different shapes ({_hdu_listing(hdul)}); "
            f"reading HDU {images[0]} only; pass hdu= to choose"
        )
        return images[:1]
    return images


def _resolve_hdu(path: str, hdul: fits.HDUList, key: Any) -> int:
    """Index of the HDU given by index or EXTNAME, or a FieldReadError listing them."""
    index: int | None = None
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if -len(hdul) <= key < len(hdul):
            index = int(key) % len(hdul)
    elif isinstance(key, str):
        names = [h.name.upper() for h in hdul]
        if key.upper() in names:
            index = names.index(key.upper())
    else:
        raise FieldReadError(f"cannot read {_where(path)}: hdu={key!r}: expected an HDU index or EXTNAME")
    if index is None:
        raise FieldReadError(f"cannot read {_where(path)}: no HDU {key!r}; available: {_hdu_listing(hdul)}")
    kind = _hdu_kind(hdul[index])
    if kind == "table":
        raise FieldReadError(
            f"cannot read {_where(path, index, hdul[index])}: it is a table, expected an image "
            f"(HDUs: {_hdu_listing(hdul)})"
        )
    if kind != "image":
        raise FieldReadError(
            f"cannot read {_where(path, index, hdul[index])}: it holds no image data "
            f"(HDUs: {_hdu_listing(hdul)})"
        )
    return index


def _hdu_bands(path: str, hdul: fits.HDUList, index: int) -> list[_Band]:
    """One band per plane of an image HDU (2-D: one; cube ``(C, H, W)``: C)."""
    hdu = hdul[index]
    where = _where(path, index, hdu)
    shape = tuple(int(n) for n in hdu.shape)
    shape = _drop_degenerate_axes(shape, where)
    lead_ones = (0,) * (len(hdu.shape) - len(shape))
    header = hdu.header
    primary = hdul[0].header if index != 0 else fits.Header()
    wcs = _celestial_wcs(header, hdul, where)
    label = hdu.name if hdu.name and not (index == 0 and hdu.name == "PRIMARY") else str(index)
    common = dict(
        path=path,
        hdu_index=index,
        hdu_label=label,
        shape=shape[-2:],
        image_hdu=hdu,
        header=header,
        primary=primary,
        wcs=wcs,
    )
    if len(shape) == 2:
        return [_Band(lead=lead_ones, candidate=_hdu_band_name(header, hdu.name), **common)]
    return [
        _Band(lead=(*lead_ones, c), candidate=_plane_band_name(header, c), plane=c, **common)
        for c in range(shape[0])
    ]


def _drop_degenerate_axes(shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """Check the axis count; leading length-1 axes beyond three are dropped."""
    if len(shape) == 1:
        raise FieldReadError(
            f"cannot read {where}: 1-D data ({shape[0]} values), expected a 2-D image (H, W) "
            f"or a 3-D cube (C, H, W)"
        )
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) > 3:
        raise FieldReadError(
            f"cannot read {where}: a cube with the wrong axis count: shape {shape} has {len(shape)} axes, "
            f"expected a 2-D image (H, W) or a 3-D cube (C, H, W)"
        )
    return shape


def _hdu_band_name(header: fits.Header, extname: str) -> str | None:
    """Band name of a 2-D HDU: a telling EXTNAME, else FILTER / BAND."""
    if extname and extname.upper() not in _GENERIC_EXTNAMES:
        return extname
    for key in ("FILTER", "BAND"):
        value = header.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _plane_band_name(header: fits.Header, plane: int) -> str | None:
    """Band name of a cube plane from ``BANDn`` / ``FILTERn`` (1-based) keywords."""
    for key in (f"BAND{plane + 1}", f"FILTER{plane + 1}"):
        value = header.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _celestial_wcs(header: fits.Header, hdul: fits.HDUList, where: str) -> WCS | None:
    """The header's celestial WCS, or None (with a warning when its keywords are broken)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, fobj=hdul)
            if not wcs.has_celestial:
                if _mentions_sky(header):
                    _warn(
                        f"{where}: CTYPE keywords mention RA/Dec but no celestial WCS could be built; wcs=None"
                    )
                return None
            celestial = wcs.celestial
            scales = proj_plane_pixel_scales(celestial)
            world = celestial.all_pix2world([[0.0, 0.0]], 0)
    except Exception as exc:
        _warn(f"{where}: broken WCS keywords ({_short(exc)}); reading without WCS")
        return None
    if not (np.all(np.isfinite(scales)) and np.all(scales > 0) and np.all(np.isfinite(world))):
        _warn(f"{where}: WCS gives no finite pixel scale or sky position; reading without WCS")
        return None
    return celestial


def _mentions_sky(header: fits.Header) -> bool:
    ctypes = [str(header.get(f"CTYPE{i}", "")).upper() for i in (1, 2)]
    return any(c.startswith(("RA", "DEC", "GLON", "GLAT", "ELON", "ELAT")) for c in ctypes)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) < 200 else text[:197] + "..."


def _warn(message: str) -> None:
    """Issue a FieldReadWarning attributed to the first caller outside this module."""
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, FieldReadWarning, stacklevel=level)


def _wcs_difference(a: _Band, b: _Band) -> str | None:
    """How the WCS of two bands (same shape) differ, or None if they agree within 0.1 pixel."""
    if a.wcs is None or b.wcs is None:
        return None
    h, w = a.shape
    pixels = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [(w - 1) / 2, (h - 1) / 2]], float)
    try:
        ra1, dec1 = a.wcs.all_pix2world(pixels, 0).T
        ra2, dec2 = b.wcs.all_pix2world(pixels, 0).T
    except Exception as exc:
        return f"cannot compare them: {_short(exc)}"
    separation = _angular_separation_arcsec(ra1, dec1, ra2, dec2).max()
    scale = float(np.mean(proj_plane_pixel_scales(a.wcs))) * 3600.0
    if separation <= 0.1 * scale:
        return None
    return f"their sky positions differ by up to {separation:.3g} arcsec = {separation / scale:.3g} pixels"


def _angular_separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance (Vincenty formula) between positions in degrees, in arcseconds."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, float)) for v in (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    num = np.hypot(
        np.cos(dec2) * np.sin(dra),
        np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra),
    )
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.degrees(np.arctan2(num, den)) * 3600.0


def _check_same_grid(sources: list[_Band], strict: bool) -> None:
    """All bands on one pixel grid: same shape, and the same WCS where they have one."""
    first = sources[0]
    for other in sources[1:]:
        if other.shape != first.shape:
            raise FieldReadError(
                f"cannot stack {first.where} and {other.where} as bands: different shapes "
                f"{first.shape} and {other.shape}; bands must share one pixel grid"
            )
        difference = _wcs_difference(first, other)
        if difference and strict:
            raise FieldReadError(
                f"cannot stack {first.where} and {other.where} as bands: different WCS ({difference}); "
                f"bands must share one pixel grid"
            )
    with_wcs = [s for s in sources if s.wcs is not None]
    if with_wcs and len(with_wcs) < len(sources):
        missing = next(s for s in sources if s.wcs is None)
        _warn(f"{missing.where} has no celestial WCS; using the WCS of {with_wcs[0].where} for all bands")


def _name_bands(sources: list[_Band], preset: SurveyPreset, n_files: int) -> None:
    """Give every band a unique name (header names first, then fallbacks)."""
    hdus_per_file: dict[str, set[int]] = {}
    for s in sources:
        hdus_per_file.setdefault(s.path, set()).add(s.hdu_index)
    for s in sources:
        if s.candidate:
            s.name = s.candidate
        elif len(sources) == 1:
            s.name = preset.band
        elif s.plane is not None:
            single_hdu = n_files == 1 and len(hdus_per_file[s.path]) == 1
            s.name = f"band{s.plane}" if single_hdu else f"{_stem(s.path)}[{s.plane}]"
        elif n_files > 1 and len(hdus_per_file[s.path]) == 1:
            s.name = _stem(s.path)
        else:
            s.name = str(s.hdu_index)
    _deduplicate([s.name for s in sources], sources)


def _stem(path: str) -> str:
    """File name without directory and FITS/compression suffixes."""
    name = Path(path).name
    for suffix in sorted(FITS_SUFFIXES + (".gz", ".bz2"), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _deduplicate(names: list[str], sources: list[_Band]) -> None:
    seen: dict[str, int] = {}
    for s, name in zip(sources, names):
        count = seen.get(name, 0) + 1
        seen[name] = count
        s.name = name if count == 1 else f"{name}_{count}"


def _select_bands(names: list[str], bands: Any, where: str) -> tuple[list[int], list[str] | None]:
    """Indices of the bands to keep and, when ``bands`` renames them, their new names."""
    n = len(names)
    if bands is None:
        return list(range(n)), None
    wanted = _as_list(bands)
    if not wanted:
        raise FieldReadError(f"cannot read {where}: bands=[] selects nothing; available bands: {names}")
    if all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in wanted):
        bad = [b for b in wanted if not -n <= b < n]
        if bad:
            raise FieldReadError(
                f"cannot read {where}: bands={wanted}: {bad} out of range for {n} band(s) {names}"
            )
        return [int(b) % n for b in wanted], None
    if all(isinstance(b, str) for b in wanted):
        known = [b for b in wanted if b in names]
        if len(known) == len(wanted):
            return [names.index(b) for b in wanted], None
        if not known and len(wanted) == n:
            return list(range(n)), list(wanted)
        unknown = [b for b in wanted if b not in names]
        raise FieldReadError(
            f"cannot read {where}: unknown band(s) {unknown}; available bands: {names} "
            f"(or give exactly {n} new names to rename them)"
        )
    raise FieldReadError(f"cannot read {where}: bands={wanted!r}: expected a list of band indices or names")


def _read_pixels(sources: list[_Band]) -> tuple[np.ndarray, np.ndarray]:
    """Copy every band once into a ``(C, H, W)`` float32 array, plus the NaN/inf mask."""
    height, width = sources[0].shape
    data = np.empty((len(sources), height, width), dtype=np.float32)
    mask = np.zeros(data.shape, dtype=bool)
    for i, source in enumerate(sources):
        try:
            nonzero = _copy_plane(source, data[i], mask[i])
        except Exception as exc:
            raise FieldReadError(
                f"cannot read {source.where}: its pixel data is unreadable, is the file truncated "
                f"or corrupt? ({_short(exc)})"
            ) from None
        if not nonzero:
            plane = f" plane {source.plane}" if source.plane is not None else ""
            raise FieldReadError(
                f"cannot read {source.where}{plane}: every pixel is NaN, inf or zero: nothing to detect"
            )
    return data, mask


def _rows_per_chunk(hdu: Any, width: int) -> int:
    """Rows copied per chunk: about ``_CHUNK_PIXELS``, a multiple of the compression tile height."""
    rows = max(1, _CHUNK_PIXELS // max(width, 1))
    tile_shape = getattr(hdu, "tile_shape", None) if isinstance(hdu, fits.CompImageHDU) else None
    if tile_shape and len(tile_shape) >= 2:
        tile_rows = max(1, int(tile_shape[-2]))
        rows = max(tile_rows, rows // tile_rows * tile_rows)
    return rows


def _copy_plane(source: _Band, out: np.ndarray, mask: np.ndarray) -> bool:
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
        bad = ~np.isfinite(chunk)
        if bad.any():
            mask[start:stop] = bad
            chunk[bad] = 0.0
        nonzero = nonzero or bool(chunk.any())
    return nonzero


def _header_number(
    headers: Sequence[fits.Header], keys: Sequence[str], where: str, positive: bool
) -> float | None:
    """First usable numeric value of ``keys`` in ``headers`` (warns about unusable ones)."""
    for header in headers:
        for key in keys:
            if key not in header:
                continue
            value = header[key]
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if math.isfinite(number) and (number > 0 or not positive):
                return number
            _warn(
                f"{where}: ignoring {key} = {value!r} (expected a finite{' positive' if positive else ''} number)"
            )
    return None


def _calibration(source: _Band) -> dict[str, float | None]:
    """Calibration keywords of a band (its HDU header, then the primary header)."""
    headers = [source.header, source.primary]
    return {
        "zero_point": _header_number(headers, _ZERO_POINT_KEYS, source.where, positive=False),
        "exposure": _header_number(headers, _EXPOSURE_KEYS, source.where, positive=True),
        "gain": _header_number(headers, _GAIN_KEYS, source.where, positive=True),
    }


def _pixel_scale(source: _Band, wcs: WCS | None) -> float | None:
    """Arcsec per pixel from the WCS (geometric mean of both axes) or PIXSCALE-like keywords."""
    if wcs is not None:
        scales = proj_plane_pixel_scales(wcs) * 3600.0
        return float(f"{np.sqrt(scales[0] * scales[1]):.12g}")  # 0.2, not 0.2000000000000016
    return _header_number([source.header, source.primary], _PIXEL_SCALE_KEYS, source.where, positive=True)


def _clean_header(header: fits.Header) -> fits.Header:
    """Copy of an HDU header without the scaling keywords (the data are physical values now)."""
    out = header.copy()
    for key in ("BSCALE", "BZERO", "BLANK"):
        out.remove(key, ignore_missing=True, remove_all=True)
    return out


def _make_field(sources: list[_Band], data: np.ndarray, mask: np.ndarray, preset: SurveyPreset) -> Field:
    """Assemble the Field: WCS, calibration (first band, warning if bands disagree), noise."""
    first = sources[0]
    wcs = next((s.wcs for s in sources if s.wcs is not None), None)
    calibrations = [_calibration(s) for s in sources]
    for key in ("zero_point", "exposure", "gain"):
        values = {c[key] for c in calibrations}
        if len(values) > 1:
            _warn(
                f"{first.where}: bands have different {key.replace('_', ' ')}s "
                f"{[c[key] for c in calibrations]}; using {calibrations[0][key]} (per band in meta)"
            )
    noise = np.array([estimate_noise(data[i], mask[i]) for i in range(len(sources))])
    field = Field(
        data=data,
        band_names=[s.name for s in sources],
        wcs=wcs,
        header=_clean_header(first.header),
        preset=preset,
        pixel_scale=_pixel_scale(first, wcs),
        noise=noise,
        path=[s.path for s in sources],
        hdu=[s.hdu_label for s in sources],
        meta={"band_calibration": calibrations},
        **calibrations[0],
    )
    field.mask = mask  # assigned after construction: the constructor would copy it
    return field


def _read_array(array: Any, preset: SurveyPreset, bands: Any) -> Field:
    """Field from an ``(H, W)`` or ``(C, H, W)`` array (copied once, NaN/inf masked)."""
    where = "'array'"
    try:
        values = np.ma.getdata(array)
        given_mask = np.ma.getmaskarray(array) if np.ma.isMaskedArray(array) else None
        values = np.asarray(values)
    except Exception as exc:
        raise FieldReadError(f"cannot read {where}: not an array ({_short(exc)})") from None
    if values.dtype.kind not in "biuf":
        raise FieldReadError(f"cannot read {where}: dtype {values.dtype} is not real numbers")
    if values.ndim == 0:
        raise FieldReadError(
            f"cannot read {where}: a scalar, expected a 2-D image (H, W) or a 3-D cube (C, H, W)"
        )
    shape = _drop_degenerate_axes(values.shape, where)
    values = values.reshape(shape)
    given_mask = None if given_mask is None else given_mask.reshape(shape)
    if values.ndim == 2:
        values = values[None]
        given_mask = None if given_mask is None else given_mask[None]
    if values.size == 0:
        raise FieldReadError(f"cannot read {where}: shape {values.shape} holds no pixel")
    n = values.shape[0]
    default_names = [preset.band] if n == 1 else [f"band{i}" for i in range(n)]
    keep, new_names = _select_bands(default_names, bands, where)
    data = np.empty((len(keep), *values.shape[1:]), dtype=np.float32)
    mask = np.zeros(data.shape, dtype=bool)
    for out, index in enumerate(keep):
        data[out] = values[index]
        bad = ~np.isfinite(data[out])
        if given_mask is not None:
            bad |= given_mask[index]
        mask[out] = bad
        data[out][bad] = 0.0
        if not data[out].any():
            raise FieldReadError(
                f"cannot read {where} band {index}: every pixel is NaN, inf or zero: nothing to detect"
            )
    field = Field(
        data=data,
        band_names=new_names or [default_names[i] for i in keep],
        preset=preset,
        noise=[estimate_noise(data[i], mask[i]) for i in range(len(keep))],
    )
    field.mask = mask
    return field


# ---------------------------------------------------------------------------
# write_field
# ---------------------------------------------------------------------------


def _output_header(field: Field) -> fits.Header:
    """Header cards shared by every band HDU: carried-over cards, WCS and calibration."""
    header = fits.Header()
    for card in field.header.cards:
        if not _NOT_CARRIED.match(card.keyword):
            header.append(card)
    if field.wcs is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            header.update(field.wcs.to_header(relax=True))
    header["PIXSCALE"] = (float(field.pixel_scale), "arcsec / pixel")
    header["ZEROPT"] = (float(field.zero_point), "AB mag of 1 e-/s")
    header["EXPTIME"] = (float(field.exposure), "s")
    header["GAIN"] = (float(field.gain), "e- / ADU")
    header["BUNIT"] = "electron"
    header["PRESET"] = field.preset.name
    return header


def write_field(field: Field, path: str | Path, overwrite: bool = False) -> Path:
    """Write a Field to FITS: one image HDU per band named by its band, WCS and calibration in headers.

    Masked pixels are written as NaN, so that :func:`read_field` gives back
    the same data, mask, band names, WCS and calibration.

    Parameters
    ----------
    field : Field
        The field to write.
    path : str or Path
        Output file name (``.fits``, ``.fits.gz`` for gzip or ``.fits.fz``
        for lossless tile compression; any case).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    header = _output_header(field)
    compressed = path.name.lower().endswith(".fz")
    hdus: list[fits.hdu.base._BaseHDU] = [fits.PrimaryHDU()]
    for band, image, mask in zip(field.band_names, field.data, field.mask):
        out = np.where(mask, np.float32(np.nan), image).astype(np.float32, copy=False)
        hdr = header.copy()
        hdr["EXTNAME"] = band
        hdr["FILTER"] = band
        if compressed:
            hdus.append(fits.CompImageHDU(out, header=hdr, compression_type="GZIP_2", quantize_level=0))
        else:
            hdus.append(fits.ImageHDU(out, header=hdr))
    hdul = fits.HDUList(hdus)
    if path.name.lower().endswith(".gz"):
        # astropy gzips only names ending in lower-case ".gz"; do it for any case.
        if path.exists() and not overwrite:
            raise OSError(f"File {str(path)!r} already exists (pass overwrite=True to replace it)")
        with gzip.open(path, "wb") as stream:
            hdul.writeto(stream)
    else:
        hdul.writeto(path, overwrite=overwrite)
    return path
