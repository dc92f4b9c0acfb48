"""The napari reader: ``get_reader`` checks, layer data tuples, display limits, and a real viewer."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from napari_deblend._reader import METADATA_KEY, display_limits, get_reader, layer_data, read_fits
from napari_deblend.errors import FieldReadError
from napari_deblend.field import Field, estimate_noise, read_field

SIGMA = 446.0
SHAPE = (96, 128)


def galaxy_image(seed=0, shape=SHAPE) -> np.ndarray:
    """Noise (sigma 446) plus a bright and a faint round exponential blob, big-endian float32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = rng.normal(0.0, SIGMA, shape)
    for y, x, peak, scale in [(30, 30, 3000 * SIGMA, 3.0), (60, 90, 5 * SIGMA, 4.0)]:
        image += peak * np.exp(-np.hypot(yy - y, xx - x) / scale)
    return image.astype(">f4")


@pytest.fixture
def mef_path(tmp_path):
    hdus = [fits.PrimaryHDU()]
    hdus += [
        fits.ImageHDU(galaxy_image(seed), header=fits.Header({"EXTNAME": band}))
        for seed, band in enumerate("gri")
    ]
    path = tmp_path / "field.fits"
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.fixture
def single_path(tmp_path):
    path = tmp_path / "single.fits"
    fits.PrimaryHDU(galaxy_image()).writeto(path)
    return path


# ---------------------------------------------------------------------------
# get_reader
# ---------------------------------------------------------------------------


def test_get_reader_refuses_non_fits(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    renamed = tmp_path / "picture.fits"
    renamed.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    fits_named_txt = tmp_path / "image.txt"
    fits.PrimaryHDU(galaxy_image()).writeto(fits_named_txt)
    folder = tmp_path / "folder.fits"
    folder.mkdir()
    for path in [text, png, renamed, fits_named_txt, folder, tmp_path / "missing.fits"]:
        assert get_reader(str(path)) is None, path
    assert get_reader([]) is None


def test_get_reader_accepts_fits(tmp_path, single_path):
    assert callable(get_reader(str(single_path)))
    assert get_reader(single_path) is read_fits
    for name in ["a.fits.gz", "B.FITS", "c.fits.fz", "d.fz", "e.fit", "f.fts"]:
        path = tmp_path / name
        if name.endswith("fz"):
            fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(galaxy_image().astype(np.float32))]).writeto(
                path
            )
        else:
            fits.PrimaryHDU(galaxy_image()).writeto(path)
        assert get_reader(str(path)) is read_fits, name


def test_get_reader_list_needs_all_fits(tmp_path, single_path):
    other = tmp_path / "other.fits"
    fits.PrimaryHDU(galaxy_image(seed=1)).writeto(other)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert get_reader([str(single_path), str(other)]) is read_fits
    assert get_reader([str(single_path), str(text)]) is None
    assert get_reader([str(single_path), str(tmp_path / "missing.fits")]) is None


# ---------------------------------------------------------------------------
# Layer data
# ---------------------------------------------------------------------------


def test_mef_gives_one_layer_per_band(mef_path):
    layers = get_reader(str(mef_path))(str(mef_path))
    assert [kind for _, _, kind in layers] == ["image"] * 3
    assert [kwargs["name"] for _, kwargs, _ in layers] == [
        "field.fits [g]",
        "field.fits [r]",
        "field.fits [i]",
    ]
    field = layers[0][1]["metadata"][METADATA_KEY]["field"]
    assert isinstance(field, Field) and field.band_names == ["g", "r", "i"]
    for band, (data, kwargs, _) in enumerate(layers):
        info = kwargs["metadata"][METADATA_KEY]
        assert info["field"] is field
        assert info["band"] == band
        assert info["path"] == str(mef_path)
        assert np.shares_memory(data, field.data)
        np.testing.assert_array_equal(data, field.data[band])
        assert kwargs["colormap"] == "gray"
        lo, hi = kwargs["contrast_limits"]
        median = float(np.median(data))
        assert lo < median < hi
        assert lo == pytest.approx(median - 2 * field.noise[band], abs=0.2 * SIGMA)
        assert 20 * field.noise[band] < hi - median <= 300.01 * field.noise[band]
        assert 0.2 <= kwargs["gamma"] <= 1.0


def test_single_image_gives_one_layer_named_by_file(single_path):
    layers = read_fits(str(single_path))
    assert len(layers) == 1
    data, kwargs, kind = layers[0]
    assert kwargs["name"] == "single.fits" and kind == "image"
    assert data.dtype == np.float32 and data.dtype.byteorder in "=|"


