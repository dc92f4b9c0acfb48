"""Reading fields from FITS files and arrays (``read_field``) and writing them (``write_field``)."""

from __future__ import annotations

import bz2
import gzip
import math
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from napari_deblend.errors import DeblendInputError, FieldReadError
from napari_deblend.field import (
    Field,
    FieldReadWarning,
    estimate_noise,
    has_fits_suffix,
    is_fits_file,
    read_field,
    write_field,
)
from napari_deblend.presets import get_preset

SHAPE = (64, 80)
SIGMA = 446.0


def noise_image(shape=SHAPE, seed=0, sigma=SIGMA, dtype=">f4") -> np.ndarray:
    """Gaussian noise plus one source, big-endian float32 like astropy writes it."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, sigma, shape)
    image[shape[0] // 2, shape[1] // 2] += 50 * sigma
    return image.astype(dtype)


def celestial_header(crval=(150.0, 2.0), scale_arcsec=0.2, shape=SHAPE) -> fits.Header:
    """A TAN WCS with a CD matrix of ``scale_arcsec`` per pixel, RA increasing to the left."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(crval)
    wcs.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    wcs.wcs.cd = [[-scale_arcsec / 3600, 0.0], [0.0, scale_arcsec / 3600]]
    return wcs.to_header()


def header_with_cd(**kwargs) -> fits.Header:
    """Like :func:`celestial_header` but with explicit ``CDi_j`` cards instead of PC + CDELT."""
    header = celestial_header(**kwargs)
    scale = kwargs.get("scale_arcsec", 0.2) / 3600
    for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
        header.remove(key, ignore_missing=True)
    header["CD1_1"], header["CD1_2"], header["CD2_1"], header["CD2_2"] = -scale, 0.0, 0.0, scale
    return header


def write_mef(path, images, names=None, headers=None, primary_header=None, compressed=False):
    """Empty primary HDU plus one image extension per image."""
    hdus = [fits.PrimaryHDU(header=primary_header)]
    for i, image in enumerate(images):
        header = fits.Header() if headers is None else headers[i].copy()
        if names is not None and names[i] is not None:
            header["EXTNAME"] = names[i]
        hdu_class = fits.CompImageHDU if compressed else fits.ImageHDU
        hdus.append(hdu_class(image, header=header))
    fits.HDUList(hdus).writeto(path)
    return path


def assert_native_float32(field: Field) -> None:
    assert field.data.dtype == np.float32
    assert field.data.dtype.byteorder in "=|"
    assert field.data.flags.c_contiguous
    assert field.mask.shape == field.data.shape
    assert field.mask.dtype == bool


# ---------------------------------------------------------------------------
# Single images, dtypes, scaling, masks
# ---------------------------------------------------------------------------


def test_primary_image_native_float32(tmp_path):
    image = noise_image()
    path = tmp_path / "field.fits"
    fits.PrimaryHDU(image).writeto(path)
    field = read_field(path)
    assert_native_float32(field)
    assert field.data.shape == (1, *SHAPE)
    np.testing.assert_array_equal(field.data[0], image.astype(np.float32))
    assert not field.mask.any()
    assert field.band_names == ["i"]  # the preset's band
    assert field.path == [str(path)]
    assert field.hdu == ["0"]
    assert field.name == "field.fits"
    assert field.wcs is None
    preset = get_preset("lsst-i")
    assert (field.pixel_scale, field.exposure, field.gain) == (preset.pixel_scale, preset.exposure, preset.gain)
    # the preset's zero point is for 1 e-/s: this image holds the total electrons of its exposure
    assert field.zero_point == pytest.approx(preset.zero_point + 2.5 * math.log10(preset.exposure))
    assert "preset lsst-i" in field.zero_point_source


