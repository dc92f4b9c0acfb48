"""Deblend panel: choose a model and device, deblend the selected blend or every blend in view.

Besides sep's blends, single detections are offered to the deblender
("Candidates": those larger than a point source by default, all of them, or
none; see :mod:`napari_deblend.candidates`): *Deblend all in view* includes
them, and a detection the model splits is listed by the Blend browser's
filter "blends sep missed".

Work runs in a worker thread (one blend per step, with progress and Cancel).
Results are shown as they arrive (see :mod:`._result_layers`): painted into
four field-wide layers per model, and as per-component detail layers for the
selected blend, one layer change per event-loop turn so the viewer stays
responsive. Keys: ``d`` deblends the selected blend, ``1``-``9``
toggle the selected blend's component layers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QSettings, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import _viewer_hooks
from ..deblenders.base import (
    DeblendError,
    available_deblenders,
    available_devices,
    get_deblender,
    takes_positions,
)
from ..deblending import deblend, positions_in_window, stamp_window
from ..errors import DeblendInputError
from ..layers import result_layer_name
from ._clicked_positions import ClickedPositions
from ._gc_hold import hold_collector, hold_new_objects, release_collector
from ._progress import ProgressBar
from ._result_layers import ResultLayers
from ._session import DeblendSession, session_for

SETTINGS_KEY = "napari-deblend/deblend-panel"
# the panel shows a run as busy (buttons, status) only once it has lasted this long: a one-blend run is
# usually done by then, and repainting the panel as it starts would only slow it down
BUSY_DELAY_MS = 300
#: Choices of the "Positions" box: sources found by the model, or clicked on the canvas.
POSITION_CHOICES = ("found by the model", "clicked on the canvas")
#: Choices of the "Candidates" box: text shown -> offering mode (napari_deblend.candidates).
CANDIDATE_CHOICES = {
    "blends + detections larger than a point source": "extended",
    "blends + every detection": "all",
    "sep's blends only": "blends",
}


def model_summary(name: str) -> str:
    """One paragraph from a model's card: preset, training and headline metrics (for tooltips)."""
    descriptions = available_deblenders()
    lines = [descriptions.get(name, "")]
    try:
        card = get_deblender(name, device="cpu").model_card()
    except DeblendError as exc:
        return f"{lines[0]}\n(unavailable: {exc})"
    if card:
        trained = (f"preset {card.get('preset', '?')}; trained {card.get('total_minutes', card.get('minutes', '?'))} "
                   f"min on {card.get('device', '?')}; commit {str(card.get('git_commit', '?'))[:8]}")
        later = [f"{label}: commit {str(card[key].get('git_commit', '?'))[:8]}"
                 for key, label in (("joint_refiner", "joint refiner"), ("flux_calibration", "flux calibration"),
                                    ("split_verifier", "split verifier"))
                 if isinstance(card.get(key), dict)]
        if later:
            trained += f" ({'; '.join(later)})"
        lines.append(trained)
        metrics = (card.get("metrics") or {}).get("by_blend_multiplicity", {})
        for k, m in sorted(metrics.items()):
            ranks = m.get("ranks", m)
            text = json.dumps(ranks)[:200] if not isinstance(ranks, dict) else ", ".join(
                f"rank {rank}: recovered {v.get('recovered', float('nan')):.0%}, "
                f"σ68 {v.get('scatter', float('nan')):.3f}"
                for rank, v in list(ranks.items())[:2] if isinstance(v, dict)
            )
            lines.append(f"{k}-galaxy blends: {text}")
    return "\n".join(line for line in lines if line)


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch's CPU operators on ``n`` threads inside the block (restored after).

    On a small CPU the viewer's own thread needs a core: with as many torch
    threads as cores, torch's threads wait on each other whenever the UI thread
    runs, and one blend takes several times longer than on one thread.
    """
    try:
        import torch
    except ImportError:  # no torch: nothing to limit
        yield
        return
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def blends_in_view(session: DeblendSession, viewer: Any) -> list[int]:
    """Ids of the blends and offered single detections whose centre lies inside the visible part of the canvas."""
    if session.detections is None:
        return []
    groups = session.groups
    if not groups:
        return []
    center = np.asarray(viewer.camera.center[-2:], float)
    canvas = np.asarray(getattr(viewer, "_canvas_size", (600, 600)) or (600, 600), float)
    half = canvas / max(viewer.camera.zoom, 1e-9) / 2.0
    layer = session.detections.source_layer
    centres = np.array([b.center for b in groups], float)
    if layer is not None:  # (data_to_world takes one position at a time)
        centres = np.array([np.asarray(layer.data_to_world(c), float)[-2:] for c in centres])
    world = centres[:, -2:]
    inside = np.all(np.abs(world - center) <= half, axis=1)
    return [b.id for b, ok in zip(groups, inside) if ok]


class DeblendWidget(QWidget):
    """Dock widget: run a deblender on blends and show its components, residual, masks and positions."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: DeblendSession = session_for(napari_viewer)
        self._done_count = 0  # blends of the current run done (shown by the progress bar once the run is long)
        _viewer_hooks.install(napari_viewer)
        self._worker = None
        self._closed = False
        self.result_layers = ResultLayers(napari_viewer, self.session)
        self._collector_held = False  # see _gc_hold: during a run and until its results are shown
        self.failures: list[str] = []

        self.model_combo = QComboBox()
        for name in available_deblenders():
            self.model_combo.addItem(name)
            self.model_combo.setItemData(self.model_combo.count() - 1, model_summary(name), 3)  # ToolTipRole
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *available_devices()])
        self.keep_box = QCheckBox("keep previous results")
        self.candidates_combo = QComboBox()
        self.candidates_combo.addItems(list(CANDIDATE_CHOICES))
        self.candidates_combo.setToolTip(
            "Which detections the deblender sees besides sep's blends (Deblend all in view, Blend browser): "
            "by default every detection whose footprint is larger than a point source's at its S/N, where "
            "the model's own count finds the galaxies sep merged")
        self.clicked = ClickedPositions(napari_viewer, self.session)
        self._told: set[str] = set()
        self.positions_combo = QComboBox()
        self.positions_combo.addItems(POSITION_CHOICES)
        self.positions_combo.setToolTip(
            "vae and unet deblend around the positions you click (the 'clicked positions' layer) "
            "on each blend's stamp; peeling and sextractor always find their own sources")
        self.click_button = QPushButton("Click positions")
        self.click_button.setToolTip("Add points on galaxy centres (napari's Points add mode)")
        self.clear_clicks_button = QPushButton("Clear")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.selected_button = QPushButton("Deblend selected")
        self.view_button = QPushButton("Deblend all in view")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = ProgressBar()  # paints asynchronously: no window repaint per step
        self.progress.setValue(0)
        self.status = QLabel("Select a blend (Blend browser or click), then Deblend.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Model", self.model_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("", self.keep_box)
        form.addRow("Candidates", self.candidates_combo)
        positions_row = QHBoxLayout()
        positions_row.addWidget(self.positions_combo, stretch=1)
        positions_row.addWidget(self.click_button)
        positions_row.addWidget(self.clear_clicks_button)
        form.addRow("Positions", positions_row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.selected_button)
        buttons.addWidget(self.view_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.info)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self._restore_settings()
        self.model_combo.currentTextChanged.connect(self._model_changed)
        self.device_combo.currentTextChanged.connect(lambda _: self._save_settings())
        self.keep_box.toggled.connect(lambda _: self._save_settings())
        self.positions_combo.currentTextChanged.connect(lambda _: self._save_settings())
        self.candidates_combo.currentTextChanged.connect(self._candidates_changed)
        self.click_button.clicked.connect(self.click_positions)
        self.clear_clicks_button.clicked.connect(self.clicked.clear)
        self.selected_button.clicked.connect(self.deblend_selected)
        self.view_button.clicked.connect(self.deblend_in_view)
        self.cancel_button.clicked.connect(self.cancel)
        self._model_changed(self.model_combo.currentText())
        self.destroyed.connect(self._on_close)
        self.session.blend_selected.connect(self.result_layers.select)
        self.session.detected.connect(lambda _: self.result_layers.forget())
        self.viewer.bind_key("d", lambda v: self.deblend_selected(), overwrite=True)
        for digit in range(1, 10):
            self.viewer.bind_key(str(digit), self._toggle_component(digit), overwrite=True)

    # ---- settings --------------------------------------------------------------------------------
    def _settings(self) -> QSettings:
        return QSettings("napari-deblend", "napari-deblend")

    def _restore_settings(self) -> None:
        settings = self._settings()
        model = settings.value(f"{SETTINGS_KEY}/model", "", type=str)
        if model and self.model_combo.findText(model) >= 0:
            self.model_combo.setCurrentText(model)
        device = settings.value(f"{SETTINGS_KEY}/device", "auto", type=str)
        if self.device_combo.findText(device) >= 0:
            self.device_combo.setCurrentText(device)
        self.keep_box.setChecked(settings.value(f"{SETTINGS_KEY}/keep", False, type=bool))
        positions = settings.value(f"{SETTINGS_KEY}/positions", POSITION_CHOICES[0], type=str)
        if self.positions_combo.findText(positions) >= 0:
            self.positions_combo.setCurrentText(positions)
        candidates = settings.value(f"{SETTINGS_KEY}/candidates", "", type=str)
        if self.candidates_combo.findText(candidates) >= 0:
            self.candidates_combo.setCurrentText(candidates)
        self.session.set_candidate_mode(self.candidate_mode)

    def _save_settings(self) -> None:
        settings = self._settings()
        settings.setValue(f"{SETTINGS_KEY}/model", self.model_combo.currentText())
        settings.setValue(f"{SETTINGS_KEY}/device", self.device_combo.currentText())
        settings.setValue(f"{SETTINGS_KEY}/keep", self.keep_box.isChecked())
        settings.setValue(f"{SETTINGS_KEY}/positions", self.positions_combo.currentText())
        settings.setValue(f"{SETTINGS_KEY}/candidates", self.candidates_combo.currentText())

    @property
    def candidate_mode(self) -> str:
        """The offering mode chosen in the "Candidates" box (``"extended"``, ``"all"`` or ``"blends"``)."""
        return CANDIDATE_CHOICES[self.candidates_combo.currentText()]

    def _candidates_changed(self, _text: str) -> None:
        self._save_settings()
        self.session.set_candidate_mode(self.candidate_mode)

    def _model_changed(self, name: str) -> None:
        summary = model_summary(name) if name else ""
        self.info.setText(summary)
        self.model_combo.setToolTip(summary)
        self._save_settings()

    # ---- clicked positions -----------------------------------------------------------------------
    def click_positions(self) -> Any:
        """Start clicking source positions: the "clicked positions" layer in add mode; uses them from now on."""
        self.positions_combo.setCurrentText(POSITION_CHOICES[1])
        return self.clicked.start()

    @property
    def use_clicked_positions(self) -> bool:
        """True when the deblenders that take positions get the clicked ones."""
        return self.positions_combo.currentText() == POSITION_CHOICES[1]

    def _clicked_points(self, model: str) -> Any:
        """Field ``(y, x)`` of the clicks to use with ``model`` (None: the model finds its sources)."""
        if not self.use_clicked_positions:
            return None
        try:
            takes = takes_positions(model)
        except DeblendError:
            return None  # the run reports the model's error
        if not takes:
            self._tell_once(f"napari-deblend: {model} finds its own sources; clicked positions are used by "
                            "the models that take positions (vae, unet)")
            return None
        points = self.clicked.field_points()
        if not len(points):
            self._tell_once("napari-deblend: no clicked positions yet (Click positions, then click on galaxy "
                            f"centres); {model} finds the sources itself")
            return None
        return points

    def _tell_once(self, message: str) -> None:
        """A notification shown once per panel (each one repaints the window: not on every click)."""
        if message not in self._told:
            self._told.add(message)
            show_info(message)

    # ---- running ---------------------------------------------------------------------------------
    def deblend_selected(self) -> Any:
        """Deblend the selected blend; returns the worker (None if nothing to do)."""
        if not self.session.selected_blend:
            show_info("napari-deblend: select a blend first (Blend browser, a click on a blend, or n / p)")
            return None
        return self.run([self.session.selected_blend])

    def deblend_in_view(self) -> Any:
        """Deblend every blend and offered single detection whose centre is in the current field of view."""
        ids = blends_in_view(self.session, self.viewer)
        if not ids:
            show_info("napari-deblend: no blend in view")
            return None
        return self.run(ids)

    def cancel(self) -> None:
        """Stop after the blend being deblended; results already shown stay, nothing half-made is added."""
        if self._worker is not None:
            self._worker.quit()
            self.status.setText("cancelling…")

    def run(self, blend_ids: list[int]) -> Any:
        """Deblend these blends off the UI thread, showing each result as it arrives."""
        detections = self.session.detections
        if detections is None:
            show_error("napari-deblend: run the Detection panel first")
            return None
        if self._worker is not None:
            show_info("napari-deblend: a deblending run is in progress (Cancel it first)")
            return None
        model = self.model_combo.currentText()
        device = self.device_combo.currentText()
        field, background = detections.field, detections.result.background
        session = self.session
        blends = [self.session.blend(i) for i in blend_ids]
        clicked = self._clicked_points(model)
        self.failures = []

        def field_positions(blend: Any) -> Any:
            if clicked is None:
                return None
            on_stamp = positions_in_window(clicked, stamp_window(blend, model, device))
            return on_stamp if len(on_stamp) else None  # no click on this stamp: the model finds them

        @thread_worker(ignore_errors=True)
        def work():
            with torch_threads(1):  # leave a core to the UI thread
                for i, blend in enumerate(blends):
                    try:
                        result = deblend(field, blend, model=model, device=device, background=background,
                                         field_positions=field_positions(blend))
                        result = session.own_children(result)  # the group's own galaxies, parents, ids
                    except Exception as exc:  # one failing blend must not stop the others
                        reason = str(exc) if isinstance(exc, DeblendInputError) else f"{type(exc).__name__}: {exc}"
                        yield i, blend.id, None, reason
                    else:
                        yield i, blend.id, result, None

        worker = work()
        worker.yielded.connect(lambda item: self._one_done(model, len(blends), *item))
        worker.errored.connect(lambda exc: self._record_failure(0, f"{type(exc).__name__}: {exc}"))
        worker.finished.connect(lambda: self._finished(model, len(blends)))
        self._worker = worker
        self.result_layers.hold_mosaics(len(blends) > 1)  # a run of many: the mosaics are painted at its end
        self._hold_collector()  # until its results are shown: full garbage collections stay short
        worker.start()
        self._done_count = 0

        def show_busy() -> None:  # a run over by then never repaints the panel for its start (each paint
            if self._worker is worker and not self._closed:  # holds the UI thread and the GIL)
                try:
                    self.progress.setRange(0, len(blends))
                    self.progress.setValue(self._done_count)
                    self._set_running(True)
                    self.status.setText(f"deblending {len(blends)} blend(s) with {model}…")
                except RuntimeError:  # the panel is gone
                    pass

        QTimer.singleShot(BUSY_DELAY_MS, show_busy)
        return worker

    @property
    def busy(self) -> bool:
        """True while a run is going or its results are still being shown."""
        return self._worker is not None or self.result_layers.busy

    def _on_close(self, *args) -> None:
        """The panel (or its viewer) is going away: stop the worker, show nothing more."""
        self._closed = True
        self.result_layers.close()
        self._release_collector()
        if self._worker is not None:
            self._worker.quit()

    def _set_running(self, running: bool) -> None:
        self.selected_button.setEnabled(not running)
        self.view_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _record_failure(self, blend_id: int, reason: str) -> None:
        self.failures.append(f"blend {blend_id}: {reason}")

    def _viewer_closed(self) -> bool:
        """True once the viewer is closed (napari forgets closed viewers); stops the worker then."""
        instances = getattr(type(self.viewer), "_instances", None)
        if not self._closed and instances is not None and self.viewer not in instances:
            self._on_close()
        return self._closed

    def _one_done(self, model: str, total: int, index: int, blend_id: int, result, reason) -> None:
        if self._viewer_closed():
            return  # the viewer was closed while the worker ran: nothing to show
        try:
            self._done_count = index + 1
            self.progress.setRange(0, total)
            self.progress.setValue(index + 1)
            if result is None:
                self._record_failure(blend_id, reason)
                show_error(f"napari-deblend: {model} failed on blend {blend_id}: {reason}")
                return
            self.session.add_result(blend_id, model, result, keep=self.keep_box.isChecked())
            self.result_layers.add(model, result)
        except RuntimeError:  # Qt objects already deleted: the viewer is closing
            self._on_close()

    def _hold_collector(self) -> None:
        if not self._collector_held:
            hold_collector()
            self._collector_held = True

    def _release_collector(self) -> None:
        if self._collector_held:
            self._collector_held = False
            release_collector()

    def _finished(self, model: str, total: int) -> None:
        self._worker = None
        if self._viewer_closed():
            self._release_collector()
            return
        if self._collector_held:
            hold_new_objects()  # the run's own objects too, while its results are shown
        self.result_layers.hold_mosaics(False)
        self.result_layers.when_idle(self._release_collector)
        try:
            self._set_running(False)
        except RuntimeError:
            return
        done = self.progress.value()
        text = f"{model}: {done - len(self.failures)} of {total} blend(s) deblended"
        if self.failures:
            text += f"; {len(self.failures)} failed — " + "; ".join(self.failures[:3])
        if done < total:
            text += " (cancelled)"
        self.status.setText(text)

    # ---- layers ----------------------------------------------------------------------------------
    def _toggle_component(self, digit: int):
        def toggle(viewer: Any) -> None:
            blend_id = self.session.selected_blend
            prefix = result_layer_name(blend_id, self.model_combo.currentText(), f"component {digit}")
            for layer in viewer.layers:
                if layer.name.startswith(prefix):
                    layer.visible = not layer.visible

        return toggle
