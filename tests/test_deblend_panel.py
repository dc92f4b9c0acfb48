"""Deblend panel end to end in a real viewer: detect, select, deblend, layers where they belong."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deblend.field import write_field

from .conftest import gaussian_field

pytest.importorskip("napari")


@pytest.fixture
def viewer_with_detections(make_napari_viewer, qtbot, tmp_path):
    from napari_deblend._widgets import BlendBrowserWidget, DetectionWidget

    sources = [(128, 128, 6e5, 3.0), (128, 140, 3e5, 2.5), (60, 180, 4e5, 2.5), (70, 187, 3e5, 2.0),
               (200, 60, 3e5, 2.0), (9, 120, 5e5, 2.5), (3, 130, 3e5, 2.0)]
    path = write_field(gaussian_field(sources, seed=3), tmp_path / "pairs.fits")
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-deblend")
    detection = DetectionWidget(viewer)
    browser = BlendBrowserWidget(viewer)
    detection.run()
    qtbot.waitUntil(lambda: detection.session.detections is not None, timeout=30_000)
    return viewer, browser.session


def _deblend_panel(viewer, model):
    from napari_deblend._widgets import DeblendWidget

    panel = DeblendWidget(viewer)
    panel.keep_box.setChecked(False)
    panel.model_combo.setCurrentText(model)
    panel.device_combo.setCurrentText("cpu")
    return panel


def test_deblend_selected_adds_layers_at_the_stamp(viewer_with_detections, qtbot):
    from napari_deblend import deblend

    viewer, session = viewer_with_detections
    panel = _deblend_panel(viewer, "sextractor")
    session.select(session.blends[0].id)
    blend = session.blend(session.selected_blend)
    panel.deblend_selected()
    qtbot.waitUntil(lambda: not panel.busy and panel.progress.value() == 1, timeout=120_000)
    result = session.results[(blend.id, "sextractor")]
    names = [layer.name for layer in viewer.layers]
    for part in ("component 1", "component 2", "residual", "masks", "positions"):
        assert f"blend {blend.id} · sextractor · {part}" in names
    comp = viewer.layers[f"blend {blend.id} · sextractor · component 1"]
    np.testing.assert_allclose(comp.translate[-2:], result.origin)
    # the same numbers as the library called directly
    direct = deblend(session.detections.field, blend, model="sextractor",
                     background=session.detections.result.background)
    np.testing.assert_allclose(comp.data, direct.components[0].sum(axis=0))
    residual = viewer.layers[f"blend {blend.id} · sextractor · residual"]
    lo, hi = residual.contrast_limits
    assert lo == pytest.approx(-hi)
    # re-running replaces the previous layers
    n_layers = len(viewer.layers)
    panel.deblend_selected()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert len(viewer.layers) == n_layers
    # ... unless asked to keep them: both runs then show, numbered
    panel.keep_box.setChecked(True)
    panel.deblend_selected()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    names = [layer.name for layer in viewer.layers]
    assert f"blend {blend.id} · sextractor · residual (run 1)" in names
    assert f"blend {blend.id} · sextractor · residual (run 2)" in names
    panel.keep_box.setChecked(False)
    comp = viewer.layers[f"blend {blend.id} · sextractor · component 1 (run 2)"]
    # keys 1-9 toggle component layers of the selected blend
    visible = comp.visible
    panel._toggle_component(1)(viewer)
    assert comp.visible != visible
    # the field-wide layers hold the result too, painted where the stamp is
    mosaic = viewer.layers["sextractor · all blends · model image"]
    (y0, x0), (h, w) = result.origin, result.blend.shape[-2:]
    ys, xs = slice(max(y0, 0), y0 + h), slice(max(x0, 0), x0 + w)
    assert mosaic.data[ys, xs].sum() == pytest.approx(result.components.sum(), rel=1e-4)
    # another blend: the detail layers are re-filled with its result (no layer added or removed
    # beyond the kept run), and the field-wide ones stay
    other = session.blends[1].id
    session.select(other)
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert not any("(run 1)" in layer.name for layer in viewer.layers)  # the kept run's own layers went
    panel.deblend_selected()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    other_result = session.results[(other, "sextractor")]
    comp = next(layer for layer in viewer.layers if layer.name.startswith(f"blend {other} · sextractor · component 1"))
    assert comp.visible
    np.testing.assert_allclose(comp.translate[-2:], other_result.origin)
    np.testing.assert_allclose(comp.data, other_result.components[0].sum(axis=0))
    assert not any(layer.name.startswith(f"blend {blend.id} · ") and layer.visible for layer in viewer.layers)
    assert "sextractor · all blends · masks" in viewer.layers


def test_edge_blend_is_padded_and_marked(viewer_with_detections, qtbot):
    viewer, session = viewer_with_detections
    panel = _deblend_panel(viewer, "sextractor")
    edge = [b for b in session.blends if b.bbox[0] == 0]
    assert edge, "the fixture has a blend touching the bottom edge"
    session.select(edge[0].id)
    panel.run([edge[0].id])
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert session.results[(edge[0].id, "sextractor")].info["padded"]
    assert any("(edge, padded)" in layer.name for layer in viewer.layers)


def test_all_in_view_and_cancel_leave_no_half_made_layers(viewer_with_detections, qtbot):
    from napari_deblend._widgets.deblend_panel import blends_in_view

    viewer, session = viewer_with_detections
    session.select(session.blends[0].id)  # (zooms on it)
    viewer.reset_view()
    ids = blends_in_view(session, viewer)
    # sep's blends and the single detections larger than a point source (all the isolated sources here)
    assert len(session.singles) == 1 and set(ids) == {b.id for b in session.blends + session.singles}
    panel = _deblend_panel(viewer, "sextractor")
    panel.deblend_in_view()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert {b for b, _ in session.results} == set(ids)
    # every result is in the four field-wide layers; only the selected blend has detail layers
    positions = viewer.layers["sextractor · all blends · positions"]
    assert set(positions.features["blend"]) == set(ids)
    assert len(positions.data) == sum(session.results[(b, "sextractor")].n_components for b in ids)
    masks = viewer.layers["sextractor · all blends · masks"].data
    assert len(np.unique(masks[masks > 0])) == len(positions.data)
    detailed = {int(layer.name.split(" ")[1]) for layer in viewer.layers if layer.name.startswith("blend ")}
    assert detailed == {ids[0]}
    # cancel straight away: whatever finished is complete (painted with all its components), nothing partial
    session.results.clear()
    panel.result_layers.forget()
    panel.deblend_in_view()
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    done = {b for b, _ in session.results}
    if done:
        positions = viewer.layers["sextractor · all blends · positions"]
        assert set(positions.features["blend"]) == done
        assert len(positions.data) == sum(session.results[(b, "sextractor")].n_components for b in done)


def test_failing_model_reports_and_others_go_on(viewer_with_detections, qtbot, monkeypatch):
    from napari_deblend import deblending
    from napari_deblend._widgets import deblend_panel as panel_module

    viewer, session = viewer_with_detections
    bad = session.blends[0].id
    real = deblending.deblend

    def flaky(field, blend, **kwargs):
        if blend.id == bad:
            raise deblending.DeblendError("this blend is broken on purpose")
        return real(field, blend, **kwargs)

    monkeypatch.setattr(panel_module, "deblend", flaky)
    panel = _deblend_panel(viewer, "sextractor")
    panel.run([b.id for b in session.blends])
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert f"blend {bad}" in panel.status.text() and "broken on purpose" in panel.status.text()
    assert len({b for b, _ in session.results}) == len(session.blends) - 1


def test_closing_the_viewer_mid_run_does_not_crash(viewer_with_detections, qtbot):
    viewer, session = viewer_with_detections
    panel = _deblend_panel(viewer, "sextractor")
    worker = panel.run([b.id for b in session.blends])
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)


def test_comparison_panel_shows_figure_and_table_of_the_selected_blend(viewer_with_detections, qtbot, tmp_path):
    from astropy.table import Table

    from napari_deblend._widgets import ComparisonWidget
    from napari_deblend.measurements import measure
    from napari_deblend.plots import figure_mosaic

    viewer, session = viewer_with_detections
    comparison = ComparisonWidget(viewer)
    panel = _deblend_panel(viewer, "peeling")
    session.select(session.blends[0].id)
    panel.deblend_selected()
    qtbot.waitUntil(lambda: panel._worker is None and comparison.current_table is not None, timeout=60_000)
    result = session.results[(session.selected_blend, "peeling")]
    assert comparison.table.rowCount() == result.n_components
    # the panel's figure is a mosaic: blend, components, residual, SExtractor row
    assert {"blend", "residual", "sextractor segmentation", "sextractor residual"} <= set(comparison.panels)
    assert {f"component {k}" for k in range(result.n_components)} <= set(comparison.panels)
    mosaic = figure_mosaic(comparison.figure)
    assert (comparison.canvas.image().height(), comparison.canvas.image().width()) == mosaic.pixels.shape[:2]
    assert any(t.text.startswith("component 1") for t in mosaic.texts)
    direct = measure(result)
    np.testing.assert_allclose(comparison.current_table["flux"], direct["flux"])
    np.testing.assert_allclose(comparison.current_table["sep_flux"], direct["sep_flux"], equal_nan=True)
    text = comparison.copy_text()
    assert len(text.strip().splitlines()) == result.n_components + 1
    table = Table.read(comparison.export_table(tmp_path / "c.ecsv"))
    assert len(table) == result.n_components
    png = comparison.export_figure(tmp_path / "c.png")
    assert png.stat().st_size > 10_000
    assert comparison.export_figure(tmp_path / "c.bmp") is None  # unsupported format: a notification, no file
    assert not (tmp_path / "c.bmp").exists()


def test_comparison_on_the_sample_field_has_a_truth_row(make_napari_viewer, qtbot):
    from napari_deblend._sample_data import SAMPLE_FIELD
    from napari_deblend._widgets import ComparisonWidget, DetectionWidget
    from napari_deblend.measurements import measure

    viewer = make_napari_viewer()
    viewer.open(str(SAMPLE_FIELD), plugin="napari-deblend")
    detection = DetectionWidget(viewer)
    comparison = ComparisonWidget(viewer)
    panel = _deblend_panel(viewer, "sextractor")
    detection.run()
    session = detection.session
    qtbot.waitUntil(lambda: session.detections is not None, timeout=60_000)
    assert session.truth_path.endswith("sample_field_truth.ecsv")  # found beside the FITS file
    session.select(session.blends[0].id)
    panel.deblend_selected()
    qtbot.waitUntil(lambda: not panel.busy and comparison.current_table is not None and not comparison.busy,
                    timeout=120_000)
    assert comparison.canvas.has_pixels()
    result = session.results[(session.selected_blend, "sextractor")]
    truth = session.truth_for(result)
    assert truth is not None and len(truth.components) >= 2  # a blend holds at least two true galaxies
    table = comparison.current_table
    np.testing.assert_allclose(table["truth_flux"], measure(result, truth=truth, sextractor=True)["truth_flux"],
                               equal_nan=True)
    assert np.isfinite(np.asarray(table["truth_flux"], float)).any()
    assert "truth" in comparison.title.text()
    assert "truth blend" in comparison.panels
    session.set_truth(None)
    comparison.current_table = None
    comparison.refresh()
    qtbot.waitUntil(lambda: not comparison.busy and comparison.current_table is not None, timeout=60_000)
    assert comparison.panels and not any(label.startswith("truth") for label in comparison.panels)  # row gone



def test_a_run_of_many_blends_paints_its_results_when_it_ends(viewer_with_detections, qtbot):
    """While a run of several blends goes, the UI thread only moves the progress bar; layers follow at the end."""
    viewer, session = viewer_with_detections
    panel = _deblend_panel(viewer, "sextractor")
    layers = panel.result_layers
    ids = [blend.id for blend in session.blends]
    session.select(ids[0])
    qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)
    panel.run(ids)
    assert layers.holding
    shown_mid_run = []
    panel.session.deblended.connect(lambda *_: shown_mid_run.append(
        (bool(layers._tasks), any(layer.name.startswith(f"blend {ids[0]} · ") for layer in viewer.layers))))
    # each result is painted into the mosaic's arrays as it comes (cheap), so that no pile waits for the end
    painted_mid_run = []
    panel.session.deblended.connect(lambda *_: painted_mid_run.append(
        (len(painted_mid_run) + 1, len(layers.mosaics["sextractor"]) if "sextractor" in layers.mosaics else 0)))
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert shown_mid_run and not any(queued or shown for queued, shown in shown_mid_run)
    assert painted_mid_run and all(painted >= done - 1 for done, painted in painted_mid_run)
    assert painted_mid_run[-1][1] >= len(ids) - 1
    assert not layers.holding
    assert f"blend {ids[0]} · sextractor · residual" in viewer.layers
    mosaic = viewer.layers["sextractor · all blends · positions"]
    assert len(mosaic.data) == sum(session.results[(i, "sextractor")].n_components for i in ids)
    # one blend: shown at once, no hold
    panel.deblend_selected()
    assert not layers.holding


def test_a_lone_result_is_shown_in_the_turn_it_arrives_and_a_short_run_is_not_shown_busy(viewer_with_detections, qtbot):
    """One blend's result re-fills the detail layers at once (one paint); the busy state shows only for long runs."""
    from napari_deblend._widgets.deblend_panel import BUSY_DELAY_MS

    viewer, session = viewer_with_detections
    panel = _deblend_panel(viewer, "sextractor")
    first, second = session.blends[0].id, session.blends[1].id
    for blend_id in (first, second):  # the detail layers (slots) exist after the first run
        session.select(blend_id)
        panel.deblend_selected()
        qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)
    session.select(first)
    qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)
    assert not panel.result_layers._tasks
    result = session.results[(first, "sextractor")]
    residual = viewer.layers[f"blend {first} · sextractor · residual"]
    session.results.pop((first, "sextractor"))
    # the result arrives: its layers are re-filled before control returns to the event loop
    panel._one_done("sextractor", 1, 0, first, result, None)
    np.testing.assert_allclose(residual.data, result.residual.sum(axis=0))
    np.testing.assert_allclose(residual.translate[-2:], result.origin)
    assert not panel.result_layers._tasks and panel.progress.value() == 1
    # a run shows as busy (Cancel enabled, status) only once it has lasted BUSY_DELAY_MS
    panel.run([first])
    assert not panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)
    assert panel.selected_button.isEnabled() and "1 of 1 blend(s) deblended" in panel.status.text()
    ids = [blend.id for blend in session.blends] * 200  # a long run
    panel.run(ids)
    qtbot.wait(BUSY_DELAY_MS + 200)
    running = panel.cancel_button.isEnabled() and not panel.selected_button.isEnabled()
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert running and panel.selected_button.isEnabled()


