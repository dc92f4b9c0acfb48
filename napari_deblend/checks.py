"""Up-front checks of what a command or a library call is given: output paths it can write, argument types.

Each check raises :class:`~napari_deblend.errors.DeblendInputError` with one
sentence naming the option (or argument) and what was expected, before any
work starts, so that a bad option never leaves a half-made output behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DeblendInputError


def describe_os_error(exc: OSError) -> str:
    """One sentence for an operating-system error: the file, what went wrong, and what to do when it is common."""
    where = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or str(exc) or type(exc).__name__
    hints = {
        errno.ENOSPC: "free some space on that disk, or write elsewhere",
        errno.EFBIG: "the file grew past the size allowed: free space or raise the limit, or write elsewhere",
        errno.EDQUOT: "the disk quota is used up: free some space, or write elsewhere",
        errno.EACCES: "expected a file or folder you may use (check its permissions)",
        errno.EPERM: "expected a file or folder you may use (check its permissions)",
        errno.EROFS: "the disk is read-only: write elsewhere",
        errno.ENOENT: "expected an existing file or folder",
    }
    hint = hints.get(exc.errno or 0)
    return f"{where}: {reason}" + (f"; {hint}" if hint else "")


def _probe_writable(folder: Path, option: str, target: Path) -> None:
    """Create and remove a tiny file in ``folder``: the only test that root, read-only disks and ACLs all answer."""
    probe = folder / f".napari-deblend-write-test-{uuid.uuid4().hex}"
    try:
        descriptor = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise DeblendInputError(
            f"{option} {target}: cannot write in folder {folder} ({exc.strerror or exc}): expected a writable folder"
        ) from None
    os.close(descriptor)
    probe.unlink()


def check_output_file(path: str | os.PathLike, option: str, overwrite: bool = False) -> Path:
    """Check that ``path`` can be written as a new file (or replaced, with ``overwrite``); returns it as a Path.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    option : str
        The option or argument that named it (``"-o"``, ``"--regions"``, ...), for messages.
    overwrite : bool
        Whether an existing file may be replaced.

    Raises
    ------
    DeblendInputError
        The path is a folder, exists (without ``overwrite``), or its folder is missing or not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise DeblendInputError(f"{option} {path} is a folder: expected a file name")
    if path.exists() and not overwrite:
        raise DeblendInputError(f"{option} {path} exists: expected a new file name, or --overwrite")
    folder = path.parent
    if not folder.exists():
        raise DeblendInputError(f"{option} {path}: folder {folder} does not exist: expected an existing folder")
    if not folder.is_dir():
        raise DeblendInputError(f"{option} {path}: {folder} is not a folder")
    _probe_writable(folder, option, path)
    return path


def check_output_folder(path: str | os.PathLike, option: str) -> Path:
    """Check that ``path`` is, or can be created as, a writable folder (nothing is created); returns it as a Path.

    Raises
    ------
    DeblendInputError
        The path (or one of its parents) is a file, or the nearest existing folder is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DeblendInputError(f"{option} {path} is a file: expected a folder")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise DeblendInputError(f"{option} {path}: {existing} is a file, so no folder can be made under it")
    _probe_writable(existing if str(existing) else Path("."), option, path)
    return path


def check_type(value: Any, types: type | tuple[type, ...], what: str, expected: str) -> None:
    """Refuse a library argument of the wrong type with a sentence, before it fails deep inside as an AttributeError.

    Parameters
    ----------
    value : object
        The argument.
    types : type or tuple of type
        Accepted types.
    what : str
        The call and argument, e.g. ``"deblend(field, blend)"``.
    expected : str
        What to give instead.
    """
    if not isinstance(value, types):
        raise DeblendInputError(f"{what}: got {type(value).__name__}: expected {expected}")


@contextlib.contextmanager
def writing(path: str | os.PathLike, option: str) -> Iterator[None]:
    """Turn an operating-system error while writing ``path`` (full disk, ...) into one sentence naming it."""
    try:
        yield
    except OSError as exc:
        reason = describe_os_error(exc).split(": ", 1)[-1] if exc.filename is None else describe_os_error(exc)
        raise DeblendInputError(f"{option} {path}: cannot write it ({reason}); nothing was written") from None
