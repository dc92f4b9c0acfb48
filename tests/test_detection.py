import numpy as np
import pytest

from napari_deblend import detect
from napari_deblend.detection import DETECTION_PRESETS, get_detection_preset, run_detection
from napari_deblend.errors import DetectionError
from napari_deblend.field import Field

from .conftest import NOISE, gaussian_field


def test_detect_finds_sources_with_positions_and_flux(blend_field):
    cat, seg = detect(blend_field)
    assert seg.dtype == np.int32 and seg.shape == (256, 256)
    assert set(np.unique(seg)) - {0} == set(cat["id"])
    # the isolated source at (y=40, x=40) of flux 4e5
    d = np.hypot(np.asarray(cat["x"]) - 40, np.asarray(cat["y"]) - 40)
    row = cat[np.argmin(d)]
    assert d.min() < 0.3
    # sep's Kron flux is a few percent low by design
    assert 0.88 < float(row["flux_auto"]) / 4e5 < 1.02
    assert np.isclose(float(row["mag_auto"]), blend_field.magnitude(float(row["flux_auto"])))
    for col in ("a", "b", "theta", "x2", "y2", "xy", "flags", "kron_radius", "ra", "dec", "snr"):
        assert col in cat.colnames


def test_presets_differ_and_des_matches_sxdes():
    des = DETECTION_PRESETS["des"]
    assert (des.thresh, des.minarea, des.deblend_nthresh, des.deblend_cont) == (0.8, 4, 64, 0.001)
    assert des.filter_kernel.shape == (7, 7)
    assert np.isclose(des.filter_kernel.sum(), 1.0)
    sx = DETECTION_PRESETS["sextractor"]
    assert (sx.thresh, sx.minarea, sx.deblend_nthresh, sx.deblend_cont) == (1.5, 5, 32, 0.005)


def test_des_preset_detects_fainter_sources():
    rng = np.random.default_rng(3)
    sources = [(y, x, 6e3 * NOISE / 446, 2.0) for y, x in rng.uniform(20, 236, (25, 2))]
    field = gaussian_field(sources, seed=4)
    n_sx = len(detect(field, preset="sextractor", allow_empty=True)[0])
    n_des = len(detect(field, preset="des")[0])
    assert n_des > n_sx


def test_multiband_detects_on_coadd_and_measures_each_band():
    field = gaussian_field([(64, 64, 3e5, 2.0)], shape=(128, 128), n_bands=3)
    field.band_names = ["g", "r", "i"]
    cat, _ = detect(field)
    assert len(cat) == 1
    for band in "gri":
        assert 0.85 < float(cat[f"flux_auto_{band}"][0]) / 3e5 < 1.05


def test_progress_and_result_layers(blend_field):
    steps = []
    result = run_detection(blend_field, "des", progress=lambda *s: steps.append(s))
    assert steps[0][0] == 0 and steps[-1][0] == steps[-1][1]
    assert result.subtracted.shape == blend_field.data.shape
    assert abs(result.detection_rms - NOISE) / NOISE < 0.05


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preset": "nope"}, "unknown detection preset 'nope'"),
        ({"thresh": -1}, "thresh=-1"),
        ({"bogus": 3}, "unknown detection parameter"),
        ({"back_size": 512}, "smaller than the background mesh back_size=512"),
    ],
)
def test_bad_parameters_give_clear_errors(blend_field, kwargs, match):
    with pytest.raises(DetectionError, match=match):
        detect(blend_field, **kwargs)


def test_nothing_found_and_empty_images_are_clear_errors():
    noise_only = gaussian_field([], shape=(128, 128))
    with pytest.raises(DetectionError, match="no source found"):
        detect(noise_only, thresh=50)
    cat, seg = detect(noise_only, thresh=50, allow_empty=True)
    assert len(cat) == 0 and not seg.any()
    with pytest.raises(DetectionError, match="all zero"):
        detect(Field(np.zeros((64, 64), np.float32)))
    with pytest.raises(DetectionError, match="masked"):
        detect(Field(np.zeros((64, 64), np.float32), mask=np.ones((64, 64), bool)))


def test_masked_pixels_are_not_detected(blend_field):
    blend_field.mask[0, :20, :] = True
    blend_field.data[0, :20, :] = 0.0
    cat, _ = detect(blend_field)
    assert np.all(np.asarray(cat["y"]) > 15)


def test_get_detection_preset_overrides():
    p = get_detection_preset("sextractor", thresh=3.0, minarea=None)
    assert p.thresh == 3.0 and p.minarea == 5
