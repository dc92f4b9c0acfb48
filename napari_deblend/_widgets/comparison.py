"""Comparison panel: the selected blend's result side by side with SExtractor (and truth), figure + table."""

from __future__ import annotations

import warnings
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

from .._extras import MissingExtraError
from ..errors import DeblendInputError
from ._figure_view import FigureView, render_figure_fast
from ._session import DeblendSession, session_for

TABLE_COLUMNS = (
    "component", "x", "y", "flux", "mag", "mu20", "mu02", "mu11", "e1", "e2",
    "sep_flux", "sep_mag", "sep_dflux_frac", "sep_e1", "sep_e2", "sep_status",
    "truth_flux", "dflux_frac", "quality", "p_galaxy",
)


def comparison_for(
    session: DeblendSession,
    blend_id: int,
    model: str,
    other: str | None = None,
    truth: Any = "session",
    figure: Any = None,
    layout: str = "constrained",
):
    """The comparison figure and measurement table of one blend's result (no Qt).

    ``figure``, when given, is cleared and drawn into (the panel's embedded figure).
    ``truth`` is a :class:`~napari_deblend.measurements.Truth`, None for none, or
    ``"session"`` (default): redrawn from the session's truth catalogue when it has one.

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
    if isinstance(truth, str) and truth == "session":
        try:
            truth = session.truth_for(result)
        except MissingExtraError as exc:  # a core install cannot redraw simulated galaxies: no truth row
            warnings.warn(str(exc), stacklevel=2)
            truth = None
    if model == "sextractor":
        sextractor = None  # the result is SExtractor's own: no second SExtractor row
    else:
        sextractor = results.get("sextractor")
        if sextractor is None:
            from ..measurements import sextractor_on_blend

            sextractor = sextractor_on_blend(result)
    field = session.detections.field if session.detections is not None else None
    zero_point = field.zero_point if field is not None else None
    table = measure(result, truth=truth, sextractor=sextractor if sextractor is not None else True,
                    preset=field.preset if field is not None else None, zero_point=zero_point)
    other_result = results.get(other) if other and other != model else None
    figure = comparison_figure(
        result, sextractor=sextractor, truth=truth, other=other_result, figure=figure, layout=layout,
        preset=field_display_preset(field),
    )
    return figure, table


def field_display_preset(field: Any) -> Any:
    """The field's preset carrying the field's own calibration and pixel scale, for figures.

    Figures take a preset's per-second zero point and exposure; this one's
    ``zero_point`` is ``field.zero_point - 2.5 log10(exposure)``, so that
    their magnitudes are the field's (the one calibration of
    :func:`napari_deblend.field.magnitude`), and the scale bar uses the
    field's pixel scale. None without a field (the default preset).
    """
    if field is None:
        return None
    import math
    from dataclasses import replace

    preset = field.preset
    return replace(preset, zero_point=float(field.zero_point) - 2.5 * math.log10(preset.exposure),
                   pixel_scale=float(field.pixel_scale))


class ComparisonWidget(QWidget):
    """Dock widget: figure (blend | components | residual | SExtractor) and the per-component table."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: DeblendSession = session_for(napari_viewer)
        self.figure = None  # the matplotlib Figure shown (built and rendered off the UI thread)
        self._figures: list[Any] = []
        self.canvas = FigureView()
        self.canvas.setMinimumHeight(420)
        self.canvas.resized.connect(self.refresh)
        self._worker = None
        self._again = False
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
        truth_button = QPushButton("Truth catalogue…")
        truth_button.setToolTip("Load the truth catalogue of a simulated field (written by "
                                "`napari-deblend simulate field`) to add a truth row and truth columns")

        top = QHBoxLayout()
        top.addWidget(QLabel("Model"))
        top.addWidget(self.model_combo)
        top.addWidget(QLabel("compare with"))
        top.addWidget(self.other_combo)
        buttons = QHBoxLayout()
        for b in (copy_button, ecsv_button, figure_button, truth_button):
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
        truth_button.clicked.connect(lambda: self.load_truth())
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

    @property
    def busy(self) -> bool:
        """True while a figure and table are being made."""
        return self._worker is not None

    def refresh(self) -> None:
        """Remake the figure and table for the selected blend and model (off the UI thread)."""
        from napari.qt.threading import thread_worker

        if self._worker is not None:  # one at a time: remake once this one is done
            self._again = True
            return
        blend_id, model = self.session.selected_blend, self.model_combo.currentText()
        if not blend_id or not model:
            self.figure = None
            self.canvas.set_pixels(None)
            self.table.setRowCount(0)
            self.title.setText(f"blend {blend_id}: not deblended yet" if blend_id else "No blend selected.")
            return
        other = self.other_combo.currentText()
        other = None if other in ("", "—") else other
        width, height = self.canvas.render_size()
        dpi = 100.0 * self.canvas.devicePixelRatioF()
        # two figures drawn in turn: the one shown stays whole while the other is redrawn. The panel's
        # figure is a mosaic (comparison_figure(layout="mosaic")): the panels composited with numpy into
        # one image of the canvas's size, its texts drawn by Qt; tens of milliseconds instead of a second
        # of matplotlib work that also holds the GIL against the UI thread
        figure = self._back_figure()

        @thread_worker(ignore_errors=True)
        def build():
            nonlocal figure
            if figure is None:  # the first comparison: matplotlib is imported (~0.7 s) off the UI thread
                figure = self._make_figures()
            figure.set_dpi(dpi)
            figure.set_size_inches(width / dpi, height / dpi)
            built, table = comparison_for(self.session, blend_id, model, other, figure=figure, layout="mosaic")
            return blend_id, model, built, table, render_figure_fast(built)

        worker = build()
        worker.returned.connect(self._show_built)
        worker.errored.connect(lambda exc: self.title.setText(str(exc) if isinstance(exc, DeblendInputError)
                                                                 else f"comparison failed: {type(exc).__name__}: {exc}"))
        worker.finished.connect(self._built)
        self._worker = worker
        worker.start()

    @property
    def panels(self) -> dict[str, tuple[int, int, int, int]]:
        """Panel label -> ``(x0, y0, width, height)`` in the figure's pixels, of the figure on show."""
        from ..plots import figure_mosaic

        mosaic = figure_mosaic(self.figure) if self.figure is not None else None
        return dict(mosaic.panels) if mosaic is not None else {}

    def _back_figure(self) -> Any:
        """The figure not on show, to draw the next comparison into (None before the first comparison)."""
        if not self._figures:
            return None
        return self._figures[1] if self.figure is self._figures[0] else self._figures[0]

    def _make_figures(self) -> Any:
        """Make the two figures drawn in turn (in the worker: one runs at a time); return the first."""
        from matplotlib.figure import Figure

        self._figures = [Figure(), Figure()]
        return self._figures[0]

    def _built(self) -> None:
        self._worker = None
        if self._again:
            self._again = False
            try:
                self.refresh()
            except RuntimeError:  # the panel is gone
                pass

    def _show_built(self, built: tuple) -> None:
        blend_id, model, figure, table, (pixels, texts) = built
        if (blend_id, model) != (self.session.selected_blend, self.model_combo.currentText()):
            return  # the selection moved on while this was made
        self.figure = figure
        self.canvas.set_pixels(pixels, texts)
        self._show_table(table)
        result = self.session.results_for(blend_id)[model]
        edge = " — at the image edge (padded)" if result.info.get("padded") else ""
        truth = f" · truth: {Path(self.session.truth_path).name}" if self.session.truth_path else ""
        self.title.setText(f"blend {blend_id} · {model} · quality {result.quality or 'n/a'} · "
                           f"{result.n_components} component(s){edge}{truth}")

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

    def load_truth(self, path: str | Path | None = None) -> bool:
        """Use a truth catalogue for the truth row (asks for a file when ``path`` is None)."""
        from ..truth import read_truth_catalog

        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Truth catalogue", "", "ECSV (*.ecsv);;All files (*)")
            if not path:
                return False
        try:
            table = read_truth_catalog(path)
        except DeblendInputError as exc:
            show_error(f"napari-deblend: {exc}")
            return False
        self.session.set_truth(table, str(path))
        self.refresh()
        return True

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