def test_a_refilled_layer_gets_the_thumbnail_of_its_new_data_and_settings(make_napari_viewer):
    from napari_deblend._widgets._layer_refill import refill_layers

    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((32, 32)), contrast_limits=(0.0, 1.0), name="old")
    data = np.random.default_rng(0).random((32, 32))
    refill_layers(viewer, [(layer, data, {"name": "new", "contrast_limits": (0.0, 0.5), "gamma": 0.7,
                                          "translate": (10.0, 20.0)})])
    reference = viewer.add_image(data, contrast_limits=(0.0, 0.5), gamma=0.7)
    assert "_update_thumbnail" not in vars(layer)  # the hold is lifted
    np.testing.assert_array_equal(layer.thumbnail, reference.thumbnail)
    assert layer.name == "new" and tuple(layer.translate) == (10.0, 20.0)


def test_points_with_labels_are_refilled_with_fewer_and_more_points(make_napari_viewer):
    """A labelled Points layer re-filled with fewer, then more points: texts follow (napari indexes them by view)."""
    import pandas as pd

    from napari_deblend._widgets._layer_refill import set_points

    viewer = make_napari_viewer()
    features = pd.DataFrame({"component": [1, 2, 3]})
    layer = viewer.add_points(np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]]), features=features,
                              text={"string": "{component}", "color": "white"})
    for n in (2, 4, 1):
        data = np.arange(2 * n, dtype=float).reshape(n, 2) * 5
        set_points(layer, data, pd.DataFrame({"component": np.arange(1, n + 1)}))
        assert len(layer.data) == n and len(layer._view_data) == n
        assert list(layer._view_text) == [str(i) for i in range(1, n + 1)]
    assert "_update_thumbnail" not in vars(layer)