def test_int16_bscale_bzero(tmp_path):
    raw = np.arange(-200, SHAPE[0] * SHAPE[1] - 200, dtype=np.int16).reshape(SHAPE)
    physical = raw * 2.0 + 100.0
    hdu = fits.PrimaryHDU(physical.astype(np.float32))
    hdu.scale("int16", bscale=2.0, bzero=100.0)
    path = tmp_path / "scaled.fits"
    hdu.writeto(path)
    assert fits.getheader(path)["BITPIX"] == 16
    field = read_field(path)
    assert_native_float32(field)
    np.testing.assert_array_equal(field.data[0], physical.astype(np.float32))
    assert "BSCALE" not in field.header and "BZERO" not in field.header


def test_uint16_via_bzero(tmp_path):
    image = np.linspace(1, 65535, SHAPE[0] * SHAPE[1]).astype(np.uint16).reshape(SHAPE)
    path = tmp_path / "uint16.fits"
    fits.PrimaryHDU(image).writeto(path)  # stored as int16 with BZERO = 32768
    assert fits.getheader(path)["BZERO"] == 32768
    field = read_field(path)
    assert_native_float32(field)
    np.testing.assert_array_equal(field.data[0], image.astype(np.float32))


def test_uint32_small_values_keep_precision(tmp_path):
    image = (np.arange(SHAPE[0] * SHAPE[1]) % 17 + 1).astype(np.uint32).reshape(SHAPE)
    path = tmp_path / "uint32.fits"
    fits.PrimaryHDU(image).writeto(path)  # int32 with BZERO = 2**31
    field = read_field(path)
    np.testing.assert_array_equal(field.data[0], image.astype(np.float32))


def test_blank_integer_pixels_are_masked(tmp_path):
    raw = np.full(SHAPE, 7, dtype=np.int16)
    raw[3, 4] = -32768
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BLANK"] = -32768
    hdu.header["BSCALE"] = 1.0
    hdu.header["BZERO"] = 10.0
    path = tmp_path / "blank.fits"
    hdu.writeto(path)
    field = read_field(path)
    assert field.mask[0, 3, 4] and field.mask.sum() == 1
    assert field.data[0, 3, 4] == 0.0
    assert field.data[0, 0, 0] == 17.0


def test_nan_and_inf_become_masked_zeros(tmp_path):
    image = noise_image()
    image[1, 2] = np.nan
    image[5, 6] = np.inf
    image[7, 8] = -np.inf
    path = tmp_path / "nan.fits"
    fits.PrimaryHDU(image).writeto(path)
    field = read_field(path)
    assert field.mask[0, 1, 2] and field.mask[0, 5, 6] and field.mask[0, 7, 8]
    assert field.mask.sum() == 3
    assert field.data[0, 1, 2] == 0 and field.data[0, 5, 6] == 0 and field.data[0, 7, 8] == 0
    assert np.isfinite(field.data).all()


def test_float64_image(tmp_path):
    image = noise_image(dtype=">f8")
    path = tmp_path / "f64.fits"
    fits.PrimaryHDU(image).writeto(path)
    field = read_field(path)
    assert_native_float32(field)
    np.testing.assert_allclose(field.data[0], image, rtol=1e-6)


def test_degenerate_leading_axes_are_dropped(tmp_path):
    image = noise_image()
    path = tmp_path / "4d.fits"
    fits.PrimaryHDU(image[None, None]).writeto(path)
    field = read_field(path)
    assert field.data.shape == (1, *SHAPE)
    np.testing.assert_array_equal(field.data[0], image)


# ---------------------------------------------------------------------------
# Multi-extension files, cubes, HDU and band selection
# ---------------------------------------------------------------------------


def test_mef_extensions_become_bands_named_by_extname(tmp_path):
    images = [noise_image(seed=s) for s in range(3)]
    path = write_mef(tmp_path / "mef.fits", images, names=["g", "r", "i"])
    field = read_field(path)
    assert_native_float32(field)
    assert field.band_names == ["g", "r", "i"]
    assert field.hdu == ["g", "r", "i"]
    assert field.path == [str(path)] * 3
    for band, image in enumerate(images):
        np.testing.assert_array_equal(field.data[band], image)
    assert field.noise.shape == (3,)


