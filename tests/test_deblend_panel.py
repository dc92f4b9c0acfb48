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
    qtbot.waitUntil(lambda: panel._worker is None and panel.progress.value() == 1, timeout=30_000)
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
    qtbot.waitUntil(lambda: panel._worker is None, timeout=30_000)
    assert len(viewer.layers) == n_layers
    # keys 1-9 toggle component layers of the selected blend
    visible = comp.visible
    panel._toggle_component(1)(viewer)
    assert viewer.layers[f"blend {blend.id} · sextractor · component 1"].visible != visible


def test_edge_blend_is_padded_and_marked(viewer_with_detections, qtbot):
    viewer, session = viewer_with_detections
    panel = _deblend_panel(viewer, "sextractor")
    edge = [b for b in session.blends if b.bbox[0] == 0]
    assert edge, "the fixture has a blend touching the bottom edge"
    panel.run([edge[0].id])
    qtbot.waitUntil(lambda: panel._worker is None, timeout=30_000)
    assert session.results[(edge[0].id, "sextractor")].info["padded"]
    assert any("(edge, padded)" in layer.name for layer in viewer.layers)


def test_all_in_view_and_cancel_leave_no_half_made_layers(viewer_with_detections, qtbot):
    from napari_deblend._widgets.deblend_panel import blends_in_view

    viewer, session = viewer_with_detections
    viewer.reset_view()
    ids = blends_in_view(session, viewer)
    assert set(ids) == {b.id for b in session.blends}
    panel = _deblend_panel(viewer, "sextractor")
    panel.deblend_in_view()
    qtbot.waitUntil(lambda: panel._worker is None, timeout=60_000)
    assert {b for b, _ in session.results} == set(ids)
    # every finished blend has its complete set of layers
    for blend_id in ids:
        parts = [layer.name for layer in viewer.layers if layer.name.startswith(f"blend {blend_id} · ")]
        assert any("residual" in p for p in parts) and any("positions" in p for p in parts)
    # cancel straight away: whatever finished is complete, nothing partial
    session.results.clear()
    panel.keep_box.setChecked(False)
    panel.deblend_in_view()
    panel.cancel()
    qtbot.waitUntil(lambda: panel._worker is None, timeout=60_000)
    for blend_id in {b for b, _ in session.results}:
        parts = [layer.name for layer in viewer.layers if layer.name.startswith(f"blend {blend_id} · ")]
        assert any("positions" in p for p in parts)


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
    qtbot.waitUntil(lambda: panel._worker is None, timeout=60_000)
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

    viewer, session = viewer_with_detections
    comparison = ComparisonWidget(viewer)
    panel = _deblend_panel(viewer, "peeling")
    session.select(session.blends[0].id)
    panel.deblend_selected()
    qtbot.waitUntil(lambda: panel._worker is None and comparison.current_table is not None, timeout=60_000)
    result = session.results[(session.selected_blend, "peeling")]
    assert comparison.table.rowCount() == result.n_components
    assert len(comparison.figure.axes) > result.n_components  # blend, components, residual, SExtractor row
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
