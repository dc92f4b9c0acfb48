"""Source positions given in field pixels (clicked in the viewer): library and Deblend panel."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deblend import deblend
from napari_deblend.blends import find_blends
from napari_deblend.deblenders.base import takes_positions
from napari_deblend.deblending import positions_in_window, stamp_window
from napari_deblend.detection import detect
from napari_deblend.errors import DeblendInputError
from napari_deblend.field import write_field

from .conftest import gaussian_field, viewer_with_deblend_panel

# a pair 8 px apart and a single galaxy
SOURCES = [(100, 100, 6e5, 2.5), (100, 108, 4e5, 2.0), (40, 180, 4e5, 2.5)]
PAIR = np.array([[100.0, 100.0], [100.0, 108.0]])


@pytest.fixture(scope="module")
def pair_field():
    field = gaussian_field(SOURCES, seed=5)
    catalog, segmentation = detect(field)
    blends = find_blends(catalog, segmentation)
    blend = min(blends, key=lambda b: np.hypot(*(np.asarray(b.center) - PAIR.mean(axis=0))))
    return field, blend


def test_which_deblenders_take_positions():
    assert takes_positions("vae") and takes_positions("unet")
    assert not takes_positions("peeling") and not takes_positions("sextractor")


def test_field_positions_become_the_sources(pair_field):
    field, blend = pair_field
    window = stamp_window(blend, "vae", device="cpu")
    result = deblend(field, blend, model="vae", device="cpu",
                     field_positions=PAIR)
    assert tuple(result.origin) == window[:2]
    assert result.info["positions_from"] == "given"
    assert result.n_components == 2
    # the components sit where they were clicked, in the order given
    field_pos = result.positions + np.asarray(result.origin, float)
    np.testing.assert_allclose(field_pos, PAIR, atol=1.0)
    # one click only: one component, at that click
    one = deblend(field, blend, model="unet", device="cpu",
                  field_positions=PAIR[:1])
    assert one.info["positions_from"] == "given" and one.n_components == 1
    np.testing.assert_allclose(one.positions[0] + np.asarray(one.origin, float), PAIR[0], atol=1.0)


def test_positions_in_window_keeps_those_on_the_stamp(pair_field):
    _, blend = pair_field
    window = stamp_window(blend, "vae", device="cpu")
    points = np.vstack([PAIR, [[40.0, 180.0]]])
    np.testing.assert_array_equal(positions_in_window(points, window), PAIR)


def test_bad_field_positions_are_clear_errors(pair_field):
    field, blend = pair_field
    with pytest.raises(DeblendInputError, match=r"field_positions \[\[40.0, 180.0\]\] lie outside blend"):
        deblend(field, blend, model="vae", device="cpu", field_positions=[[40.0, 180.0]])
    with pytest.raises(DeblendInputError, match=r"field_positions has shape \(3,\)"):
        deblend(field, blend, model="vae", device="cpu", field_positions=[1.0, 2.0, 3.0])
    with pytest.raises(DeblendInputError, match="not both"):
        deblend(field, blend, model="vae", device="cpu", field_positions=PAIR, positions=PAIR - 80)
    with pytest.raises(DeblendInputError, match="needs a Field"):
        deblend(np.zeros((48, 48)), model="vae", device="cpu", field_positions=PAIR)


def test_deblend_panel_uses_clicked_positions(make_napari_viewer, qtbot, tmp_path):
    pytest.importorskip("napari")
    from napari_deblend._widgets._clicked_positions import LAYER_NAME
    from napari_deblend._widgets.deblend_panel import POSITION_CHOICES

    path = write_field(gaussian_field(SOURCES, seed=5), tmp_path / "pair.fits")
    viewer, session, panel = viewer_with_deblend_panel(make_napari_viewer, qtbot, path, "vae")

    layer = panel.click_positions()
    assert panel.use_clicked_positions and layer.name == LAYER_NAME and layer.mode == "add"
    assert viewer.layers.selection.active is layer
    source = session.detections.source_layer
    for y, x in PAIR:  # as a click puts them: world coordinates of the field pixel
        layer.add(layer.world_to_data(source.data_to_world([y, x])))
    np.testing.assert_allclose(panel.clicked.field_points(), PAIR)

    blend = min(session.blends, key=lambda b: np.hypot(*(np.asarray(b.center) - PAIR.mean(axis=0))))
    session.select(blend.id)
    panel.deblend_selected()
    qtbot.waitUntil(lambda: not panel.busy and panel.progress.value() == 1, timeout=120_000)
    result = session.results[(blend.id, "vae")]
    assert result.info["positions_from"] == "given"
    np.testing.assert_allclose(result.positions + np.asarray(result.origin, float), PAIR, atol=1.0)

    # back to the model's own sources; Clear empties the layer
    panel.positions_combo.setCurrentText(POSITION_CHOICES[0])
    panel.deblend_selected()
    qtbot.waitUntil(lambda: not panel.busy and panel.progress.value() == 1, timeout=120_000)
    assert session.results[(blend.id, "vae")].info["positions_from"] != "given"
    panel.clear_clicks_button.click()
    assert len(panel.clicked.field_points()) == 0