def test_mef_names_from_filter_then_index(tmp_path):
    headers = [fits.Header({"FILTER": "g"}), fits.Header({"FILTER": "r"})]
    path = write_mef(tmp_path / "filters.fits", [noise_image(), noise_image(seed=1)], headers=headers)
    assert read_field(path).band_names == ["g", "r"]
    path = write_mef(tmp_path / "anonymous.fits", [noise_image(), noise_image(seed=1)])
    # bands are explicit: two images that do not say which band they are make one science image
    with pytest.warns(FieldReadWarning, match="do not name distinct bands"):
        assert read_field(path).band_names == ["i"]
    assert read_field(path, hdu=[1, 2]).band_names == ["1", "2"]


def test_mef_generic_extname_falls_back_to_filter(tmp_path):
    path = write_mef(
        tmp_path / "sci.fits", [noise_image()], names=["SCI"], headers=[fits.Header({"FILTER": "z"})]
    )
    assert read_field(path).band_names == ["z"]


def test_mef_different_shapes_reads_first_with_warning(tmp_path):
    images = [noise_image(), noise_image(shape=(32, 32))]
    path = write_mef(tmp_path / "mixed.fits", images, names=["big", "small"])
    with pytest.warns(FieldReadWarning, match="different shapes") as record:
        field = read_field(path)
    assert record[0].filename == __file__  # attributed to the caller of read_field
    assert field.band_names == ["big"]
    assert field.data.shape == (1, *SHAPE)


def test_mef_auxiliary_planes_are_not_bands(tmp_path):
    images = [noise_image(), np.zeros(SHAPE, np.int32), np.ones(SHAPE, np.float32)]
    path = write_mef(tmp_path / "calexp.fits", images, names=["IMAGE", "MASK", "VARIANCE"])
    field = read_field(path)
    assert field.n_bands == 1
    assert field.hdu == ["IMAGE"]


def test_mef_mosaic_with_different_wcs_reads_first_with_warning(tmp_path):
    headers = [celestial_header(crval=(150.0, 2.0)), celestial_header(crval=(150.1, 2.0))]
    path = write_mef(
        tmp_path / "mosaic.fits", [noise_image(), noise_image(seed=1)], ["ccd1", "ccd2"], headers
    )
    with pytest.warns(FieldReadWarning, match="different WCS"):
        field = read_field(path)
    assert field.band_names == ["ccd1"]


def test_hdu_by_index_name_and_list(tmp_path):
    images = [noise_image(seed=s) for s in range(3)]
    path = write_mef(tmp_path / "mef.fits", images, names=["g", "r", "i"])
    field = read_field(path, hdu=2)
    assert field.band_names == ["r"]
    np.testing.assert_array_equal(field.data[0], images[1])
    assert read_field(path, hdu="i").band_names == ["i"]
    assert read_field(path, hdu="I").band_names == ["i"]
    assert read_field(path, hdu=["i", 1]).band_names == ["i", "g"]


def test_cube_planes_become_bands(tmp_path):
    cube = np.stack([noise_image(seed=s) for s in range(3)])
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(cube).writeto(path)
    field = read_field(path)
    assert_native_float32(field)
    assert field.band_names == ["band0", "band1", "band2"]
    np.testing.assert_array_equal(field.data, cube)


def test_cube_band_keywords_name_planes(tmp_path):
    cube = np.stack([noise_image(seed=s) for s in range(3)])
    header = fits.Header({"BAND1": "g", "BAND2": "r", "BAND3": "i"})
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(cube, header=header).writeto(path)
    assert read_field(path).band_names == ["g", "r", "i"]


def test_bands_select_and_rename(tmp_path):
    cube = np.stack([noise_image(seed=s) for s in range(3)])
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(cube).writeto(path)
    field = read_field(path, bands=[2, 0])
    assert field.band_names == ["band2", "band0"]
    np.testing.assert_array_equal(field.data, cube[[2, 0]])
    renamed = read_field(path, bands=["g", "r", "i"])
    assert renamed.band_names == ["g", "r", "i"]
    np.testing.assert_array_equal(renamed.data, cube)
    assert read_field(path, bands="band1").band_names == ["band1"]
    assert read_field(path, bands=-1).band_names == ["band2"]


