"""Parents and children: which detection a component belongs to, ids, primary rows and flags."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deblend.blends import Blend
from napari_deblend.deblenders.base import DeblendResult
from napari_deblend.measurements import MATCH_RADIUS
from napari_deblend.parents import (
    NO_CHILD,
    NOT_ANSWERED,
    NOT_OFFERED,
    PIECE,
    PIECE_P_GALAXY,
    SPLIT_REFUSED,
    UNRECOGNISED_BLEND,
    answered_detections,
    assign_parents,
    child_ids,
    child_index,
    confirm_split,
    group_children,
    id_stride,
    min_child_separation,
    parent_summary,
    piece_children,
)
from napari_deblend.presets import get_preset


def test_ids_depend_only_on_the_detection_and_the_rank_of_the_child():
    assert id_stride(9) == 10 and id_stride(650) == 1000 and id_stride(1000) == 10000
    parents = np.array([45, 45, 7, 45])
    ranks = child_index(parents)
    assert ranks.tolist() == [1, 2, 1, 3]
    assert child_ids(parents, ranks, id_stride(650)).tolist() == [1045, 2045, 1007, 3045]


def test_components_go_to_their_detection_and_neighbours_are_dropped():
    # group: detections 3 (y=20, x=20) and 4 (y=20, x=30); detection 9 is a neighbour outside the group
    members = np.array([3, 4])
    member_positions = np.array([[20.0, 20.0], [20.0, 30.0]])
    positions = np.array([
        [20.5, 20.4],  # on 3, matched to 3
        [20.0, 29.0],  # on 4, matched to 4
        [22.0, 24.0],  # a second galaxy on 3's footprint: unmatched, goes to the footprint's owner
        [40.0, 40.0],  # on the neighbour's footprint: dropped
        [10.0, 33.0],  # off every footprint but inside the group's box: nearest detection (4)
        [60.0, 60.0],  # off every footprint, outside the box: dropped
    ])
    labels = np.array([3, 4, 3, 9, 0, 0])
    parents = assign_parents(positions, labels, members, member_positions, bbox=(5, 36, 5, 46))
    assert parents.tolist() == [3, 4, 3, 0, 4, 0]


def test_group_children_keeps_the_group_and_recomputes_the_residual():
    h = w = 32
    yy, xx = np.mgrid[:h, :w]
    blob = lambda y, x: np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)[None]  # noqa: E731
    components = np.stack([blob(16, 16) * 100, blob(16, 28) * 50])
    stamp = components.sum(axis=0)
    result = DeblendResult(blend=stamp, components=components, positions=[[16, 16], [16, 28]], origin=(100, 200),
                           info={"flux_correction": np.array([1.0, 2.0])})  # fmt: skip
    segmentation = np.zeros((400, 400), np.int32)
    segmentation[110:122, 210:222] = 5  # the group's detection, around field (116, 216)
    segmentation[110:122, 225:232] = 6  # a neighbour, under the second component at field (116, 228)
    blend = Blend(id=12, members=np.array([5]), bbox=(108, 124, 208, 224), positions=np.array([[116.0, 216.0]]),
                  fluxes=np.array([1.0]), blendedness=0.0)  # fmt: skip
    kept = group_children(result, blend, segmentation)
    assert kept.n_components == 1 and kept.info["parents"].tolist() == [5] and kept.info["dropped"] == 1
    assert kept.info["flux_correction"].tolist() == [1.0]
    np.testing.assert_allclose(kept.residual, components[1], atol=1e-5)  # the neighbour's light stays
    # the same map seen from a tile whose pixel (0, 0) is field (100, 150)
    tile_view = segmentation[100:, 150:]
    assert group_children(result, blend, tile_view, offset=(100, 150)).info["parents"].tolist() == [5]
    assert kept.info["pieces"].tolist() == [False]


def test_group_children_marks_pieces_as_the_catalogue_does():
    h = w = 32
    yy, xx = np.mgrid[:h, :w]
    blob = lambda y, x: np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)[None]  # noqa: E731
    components = np.stack([blob(16, 12) * 100, blob(16, 22) * 50, blob(16, 14) * 20])
    blend = Blend(id=3, members=np.array([5, 6]), bbox=(100, 132, 200, 232),
                  positions=np.array([[116.0, 212.0], [116.0, 230.0]]), fluxes=np.ones(2), blendedness=0.3)  # fmt: skip
    result = DeblendResult(blend=components.sum(axis=0), components=components, positions=[[16, 12], [16, 22], [16, 14]],
                           origin=(100, 200), info={"galaxy_probabilities": np.array([1.0, 0.9, 0.9])})  # fmt: skip
    segmentation = np.zeros((300, 300), np.int32)
    segmentation[108:124, 204:226] = 5
    segmentation[108:124, 226:236] = 6
    kept = group_children(result, blend, segmentation)
    # the second lies on no detection of the sep blend, the third within 2 px of the brighter first
    assert kept.info["pieces"].tolist() == [False, True, True]
    # a deblender that asks for it: the pieces' light goes to the galaxy child of their detection
    result.info["pieces_to_host"] = True
    absorbed = group_children(result, blend, segmentation)
    assert absorbed.n_components == 1 and absorbed.info["parents"].tolist() == [5]
    assert absorbed.info["pieces"].tolist() == [False] and absorbed.info["absorbed_pieces"].tolist() == [2]
    np.testing.assert_allclose(absorbed.components[0], components.sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(absorbed.residual, 0.0, atol=1e-5)  # components + residual still make the stamp


def test_two_children_closer_than_the_psf_fwhm_are_one_galaxy():
    # lsst-i: 0.7" FWHM at 0.2" a pixel, 3.5 px; never below the 3 px of the match, whatever the PSF
    lsst = get_preset("lsst-i")
    assert min_child_separation(lsst.psf_fwhm / lsst.pixel_scale) == pytest.approx(3.5)
    assert min_child_separation(1.7) == MATCH_RADIUS and min_child_separation(None) == MATCH_RADIUS
    # one detection, deblended alone, split in two children 3.3 px apart, both sure to be galaxies
    positions = np.array([[20.0, 20.0], [20.0, 23.3]])
    fluxes, p_galaxy, detections = np.array([100.0, 30.0]), np.array([1.0, 0.99]), np.array([[20.0, 20.5]])
    assert piece_children(positions, fluxes, p_galaxy, detections).tolist() == [False, False]
    at_fwhm = piece_children(positions, fluxes, p_galaxy, detections, min_separation=min_child_separation(3.5))
    assert at_fwhm.tolist() == [False, True]  # the fainter is a piece of the brighter
    far = positions + [[0.0, 0.0], [0.0, 0.5]]  # 3.8 px apart: two galaxies
    assert piece_children(far, fluxes, p_galaxy, detections, min_separation=3.5).tolist() == [False, False]


def test_primary_rows_and_flags():
    numbers = np.array([1, 2, 3, 4])
    offered = np.array([True, True, False, True])
    summary = parent_summary(numbers, np.array([1, 2, 2]), offered)
    assert summary["n_child"].tolist() == [1, 2, 0, 0]
    assert summary["primary"].tolist() == [False, False, True, True]
    assert summary["flags"].tolist() == [0, UNRECOGNISED_BLEND, NOT_OFFERED, NO_CHILD]
    assert summary["child_flags"].tolist() == [0, UNRECOGNISED_BLEND, UNRECOGNISED_BLEND]
    assert summary["child_primary"].tolist() == [True, True, True]
    # detection 1 was deblended alone and its one child confirms one galaxy: the detection answers
    alone = parent_summary(numbers, np.array([1, 2, 2]), offered, alone=np.array([True, True, False, True]))
    assert alone["primary"].tolist() == [True, False, True, True]
    assert alone["child_primary"].tolist() == [False, True, True]
    assert alone["flags"].tolist() == summary["flags"].tolist()
    # detection 1's one child is the sum of a split the deblender was not sure of
    unsure = parent_summary(numbers, np.array([1, 2, 2]), offered, alone=np.array([True, True, False, True]),
                            refused=np.array([True, False, False]))
    assert unsure["flags"].tolist() == [SPLIT_REFUSED, UNRECOGNISED_BLEND, NOT_OFFERED, NO_CHILD]
    assert unsure["child_flags"].tolist() == [SPLIT_REFUSED, UNRECOGNISED_BLEND, UNRECOGNISED_BLEND]
    assert unsure["primary"].tolist() == alone["primary"].tolist()


def test_a_detection_of_a_sep_blend_that_no_child_lies_on_answers_itself():
    numbers = np.array([1, 2, 3])  # 1 and 2 are a sep blend, 3 a detection deblended alone
    positions = np.array([[10.0, 10.0], [10.0, 20.0], [40.0, 40.0]])
    # 1's child is on it; 2's only child is 5 px away (another light of the blend); 3's two children are off it
    parents = np.array([1, 2, 3, 3])
    child_positions = np.array([[10.5, 10.0], [10.0, 25.0], [40.0, 36.0], [40.0, 44.0]])
    answered = answered_detections(numbers, positions, parents, child_positions)
    assert answered.tolist() == [True, False, False]
    summary = parent_summary(numbers, parents, np.ones(3, bool), alone=np.array([False, False, True]),
                             answered=answered)
    assert summary["primary"].tolist() == [False, True, False]  # a split detection alone is no answer
    assert summary["flags"].tolist() == [0, NOT_ANSWERED, UNRECOGNISED_BLEND]
    assert summary["child_primary"].tolist() == [True, True, True, True]
    assert answered_detections(numbers, positions, parents, child_positions, max_distance=3.9).tolist() == [
        True, False, False]


def test_pieces_are_listed_never_primary_and_no_galaxy_of_their_detection():
    # stamp 1: a sep blend of detections 1 and 2; stamp 2: detection 3 alone; stamp 3: detection 4 alone
    numbers, stamps = np.array([1, 2, 3, 4]), np.array([1, 1, 2, 3])
    positions = np.array([[10.0, 10.0], [10.0, 20.0], [40.0, 40.0], [80.0, 80.0]])
    parents = np.array([1, 2, 2, 1, 3, 3, 4, 4])
    child_stamps = np.array([1, 1, 1, 1, 2, 2, 3, 3])
    child_positions = np.array([
        [10.0, 10.5],  # on detection 1
        [10.0, 20.0],  # on detection 2
        [16.0, 20.0],  # on no detection of the blend: a piece
        [11.0, 12.0],  # on detection 1, 2.2 px from a brighter child: a piece
        [40.0, 40.0], [40.0, 46.0],  # detection 3: the one off it is doubted (P_GALAXY 0.3): a piece
        [80.0, 80.0], [80.0, 86.0],  # detection 4: the one off it is sure (0.95): a galaxy of its own
    ])  # fmt: skip
    fluxes = np.array([100.0, 90.0, 10.0, 20.0, 100.0, 30.0, 100.0, 30.0])
    p_galaxy = np.array([1.0, 1.0, 0.99, 1.0, 1.0, 0.3, 1.0, 0.95])

    def per_stamp(probabilities):
        return np.concatenate([piece_children(child_positions[child_stamps == s], fluxes[child_stamps == s],
                                              None if probabilities is None else probabilities[child_stamps == s],
                                              positions[stamps == s]) for s in (1, 2, 3)])  # fmt: skip

    pieces = per_stamp(p_galaxy)
    assert pieces.tolist() == [False, False, True, True, False, True, False, False]
    assert 0.3 < PIECE_P_GALAXY < 0.95
    assert per_stamp(None).tolist() == [False, False, True, True, False, False, False, False]
    answered = answered_detections(numbers, positions, parents, child_positions)
    summary = parent_summary(numbers, parents, np.ones(4, bool), alone=np.array([False, False, True, True]),
                             answered=answered, pieces=pieces)
    assert summary["n_child"].tolist() == [2, 2, 2, 2]  # DEBLEND_NCHILD counts every child
    # detection 3: one galaxy beside a piece: that galaxy's child answers, no unrecognised blend
    assert summary["primary"].tolist() == [False, False, False, False]
    assert summary["flags"].tolist() == [0, 0, 0, UNRECOGNISED_BLEND]
    assert summary["child_primary"].tolist() == [True, True, False, False, True, False, True, True]
    assert summary["child_flags"].tolist() == [0, 0, PIECE, PIECE, 0, PIECE, UNRECOGNISED_BLEND, UNRECOGNISED_BLEND]
    # a detection alone whose children are all pieces answers itself
    all_pieces = parent_summary(numbers[2:3], np.array([3, 3]), np.ones(1, bool), alone=np.ones(1, bool),
                                pieces=np.array([True, True]))
    assert all_pieces["primary"].tolist() == [True] and all_pieces["child_primary"].tolist() == [False, False]


def _two_blobs(probabilities, threshold=0.8):
    yy, xx = np.mgrid[:32, :32]
    blob = lambda y, x: np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)[None]  # noqa: E731
    components = np.stack([blob(16, 14) * 100, blob(16, 20) * 50]).astype(np.float32)
    return DeblendResult(blend=components.sum(axis=0), components=components, positions=[[16, 14], [16, 20]],
                         info={"count_probabilities": np.asarray(probabilities), "min_split_probability": threshold,
                               "flux_correction": np.array([1.0, 2.0])})  # fmt: skip


def test_an_unsure_split_of_a_detection_alone_is_summed_into_one_galaxy():
    unsure = confirm_split(_two_blobs([0.05, 0.35, 0.5, 0.1]))  # P(two or more) = 0.6 < 0.8
    assert unsure.n_components == 1 and unsure.info["split_refused"] == 2
    np.testing.assert_allclose(unsure.components[0], unsure.blend, atol=1e-4)
    np.testing.assert_allclose(unsure.residual, 0.0, atol=1e-4)
    assert abs(unsure.positions[0, 0] - 16.0) < 1e-3 and 14.0 < unsure.positions[0, 1] < 20.0  # centroid of the sum
    assert unsure.info["flux_correction"].tolist() == [1.0]
    sure = confirm_split(_two_blobs([0.0, 0.1, 0.8, 0.1]))
    assert sure.n_components == 2 and "split_refused" not in sure.info
    assert confirm_split(_two_blobs([0.05, 0.35, 0.5, 0.1], threshold=0.0)).n_components == 2


def test_a_detection_alone_keeps_only_the_sources_the_finder_is_sure_of():
    yy, xx = np.mgrid[:32, :40]
    blob = lambda y, x: np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)[None]  # noqa: E731
    components = np.stack([blob(16, 10) * 100, blob(16, 30) * 60, blob(16, 13) * 20]).astype(np.float32)

    def result(probabilities):
        return DeblendResult(blend=components.sum(axis=0), components=components.copy(),
                             positions=[[16, 10], [16, 30], [16, 13]], masks=components[:, 0] > 5,
                             info={"source_probabilities": np.asarray(probabilities), "min_split_probability": 0.85,
                                   "parents": np.array([7, 7, 7])})  # fmt: skip

    partly = confirm_split(result([0.97, 0.9, 0.4]))  # the third is a knot of the first: summed into it
    assert partly.n_components == 2 and "split_refused" not in partly.info
    np.testing.assert_allclose(partly.components[0], components[0] + components[2], rtol=1e-6)
    np.testing.assert_allclose(partly.components[1], components[1])
    np.testing.assert_allclose(partly.residual, 0.0, atol=1e-4)  # no light lost
    assert partly.info["source_probabilities"].tolist() == [0.97, 0.9] and partly.info["parents"].tolist() == [7, 7]
    assert partly.masks[0].sum() == (components[0, 0] > 5).sum() + (components[2, 0] > 5).sum() - (
        (components[0, 0] > 5) & (components[2, 0] > 5)).sum()
    refused = confirm_split(result([0.97, 0.6, 0.4]))
    assert refused.n_components == 1 and refused.info["split_refused"] == 3
    np.testing.assert_allclose(refused.components[0], components.sum(axis=0), rtol=1e-6)
    assert confirm_split(result([0.3, 0.9, 0.86])).n_components == 3  # the brightest always stays


def test_a_summed_piece_brings_its_flux_and_its_uncertainty_to_its_host():
    """FLUX_MODEL_ERR of the host: its own and the piece's in quadrature; a model's own flux adds up."""
    yy, xx = np.mgrid[:32, :40]
    blob = lambda y, x: np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)[None]  # noqa: E731
    components = np.stack([blob(16, 10) * 100, blob(16, 30) * 60, blob(16, 13) * 20]).astype(np.float32)
    sigma_images = np.stack([np.full((1, 32, 40), s, np.float32) for s in (3.0, 2.0, 4.0)])
    result = DeblendResult(blend=components.sum(axis=0), components=components.copy(),
                           positions=[[16, 10], [16, 30], [16, 13]],
                           info={"source_probabilities": np.array([0.97, 0.9, 0.4]), "min_split_probability": 0.85,
                                 "flux_sigma": np.array([30.0, 20.0, 40.0], np.float32),
                                 "component_sigma": sigma_images, "flux_pred": np.array([900.0, 500.0, 150.0])})  # fmt: skip
    merged = confirm_split(result)
    assert merged.n_components == 2
    np.testing.assert_allclose(merged.info["flux_sigma"], [50.0, 20.0], rtol=1e-6)  # hypot(30, 40)
    assert merged.info["flux_sigma"].dtype == np.float32
    np.testing.assert_allclose(merged.info["component_sigma"][:, 0, 0, 0], [5.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(merged.info["flux_pred"], [1050.0, 500.0])
    assert result.info["flux_sigma"].tolist() == [30.0, 20.0, 40.0]  # the input result is left as it was


def test_group_children_of_a_detection_alone_confirms_the_split():
    result = _two_blobs([0.05, 0.35, 0.5, 0.1])
    segmentation = np.zeros((32, 32), np.int32)
    segmentation[10:22, 8:26] = 7
    blend = Blend(id=1, members=np.array([7]), bbox=(8, 24, 6, 28), positions=np.array([[16.0, 16.0]]),
                  fluxes=np.array([1.0]), blendedness=0.0)  # fmt: skip
    kept = group_children(result, blend, segmentation)
    assert kept.n_components == 1 and kept.info["parents"].tolist() == [7] and kept.info["split_refused"] == 2
