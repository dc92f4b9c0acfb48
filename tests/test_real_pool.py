"""The pool of real galaxies, on survey images the tests draw themselves (GalSim knotty galaxies + stars + noise).

The fake survey has 0.3" pixels and a 0.5" Kolmogorov PSF (the ``lsst-i``
preset: 0.2", 0.7"), so resampling and PSF matching both act.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import galsim
import numpy as np
import pytest
from astropy.io import fits

import napari_deblend
from napari_deblend.errors import DeblendInputError
from napari_deblend.presets import get_preset
from napari_deblend.realpool import SPLITS, SourceSpec, build_real_pool, load_real_pool, split_by_galaxy
from napari_deblend.realpool.detect import _moffat_fwhm
from napari_deblend.realpool.sources import jpeg_luminance, sha256
from napari_deblend.realpool.split_register import (
    MATCH_RADIUS,
    apply_split_register,
    load_split_register,
    uses_register,
    write_split_register,
)
from napari_deblend.realpool.stamps import matching_kernel, path_psf_fwhm, source_star

SCALE = 0.3  # arcsec per pixel of the fake survey
PSF_FWHM = 0.5
SIZE = 200
GALAXIES = [(32 + 68 * (k % 3), 36 + 120 * (k // 3)) for k in range(6)]  # (x, y) pixels
STARS = [(14 + 24 * k, 96) for k in range(8)]
NEIGHBOUR = (GALAXIES[1][0] + 6, GALAXIES[1][1] + 4)  # a faint galaxy touching galaxy 1
BAND_SHIFT = {"r": 1.0, "g": 0.6}


def _scene(flux_scale: float = 1.0, seed: int = 1) -> np.ndarray:
    """Knotty disk galaxies, a faint neighbour, a row of stars and unit Gaussian noise."""
    image = galsim.ImageF(SIZE, SIZE, scale=SCALE)
    psf = galsim.Kolmogorov(fwhm=PSF_FWHM)
    rng = np.random.default_rng(3)
    for k, (x, y) in enumerate(GALAXIES):
        disk = galsim.Exponential(half_light_radius=0.6, flux=1200.0 * flux_scale)
        disk = disk.shear(g1=0.3 * rng.uniform(-1, 1), g2=0.3 * rng.uniform(-1, 1))
        knots = galsim.RandomKnots(npoints=6, half_light_radius=0.6, flux=600.0 * flux_scale,
                                   rng=galsim.BaseDeviate(k + 1))
        galsim.Convolve(disk + knots, psf).drawImage(image, center=galsim.PositionD(x + 1, y + 1), add_to_image=True)
    neighbour = galsim.Convolve(galsim.Exponential(half_light_radius=0.25, flux=250.0 * flux_scale), psf)
    neighbour.drawImage(image, center=galsim.PositionD(NEIGHBOUR[0] + 1, NEIGHBOUR[1] + 1), add_to_image=True)
    for x, y in STARS:
        star = galsim.Convolve(galsim.DeltaFunction(flux=1500.0 * flux_scale), psf)
        star.drawImage(image, center=galsim.PositionD(x + 1, y + 1), add_to_image=True)
    return image.array + np.random.default_rng(seed).normal(0.0, 1.0, image.array.shape)


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    """A source folder: one single-band survey image and a two-band frame."""
    root = tmp_path_factory.mktemp("real_galaxies")
    (root / "fake_survey").mkdir()
    fits.PrimaryHDU(_scene().astype(np.float32)).writeto(root / "fake_survey" / "field.fits")
    (root / "fake_bands").mkdir()
    for band, scale in BAND_SHIFT.items():
        hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(_scene(scale, seed=7).astype(np.float32))])
        hdul.writeto(root / "fake_bands" / f"{band}.fits")
    return root


SOURCES = (
    SourceSpec("fake_survey", ("field.fits",), pixel_scale=SCALE, magnifications=(1.0, 1.25)),
    SourceSpec("fake_bands", ("r.fits", "g.fits"), multiband=True, pixel_scale=SCALE, hdu=1),
)


@pytest.fixture(scope="module")
def pool(survey, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pool")
    return build_real_pool(survey, out=out, sources=SOURCES, seed=3, split=(0.5, 0.25, 0.25), log=lambda _: None)


def _all(pool_dir: Path) -> dict:
    parts = [load_real_pool(pool_dir.parent, split) for split in SPLITS]
    return {split: part for split, part in zip(SPLITS, parts)}


def test_galaxies_kept_stars_rejected(pool):
    splits = _all(pool)
    x = np.concatenate([p.x for p in splits.values()])
    y = np.concatenate([p.y for p in splits.values()])
    origin = np.concatenate([p.origin for p in splits.values()])
    kept = {(round(float(a)), round(float(b))) for a, b, o in zip(x, y, origin) if o == "fake_survey"}
    for sx, sy in STARS:
        assert not any(abs(a - sx) <= 2 and abs(b - sy) <= 2 for a, b in kept), f"star at {(sx, sy)} kept"
    found = [any(abs(a - gx) <= 2 and abs(b - gy) <= 2 for a, b in kept) for gx, gy in GALAXIES]
    assert sum(found) >= 5
    manifest = json.loads((pool / "pool.json").read_text())
    survey_report = manifest["per_source"]["fake_survey"]
    assert survey_report["rejected"]["star"] >= len(STARS) - 1
    stars = manifest["images"][0]["stars"][0]
    assert stars["method"] == "stars" and stars["n_stars"] >= 6
    assert stars["fwhm_arcsec"] == pytest.approx(PSF_FWHM, rel=0.2)


def test_stamps_normalised_centred_and_one_galaxy(pool):
    for part in _all(pool).values():
        if not len(part):
            continue
        size = part.images.shape[-1]
        assert part.images.dtype == np.float32 and size == 64
        np.testing.assert_allclose(part.images.sum(axis=(1, 2)), 1.0, atol=1e-4)
        weights = np.clip(part.images, 0, None)
        yy, xx = np.indices((size, size))
        cy = (weights * yy).sum(axis=(1, 2)) / weights.sum(axis=(1, 2))
        cx = (weights * xx).sum(axis=(1, 2)) / weights.sum(axis=(1, 2))
        assert np.all(np.abs(cy - (size - 1) / 2) <= 0.5) and np.all(np.abs(cx - (size - 1) / 2) <= 0.5)
        border = np.ones((size, size), bool)
        border[2:-2, 2:-2] = False
        assert np.all(part.images[:, border] == 0)  # zero outside the footprint
        assert np.all(part.noise > 0) and np.all(part.snr >= 30)
        assert part.galaxy_id.dtype == np.int64 and part.source.dtype.kind == "U"


def test_neighbour_masked(pool):
    splits = _all(pool)
    for part in splits.values():
        chosen = np.flatnonzero((part.origin == "fake_survey") & (np.abs(part.x - GALAXIES[1][0]) < 2)
                                & (np.abs(part.y - GALAXIES[1][1]) < 2) & (part.magnification == 1))
        if len(chosen):
            break
    else:
        pytest.fail("the galaxy with a neighbour was not kept")
    i = chosen[0]
    stamp = part.images[i]
    centre = (stamp.shape[0] - 1) / 2
    factor = SCALE / get_preset("lsst-i").pixel_scale
    ny = int(round(centre + (NEIGHBOUR[1] - part.y[i]) * factor))
    nx = int(round(centre + (NEIGHBOUR[0] - part.x[i]) * factor))
    mirror_y, mirror_x = int(round(2 * centre - ny)), int(round(2 * centre - nx))
    at_neighbour = stamp[ny - 1 : ny + 2, nx - 1 : nx + 2].sum()
    mirrored = stamp[mirror_y - 1 : mirror_y + 2, mirror_x - 1 : mirror_x + 2].sum()
    assert at_neighbour < 0.6 * mirrored + 0.002  # the neighbour's light (250 of 2050) is gone


def test_split_by_galaxy_and_variants(pool):
    splits = _all(pool)
    ids = {split: set(part.galaxy_id.tolist()) for split, part in splits.items()}
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    everything = [p for p in splits.values() if len(p)]
    magnification = np.concatenate([p.magnification for p in everything])
    band = np.concatenate([p.band for p in everything])
    galaxy = np.concatenate([p.galaxy_id for p in everything])
    assert {1.0, 1.25} <= set(magnification.tolist())
    assert {"r", "g"} <= set(band.tolist())
    both = [g for g in set(galaxy.tolist()) if {"r", "g"} <= set(band[galaxy == g].tolist())]
    assert both  # bands of one galaxy share its id
    manifest = json.loads((pool / "pool.json").read_text())
    assert manifest["split"]["seed"] == 3
    assert sum(manifest["split"]["counts"][s]["stamps"] for s in SPLITS) == len(magnification)


def test_split_is_per_galaxy_and_reproducible():
    galaxy = np.repeat(np.arange(40), 3)
    origin = np.where(galaxy < 20, "a", "b")
    first = split_by_galaxy(galaxy, origin, (0.7, 0.15, 0.15), seed=5)
    assert np.array_equal(first, split_by_galaxy(galaxy, origin, (0.7, 0.15, 0.15), seed=5))
    for g in range(40):
        assert len(set(first[galaxy == g].tolist())) == 1
    for name in ("a", "b"):
        counts = np.bincount(first[(origin == name)][::3], minlength=3)
        assert counts.tolist() == [14, 3, 3]


def test_psf_and_pixel_scale_matched(pool, survey):
    preset = get_preset("lsst-i")
    reference = galsim.Kolmogorov(fwhm=preset.psf_fwhm).drawImage(nx=64, ny=64, scale=preset.pixel_scale).array
    reference_fwhm = _moffat_fwhm(reference.astype(np.float64), 31.5, 31.5, 2.0) * preset.pixel_scale
    star = source_star(None, PSF_FWHM / SCALE)
    for m in (0.75, 1.0, 1.25):
        kernel = matching_kernel(preset, PSF_FWHM, None, SCALE, m)
        fwhm = path_psf_fwhm(star, SCALE, m, kernel, preset, 64)
        assert fwhm == pytest.approx(reference_fwhm, rel=0.04)
    part = load_real_pool(pool.parent, "train")
    assert np.all(np.abs(part.psf_fwhm - reference_fwhm) < 0.06)
    # a galaxy's size after resampling: the disks (hlr 0.6") seen through the preset's PSF
    expected = galsim.Convolve(galsim.Exponential(half_light_radius=0.6), galsim.Kolmogorov(fwhm=0.7))
    drawn = expected.drawImage(nx=64, ny=64, scale=preset.pixel_scale).array
    yy, xx = np.indices(drawn.shape)
    r = np.hypot(yy - 31.5, xx - 31.5).ravel()
    order = np.argsort(r)
    hlr_expected = r[order][np.searchsorted(np.cumsum(drawn.ravel()[order]) / drawn.sum(), 0.5)] * 0.2
    unmagnified = (part.magnification == 1) & (part.origin == "fake_survey")
    assert np.median(part.hlr[unmagnified]) == pytest.approx(hlr_expected, rel=0.2)
    magnified = (part.magnification == 1.25) & (part.origin == "fake_survey")
    if magnified.any() and unmagnified.any():
        assert np.median(part.hlr[magnified]) > np.median(part.hlr[unmagnified])


def test_any_preset(survey, tmp_path):
    from napari_deblend.presets import SurveyPreset

    coarse = SurveyPreset(name="coarse-test", band="r", pixel_scale=0.25, psf_fwhm=0.9, zero_point=27.0,
                          sky_brightness=21.0, exposure=100.0, n_visits=1, read_noise_per_visit=5.0, mag_limit=24.0)
    target = build_real_pool(survey, preset=coarse, out=tmp_path, sources=SOURCES[:1], stamp_size=48,
                             split=(1.0, 0.0, 0.0), log=lambda _: None)
    assert target == tmp_path / "coarse-test"
    part = load_real_pool(tmp_path, "train", preset=coarse)
    assert part.images.shape[1:] == (48, 48) and len(part) >= 5
    assert np.all(np.abs(part.psf_fwhm - 0.9) < 0.06)


def test_manifest_records_inputs(pool, survey):
    manifest = json.loads((pool / "pool.json").read_text())
    assert manifest["preset"]["name"] == "lsst-i" and manifest["settings"]["stamp_size"] == 64
    report = manifest["images"][0]
    assert report["files"]["field.fits"] == sha256(survey / "fake_survey" / "field.fits")
    assert manifest["per_source"]["fake_survey"]["galaxies_kept"] >= 5


def test_output_inside_repository_refused(survey):
    repository = Path(napari_deblend.__file__).resolve().parents[1]
    if not (repository / ".git").exists():
        pytest.skip("not running from a git work tree")
    with pytest.raises(DeblendInputError, match="inside the napari-deblend repository"):
        build_real_pool(survey, out=repository / "pool", sources=SOURCES, log=lambda _: None)
    assert not (repository / "pool").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": (0.5, 0.5, 0.5)}, "--split"),
        ({"stamp_size": 8}, "--stamp-size"),
        ({"preset": "nope"}, "unknown survey preset"),
        ({"sources": (SourceSpec("missing", ("x.fits",)),)}, "missing: no such folder"),
    ],
)
def test_bad_build_options(survey, tmp_path, kwargs, message):
    options = {"out": tmp_path, "sources": SOURCES, "log": lambda _: None, **kwargs}
    with pytest.raises(DeblendInputError, match=message):
        build_real_pool(survey, **options)


def test_unreadable_source_file_named(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "field.fits").write_text("not a FITS file")
    with pytest.raises(DeblendInputError, match=r"field\.fits: not a readable FITS image"):
        broken = SourceSpec("broken", ("field.fits",), pixel_scale=0.3)
        build_real_pool(tmp_path, out=tmp_path / "out", sources=(broken,), log=lambda _: None)
    assert not (tmp_path / "out" / "lsst-i").exists()


def test_loader_errors_name_the_file(tmp_path):
    with pytest.raises(DeblendInputError, match=str(tmp_path / "lsst-i" / "train.npz")):
        load_real_pool(tmp_path, "train")
    (tmp_path / "lsst-i").mkdir()
    np.savez(tmp_path / "lsst-i" / "test.npz", images=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(DeblendInputError, match=r"test\.npz: not a real-galaxy pool \(missing noise"):
        load_real_pool(tmp_path, "test")
    with pytest.raises(DeblendInputError, match="split 'dev'"):
        load_real_pool(tmp_path, "dev")


def test_jpeg_luminance_undoes_the_stretch(tmp_path):
    from PIL import Image

    flux = np.linspace(0.0, 1.0, 64)[None, :].repeat(8, axis=0)
    stretched = np.arcsinh(np.sinh(5.0) * flux) / 5.0
    pixels = np.round(255 * stretched).astype(np.uint8)
    Image.fromarray(np.dstack([pixels] * 3)).save(tmp_path / "picture.jpg", quality=100)
    linear, saturation = jpeg_luminance(tmp_path / "picture.jpg")
    np.testing.assert_allclose(linear[4], flux[4], atol=0.03)
    assert saturation == pytest.approx(np.sinh(5.0 * 250 / 255) / np.sinh(5.0))


def test_cli_build_refuses_repository_and_show_prints_counts(pool, tmp_path):
    repository = Path(napari_deblend.__file__).resolve().parents[1]
    run = [sys.executable, "-m", "napari_deblend.cli", "real-pool"]
    if (repository / ".git").exists():
        refused = subprocess.run([*run, "build", "--source", str(tmp_path), "--out", str(repository / "x")],
                                 capture_output=True, text=True, cwd=tmp_path)
        assert refused.returncode == 2
        assert refused.stderr.count("\n") == 1 and "inside the napari-deblend repository" in refused.stderr
    sheet = tmp_path / "sheet.png"
    shown = subprocess.run([*run, "show", str(pool.parent), "--sheet", str(sheet), "--n", "4"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "fake_survey" in shown.stdout and "total" in shown.stdout
    assert "splits: seed 3, 0 galaxies in their registered split" in shown.stdout
    assert sheet.stat().st_size > 1000


@pytest.mark.parametrize("pair", [True, False])
def test_pair_in_one_segment_is_a_companion(pair):
    from scipy import ndimage

    from napari_deblend.realpool.detect import detect_sources, has_companion
    from napari_deblend.realpool.sources import SourceImage

    psf = galsim.Kolmogorov(fwhm=0.5)
    if pair:  # two equal galaxies 1.8" apart, merged by a coarse deblending
        scene = galsim.Add(galsim.Exponential(half_light_radius=0.3, flux=3000.0).shift(-0.9, 0.0),
                           galsim.Exponential(half_light_radius=0.3, flux=3000.0).shift(0.9, 0.0))
    else:  # one disk with knots inside it
        scene = galsim.Add(galsim.Exponential(half_light_radius=0.8, flux=4000.0),
                           galsim.RandomKnots(npoints=6, half_light_radius=0.6, flux=2000.0,
                                              rng=galsim.BaseDeviate(4)))
    image = galsim.Convolve(scene, psf).drawImage(nx=80, ny=80, scale=0.2).array.astype(np.float64)
    image += np.random.default_rng(0).normal(0.0, 1.0, image.shape)
    spec = SourceSpec("synthetic", ("x.fits",), pixel_scale=0.2, psf_fwhm=0.5, deblend_cont=1.0)
    img = SourceImage(spec, Path("x.fits"), image, np.zeros(image.shape, bool), 0.2)
    det = detect_sources(img)
    index = int(np.argmax(det.flux))
    box = ndimage.find_objects(det.segmentation)[index]
    assert has_companion(det, index, box) is pair


def test_split_register_keeps_a_galaxy_in_its_split_when_others_are_dropped(pool, tmp_path):
    register_path = write_split_register(pool.parent, tmp_path / "register.json")
    register = load_split_register(register_path)
    splits = _all(pool)
    arrays = {key: np.concatenate([getattr(part, key) for part in splits.values()])
              for key in ("galaxy_id", "origin", "x", "y")}
    truth = np.concatenate([np.full(len(part), index) for index, part in enumerate(splits.values())])
    # the pool's own galaxies, redrawn with another seed and one galaxy dropped, keep their registered split
    keep = arrays["galaxy_id"] != arrays["galaxy_id"][0]
    kept = {key: value[keep] for key, value in arrays.items()}
    drawn = split_by_galaxy(kept["galaxy_id"], kept["origin"], (0.5, 0.25, 0.25), seed=11)
    assigned, n_registered = apply_split_register(drawn, kept["galaxy_id"], kept["origin"],
                                                  kept["x"] + 0.7, kept["y"] - 0.7, register)
    assert n_registered == len(np.unique(kept["galaxy_id"]))
    assert np.array_equal(assigned, truth[keep])
    # a galaxy the register does not know keeps the drawn split
    far = apply_split_register(drawn, kept["galaxy_id"], kept["origin"], kept["x"] + 50, kept["y"], register)
    assert far[1] == 0 and np.array_equal(far[0], drawn)
    assert uses_register(register, 3, (0.5, 0.25, 0.25)) and not uses_register(register, 0, (0.5, 0.25, 0.25))


def test_shipped_split_register_covers_the_training_pool():
    register = load_split_register()
    assert register["seed"] == 0 and register["fractions"] == (0.7, 0.15, 0.15)
    assert set(register["galaxies"]) <= {spec.name for spec in napari_deblend.realpool.DEFAULT_SOURCES}
    splits = np.concatenate([rows[:, 2] for rows in register["galaxies"].values()]).astype(int)
    assert len(splits) == 523 and np.bincount(splits).tolist() == [365, 79, 79]
    for rows in register["galaxies"].values():  # one entry per galaxy: no two closer than the match radius
        gaps = np.hypot(rows[:, None, 0] - rows[None, :, 0], rows[:, None, 1] - rows[None, :, 1])
        assert (gaps + np.eye(len(rows)) * 1e9 > 2 * MATCH_RADIUS).all()


def test_bad_split_register_named(tmp_path):
    path = tmp_path / "register.json"
    path.write_text("{not json")
    with pytest.raises(DeblendInputError, match="register.json: not a readable split register"):
        load_split_register(path)


def test_pool_split_record_says_how_the_pool_was_split(pool):
    record = napari_deblend.realpool.pool_split_record(pool.parent)
    assert record["seed"] == 3 and record["registered_galaxies"] == 0  # seed 3: not the register's
    assert sum(record["galaxies"].values()) == len(np.unique(np.concatenate(
        [part.galaxy_id for part in _all(pool).values()])))


def test_an_evaluation_on_a_pool_not_split_by_the_register_warns(pool, tmp_path):
    from napari_deblend.training.evaluate import PoolSplitWarning, warn_if_unregistered

    with pytest.warns(PoolSplitWarning, match="not split by the split register"):
        record = warn_if_unregistered(pool.parent, "lsst-i")  # built with seed 3: the register did not apply
    assert record["seed"] == 3 and record["registered_galaxies"] == 0  # what evaluate records in its summary
    registered = tmp_path / "registered" / "lsst-i"
    registered.mkdir(parents=True)
    (registered / "test.npz").write_bytes(b"")
    manifest = json.loads((pool / "pool.json").read_text())
    manifest["split"]["registered_galaxies"] = 5
    (registered / "pool.json").write_text(json.dumps(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_unregistered(registered.parent, "lsst-i")
