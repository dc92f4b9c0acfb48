"""Comparison panel: the selected blend's result side by side with SExtractor (and truth), figure + table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import DeblendInputError
from ._session import DeblendSession, session_for

TABLE_COLUMNS = (
    "component", "x", "y", "flux", "mag", "mu20", "mu02", "mu11", "e1", "e2",
    "sep_flux", "sep_mag", "sep_dflux_frac", "sep_e1", "sep_e2", "sep_status",
    "truth_flux", "dflux_frac", "quality",
)


def comparison_for(
    session: DeblendSession,
    blend_id: int,
    model: str,
    other: str | None = None,
    truth: Any = None,
    figure: Any = None,
    layout: str = "constrained",
):
    """The comparison figure and measurement table of one blend's result (no Qt).

    ``figure``, when given, is cleared and drawn into (the panel's embedded figure).

    Returns
    -------
    figure : matplotlib.figure.Figure
    table : astropy.table.Table
    """
    from ..measurements import measure
    from ..plots import comparison_figure

    results = session.results_for(blend_id)
    if model not in results:
        raise DeblendInputError(f"blend {blend_id} has no {model} result yet: deblend it first")
    result = results[model]
    if model == "sextractor":
        sextractor = None  # the result is SExtractor's own: no second SExtractor row
    else:
        sextractor = results.get("sextractor")
        if sextractor is None:
            from ..deblenders.base import get_deblender

            sextractor = get_deblender("sextractor").deblend_batch(result.blend[None], noise=result.noise)[0]
    table = measure(result, truth=truth, sextractor=sextractor if sextractor is not None else True)
    other_result = results.get(other) if other and other != model else None
    figure = comparison_figure(
        result, sextractor=sextractor, truth=truth, other=other_result, figure=figure, layout=layout
    )
    return figure, table


class ComparisonWidget(QWidget):
    """Dock widget: figure (blend | components | residual | SExtractor) and the per-component table."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = napari_viewer
        self.session: DeblendSession = session_for(napari_viewer)
        self.figure = Figure(figsize=(7, 3.2))
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(420)
        self.setMinimumWidth(640)
        self.model_combo = QComboBox()
        self.other_combo = QComboBox()
        self.table = QTableWidget(0, 0)
        self.table.setSortingEnabled(False)
        self.title = QLabel("Deblend a blend to compare it with SExtractor.")
        self.title.setWordWrap(True)
        self.current_table = None
        copy_button = QPushButton("Copy as text")
        ecsv_button = QPushButton("Export ECSV…")
        figure_button = QPushButton("Export figure…")

        top = QHBoxLayout()
        top.addWidget(QLabel("Model"))
        top.addWidget(self.model_combo)
        top.addWidget(QLabel("compare with"))
        top.addWidget(self.other_combo)
        buttons = QHBoxLayout()
        for b in (copy_button, ecsv_button, figure_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(top)
        layout.addWidget(self.canvas, stretch=3)
        layout.addWidget(self.table, stretch=2)
        layout.addLayout(buttons)

        copy_button.clicked.connect(self.copy_text)
        ecsv_button.clicked.connect(lambda: self.export_table())
        figure_button.clicked.connect(lambda: self.export_figure())
        self.model_combo.currentTextChanged.connect(lambda _: self.refresh())
        self.other_combo.currentTextChanged.connect(lambda _: self.refresh())
        self.session.blend_selected.connect(lambda _: self._fill_models())
        self.session.deblended.connect(self._on_deblended)

    def _on_deblended(self, blend_id: int, model: str) -> None:
        if blend_id == self.session.selected_blend or not self.session.selected_blend:
            if not self.session.selected_blend:
                self.session.selected_blend = blend_id
            self._fill_models(prefer=model)

    def _fill_models(self, prefer: str | None = None) -> None:
        models = sorted(self.session.results_for(self.session.selected_blend))
        current = prefer or self.model_combo.currentText()
        for combo, choices in ((self.model_combo, models), (self.other_combo, ["—", *models])):
            combo.blockSignals(True)
            keep = combo.currentText()
            combo.clear()
            combo.addItems(choices)
            if combo is self.model_combo and current in choices:
                combo.setCurrentText(current)
            elif keep in choices:
                combo.setCurrentText(keep)
            combo.blockSignals(False)
        self.refresh()

    def refresh(self) -> None:
        """Redraw the figure and table for the selected blend and model."""
        blend_id, model = self.session.selected_blend, self.model_combo.currentText()
        if not blend_id or not model:
            self.figure.clear()
            self.canvas.draw_idle()
            self.table.setRowCount(0)
            self.title.setText(f"blend {blend_id}: not deblended yet" if blend_id else "No blend selected.")
            return
        other = self.other_combo.currentText()
        try:
            figure, table = comparison_for(
                self.session, blend_id, model, None if other == "—" else other, figure=self.figure, layout="fast"
            )
        except DeblendInputError as exc:
            self.title.setText(str(exc))
            return
        self.canvas.draw_idle()  # comparison_for drew into self.figure
        self._show_table(table)
        result = self.session.results_for(blend_id)[model]
        edge = " — at the image edge (padded)" if result.info.get("padded") else ""
        self.title.setText(f"blend {blend_id} · {model} · quality {result.quality or 'n/a'} · "
                           f"{result.n_components} component(s){edge}")

    def _show_table(self, table) -> None:
        self.current_table = table
        columns = [c for c in TABLE_COLUMNS if c in table.colnames]
        self.table.clear()
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(table))
        for r, row in enumerate(table):
            for c, col in enumerate(columns):
                value = row[col]
                text = _format(col, value)
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    # ---- export ----------------------------------------------------------------------------------
    def copy_text(self) -> str:
        """Copy the table as tab-separated text to the clipboard; returns the text."""
        from ..plots import comparison_text

        if self.current_table is None:
            return ""
        text = comparison_text(self.current_table)
        QApplication.clipboard().setText(text)
        show_info("napari-deblend: comparison table copied")
        return text

    def export_table(self, path: str | Path | None = None) -> Path | None:
        """Write the table as ECSV (asks for a file name when ``path`` is None)."""
        if self.current_table is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export comparison table", "comparison.ecsv", "ECSV (*.ecsv)")
            if not path:
                return None
        self.current_table.write(path, format="ascii.ecsv", overwrite=True)
        return Path(path)

    def export_figure(self, path: str | Path | None = None) -> Path | None:
        """Save the figure as PNG or PDF (asks for a file name when ``path`` is None)."""
        from ..plots import save_figure

        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export figure", "comparison.png", "PNG (*.png);;PDF (*.pdf)")
            if not path:
                return None
        blend_id, model, other = self.session.selected_blend, self.model_combo.currentText(), self.other_combo.currentText()
        try:
            # exports get the careful (slower) constrained layout, not the panel's fast one
            figure, _ = comparison_for(self.session, blend_id, model, None if other == "—" else other)
            save_figure(figure, path)
        except DeblendInputError as exc:
            show_error(f"napari-deblend: {exc}")
            return None
        return Path(path)


def _format(column: str, value: Any) -> str:
    if isinstance(value, str | np.str_):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not np.isfinite(v):
        return "—"
    if "flux" in column and "frac" not in column:
        return f"{v:.0f}"
    if column in ("x", "y"):
        return f"{v:.2f}"
    return f"{v:.3f}"
