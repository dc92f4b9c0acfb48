"""``napari-deblend demo``: it opens on a pair of galaxies the deblender splits well."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deblend import deblend, detect, find_blends, measure, read_field
from napari_deblend._sample_data import SAMPLE_FIELD, SAMPLE_TRUTH
from napari_deblend.blends import Blend
from napari_deblend.commands.demo import demo_blend


@pytest.fixture(scope="module")
def sample_blends():
    field = read_field(SAMPLE_FIELD)
    catalog, segmentation = detect(field, preset="sextractor")
    return field, find_blends(catalog, segmentation)


def _blend(blend_id: int, n_members: int, blendedness: float) -> Blend:
    return Blend(id=blend_id, members=np.arange(1, n_members + 1), bbox=(0, 10, 0, 10),
                 positions=np.zeros((n_members, 2)), fluxes=np.ones(n_members), blendedness=blendedness)


def test_demo_blend_is_the_brightest_overlapping_pair_else_the_brightest_blend():
    blends = [_blend(1, 5, 0.3), _blend(2, 2, 0.02), _blend(3, 2, 0.2), _blend(4, 2, 0.4)]
    assert demo_blend(blends) == 3
    lopsided = Blend(id=2, members=np.arange(1, 3), bbox=(0, 10, 0, 10), positions=np.zeros((2, 2)),
                     fluxes=np.array([20.0, 1.0]), blendedness=0.5)
    assert demo_blend([lopsided, blends[2]]) == 3  # a bright galaxy with a faint neighbour is passed over
    assert demo_blend([lopsided]) == 2  # unless it is the only overlapping pair
    assert demo_blend(blends[:2]) == 1
    assert demo_blend([]) == 0


def test_the_sample_fields_demo_blend_is_deblended_well(sample_blends):
    from napari_deblend.truth import read_truth_catalog, truth_for_stamp

    field, blends = sample_blends
    chosen = next(b for b in blends if b.id == demo_blend(blends))
    assert chosen.n_members == 2 and chosen.blendedness >= 0.1
    result = deblend(field, chosen, model="peeling", device="cpu")
    truth = truth_for_stamp(read_truth_catalog(SAMPLE_TRUTH), result.origin, result.blend.shape[-2:])
    table = measure(result, truth=truth)
    assert result.quality != "Low" and result.n_components == len(truth.positions) == 2
    assert np.all(np.abs(table["dflux_frac"]) < 0.25), table["dflux_frac"]  # both galaxies found and split


def test_build_demo_selects_and_deblends_the_demo_blend(make_napari_viewer):
    from napari_deblend.commands.demo import _wait_for, _wait_for_deblend, build_demo

    viewer = make_napari_viewer()
    detection, browser, panel, comparison = build_demo(viewer)
    _wait_for(detection)
    _wait_for_deblend(panel)
    session = detection.session
    assert session.selected_blend == demo_blend(session.blends) > 0
    assert (session.selected_blend, "peeling") in session.results
