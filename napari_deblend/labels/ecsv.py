"""Labels to and from ECSV (astropy's enhanced CSV), e.g. to share them or merge databases."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import DeblendInputError
from .store import LABEL_COLUMNS, SCHEMA_VERSION, Label, LabelStore

_FLOAT_COLUMNS = ("center_y", "center_x", "component_y", "component_x")


def labels_table(labels: Iterable[Label]):
    """An astropy Table of labels, one row per label, columns :data:`~.store.LABEL_COLUMNS`."""
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
            columns[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    table = Table(columns, names=LABEL_COLUMNS)
    table.meta["napari_deblend_labels_schema"] = SCHEMA_VERSION
    table.meta["comments"] = [
        "napari-deblend labels: one row per verdict (history included); "
        "positions are 0-based field pixels (y, x)"
    ]
    return table


def export_labels_ecsv(
    store: LabelStore, path: str | Path, field_hash: str | None = None, overwrite: bool = False
) -> int:
    """Write every label of the store (or of one field) to an ECSV file; returns the number written."""
    labels = store.labels(field_hash)
    table = labels_table(labels)
    path = Path(path)
    if path.exists() and not overwrite:
        raise DeblendInputError(f"{path} exists: choose another name or allow overwriting")
    table.write(path, format="ascii.ecsv", overwrite=overwrite)
    return len(labels)


def read_labels_ecsv(path: str | Path) -> list[Label]:
    """Read labels written by :func:`export_labels_ecsv`.

    Raises
    ------
    DeblendInputError
        If the file is not an ECSV table of labels, or a row is invalid.
    """
    from astropy.table import Table

    path = Path(path)
    try:
        table = Table.read(path, format="ascii.ecsv")
    except FileNotFoundError:
        raise DeblendInputError(f"{path}: no such file") from None
    except Exception as exc:
        raise DeblendInputError(f"{path} is not an ECSV table ({type(exc).__name__}: {exc})") from None
    missing = [c for c in LABEL_COLUMNS if c not in table.colnames]
    if missing:
        raise DeblendInputError(
            f"{path} lacks label column(s) {', '.join(missing)}: expected a napari-deblend label export"
        )
    version = int(table.meta.get("napari_deblend_labels_schema", SCHEMA_VERSION))
    if version > SCHEMA_VERSION:
        raise DeblendInputError(
            f"{path} holds labels of schema version {version}, newer than {SCHEMA_VERSION}: "
            "upgrade napari-deblend"
        )
    labels = []
    for number, row in enumerate(table, start=1):
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
                value = str(value)
            values[name] = value
        values["failure"] = values["failure"] or None
        try:
            labels.append(Label.from_row(values))
        except (ValueError, KeyError, TypeError) as exc:
            raise DeblendInputError(f"{path}, row {number}: not a valid label ({exc})") from None
    return labels


def import_labels_ecsv(store: LabelStore, path: str | Path) -> int:
    """Add the labels of an ECSV file to the store (labels already present are skipped); returns how many were added."""
    return store.import_labels(read_labels_ecsv(path))
