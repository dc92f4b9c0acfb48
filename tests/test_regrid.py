"""Any survey's pixels: stamps resampled and PSF-matched to a learned model's grid, components brought back."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits

from napari_deblend import deblend, detect, find_blends
from napari_deblend.cli import main
from napari_deblend.deblenders.base import get_deblender
from napari_deblend.deblending import field_grid_match
from napari_deblend.field import Field, read_field, write_field
from napari_deblend.field.calibration import preset_zero_point
from napari_deblend.presets import PRESETS, get_preset
from napari_deblend.psf import field_psf_fwhm, measure_psf_fwhm
from napari_deblend.regrid import GridWarning, ResampledDeblender, grid_match, trained_preset
from napari_deblend.simulate import simulate_blends, simulate_field


def _match(data: str, model: str = "lsst-i"):
    p = get_preset(data)
    return grid_match(get_preset(model), p.pixel_scale, p.psf_fwhm, preset_zero_point(p, p.exposure)[0])


def test_presets_for_other_surveys():
    assert {"lsst-i", "hsc-i", "des-i", "euclid-vis"} <= set(PRESETS)
    assert [PRESETS[n].pixel_scale for n in ("hsc-i", "des-i", "euclid-vis")] == [0.168, 0.263, 0.1]
    for preset in PRESETS.values():  # a 24th-magnitude galaxy is worth its zero point
        assert preset.magnitude(preset.flux(24.0)) == pytest.approx(24.0)


def test_learned_models_know_their_training_grid():
    assert trained_preset(get_deblender("peeling", device="cpu")).name == "lsst-i"
    assert trained_preset(get_deblender("sextractor")) is None


def test_identity_for_data_on_the_models_grid():
    field, _ = simulate_field(128, preset="lsst-i", seed=1)
    assert field_grid_match(field, get_deblender("peeling", device="cpu")) is None
    assert _match("lsst-i").identity


@pytest.mark.parametrize("data", ["hsc-i", "des-i", "euclid-vis"])
def test_flux_is_conserved_and_positions_map_back(data):
    match = _match(data)
    assert not match.identity
    rng = np.random.default_rng(0)
    side = 48
    model_side = match.model_side(side)
    assert model_side == pytest.approx(side * match.ratio, abs=2)
    components = rng.uniform(0.0, 10.0, (3, 1, model_side, model_side)).astype(np.float32)
    back = match.components_to_data(components, side)
    assert back.shape == (3, 1, side, side)
    np.testing.assert_allclose(back.sum(axis=(2, 3)), components.sum(axis=(2, 3)) / match.flux_factor, rtol=1e-5)
    points = np.array([[10.0, 30.5], [23.5, 23.5]])
    np.testing.assert_allclose(
        match.positions_to_data(match.positions_to_model(points, side, model_side), side, model_side), points)
    assert match.positions_to_model(points, side, model_side)[1] == pytest.approx([(model_side - 1) / 2] * 2)


@pytest.mark.parametrize("data", ["hsc-i", "des-i"])
def test_noise_on_the_models_grid_keeps_the_noise_of_aperture_fluxes(data):
    match = _match(data)
    white = np.random.default_rng(5).normal(0.0, 100.0, (1, 192, 192))
    side = match.model_side(192)
    moved = match.to_model(white, side)[0][16:-16, 16:-16]
    box = 8  # model pixels, wider than the PSF-matching kernel
    n = moved.shape[0] // box
    sums = moved[: n * box, : n * box].reshape(n, box, n, box).sum(axis=(1, 3))
    assert sums.std() == pytest.approx(match.noise_to_model(100.0) * box, rel=0.15)


def test_a_galaxy_keeps_its_flux_through_the_round_trip():
    """A noiseless HSC galaxy: on the model grid and back (a 'component' equal to the whole stamp)."""
    blends = simulate_blends(2, n_galaxies=1, stamp_size=48, preset="hsc-i", seed=3, noise=False)
    match = _match("hsc-i")
    stamp = blends.images[0]
    on_model = match.to_model(stamp, match.model_side(48))
    assert on_model.sum() / match.flux_factor == pytest.approx(stamp.sum(), rel=0.02)
    back = match.components_to_data(on_model[None], 48)[0]
    assert back.sum() == pytest.approx(on_model.sum() / match.flux_factor, rel=1e-5)
    # the components come back PSF-matched to the model (broader than the data), centred where they were
    yy, xx = np.indices(stamp.shape[-2:])
    for image in (stamp[0], back[0]):
        assert (image * yy).sum() / image.sum() == pytest.approx((stamp[0] * yy).sum() / stamp[0].sum(), abs=0.2)


def test_bare_hsc_stamps_are_deblended_on_the_lsst_grid():
    blends = simulate_blends(3, n_galaxies=2, stamp_size=48, preset="hsc-i", seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GridWarning)  # the HSC PSF (0.61") is sharper than the model's: no warning
        result = deblend(blends.images[0], model="peeling", device="cpu", preset="hsc-i")
    assert result.info["grid"]["model_preset"] == "lsst-i"
    assert result.info["grid"]["psf_kernel_fwhm"] == pytest.approx((0.7**2 - 0.61**2) ** 0.5)
    assert result.components.shape[1:] == blends.images[0].shape
    assert result.n_components >= 1
    assert result.components.sum() == pytest.approx(blends.components[0].sum(), rel=0.3)


def test_data_with_a_broader_psf_get_a_clear_warning():
    blends = simulate_blends(1, n_galaxies=2, stamp_size=40, preset="des-i", seed=2)
    with pytest.warns(GridWarning, match=r"PSF \(FWHM 0.88 arcsec\) is broader than the 0.70 arcsec that peeling"):
        result = deblend(blends.images[0], model="peeling", device="cpu", preset="des-i")
    assert result.components.shape[-2:] == (40, 40)
    # the PSF-matching scale (0.251") is within 10 % of DES's own 0.263": the stamp keeps its pixels
    assert result.info["grid"]["model_pixel_scale"] == pytest.approx(0.263)
    wider = grid_match(get_preset("lsst-i"), 0.2, 1.2, 37.0)  # 0.2" pixels, 1.2" PSF: a 0.343" grid
    assert wider.model_scale == pytest.approx(0.2 * 1.2 / 0.7) and wider.kernel_fwhm == 0.0
    with pytest.warns(GridWarning):
        wrapped = ResampledDeblender("peeling", "des-i", device="cpu")
    assert wrapped.deblend_batch(blends.images, noise=blends.noise_sigma)[0].info["grid"]["data_pixel_scale"] == 0.263


def test_a_field_on_the_hsc_grid_is_deblended_in_its_own_pixels():
    field, _ = simulate_field(200, preset="hsc-i", seed=4, density=120.0)
    catalog, segmentation = detect(field)
    blend = find_blends(catalog, segmentation)[0]
    match = field_grid_match(field, get_deblender("peeling", device="cpu"))
    assert match is not None and match.ratio == pytest.approx(0.84)
    result = deblend(field, blend, model="peeling", device="cpu")
    assert result.info["grid"]["data_pixel_scale"] == pytest.approx(0.168)
    assert result.components.shape[-2:] == result.blend.shape[-2:]
    assert result.info["stamp_mask"].shape == result.blend.shape


# ---- the data's PSF ---------------------------------------------------------------------------------


def _with_stars(image: np.ndarray, fwhm_arcsec: float, scale: float, n: int = 25, seed: int = 3) -> np.ndarray:
    import galsim

    rng = np.random.default_rng(seed)
    out = image.copy()
    preset = get_preset("lsst-i")
    for _ in range(n):
        x, y = rng.uniform(25, image.shape[1] - 25), rng.uniform(25, image.shape[0] - 25)
        star = galsim.Kolmogorov(fwhm=fwhm_arcsec).withFlux(preset.flux(rng.uniform(18, 21)))
        drawn = star.drawImage(nx=41, ny=41, scale=scale, offset=(x % 1 - 0.5, y % 1 - 0.5)).array
        out[int(y) - 20: int(y) + 21, int(x) - 20: int(x) + 21] += drawn
    return out


def test_psf_is_measured_on_stars_and_not_on_galaxies():
    field, _ = simulate_field(384, preset="lsst-i", seed=1)
    assert measure_psf_fwhm(field.data[0], pixel_scale=0.2) is None  # galaxies only: no stellar locus
    starry = _with_stars(field.data[0], 0.7, 0.2)  # stars of the field's own PSF
    assert measure_psf_fwhm(starry, pixel_scale=0.2) == pytest.approx(0.7, rel=0.06)
    with_stars = Field(starry, preset=field.preset)
    assert field_psf_fwhm(with_stars) == (pytest.approx(0.7, rel=0.06), "measured on stars")
    assert field_psf_fwhm(Field(field.data, preset=field.preset))[1].startswith("preset lsst-i")


def test_header_psf_wins(tmp_path):
    field, _ = simulate_field(96, preset="lsst-i", seed=2)
    field.psf_fwhm = 1.1
    back = read_field(write_field(field, tmp_path / "f.fits"))
    assert back.psf_fwhm == pytest.approx(1.1)
    assert field_psf_fwhm(back) == (pytest.approx(1.1), "header")
    header = fits.Header()
    header["FWHM"] = (5.0, "[pixel] median FWHM")
    path = tmp_path / "des.fits"
    fits.PrimaryHDU(field.data[0], header).writeto(path)
    assert read_field(path).psf_fwhm == pytest.approx(1.0)  # 5 pixels of 0.2"


def test_run_on_a_des_field_resamples_and_warns(tmp_path, capsys):
    field, _ = simulate_field(200, preset="des-i", seed=6, density=150.0)
    path = write_field(field, tmp_path / "des.fits")
    with pytest.warns(GridWarning, match="broader"):
        code = main(["run", str(path), "--out", str(tmp_path / "out"), "--survey", "des-i", "--model", "peeling",
                     "--device", "cpu", "--quiet"])
    assert code == 0
