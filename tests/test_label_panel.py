"""The Label panel in a real viewer: keys, outline colours, browser column and filter, components, reopening."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deblend.field import write_field

from .conftest import gaussian_field

pytest.importorskip("napari")

SOURCES = [
    (128, 128, 6e5, 3.0),
    (128, 140, 3e5, 2.5),
    (60, 180, 4e5, 2.5),
    (70, 187, 3e5, 2.0),
    (200, 60, 3e5, 2.0),
    (40, 40, 4e5, 2.0),
    (210, 200, 2.5e5, 2.0),
]


def _press(viewer, qtbot, key):
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, key)


def _open(make_napari_viewer, qtbot, path, database):
    from napari_deblend._widgets import BlendBrowserWidget, DetectionWidget
    from napari_deblend._widgets.label_panel import LabelWidget

    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-deblend")
    detection = DetectionWidget(viewer)
    browser = BlendBrowserWidget(viewer)
    panel = LabelWidget(viewer, database=database)
    for widget in (detection, browser, panel):
        viewer.window.add_dock_widget(widget)
    detection.run()
    qtbot.waitUntil(lambda: panel.book is not None and bool(panel.book.blends), timeout=30_000)
    return viewer, browser, panel


def test_label_through_the_panel_and_reopen(make_napari_viewer, qtbot, tmp_path):
    path = write_field(gaussian_field(SOURCES, seed=3), tmp_path / "pairs.fits")
    database = tmp_path / "labels.sqlite"
    viewer, browser, panel = _open(make_napari_viewer, qtbot, path, database)
    session = panel.session
    n_blends = len(session.blends)
    assert n_blends >= 2
    assert panel.progress.text().startswith(f"0 / {n_blends} blends labelled")

    # keyboard: select the first blend, mark it bad (merged) with g / b / u
    session.select(session.blends[0].id)
    first = session.selected_blend
    panel.failure_combo.setCurrentText("merged")
    panel.note_edit.setText("two cores, one source")
    _press(viewer, qtbot, "b")
    assert session.blend_verdicts == {first: "bad"}
    assert panel.progress.text().startswith(f"1 / {n_blends} blends labelled")
    label = panel.book.labels_of("blend", first)[0]
    assert (label.failure, label.note) == ("merged", "two cores, one source")
    _press(viewer, qtbot, "g")
    assert session.blend_verdicts == {first: "clean"}
    _press(viewer, qtbot, "u")
    assert session.blend_verdicts == {first: "bad"}

    # the blend's outline is red, the others stay orange
    shapes = session.detections.layers["shapes"]
    ids = np.asarray(shapes.features["blend_id"])
    np.testing.assert_allclose(
        shapes.edge_color[ids == first][:, :3], [[1.0, 59 / 255, 59 / 255]] * (ids == first).sum(), atol=0.01
    )
    assert np.all(shapes.edge_color[ids != first][:, 0] == 1.0)  # orange
    # the browser shows the label and can hide labelled blends
    rows = {int(browser.table.item(r, 0).value): r for r in range(browser.table.rowCount())}
    from napari_deblend._widgets.blend_browser import LABEL_COLUMN

    assert browser.table.item(rows[first], LABEL_COLUMN).text() == "bad"
    browser.unlabelled_only.setChecked(True)
    assert browser.table.isRowHidden(rows[first])
    assert not any(browser.table.isRowHidden(r) for b, r in rows.items() if b != first)

    # a component of a deblended blend, judged for a named model
    second = session.blends[1].id
    session.select(second)
    from napari_deblend import deblend

    result = deblend(
        session.detections.field,
        session.blend(second),
        model="sextractor",
        background=session.detections.result.background,
    )
    session.add_result(second, "sextractor", result)
    assert panel.model_combo.currentText() == "sextractor"
    assert panel.component_combo.count() == 1 + len(result.components)
    _press(viewer, qtbot, "k")  # target: component 1
    _press(viewer, qtbot, "a")
    comp = panel.book.labels_of("blend", second)[1]
    assert (comp.verdict, comp.model, comp.component) == ("ambiguous", "sextractor", 1)
    assert comp.model_version.startswith("sextractor")
    np.testing.assert_allclose(
        comp.component_position, result.positions[0] + np.asarray(result.origin), atol=1e-6
    )
    assert second not in session.blend_verdicts  # a component label does not label the whole blend

    # isolated galaxies: i steps to the brightest unlabelled one, g marks it clean
    _press(viewer, qtbot, "i")
    galaxy = panel.target[1]
    assert panel.target[0] == "isolated"
    _press(viewer, qtbot, "g")
    assert panel.book.isolated_verdicts() == {galaxy: "clean"}
    assert "labelled isolated galaxies" in [layer.name for layer in viewer.layers]
    _press(viewer, qtbot, "i")
    assert panel.target[1] != galaxy
    # a single detection offered to the deblender, selected in the browser, is labelled as the isolated galaxy
    single = session.singles[0]
    session.select(single.id)
    assert panel.target == ("isolated", int(single.members[0]))

    # a second viewer on the same database sees every label
    viewer2, browser2, panel2 = _open(make_napari_viewer, qtbot, path, database)
    assert panel2.session.blend_verdicts == {first: "bad"}
    assert panel2.book.isolated_verdicts() == {galaxy: "clean"}
    assert panel2.book.labels_of("blend", second)[1].verdict == "ambiguous"


def test_panel_refuses_a_file_that_is_not_a_database(make_napari_viewer, qtbot, tmp_path):
    from napari_deblend._widgets.label_panel import LabelWidget

    notes = tmp_path / "notes.txt"
    notes.write_text("not a database")
    viewer = make_napari_viewer()
    panel = LabelWidget(viewer)
    assert not panel.open_database(notes)
    assert "not an SQLite database" in panel.status.text()
    assert notes.read_text() == "not a database"
    assert not panel.clean_button.isEnabled()
