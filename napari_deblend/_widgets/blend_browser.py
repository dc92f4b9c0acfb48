"""Blend browser: a sortable table of what can be deblended; selecting one zooms to it. Keys ``n``/``p`` step through.

Rows are sep's blends and the single detections offered to the deblender
(see :mod:`napari_deblend.candidates`). Once deblended, a row shows how many
galaxies the model found; a detection split into several is a blend sep
missed, which the filter "blends sep missed" lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
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

COLUMNS = ("blend", "kind", "members", "galaxies", "mag", "blendedness", "size (px)", "x", "y", "label")
KIND_COLUMN = COLUMNS.index("kind")
GALAXIES_COLUMN = COLUMNS.index("galaxies")
LABEL_COLUMN = COLUMNS.index("label")
#: Row kinds.
SEP_BLEND, SINGLE = "sep blend", "detection"
#: Filters of the table: name -> which rows it shows.
FILTERS = ("all", "sep blends", "single detections", "blends sep missed")
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
        self.table.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)  # sep's blends first
        self.table.setSortingEnabled(True)
        self.unlabelled_only = QCheckBox("unlabelled only")
        self.unlabelled_only.setToolTip("Hide the blends that already have a label (Label panel)")
        self.filter_combo = QComboBox()
        self.filter_combo.addItems(FILTERS)
        self.filter_combo.setToolTip(
            "sep blends: groups sep split; single detections: detections offered alone (Deblend panel, "
            "Candidates); blends sep missed: groups in which a deblended model found two or more galaxies "
            "in one detection")
        filters = QHBoxLayout()
        filters.addWidget(self.filter_combo, stretch=1)
        filters.addWidget(self.unlabelled_only)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(filters)
        layout.addWidget(self.table)

        self.table.itemSelectionChanged.connect(self._row_selected)
        self.session.detected.connect(self._fill)
        self.session.blend_selected.connect(self._show_selection)
        self.session.labels_changed.connect(self._show_labels)
        self.session.candidates_changed.connect(lambda: self._fill(self.session))
        self.session.deblended.connect(self._show_galaxies)
        self.unlabelled_only.toggled.connect(lambda _checked: self._show_labels())
        self.filter_combo.currentTextChanged.connect(lambda _text: self._show_labels())
        self.table.horizontalHeader().sortIndicatorChanged.connect(lambda *_: self._remember_order())
        self.viewer.bind_key("n", lambda v: self.session.step(+1), overwrite=True)
        self.viewer.bind_key("p", lambda v: self.session.step(-1), overwrite=True)
        self.viewer.mouse_drag_callbacks.append(self._on_click)
        if self.session.detections is not None:
            self._fill(self.session)

    # ---- table ----------------------------------------------------------------------------------
    def _fill(self, session: DeblendSession) -> None:
        groups = session.groups
        self._id_items: dict[int, QTableWidgetItem] = {}
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(groups))
        for row, blend in enumerate(groups):
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
            columns = [c for c in range(len(COLUMNS)) if c not in (KIND_COLUMN, GALAXIES_COLUMN, LABEL_COLUMN)]
            for col, value, text in zip(columns, values, texts):
                self.table.setItem(row, col, _NumberItem(float(value), text))
            self._id_items[blend.id] = self.table.item(row, 0)
            for col, text in ((KIND_COLUMN, SEP_BLEND if blend.n_members > 1 else SINGLE), (LABEL_COLUMN, "")):
                item = QTableWidgetItem(text)
                item.setFlags(item.flags() & ~Qt.ItemIsEditable)
                self.table.setItem(row, col, item)
            self.table.setItem(row, GALAXIES_COLUMN, _NumberItem(float("nan"), ""))
        self.table.setSortingEnabled(True)
        for blend_id in {b for b, _ in session.results}:
            self._show_galaxies(blend_id, "")
        self._show_labels()
        n_sources = len(session.detections.result.catalog) if session.detections else 0
        self.summary.setText(
            f"{len(session.blends)} blends and {len(session.singles)} single detections offered, among "
            f"{n_sources} detections — click a row or a blend; n / p step"
        )

    def _row_of(self, blend_id: int) -> int:
        """The current table row of a group (-1 if not listed)."""
        item = getattr(self, "_id_items", {}).get(int(blend_id))
        return item.row() if item is not None else -1

    def _show_galaxies(self, blend_id: int, _model: str) -> None:
        """The number of galaxies the latest result found in a group (with the model), and the missed-blend mark."""
        row = self._row_of(blend_id)
        results = self.session.results_for(blend_id)
        if row < 0 or not results:
            return
        split = self.session.split_detections(blend_id)
        texts = []
        for model, result in results.items():
            mark = " · sep missed" if split.get(model) else ""
            texts.append(f"{result.n_components} ({model}){mark}")
        latest = list(results.values())[-1].n_components
        self.table.setSortingEnabled(False)
        item = self.table.item(row, GALAXIES_COLUMN)
        item.value = float(latest)
        item.setText("; ".join(texts))
        self.table.setSortingEnabled(True)
        self._filter_row(self._row_of(blend_id))
        self._remember_order()

    def _show_labels(self) -> None:
        """Fill the label column from the session's verdicts; show the rows of the filter (and unlabelled only)."""
        verdicts = self.session.blend_verdicts
        self.table.setSortingEnabled(False)
        for row in range(self.table.rowCount()):
            self.table.item(row, LABEL_COLUMN).setText(verdicts.get(int(self.table.item(row, 0).value), ""))
            self._filter_row(row)
        self.table.setSortingEnabled(True)
        self._remember_order()

    def _filter_row(self, row: int) -> None:
        """Show or hide one row by the filter and the "unlabelled only" box."""
        if row < 0:
            return
        kind = self.table.item(row, KIND_COLUMN).text()
        shown = {
            "all": True,
            "sep blends": kind == SEP_BLEND,
            "single detections": kind == SINGLE,
            "blends sep missed": "sep missed" in self.table.item(row, GALAXIES_COLUMN).text(),
        }[self.filter_combo.currentText()]
        labelled = bool(self.table.item(row, LABEL_COLUMN).text())
        self.table.setRowHidden(row, bool(not shown or (self.unlabelled_only.isChecked() and labelled)))

    def shown_ids(self) -> list[int]:
        """Ids of the rows shown, top to bottom."""
        return [int(self.table.item(row, 0).value) for row in range(self.table.rowCount())
                if not self.table.isRowHidden(row)]  # fmt: skip

    def _remember_order(self) -> None:
        """n / p step through the rows shown, in the table's order."""
        self.session.browse_order = self.shown_ids() if self.filter_combo.currentText() != "all" else []

    def _row_selected(self) -> None:
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        if not rows:
            return
        blend_id = int(self.table.item(rows.pop(), 0).value)
        if blend_id != self.session.selected_blend:
            self.session.select(blend_id)

    def select_row_of(self, blend_id: int) -> None:
        """Select the table row of a blend without re-announcing the selection."""
        row = self._row_of(blend_id)
        if row >= 0:
            self.table.blockSignals(True)
            self.table.selectRow(row)
            self.table.blockSignals(False)
            self.table.scrollToItem(self.table.item(row, 0))

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