def test_cube_gives_one_layer_per_plane(tmp_path):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.stack([galaxy_image(seed) for seed in range(2)])).writeto(path)
    layers = read_fits(str(path))
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["cube.fits [band0]", "cube.fits [band1]"]
    assert [kwargs["metadata"][METADATA_KEY]["band"] for _, kwargs, _ in layers] == [0, 1]


def test_list_of_files_is_one_field(tmp_path):
    paths = []
    for seed, band in enumerate("gr"):
        path = tmp_path / f"{band}.fits"
        fits.PrimaryHDU(galaxy_image(seed), header=fits.Header({"FILTER": band})).writeto(path)
        paths.append(str(path))
    layers = get_reader(paths)(paths)
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["g.fits [g]", "r.fits [r]"]
    fields = {id(kwargs["metadata"][METADATA_KEY]["field"]) for _, kwargs, _ in layers}
    assert len(fields) == 1


def test_bad_file_raises_field_read_error(tmp_path):
    path = tmp_path / "blank.fits"
    fits.PrimaryHDU(np.full((16, 16), np.nan, np.float32)).writeto(path)
    reader = get_reader(str(path))
    assert reader is not None  # the cheap check passes ...
    with pytest.raises(FieldReadError, match="blank.fits.*nothing to detect"):
        reader(str(path))  # ... the real read explains what is wrong


def test_layer_data_of_an_array_field():
    field = read_field(galaxy_image().astype(np.float32))
    ((data, kwargs, kind),) = layer_data(field)
    assert kwargs["name"] == "array"
    assert kwargs["metadata"][METADATA_KEY]["path"] is None


# ---------------------------------------------------------------------------
# display_limits
# ---------------------------------------------------------------------------


def test_display_limits_show_faint_and_bright_sources():
    image = galaxy_image().astype(np.float32)
    lo, hi, gamma = display_limits(image, SIGMA)

    def gray(value):
        return float(np.clip((value - lo) / (hi - lo), 0, 1) ** gamma)

    background = gray(0.0)
    assert 0.2 < background < 0.3  # dark gray, not black
    assert gray(5 * SIGMA) - background > 0.1  # a 5-sigma pixel stands out
    assert gray(50 * SIGMA) < 1.0  # bright galaxies keep some structure
    assert gray(-3 * SIGMA) == 0.0


def test_display_limits_estimate_noise_when_missing():
    image = galaxy_image().astype(np.float32)
    expected = display_limits(image, estimate_noise(image))
    assert display_limits(image) == pytest.approx(expected)
    assert display_limits(image, np.nan) == pytest.approx(expected)
    assert display_limits(image, 0.0) == pytest.approx(expected)


def test_display_limits_degenerate_images():
    assert display_limits(np.full((8, 8), np.nan)) == (0.0, 1.0, 1.0)
    lo, hi, gamma = display_limits(np.full((8, 8), 3.0))
    assert lo < hi and gamma == 1.0
    mask = np.zeros((8, 8), bool)
    mask[0] = True
    image = np.random.default_rng(0).normal(0, 1, (8, 8))
    image[0] = 1e9
    assert display_limits(image, 1.0, mask)[1] < 1e3


# ---------------------------------------------------------------------------
# A real viewer (needs the installed plugin manifest)
# ---------------------------------------------------------------------------


def _plugin_has_reader() -> bool:
    try:
        import npe2

        manager = npe2.PluginManager.instance()
        manager.discover()
        manifest = manager.get_manifest("napari-deblend")
    except Exception:
        return False
    return bool(manifest.contributions.readers)


@pytest.mark.skipif(
    not _plugin_has_reader(), reason="napari-deblend is not installed with its napari.yaml reader"
)
def test_viewer_opens_mef(make_napari_viewer, mef_path):
    viewer = make_napari_viewer()
    layers = viewer.open(str(mef_path), plugin="napari-deblend")
    assert [layer.name for layer in layers] == ["field.fits [g]", "field.fits [r]", "field.fits [i]"]
    assert [layer.name for layer in viewer.layers] == ["field.fits [g]", "field.fits [r]", "field.fits [i]"]
    field = viewer.layers[0].metadata[METADATA_KEY]["field"]
    assert field.n_bands == 3
    for band, layer in enumerate(viewer.layers):
        assert layer.metadata[METADATA_KEY]["field"] is field
        assert layer.metadata[METADATA_KEY]["band"] == band
        assert layer.colormap.name == "gray"
        lo, hi = layer.contrast_limits
        assert lo < 0 < hi
        assert layer.data.shape == SHAPE
