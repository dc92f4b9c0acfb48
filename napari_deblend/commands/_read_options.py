"""The options of every command that reads a field: ``--hdu``, ``--bands``, ``--weight``, ``--weight-type``, ``--mask``."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import DeblendInputError
from ..field import WEIGHT_TYPES


def add_read_options(parser: argparse.ArgumentParser) -> None:
    """Add the field-reading options to a sub-command's parser."""
    group = parser.add_argument_group("reading the field")
    group.add_argument("--hdu", default=None,
                       help="HDU index or EXTNAME to read as the band, or a comma list of them as bands "
                            "(default: the science image; noise and mask planes are found by EXTNAME)")  # fmt: skip
    group.add_argument("--bands", default=None,
                       help="comma list of bands to keep (names or indices), or new names, one per band")
    group.add_argument("--weight", nargs="+", default=None, metavar="FILE",
                       help="noise map(s) in separate files, one for all or one per field file "
                            "(SExtractor's WEIGHT_IMAGE); replaces the files' own noise planes")  # fmt: skip
    group.add_argument("--weight-type", default="weight", choices=WEIGHT_TYPES,
                       help="what --weight holds: relative inverse variance (weight, rescaled to the image's "
                            "noise), variance or rms (SExtractor's WEIGHT_TYPE; default weight)")  # fmt: skip
    group.add_argument("--mask", nargs="+", default=None, metavar="FILE",
                       help="bad-pixel mask file(s), non-zero = bad; added to the files' own mask planes")


def _items(text: str | None) -> list[Any] | None:
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    return [int(t) if t.lstrip("-").isdigit() else t for t in items]


def read_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``read_field`` keyword arguments from the parsed options (``hdu``, ``bands``, ``weight``, ...)."""
    hdu = _items(args.hdu)
    out: dict[str, Any] = {"weight_type": args.weight_type}
    if hdu is not None:
        out["hdu"] = hdu[0] if len(hdu) == 1 else hdu
    bands = _items(args.bands)
    if bands is not None:
        out["bands"] = bands
    for key in ("weight", "mask"):
        files = getattr(args, key)
        if files:
            out[key] = files[0] if len(files) == 1 else list(files)
    return out


def per_field(args: argparse.Namespace, fields: list[str]) -> dict[str, dict[str, str]]:
    """For commands with one field per file: ``--weight`` / ``--mask`` files by field path."""
    out: dict[str, dict[str, str]] = {}
    for key in ("weight", "mask"):
        files = getattr(args, key) or []
        if not files:
            continue
        if len(files) != len(fields):
            raise DeblendInputError(
                f"--{key}: {len(files)} file(s) for {len(fields)} field(s): expected one per field, in order"
            )
        out[key] = {str(field): str(file) for field, file in zip(fields, files)}
    return out
