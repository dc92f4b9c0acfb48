"""The photometric refit of a component: it recovers flux a template lacks, and refuses wild fits."""

import numpy as np

from napari_deblend.deblenders.refit import MAX_FLUX_CHANGE, refit_component


def _gaussian(size: int, y: float, x: float, width: float, flux: float) -> np.ndarray:
    yy, xx = np.indices((size, size))
    image = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * width**2))
    return (flux * image / image.sum())[None]


def test_a_too_narrow_too_faint_template_is_widened_to_the_galaxys_flux():
    galaxy = _gaussian(48, 20.0, 22.0, 3.0, 50_000.0)
    neighbour = _gaussian(48, 28.0, 30.0, 2.0, 20_000.0)
    template = 0.85 * _gaussian(48, 20.0, 22.0, 2.4, 50_000.0)  # 15 % low, too compact
    components = np.stack([template, neighbour]).astype(np.float32)
    refit = refit_component((galaxy + neighbour).astype(np.float32), components, 0, sigma=10.0)
    assert refit.shape == template.shape and refit.dtype == np.float32
    assert (refit >= 0).all()
    assert abs(refit.sum() / galaxy.sum() - 1) < 0.03  # the template alone: -15 %
    assert np.abs(refit - galaxy).sum() < 0.5 * np.abs(template - galaxy).sum()


def test_noise_weighting_keeps_the_fit_close_on_a_noisy_stamp():
    rng = np.random.default_rng(1)
    galaxy = _gaussian(48, 24.0, 24.0, 2.5, 30_000.0)
    sigma = 40.0
    stamp = (galaxy + rng.normal(0, sigma, galaxy.shape)).astype(np.float32)
    refit = refit_component(stamp, (0.9 * galaxy[None]).astype(np.float32), 0, sigma=sigma)
    assert abs(refit.sum() / galaxy.sum() - 1) < 0.05


def test_empty_components_and_wild_fits_are_left_as_they_were():
    empty = np.zeros((1, 1, 32, 32), np.float32)
    assert np.shares_memory(refit_component(np.ones((1, 32, 32), np.float32), empty, 0, sigma=1.0), empty)
    template = _gaussian(32, 16.0, 16.0, 2.0, 1_000.0).astype(np.float32)
    far_brighter = (10 * MAX_FLUX_CHANGE * template).astype(np.float32)
    components = template[None]
    assert np.shares_memory(refit_component(far_brighter, components, 0, sigma=1.0), components)
