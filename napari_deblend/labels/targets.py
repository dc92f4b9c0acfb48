"""Labelling targets that are not blends: isolated galaxies, as one-member :class:`~napari_deblend.blends.Blend` objects."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from ..blends import Blend, _bbox, kron_axes


def isolated_galaxies(cat: Table, shape: tuple[int, int] | None = None, min_flux: float = 0.0) -> list[Blend]:
    """Detections that belong to no blend, brightest first, as one-member blends.

    Parameters
    ----------
    cat : astropy.table.Table
        Catalogue after :func:`~napari_deblend.find_blends` (its ``blend_id`` column: 0 = isolated).
    shape : tuple of int, optional
        Field shape ``(H, W)`` to clip the bounding boxes to.
    min_flux : float
        Skip detections with a smaller ``flux_auto``.

    Returns
    -------
    list of Blend
        ``id`` is the catalogue ``id``; ``bbox`` covers the Kron ellipse and the footprint.
    """
    if len(cat) == 0:
        return []
    blend_id = np.asarray(cat["blend_id"]) if "blend_id" in cat.colnames else np.zeros(len(cat), int)
    flux = np.asarray(cat["flux_auto"], float)
    rows = np.flatnonzero((blend_id == 0) & np.isfinite(flux) & (flux > min_flux))
    rows = rows[np.argsort(-flux[rows])]
    ka, _ = kron_axes(cat)
    zp = (cat.meta or {}).get("zero_point", 27.78)
    exposure = (cat.meta or {}).get("exposure", 5520.0)
    out = []
    for row in rows:
        one = np.array([row])
        out.append(
            Blend(
                id=int(cat["id"][row]),
                members=np.array([int(cat["id"][row])]),
                bbox=_bbox(cat, one, ka, shape),
                positions=np.array([[float(cat["y"][row]), float(cat["x"][row])]]),
                fluxes=flux[one].copy(),
                blendedness=0.0,
                magnitude=float(zp - 2.5 * np.log10(flux[row] / exposure)),
                member_blendedness=np.zeros(1),
            )
        )
    return out
