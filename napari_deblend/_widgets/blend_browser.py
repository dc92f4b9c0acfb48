"""Blend browser: a sortable table of blends; selecting one zooms to it. Keys ``n``/``p`` step through."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import _viewer_hooks
from ..layers import selection_rectangle
from ._session import DeblendSession, session_for

COLUMNS = ("blend", "members", "mag", "blendedness", "size (px)", "x", "y", "label")
LABEL_COLUMN = COLUMNS.index("label")
SELECTION_LAYER = "selected blend"


class _NumberItem(QTableWidgetItem):
    """A table cell that sorts by its number, not its text."""

    def __init__(self, value: float, text: str) -> None:
        super().__init__(text)
        self.value = value
        self.setFlags(self.flags() & ~Qt.ItemIsEditable)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, _NumberItem):
            return bool(np.nan_to_num(self.value, nan=np.inf) < np.nan_to_num(other.value, nan=np.inf))
        return super().__lt__(other)


class BlendBrowserWidget(QWidget):
    """Dock widget listing the blends of the last detection."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: DeblendSession = session_for(napari_viewer)
        _viewer_hooks.install(napari_viewer)
        self.summary = QLabel("No detections yet: run the Detection panel.")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setSortingEnabled(True)
        self.unlabelled_only = QCheckBox("unlabelled only")
        self.unlabelled_only.setToolTip("Hide the blends that already have a label (Label panel)")
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.unlabelled_only)
        layout.addWidget(self.table)

        self.table.itemSelectionChanged.connect(self._row_selected)
        self.session.detected.connect(self._fill)
        self.session.blend_selected.connect(self._show_selection)
        self.session.labels_changed.connect(self._show_labels)
        self.unlabelled_only.toggled.connect(lambda _checked: self._show_labels())
        self.viewer.bind_key("n", lambda v: self.session.step(+1), overwrite=True)
        self.viewer.bind_key("p", lambda v: self.session.step(-1), overwrite=True)
        self.viewer.mouse_drag_callbacks.append(self._on_click)
        if self.session.detections is not None:
            self._fill(self.session)

    # ---- table ----------------------------------------------------------------------------------
    def _fill(self, session: DeblendSession) -> None:
        blends = session.blends
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(blends))
        for row, blend in enumerate(blends):
            cy, cx = blend.center
            values = (blend.id, blend.n_members, blend.magnitude, blend.blendedness, blend.size, cx, cy)
            texts = (
                str(blend.id),
                str(blend.n_members),
                f"{blend.magnitude:.2f}",
                f"{blend.blendedness:.3f}",
                str(blend.size),
                f"{cx:.0f}",
                f"{cy:.0f}",
            )
            for col, (value, text) in enumerate(zip(values, texts)):
                self.table.setItem(row, col, _NumberItem(float(value), text))
            label_item = QTableWidgetItem("")
            label_item.setFlags(label_item.flags() & ~Qt.ItemIsEditable)
            self.table.setItem(row, LABEL_COLUMN, label_item)
        self.table.setSortingEnabled(True)
        self._show_labels()
        n_sources = len(session.detections.result.catalog) if session.detections else 0
        self.summary.setText(
            f"{len(blends)} blends among {n_sources} detections — click a row or a blend; n / p step"
        )

    def _show_labels(self) -> None:
        """Fill the label column from the session's verdicts; hide labelled rows when asked."""
        verdicts = self.session.blend_verdicts
        hide_labelled = self.unlabelled_only.isChecked()
        self.table.setSortingEnabled(False)
        for row in range(self.table.rowCount()):
            blend_id = int(self.table.item(row, 0).value)
            verdict = verdicts.get(blend_id, "")
            self.table.item(row, LABEL_COLUMN).setText(verdict)
            self.table.setRowHidden(row, bool(hide_labelled and verdict))
        self.table.setSortingEnabled(True)

    def _row_selected(self) -> None:
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        if not rows:
            return
        blend_id = int(self.table.item(rows.pop(), 0).value)
        if blend_id != self.session.selected_blend:
            self.session.select(blend_id)

    def select_row_of(self, blend_id: int) -> None:
        """Select the table row of a blend without re-announcing the selection."""
        for row in range(self.table.rowCount()):
            if int(self.table.item(row, 0).value) == blend_id:
                self.table.blockSignals(True)
                self.table.selectRow(row)
                self.table.blockSignals(False)
                self.table.scrollToItem(self.table.item(row, 0))
                return

    # ---- canvas ---------------------------------------------------------------------------------
    def _on_click(self, viewer: Any, event: Any):
        if event.type != "mouse_press" or self.session.detections is None:
            return
        start = np.array(event.position)
        yield
        while event.type == "mouse_move":  # a drag pans: not a click
            yield
        if np.hypot(*(np.array(event.position) - start)[-2:]) > 3:
            return
        layer = self.session.detections.source_layer
        position = layer.world_to_data(event.position) if layer is not None else event.position
        blend_id = self.session.blend_at(np.asarray(position))
        if blend_id:
            self.session.select(blend_id)

    def _show_selection(self, blend_id: int) -> None:
        blend = self.session.blend(blend_id)
        if blend is None:
            return
        self.select_row_of(blend_id)
        source = self.session.detections.source_layer
        rect = selection_rectangle(blend)
        kwargs = {}
        if source is not None:
            kwargs = {"scale": source.scale, "translate": source.translate}
        if SELECTION_LAYER in self.viewer.layers:
            layer = self.viewer.layers[SELECTION_LAYER]
            layer.data = [rect]
        else:
            layer = self.viewer.add_shapes(
                [rect], shape_type="rectangle", edge_color="cyan", face_color="transparent",
                edge_width=1.5, name=SELECTION_LAYER, **kwargs,
            )
        if source is not None:
            self.viewer.layers.selection.active = source
        cy, cx = blend.center
        world = np.asarray(layer.data_to_world([cy, cx]))
        self.viewer.camera.center = tuple(world[-2:])
        canvas = getattr(self.viewer, "_canvas_size", (600, 600)) or (600, 600)
        scale = float(np.max(np.abs(layer.scale[-2:]))) if layer.scale is not None else 1.0
        self.viewer.camera.zoom = 0.5 * min(canvas) / max(blend.size * scale, 8.0)