def test_bands_by_name_in_mef(tmp_path):
    images = [noise_image(seed=s) for s in range(3)]
    path = write_mef(tmp_path / "mef.fits", images, names=["g", "r", "i"])
    field = read_field(path, bands=["i", "g"])
    assert field.band_names == ["i", "g"]
    np.testing.assert_array_equal(field.data[0], images[2])


# ---------------------------------------------------------------------------
# Several files as bands
# ---------------------------------------------------------------------------


def test_several_files_become_bands_in_order(tmp_path):
    paths = []
    for seed, band in enumerate("gri"):
        path = tmp_path / f"field_{band}.fits"
        fits.PrimaryHDU(
            noise_image(seed=seed), header=celestial_header() + fits.Header({"FILTER": band})
        ).writeto(path)
        paths.append(path)
    field = read_field([paths[2], paths[0], paths[1]])
    assert field.band_names == ["i", "g", "r"]
    assert field.path == [str(paths[2]), str(paths[0]), str(paths[1])]
    np.testing.assert_array_equal(field.data[1], noise_image(seed=0))
    assert field.wcs is not None


def test_several_files_without_names_use_file_stems(tmp_path):
    paths = [tmp_path / "a.fits", tmp_path / "b.fits.gz"]
    for seed, path in enumerate(paths):
        fits.PrimaryHDU(noise_image(seed=seed)).writeto(path)
    assert read_field(paths).band_names == ["a", "b"]


def test_several_files_same_filter_get_unique_names(tmp_path):
    paths = [tmp_path / "a.fits", tmp_path / "b.fits"]
    for seed, path in enumerate(paths):
        fits.PrimaryHDU(noise_image(seed=seed), header=fits.Header({"FILTER": "r"})).writeto(path)
    assert read_field(paths).band_names == ["r", "r_2"]


# ---------------------------------------------------------------------------
# Compression and file names
# ---------------------------------------------------------------------------


def test_tile_compressed_fz(tmp_path):
    images = [noise_image(seed=s, dtype=np.float32) for s in range(2)]
    path = write_mef(tmp_path / "field.fits.fz", images, names=["g", "r"], compressed=True)
    with fits.open(path) as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
    field = read_field(path)
    assert_native_float32(field)
    assert field.band_names == ["g", "r"]
    # default lossy quantisation: equal to within a small fraction of the noise
    np.testing.assert_allclose(field.data, np.stack(images), atol=0.1 * SIGMA)


def test_tile_compressed_with_tall_tiles(tmp_path):
    image = noise_image(shape=(100, 70), dtype=np.float32)
    hdu = fits.CompImageHDU(image, compression_type="GZIP_2", quantize_level=0, tile_shape=(16, 16))
    path = tmp_path / "tiles.fz"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    np.testing.assert_array_equal(read_field(path).data[0], image)


def test_integer_tile_compressed(tmp_path):
    image = (np.arange(SHAPE[0] * SHAPE[1]) % 1000).astype(np.int16).reshape(SHAPE)
    path = tmp_path / "int.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image, compression_type="RICE_1")]).writeto(path)
    np.testing.assert_array_equal(read_field(path).data[0], image.astype(np.float32))


@pytest.mark.parametrize("name", ["field.fits.gz", "FIELD.FITS", "field.FIT", "field.fts", "field.FITS.GZ"])
def test_gzip_and_uppercase_names(tmp_path, name):
    image = noise_image()
    path = tmp_path / name
    fits.PrimaryHDU(image).writeto(path)
    if name.endswith(".gz"):
        with open(path, "rb") as stream:
            assert stream.read(2) == b"\x1f\x8b"
    field = read_field(str(path))
    assert_native_float32(field)
    np.testing.assert_array_equal(field.data[0], image)


