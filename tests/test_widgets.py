"""Detection panel and blend browser in a real napari viewer (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deblend.field import Field, write_field

from .conftest import gaussian_field

pytest.importorskip("napari")


@pytest.fixture
def fits_field(tmp_path):
    rng = np.random.default_rng(7)
    sources = [(y, x, 10 ** rng.uniform(5, 6), rng.uniform(1.5, 3.0)) for y, x in rng.uniform(20, 236, (14, 2))]
    sources += [(128, 128, 6e5, 3.0), (128, 140, 3e5, 2.5), (60, 180, 4e5, 2.5), (70, 186, 3e5, 2.0)]
    field = gaussian_field(sources, seed=8)
    path = write_field(field, tmp_path / "field.fits")
    return path


def _detect(viewer, qtbot, preset="sextractor"):
    from napari_deblend._widgets import DetectionWidget

    widget = DetectionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.preset_combo.setCurrentText(preset)
    widget.run()
    qtbot.waitUntil(lambda: widget.session.detections is not None, timeout=30_000)
    return widget


def test_open_detect_and_browse_blends(make_napari_viewer, qtbot, fits_field):
    from napari_deblend import detect, find_blends, read_field
    from napari_deblend._widgets import BlendBrowserWidget

    viewer = make_napari_viewer()
    viewer.open(str(fits_field), plugin="napari-deblend")
    assert viewer.layers[0].name == "field.fits"
    assert viewer.camera.orientation2d[0] == "up"  # north up
    browser = BlendBrowserWidget(viewer)
    viewer.window.add_dock_widget(browser)
    widget = _detect(viewer, qtbot)

    # the same numbers as the library called directly
    cat, seg = detect(read_field(fits_field))
    blends = find_blends(cat, seg)
    names = [layer.name for layer in viewer.layers]
    for suffix in ("background-subtracted", "segmentation", "detections", "blends"):
        assert f"field.fits {suffix}" in names
    points = viewer.layers["field.fits detections"]
    assert len(points.data) == len(cat)
    np.testing.assert_allclose(np.sort(points.features["flux_auto"]), np.sort(np.round(cat["flux_auto"], 0)))
    assert {"id", "mag_auto", "a", "b", "theta", "flags"} <= set(points.features.columns)
    np.testing.assert_array_equal(viewer.layers["field.fits segmentation"].data, seg)
    shapes = viewer.layers["field.fits blends"]
    assert len(shapes.data) == sum(b.n_members for b in blends)
    assert "2 blends" in widget.status.text() or f"{len(blends)} blends" in widget.status.text()

    # the browser lists the blends and the single detections offered; its filter shows sep's blends alone
    singles = browser.session.singles
    assert browser.table.rowCount() == len(blends) + len(singles) and len(blends) >= 2 and singles
    assert [b.id for b in singles] == list(range(len(blends) + 1, len(blends) + len(singles) + 1))
    browser.filter_combo.setCurrentText("sep blends")
    assert browser.shown_ids() == [b.id for b in blends]
    browser.filter_combo.setCurrentText("single detections")
    assert sorted(browser.shown_ids()) == [b.id for b in singles]
    assert browser.session.browse_order == browser.shown_ids()  # n / p step through the rows shown
    browser.filter_combo.setCurrentText("all")
    browser.table.selectRow(1)
    selected = browser.session.selected_blend
    blend = browser.session.blend(selected)
    assert "selected blend" in [layer.name for layer in viewer.layers]
    np.testing.assert_allclose(viewer.camera.center[-2:], blend.center, atol=1.0)
    # n / p step through the blends (bound on the viewer)
    browser.session.step(+1)
    assert browser.session.selected_blend != selected
    browser.session.step(-1)
    assert browser.session.selected_blend == selected
    assert {"N", "P"} <= {str(k) for k in viewer.keymap}
    # clicking inside a member's footprint selects its blend
    member_row = int(np.flatnonzero(cat["id"] == blend.members[0])[0])
    at = np.array([cat["y"][member_row], cat["x"][member_row]])
    assert browser.session.blend_at(at) == blend.id


def test_sorting_the_table_by_magnitude(make_napari_viewer, qtbot, fits_field):
    from napari_deblend._widgets import BlendBrowserWidget

    viewer = make_napari_viewer()
    viewer.open(str(fits_field), plugin="napari-deblend")
    browser = BlendBrowserWidget(viewer)
    _detect(viewer, qtbot)
    from napari_deblend._widgets.blend_browser import COLUMNS

    column = COLUMNS.index("mag")
    browser.table.sortItems(column)
    mags = [browser.table.item(r, column).value for r in range(browser.table.rowCount())]
    assert mags == sorted(mags)


def test_detection_errors_are_notifications_and_viewer_survives(make_napari_viewer, qtbot):
    from napari_deblend._widgets import DetectionWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="blank")
    widget = DetectionWidget(viewer)
    widget.run()
    qtbot.waitUntil(lambda: widget.detect_button.isEnabled() and "failed" in widget.status.text(), timeout=20_000)
    assert "all zero" in widget.status.text()
    # the viewer still works: a real image detects fine afterwards
    viewer.add_image(gaussian_field([(32, 32, 3e5, 2.0)], shape=(128, 128)).data[0], name="ok")
    widget.layer_combo.setCurrentText("ok")
    widget.params["back_size"].setValue(32)
    widget.run()
    qtbot.waitUntil(lambda: widget.session.detections is not None, timeout=20_000)
    assert len(widget.session.detections.result.catalog) == 1


def test_multiband_field_detects_all_bands(make_napari_viewer, qtbot, tmp_path):
    field = gaussian_field([(64, 64, 3e5, 2.0), (64, 74, 2e5, 2.0)], shape=(128, 128), n_bands=2)
    field = Field(field.data, band_names=["r", "i"])
    path = write_field(field, tmp_path / "two_bands.fits")
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-deblend")
    assert [layer.name for layer in viewer.layers] == ["two_bands.fits [r]", "two_bands.fits [i]"]
    widget = _detect(viewer, qtbot)
    cat = widget.session.detections.result.catalog
    assert {"flux_auto_r", "flux_auto_i"} <= set(cat.colnames)
