"""How labels are keyed: a field by a hash of its pixels, a target by the positions of its members.

A field is keyed by a SHA-1 of its pixel data (bands, shape, values; not of the
file, so a copied, renamed or re-compressed file keeps its labels); its file
path is kept for information and for spotting a file whose content changed. A
blend is keyed by the positions of its members (field pixels, 0-based
``(y, x)``): after a new detection, a stored label attaches to the blend that
has the same number of members, each within :data:`MEMBER_MATCH_RADIUS` pixels
of a stored one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeblendInputError

#: What a label is about: a blend (whole, or one of its components) or an isolated galaxy.
TARGET_KINDS = ("blend", "isolated")
#: A stored member position matches a detected one within this many pixels.
MEMBER_MATCH_RADIUS = 2.0


@dataclass(frozen=True)
class FieldKey:
    """How a field is recognised: a content hash of its pixels, and where it was read from.

    Attributes
    ----------
    content_hash : str
        SHA-1 (hex) of the band count, shape and float32 pixel values.
    path : str
        The file(s) the field came from (``|``-separated absolute paths; ``""`` for arrays).
    name : str
        Short display name.
    """

    content_hash: str
    path: str
    name: str = ""


def field_content_hash(data: np.ndarray) -> str:
    """SHA-1 of a field's pixels: shape and native float32 values, C order.

    Parameters
    ----------
    data : numpy.ndarray
        ``(C, H, W)`` or ``(H, W)`` pixels (a :class:`~napari_deblend.field.Field`'s ``data``).

    Returns
    -------
    str
        40 hexadecimal digits.
    """
    array = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
    if array.ndim == 2:
        array = array[None]
    digest = hashlib.sha1(repr(tuple(array.shape)).encode())
    digest.update(array.astype("<f4", copy=False).tobytes())
    return digest.hexdigest()


def field_key(field_obj: Any) -> FieldKey:
    """The :class:`FieldKey` of a :class:`~napari_deblend.field.Field`."""
    paths = [storable_path(Path(p).resolve()) for p in (field_obj.path or [])]
    return FieldKey(field_content_hash(field_obj.data), "|".join(paths), getattr(field_obj, "name", ""))


def storable_path(path: str | os.PathLike) -> str:
    """A file path as text SQLite and ECSV can store: bytes of a name that are not UTF-8 become ``\\xNN``.

    (Python keeps such bytes as lone surrogates, which no UTF-8 file or database accepts.)
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class TargetKey:
    """What a label is about, in field pixels: a blend or an isolated galaxy.

    Attributes
    ----------
    kind : str
        ``"blend"`` or ``"isolated"``.
    members : numpy.ndarray
        ``(K, 2)`` member positions ``(y, x)``, 0-based field pixels (one row for an isolated galaxy).
    bbox : tuple of int
        ``(ymin, ymax, xmin, xmax)``, exclusive maxima.
    """

    kind: str
    members: np.ndarray
    bbox: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        """Mean member position ``(y, x)`` (stable under re-detection, unlike the bounding box)."""
        y, x = np.asarray(self.members, float).reshape(-1, 2).mean(axis=0)
        return float(y), float(x)

    @classmethod
    def from_blend(cls, blend: Any) -> TargetKey:
        """Key of a :class:`~napari_deblend.blends.Blend` (one member: an isolated galaxy)."""
        members = np.asarray(blend.positions, float).reshape(-1, 2)
        kind = "blend" if len(members) > 1 else "isolated"
        return cls(kind, members, tuple(int(v) for v in blend.bbox))

    def check(self) -> None:
        """Refuse a key that cannot be stored: unknown kind, no member, NaN/inf positions, a bad bounding box."""
        if self.kind not in TARGET_KINDS:
            raise DeblendInputError(f"target kind {self.kind!r}: expected one of {', '.join(TARGET_KINDS)}")
        members = np.asarray(self.members, float)
        if members.ndim != 2 or members.shape[1] != 2 or not len(members):
            raise DeblendInputError(f"target members have shape {members.shape}: expected (K, 2) (y, x) positions")
        if not np.isfinite(members).all():
            raise DeblendInputError(f"target members {members.tolist()}: NaN or inf position(s): "
                                    "expected finite (y, x) field pixels")
        bbox = np.asarray(self.bbox, float)
        if bbox.shape != (4,) or not np.isfinite(bbox).all():
            raise DeblendInputError(f"target bbox {self.bbox!r}: expected (ymin, ymax, xmin, xmax) in pixels")


def members_match(stored: np.ndarray, current: np.ndarray, radius: float = MEMBER_MATCH_RADIUS) -> bool:
    """Whether two member lists are the same sources: same count, one-to-one within ``radius`` pixels."""
    stored = np.asarray(stored, float).reshape(-1, 2)
    current = np.asarray(current, float).reshape(-1, 2)
    if len(stored) != len(current) or not len(stored):
        return False
    from scipy.optimize import linear_sum_assignment

    distance = np.hypot(*(stored[:, None, :] - current[None, :, :]).transpose(2, 0, 1))
    rows, cols = linear_sum_assignment(distance)
    return bool(np.all(distance[rows, cols] <= radius))