def test_a_layer_task_is_repainted_in_a_turn_of_its_own(viewer_with_detections, qtbot):
    """The canvas repaint for a queued layer change comes in the next turn, never in the task's own."""
    viewer, session = viewer_with_detections
    panel = _deblend_panel(viewer, "sextractor")
    layers = panel.result_layers
    qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)
    canvas = layers._canvas_widget()
    ran = []
    layers._queue(lambda: ran.append(canvas.updatesEnabled()))
    layers._queue(lambda: ran.append("second"))
    layers._timer.stop()  # turn by turn, by hand
    layers._run_one()
    assert ran == [False] and not canvas.updatesEnabled()  # the task ran with the canvas held
    layers._run_one()
    assert ran == [False] and canvas.updatesEnabled()  # the repaint turn: nothing else of ours ran in it
    layers._run_one()
    assert ran == [False, "second"] and not layers._tasks
    assert layers.busy  # not shown until the canvas may repaint it
    layers._run_one()
    assert not layers.busy
    layers.drain()
    assert canvas.updatesEnabled()  # drained: nothing held
    layers._queue(lambda: None)
    layers._timer.stop()
    layers._run_one()
    layers.close()  # closing lets a held canvas go
    assert canvas.updatesEnabled()


def test_a_run_keeps_the_collector_off_older_objects_until_its_results_are_shown(viewer_with_detections, qtbot):
    """gc.freeze() while a run goes (full collections stay short), gc.unfreeze() once its layers are shown."""
    import gc

    viewer, session = viewer_with_detections
    panel = _deblend_panel(viewer, "sextractor")
    qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)
    assert gc.get_freeze_count() == 0
    panel.run([blend.id for blend in session.blends])
    assert gc.get_freeze_count() > 0
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    qtbot.waitUntil(lambda: gc.get_freeze_count() == 0, timeout=5_000)
    assert "sextractor · all blends · positions" in viewer.layers
    panel.run([session.blends[0].id])  # closing the panel mid-run hands the objects back too
    panel._on_close()
    assert gc.get_freeze_count() == 0


def test_the_collector_hold_leaves_objects_frozen_by_others_alone():
    """A run's hold freezes the objects alive then and, once its worker is done, those it made; someone else's
    gc.freeze() is neither added to nor undone by it."""
    import gc

    from napari_deblend._widgets._gc_hold import hold_collector, hold_new_objects, release_collector

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        hold_collector()
        hold_collector()  # nested, e.g. a second viewer's panel
        made_by_another_run = [[i] for i in range(1000)]
        hold_new_objects()
        release_collector()
        release_collector()
        # objects frozen before may be freed meanwhile (by a Qt or worker thread of earlier tests), so the
        # count may drop by a few; undoing the freeze would drop it to 0, freezing the 1000 lists raise it
        assert frozen - 100 <= gc.get_freeze_count() <= frozen and made_by_another_run
    finally:
        gc.unfreeze()
    hold_collector()
    before_run = gc.get_freeze_count()
    assert before_run > 0
    made_by_a_run = [[i] for i in range(1000)]
    hold_new_objects()  # the run's objects are frozen too while its results are shown
    assert gc.get_freeze_count() >= before_run + len(made_by_a_run)
    release_collector()
    assert gc.get_freeze_count() == 0
