"""Survey data as astronomers have it: HSC/LSST, DES, HST drizzled and JWST files with their noise and mask planes.

Each file is built here (``tests/survey_files.py``) from one simulated field
with a flagged square of garbage pixels and a right half ten times noisier.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from napari_deblend import detect, read_field
from napari_deblend.cli import main
from napari_deblend.detection import FLAG_MASKED
from napari_deblend.errors import FieldReadError
from napari_deblend.field import Field, FieldReadWarning, magnitude, write_field
from napari_deblend.field.calibration import header_zero_point, preset_zero_point
from napari_deblend.measurements import match_positions
from napari_deblend.presets import get_preset

from .survey_files import BAD, SIZE, STYLES, ZP_ELECTRONS, calibration_sky, simulated_sky, write_style


@pytest.fixture(scope="module")
def sky():
    return simulated_sky()


@pytest.fixture(scope="module")
def style_files(tmp_path_factory, sky):
    folder = tmp_path_factory.mktemp("styles")
    return {style: write_style(style, folder / f"{style}.fits", sky) for style in STYLES}


def _bad_square() -> np.ndarray:
    bad = np.zeros((SIZE, SIZE), bool)
    y0, y1, x0, x1 = BAD
    bad[y0:y1, x0:x1] = True
    return bad


# ---- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_each_style_reads_as_one_band_with_its_noise_and_mask(style, style_files, sky):
    path, _ = style_files[style]
    field = read_field(path)
    assert field.n_bands == 1
    assert field.hdu == [{"hsc": "IMAGE"}.get(style, "SCI")]
    # exactly the flagged square: HSC DETECTED bits and a JWST informational DQ bit are not bad pixels
    np.testing.assert_array_equal(field.mask[0], _bad_square())
    assert not field.data[0][field.mask[0]].any()  # the garbage (1e6) is gone
    # the noise plane, in the file's units, says the right half is ten times noisier
    assert field.variance is not None
    sigma = np.sqrt(field.variance[0])
    left, right = np.median(sigma[:, 10: SIZE // 2 - 10]), np.median(sigma[:, SIZE // 2 + 10:])
    assert right / left == pytest.approx(10.0, rel=0.02)
    # and in electrons it is the simulated one (weights rescaled to the image's noise: within a few %)
    in_electrons = left * 10 ** (0.4 * (ZP_ELECTRONS - field.zero_point))
    assert in_electrons == pytest.approx(get_preset("lsst-i").background_sigma, rel=0.05)
    assert field.meta["planes"][0]["noise"].startswith({"hsc": "variance", "des": "weight", "drizzle": "weight",
                                                        "jwst": "rms"}[style])


@pytest.mark.parametrize("style", STYLES)
def test_no_detection_in_the_masked_square_and_fewer_in_the_noisier_half(style, style_files):
    field = read_field(style_files[style][0])
    catalog, segmentation = detect(field)
    x, y = np.asarray(catalog["x"]), np.asarray(catalog["y"])
    y0, y1, x0, x1 = BAD
    assert not np.any((y >= y0) & (y < y1) & (x >= x0) & (x < x1))
    assert not segmentation[_bad_square()].any()
    left, right = int((x < SIZE // 2).sum()), int((x >= SIZE // 2).sum())
    assert right < 0.75 * left, (left, right)
    # a source whose footprint touches the square is flagged
    near = (y > y0 - 3) & (y < y1 + 3) & (x > x0 - 3) & (x < x1 + 3)
    flagged = (np.asarray(catalog["flags"]) & FLAG_MASKED) != 0
    assert np.all(flagged[near])
    assert catalog.meta["mag_zero_point"] == pytest.approx(field.zero_point)


def test_without_planes_the_masked_garbage_and_noise_would_be_detected(style_files):
    """What the planes prevent: reading the image alone (hdu=) detects inside the square."""
    path, _ = style_files["des"]
    plain = read_field(path, hdu="SCI")  # explicit HDU: its planes still come along
    assert plain.variance is not None and plain.mask.any()
    with fits.open(path) as hdul:
        bare = Field(hdul["SCI"].data.astype(np.float32))
    catalog, _ = detect(bare)
    x, y = np.asarray(catalog["x"]), np.asarray(catalog["y"])
    y0, y1, x0, x1 = BAD
    assert np.any((y >= y0) & (y < y1) & (x >= x0) & (x < x1))


@pytest.mark.parametrize("style", STYLES)
def test_isolated_galaxies_have_their_true_magnitudes(style, tmp_path):
    """A field of known magnitudes in each convention (FLUXMAG0, MAGZERO, PHOTFLAM per second, MJy/sr)."""
    path, truth = write_style(style, tmp_path / f"{style}.fits", calibration_sky())
    field = read_field(path)
    catalog, _ = detect(field)
    pairs = match_positions(np.stack([catalog["y"], catalog["x"]], 1), np.stack([truth["y"], truth["x"]], 1), 2.0)
    assert len(pairs) == len(truth)
    dmag = np.array([catalog["mag_auto"][i] - truth["mag"][j] for i, j in pairs])
    clean = np.array([truth["x"][j] < SIZE // 2 for _, j in pairs])
    assert abs(np.median(dmag)) < 0.05
    assert np.all(np.abs(dmag[clean]) < 0.05)
    assert np.all(np.abs(dmag[~clean]) < 0.1)  # ten times the noise


def test_the_same_galaxy_has_the_same_magnitude_in_every_convention(tmp_path):
    sky = calibration_sky()
    mags = []
    for style in STYLES:
        field = read_field(write_style(style, tmp_path / f"{style}.fits", sky)[0])
        catalog, _ = detect(field)
        order = np.lexsort((np.round(catalog["x"]), np.round(catalog["y"])))
        mags.append(np.asarray(catalog["mag_auto"])[order])
    for other in mags[1:]:
        np.testing.assert_allclose(other, mags[0], atol=0.01)


@pytest.mark.parametrize("style", STYLES)
def test_a_full_run_succeeds_on_each_style(style, style_files, tmp_path, capsys):
    path, _ = style_files[style]
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--model", "peeling", "--device", "cpu", "--quiet"]) == 0
    stem = out / style
    catalog = Table.read(stem / "catalog.ecsv")
    assert len(catalog) > 20
    x, y = np.asarray(catalog["X_IMAGE"]) - 1, np.asarray(catalog["Y_IMAGE"]) - 1
    y0, y1, x0, x1 = BAD
    assert not np.any((y >= y0) & (y < y1) & (x >= x0) & (x < x1))
    with fits.open(stem / "residual.fits") as hdul:
        assert "VARIANCE" in hdul  # the noise plane travels with the field


def test_an_image_beside_the_science_image_is_not_a_band(tmp_path, sky, capsys):
    image, variance, bad, wcs, _ = sky
    path = tmp_path / "with_model.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.where(bad, 0, image).astype(np.float32), wcs, name="SCI"),
                  fits.ImageHDU(np.zeros_like(image, np.float32), name="MSK"),
                  fits.ImageHDU(np.ones_like(image, np.float32), name="MODEL")]).writeto(path)
    field = read_field(path)  # an all-zero MSK is a mask with nothing flagged, not a band
    assert field.n_bands == 1 and not field.mask.any()
    same = tmp_path / "sci_and_sci2.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image.astype(np.float32), wcs, name="SCI"),
                  fits.ImageHDU(image.astype(np.float32), wcs, name="SCI2")]).writeto(same)
    with pytest.warns(FieldReadWarning, match="do not name distinct bands"):
        assert read_field(same).n_bands == 1
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--model", "peeling", "--device", "cpu",
                 "--quiet"]) == 0


# ---- inconsistent planes: one sentence naming the file and HDU, exit code 2 --------------------------


def _broken(path, sky, kind: str):
    image, variance, bad, wcs, _ = sky
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(image.astype(np.float32), wcs, name="IMAGE")]
    if kind == "mask_shape":
        hdus.append(fits.ImageHDU(np.zeros((10, 10), np.int32), name="MASK"))
    elif kind == "variance_shape":
        hdus.append(fits.ImageHDU(variance[:100].astype(np.float32), name="VARIANCE"))
    elif kind == "zero_weights":
        hdus.append(fits.ImageHDU(np.zeros_like(variance, np.float32), name="WGT"))
    elif kind == "negative_variance":
        negative = variance.copy()
        negative[5, 7] = -3.0
        hdus.append(fits.ImageHDU(negative.astype(np.float32), name="VARIANCE"))
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.mark.parametrize(("kind", "words"), [
    ("mask_shape", "HDU 2 ('MASK'): its mask plane has shape (10, 10)"),
    ("variance_shape", "HDU 2 ('VARIANCE'): its variance plane has shape (100, 320)"),
    ("zero_weights", "HDU 2 ('WGT'): every weight is zero"),
    ("negative_variance", "HDU 2 ('VARIANCE'): 1 negative variance value(s)"),
])  # fmt: skip
def test_inconsistent_planes_are_one_sentence_and_exit_code_2(kind, words, sky, tmp_path, capsys):
    path = _broken(tmp_path / f"{kind}.fits", sky, kind)
    with pytest.raises(FieldReadError, match=r"\(") as caught:
        read_field(path)
    assert str(path) in str(caught.value) and words in str(caught.value)
    assert main(["detect", str(path), "-o", str(tmp_path / "c.ecsv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--model", "sextractor", "--quiet"]) == 1
    assert words in capsys.readouterr().err


# ---- separate weight and mask files (SExtractor's WEIGHT_IMAGE / WEIGHT_TYPE) ------------------------


@pytest.mark.parametrize("weight_type", ["weight", "variance", "rms"])
def test_weight_and_mask_files(weight_type, sky, tmp_path, capsys):
    image, variance, bad, wcs, _ = sky
    science = tmp_path / "image.fits"
    fits.PrimaryHDU(image.astype(np.float32), wcs).writeto(science)
    values = {"weight": 1.0 / variance * 77.0, "variance": variance, "rms": np.sqrt(variance)}[weight_type]
    weight, mask = tmp_path / "weight.fits", tmp_path / "mask.fits"
    fits.PrimaryHDU(values.astype(np.float32)).writeto(weight)
    fits.PrimaryHDU(bad.astype(np.uint8)).writeto(mask)
    field = read_field(science, weight=weight, weight_type=weight_type, mask=mask)
    np.testing.assert_array_equal(field.mask[0], bad)
    good = ~bad
    np.testing.assert_allclose(field.variance[0][good], variance[good], rtol=0.1 if weight_type == "weight" else 1e-5)  # rescaled weights: sigma within 5 %
    out = tmp_path / "c.ecsv"
    argv = ["detect", str(science), "-o", str(out), "--weight", str(weight), "--weight-type", weight_type,
            "--mask", str(mask)]  # fmt: skip
    assert main(argv) == 0
    assert "per-pixel noise plane" in capsys.readouterr().out
    catalog = Table.read(out)
    y0, y1, x0, x1 = BAD
    x, y = np.asarray(catalog["X_IMAGE"]) - 1, np.asarray(catalog["Y_IMAGE"]) - 1
    assert not np.any((y >= y0) & (y < y1) & (x >= x0) & (x < x1))


def test_weight_file_of_another_shape_names_the_option(sky, tmp_path, capsys):
    image, _, _, wcs, _ = sky
    science, weight = tmp_path / "image.fits", tmp_path / "weight.fits"
    fits.PrimaryHDU(image.astype(np.float32), wcs).writeto(science)
    fits.PrimaryHDU(np.ones((5, 5), np.float32)).writeto(weight)
    assert main(["detect", str(science), "-o", str(tmp_path / "c.ecsv"), "--weight", str(weight)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weight.fits' HDU 0: its weight plane has shape (5, 5)" in err[0]


def test_hdu_and_bands_options(tmp_path, sky, capsys):
    image, _, _, wcs, _ = sky
    path = tmp_path / "two.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image.astype(np.float32), wcs, name="SCI"),
                  fits.ImageHDU(image.astype(np.float32), wcs, name="OTHER")]).writeto(path)
    out = tmp_path / "c.ecsv"
    assert main(["detect", str(path), "-o", str(out), "--hdu", "1,2", "--bands", "g,r"]) == 0
    assert Table.read(out).meta["bands"] == ["g", "r"]


# ---- zero-point conventions ---------------------------------------------------------------------------


def test_zero_point_conventions():
    def zp(**cards):
        found = header_zero_point([fits.Header(cards)], "'f.fits'", pixel_scale=0.2, exposure=cards.get("EXPTIME"))
        return None if found is None else found[0]

    assert zp(ZEROPT=30.0, EXPTIME=900.0) == 30.0  # one image unit: no exposure term
    assert zp(MAGZERO=31.2) == 31.2
    assert zp(FLUXMAG0=10 ** (0.4 * 27.0)) == pytest.approx(27.0)
    assert zp(BUNIT="nJy") == pytest.approx(31.4, abs=1e-3)
    assert zp(BUNIT="uJy") == pytest.approx(23.9, abs=1e-3)
    area = (0.2 / 206264.80624709636) ** 2
    assert zp(BUNIT="MJy/sr", PIXAR_SR=area) == pytest.approx(8.9 - 2.5 * math.log10(1e6 * area), abs=1e-3)
    flam = dict(PHOTFLAM=1.5e-19, PHOTPLAM=8000.0)
    rate = -2.5 * math.log10(1.5e-19) - 5 * math.log10(8000.0) - 2.408
    assert zp(BUNIT="ELECTRONS/S", **flam) == pytest.approx(rate)
    assert zp(BUNIT="ELECTRONS", EXPTIME=500.0, **flam) == pytest.approx(rate + 2.5 * math.log10(500.0))
    assert zp(BUNIT="electron") is None
    preset = get_preset("hsc-i")
    assert preset_zero_point(preset, 1200.0)[0] == pytest.approx(28.61 + 2.5 * math.log10(1200.0))
    assert preset_zero_point(preset, 1200.0, per_second=True)[0] == pytest.approx(28.61)
    assert magnitude(10.0, 30.0) == pytest.approx(27.5)
    assert magnitude(10.0 * 900.0, 27.5, exposure=900.0) == pytest.approx(27.5 - 2.5)
    assert np.isnan(magnitude(-1.0, 30.0))


def test_per_second_image_without_header_zero_point_uses_the_preset_per_second(tmp_path):
    path = tmp_path / "rate.fits"
    fits.PrimaryHDU(np.random.default_rng(0).normal(0, 1, (64, 64)).astype(np.float32),
                    fits.Header({"BUNIT": "e-/s", "EXPTIME": 800.0})).writeto(path)
    field = read_field(path, preset="des-i")
    assert field.zero_point == pytest.approx(26.86)
    assert "log10" not in field.zero_point_source and "des-i" in field.zero_point_source  # no exposure term


def test_write_read_round_trip_keeps_variance_mask_and_zero_point(tmp_path, sky):
    image, variance, bad, wcs, _ = sky
    path = tmp_path / "des.fits"
    write_style("des", path, sky)
    field = read_field(path)
    back = read_field(write_field(field, tmp_path / "again.fits"))
    np.testing.assert_array_equal(back.mask, field.mask)
    np.testing.assert_allclose(back.variance, field.variance, rtol=1e-6)
    assert back.zero_point == pytest.approx(field.zero_point)
    two = Field(np.stack([field.data[0], field.data[0]]), mask=field.mask[0], variance=np.stack([field.variance[0]] * 2),
                band_names=["g", "r"], zero_point=30.0)
    back = read_field(write_field(two, tmp_path / "two.fits"))  # per-band VARIANCE planes matched by EXTVER
    assert back.band_names == ["g", "r"] and back.variance.shape == (2, SIZE, SIZE)
