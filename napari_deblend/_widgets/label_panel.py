"""Label panel: mark the selected blend, its components, or isolated galaxies as clean / bad / ambiguous.

Keys (bound on the viewer; they do not clash with ``n``/``p``, ``d``, ``1``-``9``,
nor with the image layer's ``c`` auto-contrast): ``g`` clean (good), ``b`` bad
(with the failure type chosen in the panel), ``a`` ambiguous, ``u`` undo,
``i`` next unlabelled isolated galaxy, ``k`` cycle the target through the
whole blend and its components. Every label is committed to the SQLite
database when made (see :mod:`napari_deblend.labels.store`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import _viewer_hooks
from ..errors import DeblendInputError
from ..labels import DEFAULT_DATABASE_NAME, FAILURE_TYPES, VERDICT_COLORS, LabelStore
from ..labels.book import FieldLabels
from ..labels.store import default_user, model_version
from ..labels.targets import isolated_galaxies
from ..layers import selection_rectangle
from ._session import DeblendSession, session_for

NO_MODEL = "(detections only)"
KEYS = {"g": "clean", "b": "bad", "a": "ambiguous"}


def _rgba(color: str) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(color)[0]


class LabelWidget(QWidget):
    """Dock widget: label blends, components and isolated galaxies into a SQLite database."""

    def __init__(self, napari_viewer: Any, database: str | Path | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: DeblendSession = session_for(napari_viewer)
        _viewer_hooks.install(napari_viewer)
        self.store: LabelStore | None = None
        self.book: FieldLabels | None = None
        self.target: tuple[str, int] | None = None  # ("blend", id) or ("isolated", catalogue id)

        self.database_label = QLabel("no database")
        self.database_label.setWordWrap(True)
        self.database_button = QPushButton("Database…")
        self.user_edit = QLineEdit(default_user())
        self.progress = QLabel("No detections yet: run the Detection panel.")
        self.target_label = QLabel(
            "Select a blend (Blend browser, click, n / p) or press i for isolated galaxies."
        )
        self.target_label.setWordWrap(True)
        self.component_combo = QComboBox()
        self.model_combo = QComboBox()
        self.failure_combo = QComboBox()
        self.failure_combo.addItems(FAILURE_TYPES)
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("optional note (kept with the next label)")
        self.clean_button = QPushButton("Clean (g)")
        self.bad_button = QPushButton("Bad (b)")
        self.ambiguous_button = QPushButton("Ambiguous (a)")
        self.undo_button = QPushButton("Undo (u)")
        self.isolated_button = QPushButton("Next isolated galaxy (i)")
        self.current_label = QLabel("")
        self.current_label.setWordWrap(True)
        self.import_button = QPushButton("Import ECSV…")
        self.export_button = QPushButton("Export ECSV…")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        for button, verdict in (
            (self.clean_button, "clean"),
            (self.bad_button, "bad"),
            (self.ambiguous_button, "ambiguous"),
        ):
            button.setStyleSheet(f"QPushButton {{ border-left: 6px solid {VERDICT_COLORS[verdict]}; }}")

        database_row = QHBoxLayout()
        database_row.addWidget(self.database_label, 1)
        database_row.addWidget(self.database_button)
        form = QFormLayout()
        form.addRow("Labeller", self.user_edit)
        form.addRow("Target", self.component_combo)
        form.addRow("Judged model", self.model_combo)
        form.addRow("Failure type", self.failure_combo)
        form.addRow("Note", self.note_edit)
        verdicts = QGridLayout()
        verdicts.addWidget(self.clean_button, 0, 0)
        verdicts.addWidget(self.bad_button, 0, 1)
        verdicts.addWidget(self.ambiguous_button, 0, 2)
        verdicts.addWidget(self.undo_button, 1, 0)
        verdicts.addWidget(self.isolated_button, 1, 1, 1, 2)
        exchange = QHBoxLayout()
        exchange.addWidget(self.import_button)
        exchange.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addLayout(database_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.target_label)
        layout.addLayout(form)
        layout.addLayout(verdicts)
        layout.addWidget(self.current_label)
        layout.addLayout(exchange)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.database_button.clicked.connect(self._choose_database)
        self.clean_button.clicked.connect(lambda: self.label("clean"))
        self.bad_button.clicked.connect(lambda: self.label("bad"))
        self.ambiguous_button.clicked.connect(lambda: self.label("ambiguous"))
        self.undo_button.clicked.connect(self.undo)
        self.isolated_button.clicked.connect(lambda: self.next_isolated())
        self.import_button.clicked.connect(self._import_ecsv)
        self.export_button.clicked.connect(self._export_ecsv)
        self.user_edit.editingFinished.connect(self._set_user)
        self.component_combo.currentIndexChanged.connect(lambda _i: self._show_current())
        self.model_combo.currentIndexChanged.connect(lambda _i: self._fill_components())
        self.session.detected.connect(self._on_detected)
        self.session.blend_selected.connect(self._on_blend_selected)
        self.session.deblended.connect(self._on_deblended)
        for key, verdict in KEYS.items():
            self.viewer.bind_key(key, self._key_label(verdict), overwrite=True)
        self.viewer.bind_key("u", lambda v: self.undo(), overwrite=True)
        self.viewer.bind_key("i", lambda v: self.next_isolated(), overwrite=True)
        self.viewer.bind_key("k", lambda v: self.cycle_component(), overwrite=True)
        if database is not None:
            self.open_database(database)
        if self.session.detections is not None:
            self._on_detected(self.session)
        self._update_buttons()

    # ---- database ---------------------------------------------------------------------------------
    def open_database(self, path: str | Path) -> bool:
        """Use this label database (created if missing); returns whether it could be opened."""
        try:
            store = LabelStore(path, user=self.user_edit.text().strip() or None)
        except DeblendInputError as exc:
            self._say(str(exc), error=True)
            return False
        if self.store is not None:
            self.store.close()
        self.store = store
        self.database_label.setText(f"Database: {store.path}")
        self.database_label.setToolTip(str(store.path))
        if self.session.detections is not None:
            self._on_detected(self.session)
        self._update_buttons()
        return True

    def _choose_database(self) -> None:
        start = str(
            self.store.path if self.store else self._default_database() or Path.cwd() / DEFAULT_DATABASE_NAME
        )
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Label database (new or existing)",
            start,
            "SQLite label database (*.sqlite *.db);;All files (*)",
            options=QFileDialog.DontConfirmOverwrite,
        )
        if path:
            self.open_database(path)

    def _default_database(self) -> Path | None:
        """``napari-deblend-labels.sqlite`` in the folder of the field's file (one database per project folder)."""
        detections = self.session.detections
        if detections is None or not detections.field.path:
            return None
        return Path(detections.field.path[0]).resolve().parent / DEFAULT_DATABASE_NAME

    def _set_user(self) -> None:
        if self.store is not None:
            self.store.user = self.user_edit.text().strip() or default_user()

    # ---- field, selection -------------------------------------------------------------------------
    def _on_detected(self, session: DeblendSession) -> None:
        detections = session.detections
        if detections is None:
            return
        if self.store is None:
            default = self._default_database()
            if default is None or not self.open_database(default):
                self.progress.setText("Choose a label database (Database…) to start labelling.")
                return
            return  # open_database called us again
        isolated = isolated_galaxies(detections.result.catalog, detections.field.shape)
        self.book = FieldLabels(
            self.store, detections.field, detections.blends, isolated, detection=detections.result.preset
        )
        self.target = None
        if self.book.check.warning:
            self._say(self.book.check.warning, warning=True)
        self._publish()
        if session.selected_blend:
            self._on_blend_selected(session.selected_blend)

    def _on_blend_selected(self, blend_id: int) -> None:
        if self.book is None or not blend_id:
            return
        blend = self.session.blend(blend_id)
        if blend is not None and blend.n_members == 1 and int(blend.members[0]) in self.book.isolated:
            self.target = ("isolated", int(blend.members[0]))  # a single detection offered to the deblender
            self._fill_models()
            return
        self.target = ("blend", int(blend_id))
        self._fill_models()

    def _on_deblended(self, blend_id: int, model: str) -> None:
        if self.target == ("blend", int(blend_id)):
            self._fill_models(prefer=model)

    def _fill_models(self, prefer: str | None = None) -> None:
        """Models with a result on the target blend (latest first), then "detections only"."""
        self.model_combo.blockSignals(True)
        current = prefer or self.model_combo.currentText()
        self.model_combo.clear()
        models = []
        if self.target and self.target[0] == "blend":
            models = list(self.session.results_for(self.target[1]))
        self.model_combo.addItems([*models, NO_MODEL])
        if current in models:
            self.model_combo.setCurrentText(current)
        self.model_combo.blockSignals(False)
        self._fill_components()

    def _judged_result(self) -> Any:
        model = self.model_combo.currentText()
        if not self.target or self.target[0] != "blend" or model in ("", NO_MODEL):
            return None
        return self.session.results.get((self.target[1], model))

    def _fill_components(self) -> None:
        self.component_combo.blockSignals(True)
        self.component_combo.clear()
        if self.target is None:
            self.component_combo.addItem("—", None)
        elif self.target[0] == "isolated":
            self.component_combo.addItem(f"isolated galaxy {self.target[1]}", (0, None))
        else:
            self.component_combo.addItem(f"whole blend {self.target[1]}", (0, None))
            result = self._judged_result()
            if result is not None:
                positions = np.asarray(result.positions, float) + np.asarray(result.origin, float)
                for k, (y, x) in enumerate(positions, start=1):
                    self.component_combo.addItem(
                        f"component {k} (x {x:.0f}, y {y:.0f})", (k, (float(y), float(x)))
                    )
        self.component_combo.blockSignals(False)
        self._show_current()

    def cycle_component(self) -> None:
        """Move the target to the next component (after the last: the whole blend again)."""
        if self.component_combo.count():
            self.component_combo.setCurrentIndex(
                (self.component_combo.currentIndex() + 1) % self.component_combo.count()
            )

    def next_isolated(self, step: int = 1) -> int | None:
        """Select the next unlabelled isolated galaxy (brightest first) and zoom to it."""
        if self.book is None:
            self._say("No detections or no label database yet.", warning=True)
            return None
        after = self.target[1] if self.target and self.target[0] == "isolated" else None
        galaxy_id = self.book.next_isolated(after, step)
        if galaxy_id is None:
            self._say("Every isolated galaxy has a label.")
            return None
        self.target = ("isolated", galaxy_id)
        self._fill_models()
        self._zoom_to(self.book.isolated[galaxy_id])
        return galaxy_id

    def _zoom_to(self, target: Any) -> None:
        from .blend_browser import SELECTION_LAYER

        source = self.session.detections.source_layer if self.session.detections else None
        kwargs = {"scale": source.scale, "translate": source.translate} if source is not None else {}
        rect = selection_rectangle(target)
        if SELECTION_LAYER in self.viewer.layers:
            layer = self.viewer.layers[SELECTION_LAYER]
            layer.data = [rect]
        else:
            layer = self.viewer.add_shapes(
                [rect],
                shape_type="rectangle",
                edge_color="cyan",
                face_color="transparent",
                edge_width=1.5,
                name=SELECTION_LAYER,
                **kwargs,
            )
        if source is not None:
            self.viewer.layers.selection.active = source
        world = np.asarray(layer.data_to_world(list(target.center)))
        self.viewer.camera.center = tuple(world[-2:])

    # ---- labelling --------------------------------------------------------------------------------
    def _key_label(self, verdict: str):
        def handler(viewer: Any) -> None:
            self.label(verdict)

        return handler

    def label(self, verdict: str) -> Any:
        """Label the current target (whole blend, component or isolated galaxy); returns the stored Label."""
        if self.book is None or self.target is None:
            self._say("Select a blend (or press i for an isolated galaxy) before labelling.", warning=True)
            return None
        kind, target_id = self.target
        component, position = self.component_combo.currentData() or (0, None)
        result = self._judged_result()
        model = self.model_combo.currentText() if result is not None else ""
        self._set_user()
        try:
            label = self.book.label(
                kind,
                target_id,
                verdict,
                failure=self.failure_combo.currentText() if verdict == "bad" else None,
                note=self.note_edit.text(),
                component=component,
                component_position=position,
                model=model,
                model_version=model_version(model, str(getattr(result, "model", ""))) if model else "",
            )
        except (DeblendInputError, OSError) as exc:
            self._say(f"label not saved: {exc}", error=True)
            return None
        except Exception as exc:  # sqlite3 errors (locked for longer than the busy timeout, disk full, ...)
            self._say(f"label not saved: {type(exc).__name__}: {exc}", error=True)
            return None
        self.note_edit.clear()
        what = f"component {component} of blend {target_id}" if component else f"{kind} {target_id}"
        self._say(f"saved: {what} {label.describe()}")
        self._publish()
        return label

    def undo(self) -> Any:
        """Delete the last label made in this panel; returns it (None when there is nothing to undo)."""
        if self.book is None:
            return None
        label = self.book.undo()
        if label is None:
            self._say("Nothing to undo.")
            return None
        self._say(f"undone: {label.kind} label {label.describe()}")
        self._publish()
        return label

    # ---- display ----------------------------------------------------------------------------------
    def _publish(self) -> None:
        """Share the verdicts with the browser, colour the outlines, update the readouts."""
        if self.book is None:
            return
        self.session.blend_verdicts = self.book.blend_verdicts()
        self.session.labels_changed.emit()
        self._colour_outlines()
        self._show_isolated_labels()
        progress = self.book.progress()
        done, total = progress["blend"]
        iso_done, iso_total = progress["isolated"]
        self.progress.setText(
            f"{done} / {total} blends labelled · {iso_done} / {iso_total} isolated galaxies"
        )
        self._show_current()
        self._update_buttons()

    def _colour_outlines(self) -> None:
        layer = (self.session.detections.layers or {}).get("shapes") if self.session.detections else None
        if layer is None or layer not in self.viewer.layers or "blend_id" not in layer.features:
            return
        verdicts = self.session.blend_verdicts
        colours = np.array(
            [_rgba(VERDICT_COLORS.get(verdicts.get(int(b)))) for b in layer.features["blend_id"]]
        )
        if len(colours):
            layer.edge_color = colours

    def _show_isolated_labels(self) -> None:
        name = "labelled isolated galaxies"
        verdicts = self.book.isolated_verdicts()
        points = np.array([self.book.isolated[i].positions[0] for i in verdicts], float).reshape(-1, 2)
        colours = np.array([_rgba(VERDICT_COLORS[v]) for v in verdicts.values()]).reshape(-1, 4)
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = points
            if len(points):
                layer.border_color = colours
        elif len(points):
            source = self.session.detections.source_layer
            kwargs = {"scale": source.scale, "translate": source.translate} if source is not None else {}
            self.viewer.add_points(
                points,
                name=name,
                symbol="disc",
                size=14,
                face_color="transparent",
                border_color=colours,
                border_width=0.15,
                **kwargs,
            )
            if source is not None:
                self.viewer.layers.selection.active = source

    def _show_current(self) -> None:
        if self.book is None or self.target is None:
            self.current_label.setText("")
            return
        kind, target_id = self.target
        if kind == "blend":
            blend = self.book.blends.get(target_id)
            members = f" ({blend.n_members} members, mag {blend.magnitude:.2f})" if blend is not None else ""
            self.target_label.setText(f"Blend {target_id}{members}")
        else:
            galaxy = self.book.isolated[target_id]
            self.target_label.setText(f"Isolated galaxy {target_id} (mag {galaxy.magnitude:.2f})")
        component = (self.component_combo.currentData() or (0, None))[0]
        label = self.book.labels_of(kind, target_id).get(component)
        self.current_label.setText(f"Current label: {label.describe()}" if label else "Current label: none")

    def _update_buttons(self) -> None:
        ready = self.book is not None
        for button in (self.clean_button, self.bad_button, self.ambiguous_button, self.isolated_button):
            button.setEnabled(ready)
        self.undo_button.setEnabled(ready and self.store is not None and self.store.can_undo)
        self.export_button.setEnabled(self.store is not None)
        self.import_button.setEnabled(self.store is not None)

    def _say(self, text: str, warning: bool = False, error: bool = False) -> None:
        self.status.setText(text)
        if error:
            show_error(f"napari-deblend labels: {text}")
        elif warning:
            show_warning(f"napari-deblend labels: {text}")

    # ---- ECSV ---------------------------------------------------------------------------------------
    def import_ecsv(self, path: str | Path) -> int:
        """Add the labels of an ECSV file to the database; returns how many were new."""
        from ..labels.ecsv import import_labels_ecsv

        if self.store is None:
            return 0
        try:
            added = import_labels_ecsv(self.store, path)
        except DeblendInputError as exc:
            self._say(str(exc), error=True)
            return 0
        if self.book is not None:
            self.book.refresh()
            self._publish()
        self._say(f"imported {added} new label(s) from {Path(path).name}")
        return added

    def export_ecsv(self, path: str | Path) -> int:
        """Write every label of the database to ECSV; returns how many."""
        from ..labels.ecsv import export_labels_ecsv

        if self.store is None:
            return 0
        n = export_labels_ecsv(self.store, path, overwrite=True)
        show_info(f"napari-deblend: wrote {n} labels to {path}")
        self._say(f"exported {n} label(s) to {Path(path).name}")
        return n

    def _import_ecsv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import labels", "", "ECSV (*.ecsv);;All files (*)")
        if path:
            self.import_ecsv(path)

    def _export_ecsv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export labels", "labels.ecsv", "ECSV (*.ecsv)")
        if path:
            self.export_ecsv(path)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        if self.store is not None:
            self.store.close()
        super().closeEvent(event)
