"""Field-wide result mosaics and truth catalogues (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from napari_deblend import deblend
from napari_deblend._sample_data import SAMPLE_FIELD
from napari_deblend.deblenders.base import DeblendResult
from napari_deblend.errors import DeblendInputError
from napari_deblend.mosaic import ResultMosaic
from napari_deblend.truth import read_truth_catalog, truth_catalog_path, truth_for_stamp


def _result(blend_id, origin, values, shape=(10, 10)):
    comps = np.zeros((len(values), 1, *shape), np.float32)
    for k, v in enumerate(values):
        comps[k, 0, 2 + 3 * k: 4 + 3 * k, 2:5] = v
    blend = comps.sum(axis=0) + 1.0
    return DeblendResult(blend=blend, components=comps, positions=np.array([[3.0 + 3 * k, 3.0] for k in range(len(values))]),
                         noise=1.0, origin=origin, blend_id=blend_id)


def test_mosaic_paints_replaces_and_removes_results():
    mosaic = ResultMosaic((30, 30), "test")
    a = _result(1, (0, 0), [50.0, 20.0])
    b = _result(2, (5, 5), [30.0])  # overlaps a
    assert mosaic.add(a) == (0, 10, 0, 10)
    mosaic.add(b)
    assert mosaic.model_image.sum() == pytest.approx(a.components.sum() + b.components.sum())
    assert len(np.unique(mosaic.masks[mosaic.masks > 0])) == 3
    data, features = mosaic.positions()
    np.testing.assert_allclose(data[features["blend"] == 2], [[8.0, 8.0]])
    # residual: NaN outside painted stamps, the stamp's own inside
    assert np.isnan(mosaic.residual[20:, 20:]).all()
    assert mosaic.residual[0, 0] == pytest.approx(1.0)
    # a re-run of blend 1 replaces its light and labels, blend 2 untouched
    mosaic.add(_result(1, (0, 0), [10.0]))
    assert mosaic.model_image.sum() == pytest.approx(10.0 * 6 + b.components.sum())
    assert len(mosaic) == 2 and len(mosaic.positions()[0]) == 2
    # removal brings back the overlapped residual of blend 2
    mosaic.remove(1)
    assert mosaic.model_image.sum() == pytest.approx(b.components.sum())
    assert np.isfinite(mosaic.residual[5:15, 5:15]).all() and np.isnan(mosaic.residual[0, 0])
    # a stamp hanging over the edge is clipped, not an error
    assert mosaic.add(_result(3, (25, -5), [5.0])) == (25, 30, 0, 5)
    with pytest.raises(DeblendInputError, match="mosaic shape"):
        ResultMosaic((0, 5), "test")


def test_truth_of_the_sample_field_redraws_its_galaxies():
    path = truth_catalog_path(SAMPLE_FIELD)
    assert path is not None and path.name == "sample_field_truth.ecsv"
    table = read_truth_catalog(path)
    row = table[np.argmax(table["flux"])]
    y0, x0 = int(row["y"]) - 20, int(row["x"]) - 20
    truth = truth_for_stamp(table, (y0, x0), (40, 40))
    assert truth is not None
    # brightest first, at the catalogue position, holding the flux drawn into the field
    np.testing.assert_allclose(truth.positions[0], [row["y"] - y0, row["x"] - x0])
    assert truth.components[0].sum() == pytest.approx(row["flux_drawn"], rel=0.05)
    assert np.all(np.diff(truth.components.sum(axis=(1, 2, 3))) <= 1e-3)
    assert truth_for_stamp(table, (-500, -500), (10, 10)) is None


def test_truth_catalog_errors_name_the_file(tmp_path):
    with pytest.raises(DeblendInputError, match="does not exist"):
        read_truth_catalog(tmp_path / "none.ecsv")
    bad = tmp_path / "bad_truth.ecsv"
    Table({"x": [1.0], "y": [2.0]}).write(bad)
    with pytest.raises(DeblendInputError, match=r"bad_truth.ecsv lacks the columns flux"):
        read_truth_catalog(bad)
    (tmp_path / "junk.ecsv").write_text("not a table at all\x00")
    with pytest.raises(DeblendInputError, match="cannot read truth catalogue"):
        read_truth_catalog(tmp_path / "junk.ecsv")
    assert truth_catalog_path(tmp_path / "field.fits") is None


def test_a_whole_deblend_result_paints_into_the_mosaic(blend_field):
    from napari_deblend import detect, find_blends

    field = blend_field
    cat, seg = detect(field)
    result = deblend(field, find_blends(cat, seg)[0], model="sextractor")
    mosaic = ResultMosaic(field.shape, "sextractor")
    mosaic.add(result)
    assert mosaic.model_image.sum() == pytest.approx(result.components.sum(), rel=1e-5)