def test_gzip_mef_and_bzip2(tmp_path):
    images = [noise_image(seed=s) for s in range(2)]
    path = write_mef(tmp_path / "mef.fits.gz", images, names=["g", "r"])
    field = read_field(path)
    assert field.band_names == ["g", "r"]
    np.testing.assert_array_equal(field.data, np.stack(images))
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(images[0]).writeto(plain)
    bzipped = tmp_path / "plain.fits.bz2"
    bzipped.write_bytes(bz2.compress(plain.read_bytes()))
    np.testing.assert_array_equal(read_field(bzipped).data[0], images[0])


def test_error_truncated_gzip(tmp_path):
    path = tmp_path / "whole.fits.gz"
    fits.PrimaryHDU(noise_image(shape=(200, 200))).writeto(path)
    truncated = tmp_path / "cut.fits.gz"
    truncated.write_bytes(path.read_bytes()[:5000])
    assert_read_error(truncated, "truncated")


def test_suffix_and_magic_helpers(tmp_path):
    assert has_fits_suffix("a.FITS.fz") and has_fits_suffix("b.fit") and not has_fits_suffix("c.png")
    fits.PrimaryHDU(noise_image()).writeto(tmp_path / "a.fits.gz")
    (tmp_path / "b.fits").write_text("SIMPLE? no")
    assert is_fits_file(tmp_path / "a.fits.gz")
    assert not is_fits_file(tmp_path / "b.fits")
    assert not is_fits_file(tmp_path / "missing.fits")
    assert not is_fits_file(tmp_path)


# ---------------------------------------------------------------------------
# WCS, calibration, noise
# ---------------------------------------------------------------------------


def test_wcs_and_pixel_scale_from_cd_matrix(tmp_path):
    header = header_with_cd(scale_arcsec=0.2)
    assert "CD1_1" in header and "PC1_1" not in header
    path = tmp_path / "wcs.fits"
    fits.PrimaryHDU(noise_image(), header=header).writeto(path)
    field = read_field(path)
    assert field.wcs is not None and field.wcs.has_celestial and field.wcs.naxis == 2
    assert field.pixel_scale == pytest.approx(0.2, rel=1e-9)
    ra, dec = field.wcs.all_pix2world([[SHAPE[1] / 2 - 1, SHAPE[0] / 2 - 1]], 0)[0]
    assert (ra, dec) == pytest.approx((150.0, 2.0))


def test_wcs_of_a_cube_is_celestial(tmp_path):
    header = celestial_header()
    header["CTYPE3"] = "BAND"
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.stack([noise_image(), noise_image(seed=1)]), header=header).writeto(path)
    field = read_field(path)
    assert field.wcs is not None and field.wcs.naxis == 2


def test_broken_wcs_warns_and_reads_without(tmp_path):
    header = celestial_header()
    header["CTYPE1"] = "RA---XYZ"  # unknown projection
    path = tmp_path / "broken.fits"
    fits.PrimaryHDU(noise_image(), header=header).writeto(path)
    with pytest.warns(FieldReadWarning, match="broken.fits"):
        field = read_field(path)
    assert field.wcs is None
    assert field.pixel_scale == get_preset().pixel_scale


