"""Field-sized mosaics of deblending results: one model image, residual, mask map and position list per model.

Deblending many blends should not make many layers: a :class:`ResultMosaic`
paints each blend's result into arrays the size of the field (components summed
into a noiseless *model image*, the *residual* inside the deblended stamps and
NaN elsewhere, and a *mask map* whose labels number the components), so a
viewer shows any number of results with four layers, and a script can write
the model image or residual of a whole field to FITS.

A result that carries its components' catalogue ids (``info["ids"]``, see
:mod:`napari_deblend.parents`) is painted with them as mask labels, and its
positions carry ``id`` and ``parent``: the same numbers as a headless run's
``catalog.ecsv`` (``ID``, ``PARENT``) and ``components.fits`` (``IDk``, ``PARENTk``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DeblendInputError


@dataclass
class PaintedBlend:
    """Where one blend's result went in the mosaic: its stamp box and its component labels."""

    blend_id: int
    box: tuple[int, int, int, int]  # ymin, ymax, xmin, xmax in field pixels (clipped)
    labels: list[int] = field(default_factory=list)


class ResultMosaic:
    """Model image, residual, mask map and component positions of many results over one field.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the field.
    model : str
        Deblender name (for labels and the positions table).

    Attributes
    ----------
    model_image : numpy.ndarray
        ``(H, W)`` float32 sum of every painted component (band sum).
    residual : numpy.ndarray
        ``(H, W)`` float32 blend − Σ components inside painted stamps, NaN elsewhere.
    masks : numpy.ndarray
        ``(H, W)`` int32 component labels (0: none).
    """

    def __init__(self, shape: tuple[int, int], model: str) -> None:
        if len(shape) != 2 or min(shape) <= 0:
            raise DeblendInputError(f"mosaic shape must be (H, W) with positive sides, got {shape}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.model = model
        self.model_image = np.zeros(self.shape, np.float32)
        self.residual = np.full(self.shape, np.nan, np.float32)
        self.masks = np.zeros(self.shape, np.int32)
        self.painted: dict[int, PaintedBlend] = {}
        self._rows: dict[int, list[dict[str, Any]]] = {}
        self._results: dict[int, Any] = {}
        self._next_label = 1

    def __len__(self) -> int:
        return len(self.painted)

    def add(self, result: Any) -> tuple[int, int, int, int] | None:
        """Paint a result (replacing that blend's earlier one); return the field box it changed.

        Parameters
        ----------
        result : DeblendResult
            A result with ``origin`` and ``blend_id`` set (as :func:`napari_deblend.deblend` returns).

        Returns
        -------
        tuple of int or None
            ``(ymin, ymax, xmin, xmax)`` of the changed pixels, None if the stamp
            lies outside the field.
        """
        blend_id = int(result.blend_id)
        if blend_id in self.painted:
            self.remove(blend_id)
        h, w = result.blend.shape[-2:]
        y0, x0 = (int(v) for v in result.origin)
        ymin, ymax = max(y0, 0), min(y0 + h, self.shape[0])
        xmin, xmax = max(x0, 0), min(x0 + w, self.shape[1])
        if ymin >= ymax or xmin >= xmax:
            return None
        inner = (slice(ymin - y0, ymax - y0), slice(xmin - x0, xmax - x0))
        outer = (slice(ymin, ymax), slice(xmin, xmax))
        components = np.asarray(result.components, np.float32).sum(axis=1)  # (K, h, w) band sums
        if len(components):
            self.model_image[outer] += components.sum(axis=0)[inner]
        # overlapping stamps: the latest residual wins where both were painted
        self.residual[outer] = np.asarray(result.residual, np.float32).sum(axis=0)[inner]
        painted = PaintedBlend(blend_id, (ymin, ymax, xmin, xmax))
        target = self.masks[outer]
        rows = []
        fluxes = np.asarray(result.fluxes, float).sum(axis=1) if len(components) else np.zeros(0)
        ids = result.info.get("ids")
        parents = result.info.get("parents")
        pieces = np.asarray(result.info.get("pieces", np.zeros(len(components), bool)), bool).reshape(-1)
        known = ids is not None and len(ids) == len(components)
        for k, mask in enumerate(np.asarray(result.masks, bool)):
            if known:
                label = int(ids[k])
            else:
                label = self._next_label
                self._next_label += 1
            target[mask[inner] & (target == 0)] = label
            painted.labels.append(label)
            y, x = np.asarray(result.positions[k], float) + (y0, x0)
            parent = int(parents[k]) if parents is not None and len(parents) == len(components) else 0
            rows.append({"blend": blend_id, "component": k + 1, "label": label, "id": label if known else 0, "parent": parent,
                         "y": y, "x": x, "flux": float(fluxes[k]), "quality": str(result.quality),
                         "piece": bool(pieces[k]) if len(pieces) == len(components) else False})  # fmt: skip
        self.painted[blend_id] = painted
        self._rows[blend_id] = rows
        self._results[blend_id] = (result, inner, outer)
        return painted.box

    def remove(self, blend_id: int) -> tuple[int, int, int, int] | None:
        """Take a blend's result out of the mosaic (model light, labels, residual); return its box."""
        painted = self.painted.pop(int(blend_id), None)
        if painted is None:
            return None
        result, inner, outer = self._results.pop(int(blend_id))
        self._rows.pop(int(blend_id), None)
        if len(result.components):
            model = np.asarray(result.components, np.float32).sum(axis=(0, 1))[inner]
            self.model_image[outer] = np.maximum(self.model_image[outer] - model, 0.0)
        masks = self.masks[outer]
        masks[np.isin(masks, painted.labels)] = 0
        self.residual[outer] = np.nan
        # residuals of overlapping results that were painted over come back
        ymin, ymax, xmin, xmax = painted.box
        for res, res_inner, res_outer in self._results.values():
            oy, ox = res_outer
            if oy.start < ymax and oy.stop > ymin and ox.start < xmax and ox.stop > xmin:
                self.residual[res_outer] = np.asarray(res.residual, np.float32).sum(axis=0)[res_inner]
        return painted.box

    def positions(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(M, 2)`` field positions ``(y, x)`` of every painted component and their features.

        ``piece`` is true for a component that is no galaxy of its own
        (:func:`napari_deblend.parents.piece_children`; ``DEBLEND_FLAGS`` 32 in a run's catalogue).
        """
        rows = [row for blend_rows in self._rows.values() for row in blend_rows]
        data = np.array([[r["y"], r["x"]] for r in rows], float).reshape(-1, 2)
        features = {key: np.array([r[key] for r in rows])
                    for key in ("blend", "component", "id", "parent", "label", "flux", "quality", "piece")}  # fmt: skip
        return data, features
