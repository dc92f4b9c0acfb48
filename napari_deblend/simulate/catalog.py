"""Truth tables of simulated galaxies: the columns that describe each galaxy and redraw it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from astropy.table import Table

DRAWING_PARAMETERS = ("disk_hlr", "bulge_hlr", "disk_g1", "disk_g2", "bulge_g1", "bulge_g2")
"""Truth-table columns (besides ``flux`` and ``bulge_fraction``) that draw a bulge + disk galaxy."""
MORPHOLOGY_COLUMNS = ("family", "q", "beta", "sersic_n", "morph_seed", "real_index")
"""Truth-table columns that draw a galaxy of any family (with the bulge + disk ones)."""

_TRUTH_UNITS = {
    "x": "pix", "y": "pix", "flux": "electron", "flux_total": "electron", "flux_drawn": "electron",
    "mag": "mag", "hlr": "arcsec", "sep_arcsec": "arcsec", "ra": "deg", "dec": "deg",
    "disk_hlr": "arcsec", "bulge_hlr": "arcsec", "beta": "rad",
}


def morphology_columns(gal: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The morphology columns of galaxies that have them (none for a parametric population)."""
    if "family" not in gal:
        return {}
    return {key: gal[key] for key in MORPHOLOGY_COLUMNS}


def truth_table(columns: dict[str, np.ndarray], meta: dict) -> Table:
    """An astropy table of truth columns with their units."""
    from astropy.table import Table

    table = Table(columns, meta=meta)
    for name, unit in _TRUTH_UNITS.items():
        if name in table.colnames:
            table[name].unit = unit
    return table
