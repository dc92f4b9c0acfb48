"""Catalogue export: ECSV with SExtractor-like column names, and DS9 region files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from .blends import kron_axes
from .errors import DeblendInputError

# our column -> (SExtractor name, description); X/Y become 1-based like SExtractor's.
SEXTRACTOR_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("NUMBER", "Running object number (= segmentation label)"),
    "x": ("X_IMAGE", "Object position along x (1-based, FITS/SExtractor convention)"),
    "y": ("Y_IMAGE", "Object position along y (1-based, FITS/SExtractor convention)"),
    "ra": ("ALPHA_J2000", "Right ascension of barycenter (J2000)"),
    "dec": ("DELTA_J2000", "Declination of barycenter (J2000)"),
    "a": ("A_IMAGE", "Profile RMS along major axis"),
    "b": ("B_IMAGE", "Profile RMS along minor axis"),
    "theta": ("THETA_IMAGE", "Position angle (CCW/x)"),
    "x2": ("X2_IMAGE", "Variance along x"),
    "y2": ("Y2_IMAGE", "Variance along y"),
    "xy": ("XY_IMAGE", "Covariance between x and y"),
    "npix": ("ISOAREA_IMAGE", "Isophotal area above analysis threshold"),
    "peak": ("FLUX_MAX", "Peak flux above background"),
    "flux_iso": ("FLUX_ISO", "Isophotal flux"),
    "kron_radius": ("KRON_RADIUS", "Kron apertures in units of A or B"),
    "flux_auto": ("FLUX_AUTO", "Flux within a Kron-like elliptical aperture"),
    "fluxerr_auto": ("FLUXERR_AUTO", "RMS error for AUTO flux"),
    "mag_auto": ("MAG_AUTO", "Kron-like elliptical aperture magnitude (AB)"),
    "magerr_auto": ("MAGERR_AUTO", "RMS error for AUTO magnitude"),
    "snr": ("SNR_AUTO", "FLUX_AUTO / FLUXERR_AUTO"),
    "flags": ("FLAGS", "Extraction flags (sep)"),
    "blend_id": ("BLEND_ID", "napari-deblend blend number (0: isolated)"),
    "blendedness": ("BLENDEDNESS", "Gaussian-overlap blendedness (0: isolated)"),
}


def to_sextractor_table(cat: Table) -> Table:
    """Return a copy of a detection catalogue with SExtractor column names, units and conventions.

    Positions become 1-based (``X_IMAGE = x + 1``), ``THETA_IMAGE`` is in
    degrees; per-band columns ``flux_auto_<band>`` become ``FLUX_AUTO_<BAND>``.
    """
    out = Table(meta=dict(cat.meta))
    for col in cat.colnames:
        if col in SEXTRACTOR_COLUMNS:
            name, description = SEXTRACTOR_COLUMNS[col]
        elif col.startswith(("flux_auto_", "fluxerr_auto_", "mag_auto_")):
            name, description = col.upper(), f"{col.split('_')[0]} AUTO in band {col.split('_', 2)[-1]}"
        else:
            continue
        values = cat[col]
        if col in ("x", "y"):
            values = np.asarray(values, float) + 1.0
            values = values * u.pix
        elif col == "theta":
            values = np.degrees(np.asarray(values, float)) * u.deg
        out[name] = values
        out[name].description = description
    return out


def write_catalog(cat: Table, path: str | Path, overwrite: bool = False) -> Path:
    """Write a detection catalogue as ECSV with SExtractor-like columns (see :func:`to_sextractor_table`)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise DeblendInputError(f"{path} exists: expected a new file name, or overwrite=True (--overwrite)")
    tmp = path.with_name(path.name + ".part")
    to_sextractor_table(cat).write(tmp, format="ascii.ecsv", overwrite=True)
    tmp.replace(path)  # a crash mid-write never leaves a truncated catalogue under the real name
    return path


def ds9_regions(cat: Table, color: str = "green") -> str:
    """DS9 region text: the Kron ellipse of every detection, image coordinates (1-based)."""
    ka, kb = kron_axes(cat)
    lines = ["# Region file format: DS9 version 4.1", f"global color={color} width=1", "image"]
    blend_ids = cat["blend_id"] if "blend_id" in cat.colnames else np.zeros(len(cat), int)
    for row, a, b, blend in zip(cat, ka, kb, blend_ids):
        theta = math.degrees(float(row["theta"]))
        extra = " color=red" if blend else ""
        lines.append(
            f"ellipse({float(row['x']) + 1:.3f},{float(row['y']) + 1:.3f},{a:.3f},{b:.3f},{theta:.2f})"
            f" # text={{{int(row['id'])}}}{extra}"
        )
    return "\n".join(lines) + "\n"


def write_ds9_regions(cat: Table, path: str | Path) -> Path:
    """Write :func:`ds9_regions` to ``path``; blend members are drawn red."""
    path = Path(path)
    path.write_text(ds9_regions(cat))
    return path
