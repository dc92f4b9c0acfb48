"""Writing run outputs so that a crash, a kill or a full disk never leaves a half-written file.

Every file is written under a temporary name in its final directory
(``name.part``), flushed to disk, and renamed over the final name only when
complete (``os.replace`` is atomic on POSIX and Windows).  A reader therefore
sees either the previous complete file, or the new complete one, or none.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from astropy.io import fits

PART_SUFFIX = ".part"
#: FITS files are written in blocks of this many bytes.
FITS_BLOCK = 2880


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any exception (``OSError`` from a full disk included) the temporary file
    is removed and the exception propagates; ``path`` is left as it was.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name.

    Yields
    ------
    pathlib.Path
        Where to write.
    """
    path = Path(path)
    tmp = path.with_name(path.name + PART_SUFFIX)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync(path: Path) -> None:
    """Flush a written file to the disk, so that the rename never publishes unwritten blocks."""
    with open(path, "rb+") as stream:
        os.fsync(stream.fileno())


def write_json(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    return path


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """Read a JSON file; None if it is missing or not valid JSON (e.g. from an older, interrupted run)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_hdu(stream: BinaryIO, hdu: fits.ImageHDU) -> None:
    """Append one image extension (header and big-endian data, padded to 2880 bytes) to an open FITS stream.

    Lets a file with thousands of extensions be written one at a time, without
    holding them all in memory; the stream must already hold a primary HDU.
    """
    stream.write(hdu.header.tostring().encode("ascii"))
    if hdu.data is not None:
        raw = np.ascontiguousarray(hdu.data, dtype=hdu.data.dtype.newbyteorder(">")).tobytes()
        stream.write(raw)
        stream.write(b"\0" * (-len(raw) % FITS_BLOCK))
