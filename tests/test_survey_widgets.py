"""Survey files in napari: the mask layer, and magnitudes in the panels from the field's one calibration."""

from __future__ import annotations

import numpy as np
import pytest

from .survey_files import BAD, write_style

pytest.importorskip("napari")


def test_mask_layer_and_calibrated_magnitudes_in_the_panels(make_napari_viewer, qtbot, tmp_path):
    from napari_deblend import deblend
    from napari_deblend._widgets import BlendBrowserWidget, DetectionWidget
    from napari_deblend._widgets.comparison import comparison_for

    path, _ = write_style("hsc", tmp_path / "calexp.fits")  # FLUXMAG0 = 27 mag: nothing like the preset's
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-deblend")
    mask = viewer.layers["calexp.fits mask"]
    assert mask._type_string == "labels"
    y0, y1, x0, x1 = BAD
    assert mask.data[y0:y1, x0:x1].all() and mask.data.sum() == (y1 - y0) * (x1 - x0)
    BlendBrowserWidget(viewer)
    widget = DetectionWidget(viewer)
    assert widget.layer_combo.count() == 1  # the mask is not an image to detect on
    widget.run()
    qtbot.waitUntil(lambda: widget.session.detections is not None, timeout=30_000)
    assert "per-pixel noise plane, 2500 masked pixels" in widget.status.text()
    assert [layer.name for layer in viewer.layers].count("calexp.fits mask") == 1

    session = widget.session
    field, blend = session.detections.field, session.blends[0]
    assert field.zero_point == pytest.approx(27.0)
    # the blend browser's magnitude: the field's zero point for one image unit
    assert blend.magnitude == pytest.approx(field.magnitude(np.clip(blend.fluxes, 0, None).sum()))
    result = deblend(field, blend, model="sextractor")
    session.results[(blend.id, "sextractor")] = result
    _, table = comparison_for(session, blend.id, "sextractor", layout="fast")
    np.testing.assert_allclose(table["mag"], field.magnitude(np.asarray(table["flux"])))
    assert table.meta["mag_zero_point"] == pytest.approx(27.0)
