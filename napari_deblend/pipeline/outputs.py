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


_BITPIX = {np.dtype(">f4"): -32, np.dtype(">f8"): -64, np.dtype(">i2"): 16, np.dtype(">i4"): 32,
           np.dtype(">i8"): 64, np.dtype("u1"): 8}  # fmt: skip


def fits_card(key: str, value: Any, comment: str = "") -> str:
    """One 80-character FITS header card (fixed format) of a string, bool, integer or finite float value."""
    if isinstance(value, (bool, np.bool_)):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, (int, np.integer)):
        text = f"{int(value):>20d}"
    elif isinstance(value, (float, np.floating)):
        number = repr(float(value)).upper()
        text = f"{number if ('.' in number or 'E' in number) else number + '.':>20}"
    else:
        quoted = "'" + f"{str(value).replace(chr(39), chr(39) * 2):<8}" + "'"
        text = f"{quoted:<20}"
    card = f"{key.upper():<8}= {text}" + (f" / {comment}" if comment else "")
    return f"{card[:80]:<80}"


def write_image_extension(stream: BinaryIO, data: np.ndarray, cards: list[str]) -> None:
    """Append one image extension to an open FITS stream, with the given header cards (see :func:`fits_card`).

    The mandatory cards (``XTENSION`` ... ``GCOUNT``) and ``END`` are added; the
    data are written big-endian and the header and data padded to 2880 bytes.
    Much faster than building an astropy header for each of thousands of small
    extensions.
    """
    data = np.asarray(data)
    big = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder(">") if data.dtype.itemsize > 1 else data.dtype)
    head = [fits_card("XTENSION", "IMAGE", "image extension"), fits_card("BITPIX", _BITPIX[big.dtype]),
            fits_card("NAXIS", big.ndim)]  # fmt: skip
    head += [fits_card(f"NAXIS{i + 1}", n) for i, n in enumerate(reversed(big.shape))]
    head += [fits_card("PCOUNT", 0), fits_card("GCOUNT", 1), *cards, f"{'END':<80}"]
    text = "".join(head)
    stream.write((text + " " * (-len(text) % FITS_BLOCK)).encode("ascii"))
    raw = big.tobytes()
    stream.write(raw)
    stream.write(b"\0" * (-len(raw) % FITS_BLOCK))
