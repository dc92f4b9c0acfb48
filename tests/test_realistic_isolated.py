"""Shipped networks on isolated galaxies with knots, arms or an irregular shape: one galaxy, one component.

A regression guard for the failure that real morphologies showed: a network that takes a
star-forming knot or a spiral arm for a second galaxy splits one galaxy into several
components. The galaxies here are procedural (no real-galaxy pool needed) and bright
enough that their structure is visible (magnitudes 20-23 at ``lsst-i``); each
deblender is judged by its spurious components per galaxy (components matched to no
true galaxy) against a threshold with headroom over the shipped weights' figure, so
that a retraining that brings the splitting back fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_deblend.deblenders.base import get_deblender
from napari_deblend.simulate import simulate_blends
from napari_deblend.training.evaluate import evaluate_model, summarize_model
from napari_deblend.training.testsets import TestSet, blends_to_test_set

FAMILIES = {"knots": 1.0, "spiral": 1.0, "irregular": 1.0}
N = 48  # isolated galaxies, 16 of each family on average
SEED = 7_700_001  # a seed of its own (not a training, validation or test seed)

# spurious components per galaxy the shipped weights must stay under on these bright galaxies: the
# weights trained on the realistic mix give 0.33 (0.75 without merging pieces back), the parametric
# weights shipped before them 0.60 (1.15 without); unet and vae take the source finder's peaks, which
# still fall on bright knots and arms: 1.125 and 1.25 with the field-like finder (1.17 and 1.31 before)
MAX_SPURIOUS = {"peeling": 0.45, "unet": 1.3, "vae": 1.4}


@pytest.fixture(scope="module")
def isolated_structured_galaxies() -> TestSet:
    """``N`` isolated knotty / spiral / irregular galaxies, magnitudes 20-23, with their truth."""
    blends = simulate_blends(N, n_galaxies=1, stamp_size=48, preset="lsst-i", seed=SEED, mag_range=(20.0, 23.0),
                             morphology=FAMILIES)
    return blends_to_test_set(blends, 1, SEED, "lsst-i", "realistic")


@pytest.mark.parametrize("model", sorted(MAX_SPURIOUS))
def test_a_shipped_network_does_not_split_isolated_structured_galaxies(model, isolated_structured_galaxies):
    table, _ = evaluate_model(get_deblender(model, device="cpu"), isolated_structured_galaxies, device="cpu")
    summary = summarize_model(table)
    assert summary["ranks"]["0"]["recovered"] >= 0.95
    assert summary["spurious_per_stamp"] <= MAX_SPURIOUS[model], (
        f"{model} splits isolated knotty / spiral / irregular galaxies: "
        f"{summary['spurious_per_stamp']:.3f} spurious components per galaxy")


def test_the_flux_calibration_leaves_single_galaxies_alone(isolated_structured_galaxies):
    """calibrate_single is off: a stamp of one component keeps the refit's flux (factor 1)."""
    from napari_deblend.deblenders.peeling import PeelingDeblender

    model = PeelingDeblender(device="cpu")  # its own instance: get_deblender's is shared, and this one is changed
    assert model.calibration_applies() and not model.calibrate_single
    results = model.deblend_batch(isolated_structured_galaxies.images[:8])
    singles = [r for r in results if r.n_components == 1]
    assert singles and all(np.all(r.info["flux_correction"] == 1.0) for r in singles)
    model.calibrate_single = True
    again = model.deblend_batch(isolated_structured_galaxies.images[:8])
    assert any(np.any(r.info["flux_correction"] != 1.0) for r in again if r.n_components == 1)


def test_giving_pieces_back_removes_split_components(isolated_structured_galaxies):
    """peeling's split verifier, with give_back_pieces: 0.33 -> 0.19 spurious components per galaxy at the shipped
    threshold (0.5) on these galaxies when it was shipped; the flux goes back to the galaxy."""
    from napari_deblend.deblenders.peeling import PeelingDeblender

    model = PeelingDeblender(device="cpu")  # its own instance: get_deblender's is shared, and this one is changed
    plain = summarize_model(evaluate_model(model, isolated_structured_galaxies, device="cpu")[0])
    model.give_back_pieces = True
    given_back = summarize_model(evaluate_model(model, isolated_structured_galaxies, device="cpu")[0])
    assert given_back["spurious_per_stamp"] <= 0.25 < plain["spurious_per_stamp"]
    assert given_back["ranks"]["0"]["recovered"] == 1.0
    assert given_back["ranks"]["0"]["scatter"] <= plain["ranks"]["0"]["scatter"]


def test_vae_counts_the_light_its_decoder_cannot_draw(isolated_structured_galaxies):
    """vae's flux re-distribution: on these galaxies Δf/f scatter 17.6 → 14.2 % when it was shipped; the
    component images stay the decoder's drawings (scaled), so the residual still shows the knots."""
    from napari_deblend.deblenders.vae import VAEDeblender

    model = VAEDeblender(device="cpu")  # its own instance: get_deblender's is shared, and this one is changed
    assert model.redistribute_flux
    measured = summarize_model(evaluate_model(model, isolated_structured_galaxies, device="cpu")[0])
    drawn = model.deblend_batch(isolated_structured_galaxies.images[:4])
    model.redistribute_flux = False
    plain = summarize_model(evaluate_model(model, isolated_structured_galaxies, device="cpu")[0])
    assert measured["ranks"]["0"]["scatter"] < 0.9 * plain["ranks"]["0"]["scatter"]
    for result, unscaled in zip(drawn, model.deblend_batch(isolated_structured_galaxies.images[:4])):
        for component, original in zip(result.components, unscaled.components):  # the same image, rescaled
            gain = component.sum() / original.sum()
            np.testing.assert_allclose(component, gain * original, rtol=1e-4, atol=1e-3 * float(original.max()))
