"""Per-viewer state shared by the dock widgets: the field, its detections, its blends, the selection."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
from psygnal import Signal

from ..blends import Blend
from ..detection import DetectionResult
from ..field import Field


@dataclass
class _Detections:
    field: Field
    result: DetectionResult
    blends: list[Blend]
    source_layer: Any = None
    layers: dict[str, Any] = dc_field(default_factory=dict)


class DeblendSession:
    """What the widgets of one viewer share.

    Signals
    -------
    detected(DeblendSession)
        New detections (and blends) are available.
    blend_selected(int)
        A blend was selected (its id; 0 for none).
    deblended(int, str)
        A deblending result for (blend id, model name) is available in ``results``.
    """

    detected = Signal(object)
    blend_selected = Signal(int)
    deblended = Signal(int, str)

    def __init__(self, viewer: Any) -> None:
        self._viewer = weakref.ref(viewer)
        self.detections: _Detections | None = None
        self.selected_blend: int = 0
        #: (blend id, model name) -> DeblendResult of the latest run
        self.results: dict[tuple[int, str], Any] = {}

    @property
    def viewer(self) -> Any:
        """The viewer (None once it is gone)."""
        return self._viewer()

    @property
    def blends(self) -> list[Blend]:
        """Blends of the current detection (empty before detection)."""
        return self.detections.blends if self.detections else []

    def blend(self, blend_id: int) -> Blend | None:
        """The blend with this id, or None."""
        for blend in self.blends:
            if blend.id == blend_id:
                return blend
        return None

    def set_detections(self, detections: _Detections) -> None:
        """Replace the detections and announce them."""
        self.detections = detections
        self.selected_blend = 0
        self.results.clear()
        self.detected.emit(self)

    def add_result(self, blend_id: int, model: str, result: Any) -> None:
        """Store a deblending result and announce it."""
        self.results[(int(blend_id), model)] = result
        self.deblended.emit(int(blend_id), model)

    def results_for(self, blend_id: int) -> dict[str, Any]:
        """Model name -> result, for one blend."""
        return {model: r for (b, model), r in self.results.items() if b == blend_id}

    def select(self, blend_id: int) -> None:
        """Select a blend by id (0 clears) and announce it."""
        if blend_id and self.blend(blend_id) is None:
            return
        self.selected_blend = int(blend_id)
        self.blend_selected.emit(self.selected_blend)

    def step(self, offset: int) -> None:
        """Select the next (+1) or previous (-1) blend in id order, wrapping around."""
        ids = [b.id for b in self.blends]
        if not ids:
            return
        if self.selected_blend in ids:
            index = (ids.index(self.selected_blend) + offset) % len(ids)
        else:
            index = 0 if offset > 0 else len(ids) - 1
        self.select(ids[index])

    def blend_at(self, data_position: np.ndarray) -> int:
        """Id of the blend whose member footprint (or bounding box) holds the position ``(y, x)``; 0 if none."""
        if not self.detections:
            return 0
        seg = self.detections.result.segmentation
        y, x = (int(round(v)) for v in data_position[-2:])
        if 0 <= y < seg.shape[0] and 0 <= x < seg.shape[1] and seg[y, x] > 0:
            cat = self.detections.result.catalog
            blend_id = int(cat["blend_id"][seg[y, x] - 1])
            if blend_id:
                return blend_id
        for blend in self.blends:
            ymin, ymax, xmin, xmax = blend.bbox
            if ymin <= y < ymax and xmin <= x < xmax:
                return blend.id
        return 0


_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> DeblendSession:
    """The session of a viewer, created on first use."""
    session = _sessions.get(viewer)
    if session is None:
        session = _sessions[viewer] = DeblendSession(viewer)
    return session