def test_no_wcs_keywords_no_warning(tmp_path):
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(noise_image()).writeto(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        field = read_field(path)
    assert field.wcs is None


@pytest.mark.parametrize("zp_key", ["ZEROPT", "MAGZERO", "MAGZPT"])
def test_header_calibration_overrides_preset(tmp_path, zp_key):
    header = fits.Header({zp_key: 31.5, "EXPTIME": 900.0, "GAIN": 2.5, "PIXSCALE": 0.168})
    path = tmp_path / "calib.fits"
    fits.PrimaryHDU(noise_image(), header=header).writeto(path)
    field = read_field(path)
    assert (field.zero_point, field.exposure, field.gain, field.pixel_scale) == (31.5, 900.0, 2.5, 0.168)


def test_calibration_inherited_from_primary_header(tmp_path):
    primary = fits.Header({"MAGZERO": 30.0, "EXPTIME": 60.0})
    path = write_mef(tmp_path / "mef.fits", [noise_image()], names=["r"], primary_header=primary)
    field = read_field(path)
    assert (field.zero_point, field.exposure) == (30.0, 60.0)


def test_invalid_calibration_value_warns_and_uses_preset(tmp_path):
    header = fits.Header({"EXPTIME": 0.0})
    path = tmp_path / "zero_exptime.fits"
    fits.PrimaryHDU(noise_image(), header=header).writeto(path)
    with pytest.warns(FieldReadWarning, match="EXPTIME"):
        field = read_field(path)
    assert field.exposure == get_preset().exposure


def test_noise_estimate_within_five_percent(tmp_path):
    image = np.random.default_rng(1).normal(0.0, SIGMA, (300, 300)).astype(">f4")
    path = tmp_path / "noise.fits"
    fits.PrimaryHDU(image).writeto(path)
    assert read_field(path).noise[0] == pytest.approx(SIGMA, rel=0.05)


def test_noise_estimate_ignores_sources_masked_pixels_and_zero_padding():
    rng = np.random.default_rng(2)
    image = rng.normal(0.0, SIGMA, (400, 400))
    image[::20, ::20] += 1e6  # bright sources
    image[:, :80] = 0.0  # no-data border
    mask = np.zeros(image.shape, bool)
    mask[:10] = True
    image[:10] = 1e9
    assert estimate_noise(image, mask) == pytest.approx(SIGMA, rel=0.05)
    assert estimate_noise(image[:, :80]) == 0.0
    assert np.isnan(estimate_noise(np.full((4, 4), np.nan)))


def test_noise_estimate_subsamples_large_images():
    image = np.random.default_rng(3).normal(0.0, 2.0, 3_000_000).astype(np.float32)
    assert estimate_noise(image, max_samples=100_000) == pytest.approx(2.0, rel=0.05)


# ---------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------


def test_array_2d_and_3d():
    image = noise_image()
    field = read_field(image)
    assert_native_float32(field)
    assert field.data.shape == (1, *SHAPE)
    assert field.wcs is None and field.path == [] and field.name == "array"
    assert field.noise[0] == pytest.approx(SIGMA, rel=0.1)
    cube = np.stack([image, image * 2])
    field = read_field(cube, bands=["g", "r"])
    assert field.band_names == ["g", "r"]


def test_array_nan_masked_without_touching_input():
    image = noise_image(dtype=np.float32)
    image[0, 0] = np.nan
    field = read_field(image)
    assert field.mask[0, 0, 0] and field.data[0, 0, 0] == 0
    assert np.isnan(image[0, 0])
    assert not np.shares_memory(field.data, image)


def test_masked_array_mask_is_kept():
    image = np.ma.masked_array(noise_image(), mask=np.zeros(SHAPE, bool))
    image.mask[2, 3] = True
    field = read_field(image)
    assert field.mask[0, 2, 3] and field.mask.sum() == 1 and field.data[0, 2, 3] == 0


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.ones(10), "1-D"),
        (np.ones((2, 2, 4, 4)), "wrong axis count"),
        (np.full((4, 4), np.nan), "nothing to detect"),
        (np.zeros((4, 4)), "nothing to detect"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype"),
        (np.ones((0, 4)), "no pixel"),
    ],
)
def test_bad_arrays(array, match):
    with pytest.raises(FieldReadError, match=match):
        read_field(array)


def test_array_hdu_is_an_error():
    with pytest.raises(FieldReadError, match="hdu="):
        read_field(noise_image(), hdu=1)


