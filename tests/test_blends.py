import numpy as np
import pytest

from napari_deblend import detect, find_blends
from napari_deblend.blends import cut_stamp, ellipses_overlap, gaussian_blendedness, touching_pairs
from napari_deblend.errors import DeblendInputError

from .conftest import gaussian_field


def test_pair_is_one_blend_and_isolated_are_not(blend_field):
    cat, seg = detect(blend_field)
    blends = find_blends(cat, seg)
    assert len(blends) == 1
    blend = blends[0]
    assert blend.n_members == 2
    np.testing.assert_allclose(np.sort(blend.positions[:, 1]), [150, 162], atol=1.0)
    # brightest first
    assert blend.fluxes[0] >= blend.fluxes[1]
    assert 0.001 < blend.blendedness < 0.5
    assert set(cat["blend_id"][cat["blend_id"] > 0]) == {1}
    assert (cat["blend_id"] == 0).sum() == 3
    ymin, ymax, xmin, xmax = blend.bbox
    assert ymin < 150 < ymax and xmin < 150 and 162 < xmax


def test_kron_overlap_groups_sources_with_separate_footprints():
    # two sources whose isophotes do not touch but whose Kron ellipses overlap
    field = gaussian_field([(64, 56, 2e5, 2.0), (64, 68, 2e5, 2.0)], shape=(128, 128))
    cat, seg = detect(field)
    assert len(cat) == 2
    assert len(touching_pairs(seg)) == 0
    assert len(find_blends(cat, seg, kron_overlap=False)) == 0
    assert len(find_blends(cat, seg, kron_overlap=True)) == 1


def test_touching_pairs():
    seg = np.zeros((6, 6), np.int32)
    seg[1:3, 1:3] = 1
    seg[3, 3] = 2  # diagonal neighbour of 1
    seg[5, 5] = 3
    np.testing.assert_array_equal(touching_pairs(seg), [[1, 2]])


def test_ellipse_overlap():
    assert ellipses_overlap((0, 0, 5, 1, 0), (8, 0, 5, 1, 0))
    assert not ellipses_overlap((0, 0, 5, 1, np.pi / 2), (8, 0, 5, 1, np.pi / 2))


def test_blendedness_of_identical_superposed_sources_is_half():
    from astropy.table import Table

    cat = Table({"x": [10.0, 10.0], "y": [5.0, 5.0], "x2": [4.0, 4.0], "y2": [4.0, 4.0], "xy": [0.0, 0.0],
                 "flux_auto": [1.0, 1.0]})
    np.testing.assert_allclose(gaussian_blendedness(cat, np.array([0, 1])), [0.5, 0.5])


def test_cut_stamp_pads_at_edges(blend_field):
    cat, seg = detect(blend_field)
    blend = find_blends(cat, seg)[0]
    stamp = cut_stamp(blend_field.data, blend, size=48)
    assert stamp.data.shape == (1, 48, 48) and not stamp.padded
    y0, x0 = stamp.origin
    np.testing.assert_array_equal(stamp.data[0], blend_field.data[0, y0 : y0 + 48, x0 : x0 + 48])
    np.testing.assert_allclose(stamp.positions + [y0, x0], blend.positions)
    edge = cut_stamp(blend_field.data, blend, size=400)
    assert edge.padded and edge.mask.any() and not edge.mask.all()
    assert np.all(edge.data[edge.mask] == 0)


def test_bad_catalogue_is_a_clear_error(blend_field):
    cat, seg = detect(blend_field)
    cat.remove_column("x2")
    with pytest.raises(DeblendInputError, match="lacks column"):
        find_blends(cat, seg)
