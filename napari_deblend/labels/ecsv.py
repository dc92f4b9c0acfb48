"""Labels to and from ECSV (astropy's enhanced CSV), e.g. to share them or merge databases.

Text comes back exactly: CSV readers turn ``\\r\\n`` into ``\\n``, drop leading
spaces and split rows at some Unicode line breaks, so text columns are written
with backslash escapes (``\\n``, ``\\t``, ``\\x20`` for a leading space, ``\\\\``
for a backslash; the table's ``napari_deblend_labels_text`` meta says so), and
a note longer than Python's CSV field limit (131,072 characters) reads back too.
"""

from __future__ import annotations

import contextlib
import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import DeblendInputError
from .label import LABEL_COLUMNS, Label, check_label_row
from .store import SCHEMA_VERSION, LabelStore

_FLOAT_COLUMNS = ("center_y", "center_x", "component_y", "component_x")
#: Meta key and value marking text columns written with :func:`escape_text`.
TEXT_ENCODING_KEY, TEXT_ENCODING = "napari_deblend_labels_text", "backslash-escaped"
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
_UNESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")


def escape_text(text: str) -> str:
    """Text that survives CSV unchanged: backslash, non-printable characters and edge spaces as escapes."""
    out = []
    last = len(text) - 1
    for index, char in enumerate(text):
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif not char.isprintable() or (char.isspace() and index in (0, last)):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


def unescape_text(text: str) -> str:
    """The inverse of :func:`escape_text`."""

    def one(match: re.Match) -> str:
        code = match.group(1)
        return {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}.get(code) or chr(int(code[1:], 16))

    return _UNESCAPE.sub(one, text)


def labels_table(labels: Iterable[Label]):
    """An astropy Table of labels, one row per label, columns :data:`~.label.LABEL_COLUMNS` (text escaped)."""
    from astropy.table import Table

    rows = [label.as_row() for label in labels]
    columns = {}
    for name in LABEL_COLUMNS:
        values = [row[name] for row in rows]
        if name in _FLOAT_COLUMNS:
            columns[name] = np.array([np.nan if v is None else v for v in values], float)
        elif name == "component":
            columns[name] = np.array(values, np.int64)
        else:
            columns[name] = np.array(["" if v is None else escape_text(str(v)) for v in values], dtype=str)
    table = Table(columns, names=LABEL_COLUMNS)
    table.meta["napari_deblend_labels_schema"] = SCHEMA_VERSION
    table.meta[TEXT_ENCODING_KEY] = TEXT_ENCODING
    table.meta["comments"] = [
        "napari-deblend labels: one row per verdict (history included); "
        "positions are 0-based field pixels (y, x); text columns are backslash-escaped"
    ]
    return table


def export_labels_ecsv(
    store: LabelStore, path: str | Path, field_hash: str | None = None, overwrite: bool = False
) -> int:
    """Write every label of the store (or of one field) to an ECSV file, atomically; returns the number written."""
    from ..pipeline.outputs import atomic_path

    path = Path(path)
    if path.exists() and not overwrite:
        raise DeblendInputError(f"{path} exists: choose another name or allow overwriting")
    labels = store.labels(field_hash)
    table = labels_table(labels)
    with atomic_path(path) as tmp:  # a failed write (full disk) leaves no half-written export
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return len(labels)


@contextlib.contextmanager
def _long_csv_fields() -> Iterator[None]:
    """Let Python's CSV reader take fields of any length (its default limit is 131,072 characters)."""
    previous = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def read_labels_ecsv(path: str | Path) -> list[Label]:
    """Read labels written by :func:`export_labels_ecsv`.

    Raises
    ------
    DeblendInputError
        If the file is not an ECSV table of labels, or a row is invalid.
    """
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise DeblendInputError(f"{path}: {'not a file' if path.exists() else 'no such file'}: expected an ECSV file")
    try:
        with _long_csv_fields():
            table = Table.read(path, format="ascii.ecsv")
    except OSError as exc:
        raise DeblendInputError(f"{path} cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise DeblendInputError(f"{path} is not an ECSV table ({type(exc).__name__}: {detail})") from None
    missing = [c for c in LABEL_COLUMNS if c not in table.colnames]
    if missing:
        raise DeblendInputError(
            f"{path} lacks label column(s) {', '.join(missing)}: expected a napari-deblend label export"
        )
    try:
        version = int(table.meta.get("napari_deblend_labels_schema", SCHEMA_VERSION))
    except (TypeError, ValueError):
        raise DeblendInputError(f"{path}: napari_deblend_labels_schema is not a number: expected a label export") from None
    if version > SCHEMA_VERSION:
        raise DeblendInputError(
            f"{path} holds labels of schema version {version}, newer than {SCHEMA_VERSION}: "
            "upgrade napari-deblend"
        )
    escaped = table.meta.get(TEXT_ENCODING_KEY) == TEXT_ENCODING  # exports of earlier versions: text as it is
    labels = []
    for number, row in enumerate(table, start=1):
        try:
            values = {}
            for name in LABEL_COLUMNS:
                value = row[name]
                if hasattr(value, "mask") and np.all(value.mask):
                    value = None
                elif name in _FLOAT_COLUMNS:
                    value = None if not np.isfinite(float(value)) else float(value)
                elif name == "component":
                    value = int(value)
                else:
                    value = unescape_text(str(value)) if escaped else str(value)
                values[name] = value
            values["failure"] = values["failure"] or None
            label = Label.from_row(values)
            check_label_row(label.as_row(), where=f"{path}, row {number}:")  # before any database is touched
            labels.append(label)
        except DeblendInputError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            detail = " ".join(str(exc).split())[:160]
            raise DeblendInputError(f"{path}, row {number}: not a valid label ({type(exc).__name__}: {detail})") from None
    return labels


def import_labels_ecsv(store: LabelStore, path: str | Path) -> int:
    """Add the labels of an ECSV file to the store (labels already present are skipped); returns how many were added."""
    return store.import_labels(read_labels_ecsv(path))
