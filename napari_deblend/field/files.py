"""Opening FITS files for reading fields: names, magic bytes, compression, HDU kinds, messages.

Everything here is about the file as a file; which HDUs are bands or noise
planes is decided in :mod:`napari_deblend.field.hdus`.
"""

from __future__ import annotations

import bz2
import gzip
import shutil
import sys
import tempfile
import warnings
import zlib
from contextlib import ExitStack
from os import PathLike
from pathlib import Path
from typing import Any

from astropy.io import fits

from ..errors import FieldReadError

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

FITS_MAGIC = b"SIMPLE  ="
_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class FieldReadWarning(UserWarning):
    """Something in a FITS file was ignored or guessed while reading a Field."""


def has_fits_suffix(path: str | PathLike) -> bool:
    """Return True if the file name ends with one of :data:`FITS_SUFFIXES` (any case)."""
    return str(path).lower().endswith(FITS_SUFFIXES)


def leading_bytes(path: Path, n: int) -> bytes:
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
    return path.is_file() and leading_bytes(path, len(FITS_MAGIC)) == FITS_MAGIC


def where(path: str, index: int | None = None, hdu: Any = None) -> str:
    """``'file.fits'`` or ``'file.fits' HDU 2 ('SCI')`` for messages."""
    text = repr(str(path))
    if index is not None:
        text += f" HDU {index}"
        name = getattr(hdu, "name", "") if hdu is not None else ""
        if name and not (index == 0 and name == "PRIMARY"):
            text += f" ({name!r})"
    return text


def short(exc: BaseException) -> str:
    """An exception's message on one line, at most 200 characters."""
    text = " ".join(str(exc).split())
    return text if len(text) < 200 else text[:197] + "..."


def warn(message: str) -> None:
    """Issue a FieldReadWarning attributed to the first caller outside the field package."""
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and str(Path(frame.f_code.co_filename).resolve().parent) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, FieldReadWarning, stacklevel=level)


def as_list(value: Any) -> list:
    """``value`` as a list (lists and tuples as they are, anything else wrapped)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def stem(path: str) -> str:
    """File name without directory and FITS/compression suffixes."""
    name = Path(path).name
    for suffix in sorted(FITS_SUFFIXES + (".gz", ".bz2"), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def open_fits(path: str, stack: ExitStack) -> fits.HDUList:
    """Open a FITS file (headers only; pixels are read later) or raise a FieldReadError."""
    file = Path(path)
    if not file.exists():
        raise FieldReadError(f"cannot read {where(path)}: no such file")
    if not file.is_file():
        raise FieldReadError(f"cannot read {where(path)}: it is a directory, expected a FITS file")
    head = leading_bytes(file, 16)
    if head[: len(FITS_MAGIC)] != FITS_MAGIC:
        shown = f"it starts with {head!r}" if head else "it is empty"
        raise FieldReadError(
            f"cannot read {where(path)}: not a FITS file ({shown}; a FITS file starts with 'SIMPLE  =')"
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
        raise FieldReadError(f"cannot read {where(path)}: corrupt FITS file ({short(exc)})") from None
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
            f"cannot read {where(path)}: corrupt or truncated compressed file ({short(exc)})"
        ) from None
    return copy


def hdu_kind(hdu: Any) -> str:
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
    kind = hdu_kind(hdu)
    if kind == "image":
        what = f"image {tuple(hdu.shape)}"
    elif kind == "table":
        what = "ascii table" if isinstance(hdu, fits.TableHDU) else "binary table"
    else:
        what = "no data" if kind == "empty" else type(hdu).__name__
    return f"{index} {hdu.name!r} ({what})"


def hdu_listing(hdul: fits.HDUList) -> str:
    """``0 'PRIMARY' (no data); 1 'SCI' (image (64, 80))`` for messages."""
    return "; ".join(_describe_hdu(i, h) for i, h in enumerate(hdul))