# ---------------------------------------------------------------------------
# Round trip through write_field
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.fits", "out.fits.gz", "OUT.FITS.GZ", "out.fits.fz", "OUT.FITS.FZ"])
def test_write_read_round_trip(tmp_path, name):
    data = np.stack([noise_image(seed=s, dtype=np.float32) for s in range(2)])
    mask = np.zeros(data.shape, bool)
    mask[0, 3, 4] = mask[1, 10, 11] = True
    data[mask] = 0.0
    wcs = WCS(celestial_header())
    header = fits.Header({"OBJECT": "COSMOS", "MAGZERO": 99.0})
    field = Field(
        data,
        mask=mask,
        band_names=["g", "r"],
        wcs=wcs,
        header=header,
        zero_point=28.5,
        exposure=1200.0,
        gain=1.7,
        pixel_scale=0.2,
    )
    path = write_field(field, tmp_path / name)
    if name.lower().endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    if name.lower().endswith(".fz"):
        with fits.open(path) as hdul:
            assert all(isinstance(h, fits.CompImageHDU) for h in hdul[1:])
    back = read_field(path)
    assert_native_float32(back)
    np.testing.assert_array_equal(back.data, field.data)
    np.testing.assert_array_equal(back.mask, field.mask)
    assert back.band_names == ["g", "r"]
    assert (back.zero_point, back.exposure, back.gain) == (28.5, 1200.0, 1.7)
    assert back.pixel_scale == pytest.approx(0.2)
    assert back.header["OBJECT"] == "COSMOS"
    assert "MAGZERO" not in back.header  # stale calibration aliases are not carried over
    pixels = np.array([[0.0, 0.0], [79.0, 63.0]])
    np.testing.assert_allclose(back.wcs.all_pix2world(pixels, 0), wcs.all_pix2world(pixels, 0), atol=1e-10)


def test_write_refuses_to_overwrite(tmp_path):
    field = read_field(noise_image())
    path = write_field(field, tmp_path / "a.fits")
    with pytest.raises(OSError):
        write_field(field, path)
    write_field(field, path, overwrite=True)
    gzipped = write_field(field, tmp_path / "a.fits.gz")
    with pytest.raises(OSError):
        write_field(field, gzipped)
    write_field(field, gzipped, overwrite=True)


# ---------------------------------------------------------------------------
# Bad input: one FieldReadError naming the file (and HDU)
# ---------------------------------------------------------------------------


def assert_read_error(path, *match, **kwargs) -> FieldReadError:
    with pytest.raises(FieldReadError) as info:
        read_field(path, **kwargs)
    message = str(info.value)
    names = path if isinstance(path, list) else [path]
    assert any(p.name in message for p in names), message
    for text in match:
        assert text in message, message
    assert isinstance(info.value, DeblendInputError) and isinstance(info.value, ValueError)
    return info.value


def test_error_missing_file(tmp_path):
    assert_read_error(tmp_path / "nowhere.fits", "no such file")


def test_error_directory(tmp_path):
    folder = tmp_path / "folder.fits"
    folder.mkdir()
    assert_read_error(folder, "directory")


def test_error_png_renamed_fits(tmp_path):
    path = tmp_path / "picture.fits"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert_read_error(path, "not a FITS file")


def test_error_text_renamed_fits(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("these are not pixels\n" * 20)
    assert_read_error(path, "not a FITS file")


def test_error_gzipped_text(tmp_path):
    path = tmp_path / "notes.fits.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(b"hello" * 100)
    assert_read_error(path, "not a FITS file")


def test_error_empty_file(tmp_path):
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    assert_read_error(path, "not a FITS file", "empty")


def test_error_truncated_file(tmp_path):
    path = tmp_path / "whole.fits"
    fits.PrimaryHDU(noise_image(shape=(200, 200))).writeto(path)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(path.read_bytes()[:20000])
    assert_read_error(truncated, "truncated")


def test_error_empty_primary_without_extension(tmp_path):
    path = tmp_path / "header_only.fits"
    fits.PrimaryHDU().writeto(path)
    assert_read_error(path, "empty primary HDU and no image extension")


def test_error_only_a_table(tmp_path):
    path = tmp_path / "catalog.fits"
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="flux", format="E", array=np.ones(5))], name="CAT"
    )
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    assert_read_error(path, "only tables", "'CAT'")


def test_error_selected_hdu_is_a_table(tmp_path):
    path = tmp_path / "image_and_table.fits"
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="flux", format="E", array=np.ones(5))], name="CAT"
    )
    fits.HDUList([fits.PrimaryHDU(noise_image()), table]).writeto(path)
    assert_read_error(path, "HDU 1 ('CAT')", "table", hdu=1)
    assert_read_error(path, "HDU 1 ('CAT')", "table", hdu="cat")


