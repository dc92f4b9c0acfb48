"""Detection panel: choose a field layer and sep parameters, detect off the UI thread, show the results."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import _viewer_hooks
from .._reader import mask_layer_data
from ..blends import find_blends
from ..detection import DETECTION_PRESETS, iter_detection
from ..errors import DeblendInputError
from ..field import Field
from ..layers import detection_layers
from ._session import _Detections, session_for

_INT_PARAMS = {"minarea": (1, 10_000), "deblend_nthresh": (1, 256), "back_size": (2, 4096), "back_filter_size": (1, 15)}
_FLOAT_PARAMS = {"thresh": (0.01, 1000.0, 2), "deblend_cont": (0.0, 1.0, 5), "clean_param": (0.1, 10.0, 2)}


def field_from_layer(layer: Any) -> Field:
    """The Field behind an image layer: the reader's (all bands), or one made from the layer's 2-D data."""
    field = _viewer_hooks.field_of_layer(layer)
    if field is not None:
        return field
    data = np.asarray(layer.data)
    if data.ndim != 2:
        raise DeblendInputError(
            f"layer {layer.name!r} has {data.ndim}-D data {data.shape}: expected a 2-D image "
            "(open FITS files with the napari-deblend reader for multi-band fields)"
        )
    return Field(data.astype(np.float32), path=[], meta={"layer": layer.name})


class DetectionWidget(QWidget):
    """Dock widget: sep background + extraction with the ``sextractor`` or ``des`` preset."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        _viewer_hooks.install(napari_viewer)
        self._worker = None

        self.layer_combo = QComboBox()
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(DETECTION_PRESETS))
        self.params: dict[str, QSpinBox | QDoubleSpinBox] = {}
        form = QFormLayout()
        form.addRow("Image", self.layer_combo)
        form.addRow("Preset", self.preset_combo)
        for name, (lo, hi) in _INT_PARAMS.items():
            box = QSpinBox()
            box.setRange(lo, hi)
            self.params[name] = box
            form.addRow(name, box)
        for name, (lo, hi, decimals) in _FLOAT_PARAMS.items():
            box = QDoubleSpinBox()
            box.setDecimals(decimals)
            box.setRange(lo, hi)
            box.setSingleStep(10 ** (-decimals + 1) if decimals > 2 else 0.1)
            self.params[name] = box
            form.addRow(name, box)
        self.clean_box = QCheckBox("clean")
        form.addRow("", self.clean_box)
        self.detect_button = QPushButton("Detect")
        self.progress = QProgressBar()
        self.progress.setRange(0, 4)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.detect_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.preset_combo.currentTextChanged.connect(self._load_preset)
        self.detect_button.clicked.connect(self.run)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._load_preset(self.preset_combo.currentText())

    # ---- parameters -------------------------------------------------------------------------
    def _refresh_layers(self, event=None) -> None:
        current = self.layer_combo.currentText()
        self.layer_combo.clear()
        names = [layer.name for layer in self.viewer.layers if layer._type_string == "image" and layer.ndim == 2]
        # fields read by the plugin first, derived layers (our own outputs) last
        names.sort(key=lambda n: _viewer_hooks.field_of_layer(self.viewer.layers[n]) is None)
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)

    def _load_preset(self, name: str) -> None:
        preset = DETECTION_PRESETS[name]
        for key, box in self.params.items():
            box.setValue(getattr(preset, key))
        self.clean_box.setChecked(preset.clean)

    def parameters(self) -> dict[str, Any]:
        """The preset name and the parameter values shown in the panel."""
        values: dict[str, Any] = {key: box.value() for key, box in self.params.items()}
        values["clean"] = self.clean_box.isChecked()
        return {"preset": self.preset_combo.currentText(), **values}

    # ---- running ------------------------------------------------------------------------------
    def run(self) -> Any:
        """Start detection on the chosen layer off the UI thread; returns the worker."""
        name = self.layer_combo.currentText()
        if not name:
            show_error("napari-deblend: open an image (FITS) first: no 2-D image layer to detect on")
            return None
        layer = self.viewer.layers[name]
        try:
            field = field_from_layer(layer)
        except DeblendInputError as exc:
            show_error(f"napari-deblend: {exc}")
            return None
        params = self.parameters()
        preset = params.pop("preset")
        self.detect_button.setEnabled(False)
        self.progress.setValue(0)
        self.status.setText(f"detecting on {field.name} ({field.n_bands} band(s))…")

        @thread_worker(ignore_errors=True)  # errors become notifications in _failed
        def work():
            result = yield from iter_detection(field, preset, **params)
            yield 3, 4, "blends"
            blends = find_blends(result.catalog, result.segmentation)
            return field, result, blends

        worker = work()
        worker.yielded.connect(lambda step: self.progress.setValue(step[0]))
        worker.returned.connect(lambda out: self._show(layer, *out))
        worker.errored.connect(self._failed)
        worker.finished.connect(lambda: self.detect_button.setEnabled(True))
        self._worker = worker
        worker.start()
        return worker

    def _show_mask(self, field: Field, source_layer: Any) -> None:
        """Add the field's mask layer (masked pixels in red) unless the reader already did."""
        data = mask_layer_data(field)
        if data is None or data[1]["name"] in self.viewer.layers:
            return
        pixels, kwargs, _ = data
        self.viewer.add_labels(pixels, **kwargs, scale=source_layer.scale, translate=source_layer.translate)

    def _failed(self, exc: Exception) -> None:
        self.progress.setValue(0)
        message = str(exc) if isinstance(exc, DeblendInputError) else f"{type(exc).__name__}: {exc}"
        self.status.setText(f"failed: {message}")
        show_error(f"napari-deblend detection: {message}")

    def _show(self, source_layer: Any, field: Field, result, blends) -> None:
        prefix = field.name if field.path else source_layer.name
        old = self.session.detections
        if old is not None:
            for layer in old.layers.values():
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
        made = {}
        for data, kwargs, kind in detection_layers(result, prefix, blends):
            kwargs = {**kwargs, "scale": source_layer.scale, "translate": source_layer.translate}
            made[kind] = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        self._show_mask(field, source_layer)
        self.viewer.layers.selection.active = source_layer
        self.progress.setValue(self.progress.maximum())
        n_in = sum(b.n_members for b in blends)
        text = f"{len(result.catalog)} detections, {len(blends)} blends ({n_in} sources in blends)"
        masked = int(field.mask.any(axis=0).sum())
        if masked or field.variance is not None:
            noise = "per-pixel noise plane" if field.variance is not None else "global noise"
            text += f"; {noise}, {masked} masked pixels"
        self.status.setText(text)
        show_info(f"napari-deblend: {prefix}: {text}")
        self.session.set_detections(_Detections(field=field, result=result, blends=blends,
                                                source_layer=source_layer, layers=made))
