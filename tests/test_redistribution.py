"""Flux re-distribution (``deblenders/redistribution.py``): each component's flux is its share of the data."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deblend.deblenders.redistribution import GAIN_BOUNDS, redistributed_fluxes, redistributed_gains


def _boxes() -> np.ndarray:
    """Two model components, ``(2, 1, 12, 12)``: boxes of 1 that overlap on one column."""
    models = np.zeros((2, 1, 12, 12))
    models[0, 0, 2:8, 2:7] = 1.0
    models[1, 0, 2:8, 6:10] = 1.0
    return models


def test_each_pixel_of_the_footprint_is_shared_in_proportion_to_the_models():
    models = _boxes()
    blend = 3.0 * models[0] + 2.0 * models[1]  # the data hold more light than the models drew
    fluxes, errors = redistributed_fluxes(blend, models, noise=1.0)
    # alone: all of the data's light; on the shared column (6 pixels of 5 e-): half each
    np.testing.assert_allclose(fluxes, [3.0 * 24 + 6 * 2.5, 2.0 * 18 + 6 * 2.5])
    assert fluxes.sum() == pytest.approx(blend.sum())  # nothing lost, nothing counted twice
    variance = 1.0 + models.sum(axis=0)  # sky + the models' Poisson variance
    share = models / models.sum(axis=0).clip(min=1e-12)
    np.testing.assert_allclose(errors, np.sqrt((share**2 * variance).sum(axis=(1, 2, 3))))


def test_outside_the_footprint_a_component_keeps_its_model():
    models = _boxes() * 0.1  # below 0.3 sigma: no footprint at all
    blend = np.full((1, 12, 12), 50.0)
    fluxes, errors = redistributed_fluxes(blend, models, noise=1.0)
    np.testing.assert_allclose(fluxes, models.sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(errors, 0.0)
    sigma = np.full_like(models, 0.5)
    _, errors = redistributed_fluxes(blend, models, noise=1.0, component_sigma=sigma)
    np.testing.assert_allclose(errors, np.sqrt(0.25 * 144))  # the models' own errors


def test_gains_bring_each_model_to_its_redistributed_flux_within_bounds():
    models = _boxes()
    gains, _ = redistributed_gains(2.0 * models.sum(axis=0), models, noise=1.0)
    np.testing.assert_allclose(gains, 2.0)
    gains, _ = redistributed_gains(1.5 * models[0], models, noise=1.0)  # the second galaxy is not in the data
    # the first: 24 pixels of 1.5 and half of the shared column's 6 x 1.5, over its own 30; the second: 4.5 / 24
    assert gains[0] == pytest.approx((24 * 1.5 + 4.5) / 30) and gains[1] == GAIN_BOUNDS[0]
    empty = np.zeros((1, 1, 12, 12))
    np.testing.assert_allclose(redistributed_gains(models[0], empty, noise=1.0)[0], 1.0)
    assert redistributed_fluxes(models[0], np.zeros((0, 1, 12, 12)), noise=1.0)[0].shape == (0,)