def test_error_selected_hdu_is_empty(tmp_path):
    path = write_mef(tmp_path / "mef.fits", [noise_image()], names=["r"])
    assert_read_error(path, "HDU 0", "no image data", hdu=0)


def test_error_one_dimensional(tmp_path):
    path = tmp_path / "spectrum.fits"
    fits.PrimaryHDU(np.ones(100, np.float32)).writeto(path)
    assert_read_error(path, "HDU 0", "1-D")


def test_error_four_dimensional(tmp_path):
    path = tmp_path / "hyper.fits"
    fits.PrimaryHDU(np.ones((2, 2, 8, 8), np.float32)).writeto(path)
    assert_read_error(path, "HDU 0", "wrong axis count")


@pytest.mark.parametrize("fill", [np.nan, 0.0])
def test_error_nothing_to_detect(tmp_path, fill):
    path = tmp_path / "blank.fits"
    fits.PrimaryHDU(np.full(SHAPE, fill, np.float32)).writeto(path)
    assert_read_error(path, "nothing to detect")


def test_error_nothing_to_detect_in_one_band(tmp_path):
    path = write_mef(tmp_path / "mef.fits", [noise_image(), np.zeros(SHAPE, np.float32)], names=["g", "r"])
    assert_read_error(path, "HDU 2 ('r')", "nothing to detect")


def test_error_hdu_out_of_range_lists_available(tmp_path):
    path = write_mef(tmp_path / "mef.fits", [noise_image(), noise_image(seed=1)], names=["g", "r"])
    assert_read_error(path, "no HDU 7", "1 'g' (image (64, 80))", "2 'r'", hdu=7)


def test_error_unknown_extname_lists_available(tmp_path):
    path = write_mef(tmp_path / "mef.fits", [noise_image(), noise_image(seed=1)], names=["g", "r"])
    assert_read_error(path, "no HDU 'z'", "1 'g' (image (64, 80))", "2 'r'", hdu="z")


def test_error_files_with_different_shapes(tmp_path):
    first, second = tmp_path / "big.fits", tmp_path / "small.fits"
    fits.PrimaryHDU(noise_image()).writeto(first)
    fits.PrimaryHDU(noise_image(shape=(32, 32))).writeto(second)
    error = assert_read_error([first, second], "different shapes", "(64, 80)", "(32, 32)")
    assert "big.fits" in str(error) and "small.fits" in str(error)


def test_error_files_with_different_wcs(tmp_path):
    first, second = tmp_path / "north.fits", tmp_path / "south.fits"
    fits.PrimaryHDU(noise_image(), header=celestial_header(crval=(150.0, 2.0))).writeto(first)
    fits.PrimaryHDU(noise_image(), header=celestial_header(crval=(150.0, 2.01))).writeto(second)
    error = assert_read_error([first, second], "different WCS", "arcsec")
    assert "north.fits" in str(error) and "south.fits" in str(error)


def test_files_with_wcs_agreeing_to_a_fraction_of_a_pixel_are_fine(tmp_path):
    first, second = tmp_path / "a.fits", tmp_path / "b.fits"
    fits.PrimaryHDU(noise_image(), header=celestial_header(crval=(150.0, 2.0))).writeto(first)
    fits.PrimaryHDU(noise_image(), header=header_with_cd(crval=(150.0, 2.0 + 0.01 / 3600))).writeto(second)
    assert read_field([first, second]).n_bands == 2


def test_error_bands_out_of_range(tmp_path):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.stack([noise_image(), noise_image(seed=1)])).writeto(path)
    assert_read_error(path, "out of range", "[5]", bands=[0, 5])
    assert_read_error(path, "unknown band", "'x'", bands=["band0", "x"])
    assert_read_error(path, "selects nothing", bands=[])


def test_error_empty_file_list():
    with pytest.raises(FieldReadError, match="empty list"):
        read_field([])


def test_unknown_preset_is_an_input_error(tmp_path):
    with pytest.raises(DeblendInputError, match="preset"):
        read_field(noise_image(), preset="nope")
