"""Tests of napari_deblend.measurements: isophotes, moments, matching, the comparison table, PSNR/SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy import units as u

from napari_deblend.deblenders.base import DeblendResult
from napari_deblend.errors import DeblendInputError
from napari_deblend.measurements import (
    Truth,
    centroid,
    ellipticity,
    is_sextractor_result,
    isophote_region,
    magnitude,
    match_positions,
    measure,
    psnr,
    second_moments,
    sextractor_status,
    ssim,
)
from napari_deblend.presets import get_preset

NOISE = 446.0


def elliptical_gaussian(shape, y0, x0, flux, cov):
    """Pixel-sampled 2-D Gaussian with covariance ``cov`` over (x, y) = (columns, rows)."""
    yy, xx = np.indices(shape, dtype=float)
    inv = np.linalg.inv(cov)
    dx, dy = xx - x0, yy - y0
    r2 = inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy
    return flux / (2 * np.pi * math.sqrt(np.linalg.det(cov))) * np.exp(-0.5 * r2)


def truncated_covariance(cov, flux, threshold):
    """Covariance of a Gaussian truncated to its isophote ``I > threshold`` (analytic)."""
    peak = flux / (2 * np.pi * math.sqrt(np.linalg.det(cov)))
    r2 = 2 * math.log(peak / threshold)  # Mahalanobis radius squared of the isophote
    e = math.exp(-r2 / 2)
    return cov * (1 - (1 + r2 / 2) * e) / (1 - e)


COV = np.array([[16.0, 3.0], [3.0, 6.25]])  # mu20 = 16 along x, mu02 = 6.25 along y, mu11 = 3


# ---- isophote and moments --------------------------------------------------------------------------


@pytest.mark.parametrize("flux", [1e7, 1e6])
def test_moments_of_elliptical_gaussian_match_truncated_analytic(flux):
    image = elliptical_gaussian((64, 64), 32.2, 31.7, flux, COV)
    region = isophote_region(image, NOISE, 3.0)
    mu20, mu02, mu11 = second_moments(image, region)
    expected = truncated_covariance(COV, flux, 3 * NOISE)
    assert mu20 == pytest.approx(expected[0, 0], rel=0.02)
    assert mu02 == pytest.approx(expected[1, 1], rel=0.02)
    assert mu11 == pytest.approx(expected[0, 1], rel=0.02)
    # truncation by an isophote scales the covariance: the ellipticity is the untruncated one
    e1, e2 = ellipticity(mu20, mu02, mu11)
    trace = COV[0, 0] + COV[1, 1]
    assert e1 == pytest.approx((COV[0, 0] - COV[1, 1]) / trace, rel=0.02)
    assert e2 == pytest.approx(2 * COV[0, 1] / trace, rel=0.02)


def test_moments_are_along_columns_and_rows():
    image = elliptical_gaussian((48, 48), 24, 24, 1e7, np.diag([9.0, 1.0]))  # long along x
    mu20, mu02, mu11 = second_moments(image, isophote_region(image, NOISE))
    assert mu20 > 5 * mu02
    assert abs(mu11) < 1e-6
    assert ellipticity(mu20, mu02, mu11)[0] > 0.7


def test_isophote_keeps_only_the_region_of_the_brightest_pixel():
    image = elliptical_gaussian((48, 64), 24, 14, 2e6, np.eye(2) * 4) + elliptical_gaussian(
        (48, 64), 24, 50, 1e6, np.eye(2) * 4
    )
    region = isophote_region(image, NOISE)
    assert region[24, 14] and not region[24, 50]
    assert region.sum() > 20
    assert not isophote_region(image, noise=1e9).any()
    # a (C, H, W) cube is measured on its band sum with noise * sqrt(C)
    cube = np.stack([image, image])
    assert (isophote_region(cube, NOISE) == isophote_region(2 * image, NOISE * math.sqrt(2))).all()


def test_isophote_is_eight_connected():
    image = np.zeros((10, 10))
    image[2, 2], image[3, 3], image[5, 5] = 10.0, 9.0, 8.0  # diagonal neighbours; (5, 5) is apart
    region = isophote_region(image, noise=1.0, nsigma=3.0)
    assert region[2, 2] and region[3, 3] and not region[5, 5]


def test_empty_region_gives_nan_moments():
    assert all(np.isnan(second_moments(np.ones((5, 5)), np.zeros((5, 5), bool))))
    assert all(np.isnan(ellipticity(0.0, 0.0, 0.0)))


def test_centroid():
    image = elliptical_gaussian((48, 48), 20.3, 27.6, 1e6, COV)
    y, x = centroid(image)
    assert (y, x) == pytest.approx((20.3, 27.6), abs=1e-3)
    assert np.isnan(centroid(np.zeros((4, 4)))[0])


# ---- matching --------------------------------------------------------------------------------------


def test_match_is_one_to_one_within_the_radius():
    pred = np.array([[0.0, 0.0], [10.0, 10.0], [0.0, 1.0]])
    true = np.array([[0.0, 0.5], [20.0, 20.0]])
    assert match_positions(pred, true, 3.0) == [(0, 0)]
    assert match_positions(pred, true, 0.4) == []
    assert match_positions(np.zeros((0, 2)), true) == []


def test_match_maximises_the_number_of_pairs():
    # nearest-first would pair pred 0 with true 0 (1.2 px) and leave the other pair 4 px apart
    pred = np.array([[0.0, 0.0], [0.0, 2.5]])
    true = np.array([[0.0, 1.2], [0.0, -1.5]])
    assert match_positions(pred, true, 3.0) == [(0, 1), (1, 0)]


def test_sextractor_status_definitions():
    comps = np.array([[10.0, 10.0], [10.0, 12.0], [30.0, 30.0], [40.0, 10.0], [20.0, 40.0]])
    seps = np.array([[10.0, 11.0], [30.0, 30.5], [20.0, 39.0], [20.0, 41.5]])
    status, index = sextractor_status(comps, seps, 3.0)
    assert status == ["merged", "merged", "matched", "missed", "split"]
    assert index.tolist() == [0, 0, 1, -1, 2]


# ---- measure ---------------------------------------------------------------------------------------


def _two_component_result(quality="High"):
    comp_a = elliptical_gaussian((48, 48), 20.0, 18.0, 2e6, COV)
    comp_b = elliptical_gaussian((48, 48), 28.0, 32.0, 8e5, np.eye(2) * 5)
    comps = np.stack([comp_a, comp_b])[:, None].astype(np.float32)
    rng = np.random.default_rng(3)
    blend = comps.sum(0) + rng.normal(0, NOISE, (1, 48, 48)).astype(np.float32)
    positions = np.array([[20.0, 18.0], [28.0, 32.0]])
    return DeblendResult(blend=blend, components=comps, positions=positions, quality=quality,
                         model="test", noise=NOISE), comps


def test_measure_columns_values_and_units():
    result, comps = _two_component_result()
    truth = {"components": comps[::-1] * np.float32(1.1), "positions": np.array([[28.5, 32.0], [20.0, 18.2]])}
    table = measure(result, truth=truth, sextractor=True)
    p = get_preset("lsst-i")
    assert len(table) == 2
    for name in ("model", "component", "x", "y", "flux", "mag", "mu20", "mu02", "mu11", "e1", "e2", "quality",
                 "sep_status", "sep_x", "sep_flux", "sep_mag", "sep_mu20", "sep_e1", "truth_flux", "truth_e1",
                 "dflux_frac", "dmag", "de1", "de2", "sep_dflux_frac"):
        assert name in table.colnames, name
    assert table["x"].unit == u.pix and table["flux"].unit == u.electron
    assert table["mag"].unit == u.mag and table["mu20"].unit == u.pix**2
    flux = comps[0].sum(dtype=np.float64)
    assert table["flux"][0] == pytest.approx(flux, rel=1e-6)
    assert table["mag"][0] == pytest.approx(p.zero_point - 2.5 * math.log10(flux / p.exposure))
    assert (table["x"][0], table["y"][0]) == (18.0, 20.0)
    moments = second_moments(comps[0, 0], isophote_region(comps[0, 0], NOISE))
    assert (table["mu20"][0], table["mu02"][0], table["mu11"][0]) == pytest.approx(moments)
    assert table["quality"][0] == "High"
    # truth is listed in another order: matching by position, flux 10% higher -> dflux_frac = 1/1.1 - 1
    assert table["truth_index"].tolist() == [1, 0]
    assert table["dflux_frac"][0] == pytest.approx(1 / 1.1 - 1, rel=1e-5)
    assert table["dmag"][0] == pytest.approx(2.5 * math.log10(1.1), rel=1e-5)
    assert table["de1"][0] == pytest.approx(0.0, abs=0.01)  # scaled truth has (almost) the same isophote shape
    # two well-separated bright galaxies: SExtractor finds both, FLUX_AUTO close to the truth
    assert table["sep_status"].tolist() == ["matched", "matched"]
    assert table["sep_flux"][0] == pytest.approx(flux, rel=0.15)
    assert table.meta["truth_unmatched"] == []


def test_measure_without_sextractor_and_on_a_sextractor_result():
    from napari_deblend.deblenders.base import get_deblender

    result, comps = _two_component_result()
    table = measure(result, sextractor=None)
    assert "sep_flux" not in table.colnames and "truth_flux" not in table.colnames
    sep_result = get_deblender("sextractor").deblend_batch(result.blend[None], noise=NOISE)[0]
    assert is_sextractor_result(sep_result) and not is_sextractor_result(result)
    own = measure(sep_result)
    assert np.allclose(own["flux"], sep_result.info["flux_auto"])
    assert np.allclose(own["mu20"], sep_result.info["x2"])
    assert np.allclose(own["sep_flux"], own["flux"]) and set(own["sep_status"]) == {"matched"}
    given = measure(result, sextractor=sep_result)
    assert np.allclose(given["sep_flux"], measure(result)["sep_flux"])


def test_measure_truth_from_a_truth_object_and_missed_truth():
    result, comps = _two_component_result()
    truth = Truth(comps[:1], [[20.0, 18.0]])
    table = measure(result, truth=truth, sextractor=None)
    assert table["truth_index"].tolist() == [0, -1]
    assert np.isnan(table["truth_flux"][1]) and table["dflux_frac"][0] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DeblendInputError, match="positions"):
        measure(result, truth={"components": comps})


def test_magnitude_of_nonpositive_flux_is_nan():
    assert np.isnan(magnitude(0.0, 27.78, 5520.0))
    assert magnitude(5520.0, 27.78, 5520.0) == pytest.approx(27.78)


# ---- image metrics ---------------------------------------------------------------------------------


def test_psnr_and_ssim_of_identical_images():
    image = elliptical_gaussian((32, 32), 16, 16, 1e6, COV)
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)


def test_psnr_known_offset():
    truth = np.zeros((16, 16))
    truth[0, 0] = 100.0  # data range 100
    assert psnr(truth + 1.0, truth) == pytest.approx(20 * math.log10(100.0 / 1.0))
    assert psnr(truth + 10.0, truth) == pytest.approx(20.0)


def test_ssim_of_constant_images_is_the_luminance_term():
    m, b, rng = 5.0, 3.0, 10.0
    c1 = (0.01 * rng) ** 2
    expected = (2 * m * (m + b) + c1) / (m**2 + (m + b) ** 2 + c1)
    assert ssim(np.full((20, 20), m + b), np.full((20, 20), m), data_range=rng) == pytest.approx(expected)


def test_ssim_of_independent_noise_is_near_zero_and_matches_skimage():
    gen = np.random.default_rng(1)
    a, b = gen.normal(size=(64, 64)), gen.normal(size=(64, 64))
    assert abs(ssim(a, b)) < 0.05
    metrics = pytest.importorskip("skimage.metrics")
    x = elliptical_gaussian((48, 48), 24, 24, 1e6, COV)
    y = x + gen.normal(0, 50, x.shape)
    ref = metrics.structural_similarity(y, x, data_range=x.max() - x.min(), gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
    assert ssim(y, x) == pytest.approx(ref, abs=1e-6)


def test_image_metrics_reject_shape_mismatch():
    with pytest.raises(DeblendInputError, match="same shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))


def test_measure_a_result_without_components():
    blend = np.random.default_rng(0).normal(0, NOISE, (1, 48, 48))
    result = DeblendResult(blend=blend, components=np.zeros((0, 1, 48, 48)), positions=np.zeros((0, 2)), noise=NOISE)
    table = measure(result, truth={"components": np.ones((1, 1, 48, 48)), "positions": [[3.0, 3.0]]})
    assert len(table) == 0 and "sep_flux" in table.colnames
    assert table.meta["truth_unmatched"] == [0]
