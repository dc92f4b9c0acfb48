"""Truth catalogues of simulated fields: find, read, and redraw the true components of a stamp.

A field simulated by :func:`napari_deblend.simulate.simulate_field` (or
``napari-deblend simulate field``) comes with ``<name>_truth.ecsv`` beside the
FITS file. It holds each galaxy's position and drawing parameters, from which
:func:`truth_for_stamp` redraws the noiseless galaxies falling in a deblended
stamp: the truth row of the Comparison panel and the truth columns of its table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import DeblendInputError

#: columns a truth catalogue needs for its galaxies to be redrawn (with ``hlr`` and the morphology columns,
#: ``napari_deblend.simulate.MORPHOLOGY_COLUMNS``, when it has a ``family`` column)
REQUIRED_COLUMNS = ("x", "y", "flux", "bulge_fraction", "disk_hlr", "bulge_hlr",
                    "disk_g1", "disk_g2", "bulge_g1", "bulge_g2")
TRUTH_SUFFIX = "_truth.ecsv"


def truth_catalog_path(fits_path: str | Path | None) -> Path | None:
    """The truth catalogue beside a FITS file (``field.fits`` → ``field_truth.ecsv``), if it exists."""
    if not fits_path:
        return None
    path = Path(fits_path)
    stem = path.name
    for suffix in (".fz", ".gz", ".fits", ".fit", ".fts"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    candidate = path.with_name(stem + TRUTH_SUFFIX)
    return candidate if candidate.exists() else None


def read_truth_catalog(path: str | Path, required: tuple[str, ...] = REQUIRED_COLUMNS) -> Any:
    """Read a truth catalogue (ECSV or any table format astropy reads) and check its columns.

    Parameters
    ----------
    path : str or Path
        The catalogue.
    required : tuple of str
        Columns it must have (default: those that redraw its galaxies).

    Returns
    -------
    astropy.table.Table

    Raises
    ------
    DeblendInputError
        If the file is missing, unreadable, or lacks the columns needed to redraw galaxies.
    """
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise DeblendInputError(f"truth catalogue {path} does not exist")
    try:
        table = Table.read(path, format="ascii.ecsv") if path.suffix.lower() == ".ecsv" else Table.read(path)
    except Exception as exc:
        raise DeblendInputError(f"cannot read truth catalogue {path}: {type(exc).__name__}: {exc}") from None
    missing = [c for c in required if c not in table.colnames]
    if missing:
        raise DeblendInputError(
            f"truth catalogue {path} lacks the columns {', '.join(missing)}: expected a catalogue written by "
            "`napari-deblend simulate field` (x, y in 0-based pixels and the galaxies' drawing parameters)"
        )
    return table


def truth_for_stamp(
    table: Any, origin: tuple[int, int], shape: tuple[int, int], preset: Any = None, n_bands: int = 1,
    footprint: np.ndarray | None = None,
) -> Any:
    """The noiseless true galaxies whose centres fall in a stamp, brightest first.

    Parameters
    ----------
    table : astropy.table.Table
        Truth catalogue (see :func:`read_truth_catalog`); positions in field pixels.
    origin : tuple of int
        ``(y0, x0)`` of the stamp in the field.
    shape : tuple of int
        ``(H, W)`` of the stamp.
    preset : str or SurveyPreset, optional
        Survey preset of the field (PSF, pixel scale); default the catalogue's ``preset`` meta or ``lsst-i``.
    n_bands : int
        Bands of the stamp (the same image is given to every band).
    footprint : numpy.ndarray, optional
        ``(H, W)`` bool: keep only the galaxies whose centre pixel is in it (e.g. the blend's
        segmentation footprint, so that faint neighbours elsewhere in the stamp are left out).

    Returns
    -------
    napari_deblend.measurements.Truth or None
        None when no true galaxy lies in the stamp.
    """
    from .measurements import Truth
    from .simulate import MORPHOLOGY_COLUMNS, draw_galaxies

    y0, x0 = (int(v) for v in origin)
    h, w = (int(v) for v in shape)
    x = np.asarray(table["x"], float) - x0
    y = np.asarray(table["y"], float) - y0
    inside = np.flatnonzero((x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5))
    if footprint is not None and len(inside):
        rows = np.clip(np.rint(y[inside]).astype(int), 0, h - 1)
        cols = np.clip(np.rint(x[inside]).astype(int), 0, w - 1)
        inside = inside[np.asarray(footprint, bool)[rows, cols]]
    if not len(inside):
        return None
    flux = np.asarray(table["flux"], float)[inside]
    inside = inside[np.argsort(-flux, kind="stable")]
    params = {name: np.asarray(table[name], float)[inside] for name in REQUIRED_COLUMNS[2:]}
    preset = preset or table.meta.get("preset", "lsst-i")
    pool = None
    if "family" in table.colnames:  # a catalogue of the morphology families: their columns draw them
        params.update({name: np.asarray(table[name])[inside] for name in ("hlr", *MORPHOLOGY_COLUMNS)})
        if np.any(params["family"] == "real"):
            pool = _real_pool(table, preset)
    images = draw_galaxies(params, x[inside], y[inside], (h, w), preset=preset, real_pool=pool)
    components = np.repeat(images[:, None], max(int(n_bands), 1), axis=1)
    return Truth(components, np.stack([y[inside], x[inside]], axis=1))


def _real_pool(table: Any, preset: Any) -> Any:
    """The real-galaxy pool a truth catalogue's ``real`` galaxies were drawn from (its ``real_pool`` meta)."""
    from .simulate import resolve_pool

    path = table.meta.get("real_pool")
    if not path:
        raise DeblendInputError("this truth catalogue has 'real' galaxies but no real_pool in its metadata: "
                                "cannot redraw them")
    return resolve_pool(path, preset, table.meta.get("real_split", "test"))
