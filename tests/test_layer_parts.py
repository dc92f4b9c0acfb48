"""Layers added in parts (visual, scene, shader programs in steps; controls on demand) in a real viewer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("napari")


def _viewer_with_image(make_napari_viewer):
    viewer = make_napari_viewer(show=True)  # an OpenGL context of its own, as in the application
    viewer.add_image(np.random.default_rng(0).normal(size=(64, 64)).astype("float32"), name="field")
    return viewer


def _add_result_layer(viewer, parts=None, kind="points"):
    """Points with text labels (a Points visual has four parts), or masks as Labels (one part),
    added inactive, in parts if ``parts``."""
    from contextlib import nullcontext

    from napari_deblend._widgets._layer_refill import added_inactive

    with added_inactive(viewer), (parts.views_held() if parts is not None else nullcontext([])) as added:
        if kind == "points":
            layer = viewer.add_points(
                np.array([[20.0, 20.0], [30.0, 40.0], [45.0, 25.0]]), features=pd.DataFrame({"component": [1, 2, 3]}),
                size=4, symbol="x", face_color="white", text={"string": "{component}", "color": "white", "size": 9},
                name="positions")
        else:
            masks = np.zeros((64, 64), np.int32)
            masks[10:30, 12:28], masks[35:50, 30:55] = 1, 2
            layer = viewer.add_labels(masks, opacity=0.6, name="masks")
    assert added == ([layer] if parts is not None and parts.supported else [])
    return layer


def _qt(viewer):
    qt_viewer = viewer.window._qt_viewer
    return qt_viewer.canvas.layer_to_visual, qt_viewer.controls


def _has_controls(controls, layer) -> bool:
    return dict.__contains__(controls.widgets, layer)  # a look-up would make them


@pytest.mark.parametrize(("kind", "pieces"), [("points", 4), ("labels", 1)])
def test_a_layer_joins_the_list_first_then_its_steps_make_what_a_whole_add_makes(make_napari_viewer, kind, pieces):
    from napari_deblend._widgets._layer_parts import LayerParts, drawn_parts

    viewer = _viewer_with_image(make_napari_viewer)
    visuals, controls = _qt(viewer)
    parts = LayerParts(viewer)
    layer = _add_result_layer(viewer, parts, kind)
    assert layer in viewer.layers and layer not in visuals and not _has_controls(controls, layer)
    steps = 0
    while parts.next_step_due(layer):
        parts.next_step(layer)
        steps += 1
    # make the visual, put it in the scene, make its overlays, update the scene, then the data and program
    # of each of its parts and a draw of it that changes no pixel
    assert steps == 4 + 3 * pieces
    assert layer in visuals and parts.unfinished == [layer] and not _has_controls(controls, layer)
    # that draw sent each part's GL commands (shaders, data) to the driver: none wait for the canvas repaint
    context = viewer.window._qt_viewer.canvas._scene_canvas.context
    assert context.glir._shared._commands == []
    drawn = [piece for piece in drawn_parts(visuals[layer].node) if piece._prepare_draw(piece) is not False]
    assert len(drawn) == {"points": 3, "labels": 1}[kind]  # a Points layer's highlight has no data: not drawn
    assert all(piece._program.glir._shared is context.glir._shared for piece in drawn)
    parts_shot = viewer.screenshot(canvas_only=True, flash=False)

    viewer.layers.selection.active = layer  # napari looks its controls up: made now
    assert _has_controls(controls, layer) and controls.currentWidget() is controls.widgets[layer]
    assert parts.unfinished == []

    viewer.layers.selection.active = viewer.layers["field"]
    viewer.layers.remove(layer)
    whole = _add_result_layer(viewer, kind=kind)
    assert whole in visuals and _has_controls(controls, whole)
    np.testing.assert_array_equal(viewer.screenshot(canvas_only=True, flash=False), parts_shot)


def test_a_layer_selected_or_removed_before_its_steps_is_finished_first(make_napari_viewer):
    from napari_deblend._widgets._layer_parts import LayerParts

    viewer = _viewer_with_image(make_napari_viewer)
    visuals, controls = _qt(viewer)
    parts = LayerParts(viewer)
    selected = _add_result_layer(viewer, parts)
    viewer.layers.selection.active = selected  # napari's controls would fail on a layer they do not know
    assert selected in visuals and _has_controls(controls, selected) and parts.unfinished == []

    removed = _add_result_layer(viewer, parts)
    viewer.layers.remove(removed)  # napari's canvas would fail on a layer without a visual
    assert removed not in viewer.layers and removed not in visuals and parts.unfinished == []

    waiting = _add_result_layer(viewer, parts)
    parts.close()  # the panel goes away: nothing is left half-made
    assert waiting in visuals and _has_controls(controls, waiting)
    later = _add_result_layer(viewer, parts)  # closed: a whole add
    assert later in visuals and _has_controls(controls, later)

    waiting = _add_result_layer(viewer, LayerParts(viewer))
    viewer.close()  # the viewer goes away with a layer still waiting for its steps: no error
    assert not hasattr(viewer.window, "_qt_window")


def test_without_a_qt_viewer_layers_are_added_whole():
    from napari.components import ViewerModel

    from napari_deblend._widgets._layer_parts import LayerParts

    viewer = ViewerModel()
    parts = LayerParts(viewer)
    assert not parts.supported
    layer = _add_result_layer(viewer, parts=None)
    with parts.views_held() as added:
        viewer.add_points(np.zeros((1, 2)))
    assert added == [] and parts.unfinished == [] and layer in viewer.layers


def test_deblend_results_are_added_in_parts_and_their_controls_made_when_selected(make_napari_viewer, qtbot, tmp_path):
    from napari_deblend.field import write_field

    from .conftest import gaussian_field, viewer_with_deblend_panel

    path = write_field(gaussian_field([(60, 60, 6e5, 3.0), (60, 72, 3e5, 2.5)], seed=3, shape=(128, 128)),
                       tmp_path / "pair.fits")
    viewer, session, panel = viewer_with_deblend_panel(make_napari_viewer, qtbot, path, "sextractor")
    session.select(session.blends[0].id)
    visuals, controls = _qt(viewer)
    layers = panel.result_layers
    layers._timer.stop()  # turn by turn, by hand
    before = set(viewer.layers)
    panel.deblend_selected()
    seen_without_visual = False
    qtbot.waitUntil(lambda: bool(layers._tasks), timeout=30_000)
    while layers.busy:
        layers._timer.stop()
        layers._run_one()
        seen_without_visual |= any(layer not in visuals for layer in viewer.layers)
    added = [layer for layer in viewer.layers if layer not in before]
    assert seen_without_visual  # a layer joined the list in a turn before its visual was made
    assert added and all(layer in visuals for layer in added)
    assert not any(_has_controls(controls, layer) for layer in added)  # made when first needed
    component = next(layer for layer in added if layer.name.endswith("component 1"))
    viewer.layers.selection.active = component
    assert controls.currentWidget() is controls.widgets[component]


def test_what_a_layer_task_changed_elsewhere_in_the_window_is_painted_before_the_canvas_is_let_go(make_napari_viewer):
    """Qt would paint the layer controls (or list rows) and the canvas in one window repaint: one stall of both."""
    from qtpy.QtCore import QEvent, QObject
    from qtpy.QtWidgets import QApplication

    from napari_deblend._widgets._result_layers import ResultLayers

    viewer = _viewer_with_image(make_napari_viewer)
    layer = viewer.add_image(np.ones((8, 8), np.float32), name="result", opacity=0.5)  # active: its controls show
    layers = ResultLayers(viewer, session=None)
    canvas = viewer.window._qt_viewer.canvas.native
    for _ in range(3):
        QApplication.processEvents()
    paints: list[tuple[bool, bool]] = []  # (the canvas?, the canvas held?) of each paint

    class Spy(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.Paint:
                paints.append((obj is canvas, layers._frozen_canvas is not None))
            return False

    spy = Spy()
    app = QApplication.instance()
    app.installEventFilter(spy)
    try:
        layers._queue(lambda: setattr(layer, "opacity", 0.8))  # the canvas and the opacity slider change
        layers._timer.stop()  # turn by turn, by hand
        layers._run_one()  # the task, the canvas held
        assert layers._frozen_canvas is not None and not paints
        layers._run_one()  # the rest of the window painted, the canvas still held
        assert paints and all(held and not is_canvas for is_canvas, held in paints)
        while layers.busy:
            layers._timer.stop()
            layers._run_one()
        for _ in range(3):
            QApplication.processEvents()
        assert (True, False) in paints  # then the canvas, let go
    finally:
        app.removeEventFilter(spy)
        layers.close()
