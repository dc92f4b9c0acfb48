"""Source positions a user clicks on the canvas, for the deblenders that take positions (``vae``, ``unet``).

A Points layer named :data:`LAYER_NAME`, placed like the field's image layer,
holds the clicks; :meth:`ClickedPositions.field_points` turns them into field
pixels ``(y, x)``, which :func:`napari_deblend.deblend` takes as
``field_positions`` (those on each blend's stamp, see
:func:`~napari_deblend.deblending.positions_in_window`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LAYER_NAME = "clicked positions"
_METADATA_KEY = "napari_deblend_clicked_positions"


class ClickedPositions:
    """The viewer's "clicked positions" Points layer, made on demand.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    session : DeblendSession
        Its deblending session (for the field's image layer and its placement).
    """

    def __init__(self, viewer: Any, session: Any) -> None:
        self.viewer = viewer
        self.session = session

    def _source(self) -> Any:
        detections = self.session.detections
        return detections.source_layer if detections is not None else None

    def layer(self) -> Any:
        """The Points layer of clicked positions, or None when there is none (yet)."""
        for layer in self.viewer.layers:
            if layer.metadata.get(_METADATA_KEY):
                return layer
        return None

    def start(self) -> Any:
        """Make (or re-use) the layer, select it and switch it to adding points; returns it."""
        layer = self.layer()
        if layer is None:
            source = self._source()
            placement = {}
            if source is not None:
                placement = {"scale": tuple(source.scale[-2:]), "translate": tuple(source.translate[-2:])}
            layer = self.viewer.add_points(
                np.zeros((0, 2)), name=LAYER_NAME, symbol="cross", size=4, face_color="cyan",
                border_width=0, metadata={_METADATA_KEY: True}, **placement,
            )
        self.viewer.layers.selection.active = layer
        layer.mode = "add"
        return layer

    def clear(self) -> None:
        """Forget every clicked position (the layer stays, empty)."""
        layer = self.layer()
        if layer is not None and len(layer.data):
            layer.mode = "pan_zoom"
            layer.data = np.zeros((0, 2))

    def field_points(self) -> np.ndarray:
        """``(K, 2)`` clicked positions ``(y, x)`` in field pixels (empty when none)."""
        layer = self.layer()
        if layer is None or not len(layer.data):
            return np.zeros((0, 2))
        world = np.array([layer.data_to_world(p) for p in np.asarray(layer.data, float)])
        source = self._source()
        if source is None:
            return world[:, -2:]
        return np.array([source.world_to_data(w)[-2:] for w in world], dtype=float).reshape(-1, 2)
