"""Tests of napari_deblend.simulate and the ``simulate`` command: numbers, conventions, errors."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from astropy.table import Table

from napari_deblend import simulate as sim
from napari_deblend.errors import DeblendInputError
from napari_deblend.presets import get_preset
from napari_deblend.simulate.blends import CHUNK
from napari_deblend.simulate.parametric import galsim_galaxy
from napari_deblend.simulate.population import derive_parameters

PRESET = get_preset("lsst-i")


@pytest.fixture(scope="module")
def pairs() -> sim.BlendSet:
    """Noiseless two-galaxy blends."""
    return sim.simulate_blends(150, n_galaxies=2, seed=11, noise=False, morphology="parametric")


@pytest.fixture(scope="module")
def mixed() -> sim.BlendSet:
    """Noisy blends of 1, 2 or 3 galaxies, spanning three work chunks."""
    return sim.simulate_blends(2 * CHUNK + 7, n_galaxies=[1, 2, 3], seed=3)


def window_centroid(image: np.ndarray, x: float, y: float, half: int) -> tuple[float, float]:
    """Flux-weighted centroid in a square window centred on the pixel nearest (x, y)."""
    ix, iy = int(round(x)), int(round(y))
    cut = image[iy - half:iy + half + 1, ix - half:ix + half + 1].astype(np.float64)
    yy, xx = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1]
    return float((cut * xx).sum() / cut.sum()), float((cut * yy).sum() / cut.sum())


# --------------------------------------------------------------------------- population


def test_magnitudes_follow_number_counts() -> None:
    rng = np.random.default_rng(0)
    mags = sim.sample_magnitudes(40000, (19.5, 25.3), rng)
    assert mags.min() >= 19.5 and mags.max() <= 25.3
    expected = (10 ** (0.33 * (24.0 - 19.5)) - 1) / (10 ** (0.33 * (25.3 - 19.5)) - 1)
    measured = np.mean(mags < 24.0)
    assert abs(measured - expected) < 4 * np.sqrt(expected * (1 - expected) / mags.size)


def test_galaxy_population_is_sensible() -> None:
    gal = sim.sample_galaxies(20000, "lsst-i", rng=1, morphology="parametric")
    assert np.allclose(gal["flux"], PRESET.flux(gal["mag"]))
    bright, faint = gal["mag"] < 22, gal["mag"] > 24.5
    assert np.median(gal["hlr"][bright]) > 1.8 * np.median(gal["hlr"][faint])
    assert 0.2 < np.median(gal["hlr"]) < 0.6
    assert 0.12 <= gal["hlr"].min() and gal["hlr"].max() <= 2.5
    e_disk = np.hypot(gal["disk_g1"], gal["disk_g2"])
    e_bulge = np.hypot(gal["bulge_g1"], gal["bulge_g2"])
    assert e_disk.max() <= 0.7 and e_disk.max() > 0.6
    composite = (gal["bulge_fraction"] > 0) & (gal["bulge_fraction"] < 1)
    assert np.all(e_bulge[composite] <= e_disk[composite] + 1e-12)  # bulges rounder ...
    assert np.all(gal["bulge_hlr"][composite] < gal["disk_hlr"][composite])  # ... and smaller
    fraction = gal["bulge_fraction"]
    assert 0.3 < np.mean(fraction == 0) < 0.4 and 0.03 < np.mean(fraction == 1) < 0.07


def test_truth_hlr_is_the_composite_half_light_radius() -> None:
    raw = {"mag": np.full(3, 21.0), "bulge_fraction": np.array([0.3, 0.6, 1.0]), "hlr": np.array([0.5, 0.8, 0.4]),
           "beta": np.zeros(3), "q_disk": np.ones(3), "q_bulge": np.ones(3), "ratio": np.array([0.2, 0.35, 0.5])}
    gal = derive_parameters(raw, PRESET)
    for i in range(3):
        profile = galsim_galaxy(gal, i)  # round: the circularized radius is the radius
        r = np.geomspace(1e-6, 40 * gal["hlr"][i], 4000)
        ring = 2 * np.pi * r * np.array([profile.xValue(v, 0.0) for v in r])
        enclosed = np.concatenate([[0.0], np.cumsum(0.5 * (ring[1:] + ring[:-1]) * np.diff(r))])
        assert enclosed[-1] == pytest.approx(profile.flux, rel=1e-3)
        assert np.interp(0.5 * profile.flux, enclosed, r) == pytest.approx(gal["hlr"][i], rel=0.005)


# --------------------------------------------------------------------------- rendering


def test_centroid_convention_both_engines() -> None:
    gal = sim.sample_galaxies(4, rng=2, mag_range=(21.0, 22.0), morphology="parametric")
    x = np.array([30.2, 47.5, 52.77, 61.49])
    y = np.array([44.9, 47.5, 35.31, 60.02])
    for engine in ("fft", "galsim"):
        images = sim.draw_galaxies(gal, x, y, 96, engine=engine)
        for image, xi, yi in zip(images, x, y):
            cx, cy = window_centroid(image, xi, yi, 28)
            assert abs(cx - xi) < 0.05 and abs(cy - yi) < 0.05, (engine, cx - xi, cy - yi)


def test_stamp_centre_is_numpy_centre() -> None:
    gal = sim.sample_galaxies(1, rng=4, mag_range=(22.0, 22.5), morphology="parametric")
    image = sim.draw_galaxies(gal, [23.5], [23.5], 48)[0]
    assert np.allclose(image, image[::-1, ::-1], atol=1e-4 * image.max())  # symmetric about 23.5
    assert np.unravel_index(np.argmax(image), image.shape) in {(23, 23), (23, 24), (24, 23), (24, 24)}


def test_fft_engine_matches_galsim(pairs: sim.BlendSet) -> None:
    ref = sim.simulate_blends(12, n_galaxies=2, seed=11, noise=False, engine="galsim", morphology="parametric")
    fast = pairs.components[:12]
    peak = ref.components.max(axis=(2, 3, 4), keepdims=True)
    has = ref.components.max(axis=(2, 3, 4)) > 0
    assert np.max(np.abs(fast - ref.components) / np.where(peak > 0, peak, 1)) < 1e-4
    flux_fast = fast.sum(axis=(2, 3, 4))[has]
    flux_ref = ref.components.sum(axis=(2, 3, 4))[has]
    assert np.max(np.abs(flux_fast / flux_ref - 1)) < 2e-3


def test_component_flux_adds_up(pairs: sim.BlendSet) -> None:
    truth = pairs.truth
    sums = pairs.components.sum(axis=(2, 3, 4), dtype=np.float64)
    assert np.allclose(sums[truth["stamp"], truth["component"]], truth["flux"], rtol=1e-5)
    ratio = np.asarray(truth["flux"] / truth["flux_total"])
    central = np.asarray(truth["central"])
    assert np.median(ratio[central]) > 0.99 and ratio[central].min() > 0.95  # stamp truncation only
    assert np.median(ratio) > 0.985 and ratio.min() > 0.85 and ratio.max() < 1.001
    assert np.allclose(pairs.images, pairs.components.sum(axis=1), atol=1e-2)  # noise=False
    assert pairs.noise_sigma == 0.0


# --------------------------------------------------------------------------- noise


def test_noise_sigma_of_a_blank_image() -> None:
    noisy = sim.add_noise(np.zeros((300, 300)), PRESET, np.random.default_rng(5))
    assert noisy.dtype == np.float32
    assert abs(noisy.mean()) < 5 * PRESET.background_sigma / 300
    assert noisy.std() == pytest.approx(PRESET.background_sigma, rel=0.03)
    assert PRESET.background_sigma == pytest.approx(446, abs=1)


def test_noise_grows_with_source_counts() -> None:
    source = np.full((200, 200), 1.0e6)
    noisy = sim.add_noise(source, PRESET, np.random.default_rng(6))
    expected = np.sqrt(1.0e6 + PRESET.background_sigma**2)
    assert (noisy - source).std() == pytest.approx(expected, rel=0.03)


def test_blend_noise_is_the_background(mixed: sim.BlendSet) -> None:
    model = mixed.components.sum(axis=1)
    residual = (mixed.images - model)[model < 0.01 * mixed.noise_sigma]
    assert mixed.noise_sigma == pytest.approx(PRESET.background_sigma)
    assert residual.std() == pytest.approx(PRESET.background_sigma, rel=0.03)


# --------------------------------------------------------------------------- blends


def test_blendset_layout_and_sorting(mixed: sim.BlendSet) -> None:
    n = 2 * CHUNK + 7
    assert mixed.images.shape == (n, 1, 48, 48) and mixed.images.dtype == np.float32
    assert mixed.components.shape == (n, 3, 1, 48, 48) and mixed.components.dtype == np.float32
    assert set(np.unique(mixed.n_components)) == {1, 2, 3}
    truth = mixed.truth
    assert np.array_equal(np.bincount(truth["stamp"], minlength=n), mixed.n_components)
    for i in range(n):
        rows = truth[truth["stamp"] == i]
        k = mixed.n_components[i]
        assert list(rows["component"]) == list(range(k))
        assert np.all(np.diff(rows["flux"]) <= 0)  # brightest first
        assert rows["central"].sum() == 1
        assert not mixed.components[i, k:].any()  # zero-padded
    assert np.allclose(truth["mag"], PRESET.magnitude(truth["flux_total"]))
    assert np.all(truth["x"] >= 0) and np.all(truth["x"] <= 47)


def test_positions_and_separations(mixed: sim.BlendSet) -> None:
    truth = mixed.truth
    central = truth[truth["central"]]
    assert np.all(np.abs(central["x"] - 23.5) <= 1) and np.all(np.abs(central["y"] - 23.5) <= 1)
    assert np.all(central["sep_arcsec"] == 0)
    others = truth[~truth["central"]]
    assert np.all((others["sep_arcsec"] >= 0.4) & (others["sep_arcsec"] <= 3.0))
    for i in np.flatnonzero(mixed.n_components == 3):
        rows = truth[truth["stamp"] == i]
        d = np.hypot(*(np.subtract.outer(rows[c], rows[c]) for c in ("x", "y")))
        assert d[np.triu_indices(3, 1)].min() * PRESET.pixel_scale >= 0.4 - 1e-9


def test_isolated_galaxies() -> None:
    single = sim.simulate_blends(20, n_galaxies=1, seed=2, noise=False, morphology="parametric")
    assert single.components.shape[1] == 1 and np.all(single.n_components == 1)
    for image, row in zip(single.components[:, 0, 0], single.truth):
        cx, cy = window_centroid(image, row["x"], row["y"], 22)
        assert abs(cx - row["x"]) < 0.05 and abs(cy - row["y"]) < 0.05


def test_determinism_and_workers(mixed: sim.BlendSet) -> None:
    n = len(mixed)
    again = sim.simulate_blends(n, n_galaxies=[1, 2, 3], seed=3)
    parallel = sim.simulate_blends(n, n_galaxies=[1, 2, 3], seed=3, n_workers=2)
    for other in (again, parallel):
        assert np.array_equal(other.images, mixed.images)
        assert np.array_equal(other.components, mixed.components)
        assert all(np.array_equal(other.truth[c], mixed.truth[c]) for c in mixed.truth.colnames)
    prefix = sim.simulate_blends(10, n_galaxies=[1, 2, 3], seed=3)
    assert np.array_equal(prefix.images, mixed.images[:10])
    other_seed = sim.simulate_blends(10, n_galaxies=[1, 2, 3], seed=4)
    assert not np.array_equal(other_seed.images, prefix.images)


def test_iter_blend_batches(mixed: sim.BlendSet) -> None:
    batches = sim.iter_blend_batches(8, n_galaxies=[1, 2, 3], seed=3)
    first, second = next(batches), next(batches)
    assert np.array_equal(first.images, mixed.images[:8])
    assert np.array_equal(second.components, mixed.components[8:16, : second.components.shape[1]])
    assert np.array_equal(second.truth["stamp"], np.repeat(np.arange(8), second.n_components))
    odd = next(sim.iter_blend_batches(8, n_galaxies=[1, 2, 3], seed=3, shard=(1, 2)))
    assert np.array_equal(odd.images, second.images)
    joined = sim.concatenate_blends([first, second])
    assert np.array_equal(joined.images, mixed.images[:16])
    assert np.array_equal(joined.truth["x"], mixed.truth["x"][: len(joined.truth)])


def test_blends_round_trip(tmp_path, mixed: sim.BlendSet) -> None:
    path = sim.write_blends(mixed, tmp_path / "blends.fits")
    back = sim.read_blends(path)
    assert np.array_equal(back.images, mixed.images) and np.array_equal(back.components, mixed.components)
    assert np.array_equal(back.n_components, mixed.n_components)
    assert back.preset == "lsst-i" and back.noise_sigma == pytest.approx(mixed.noise_sigma)
    for name in mixed.truth.colnames:
        assert np.array_equal(back.truth[name], mixed.truth[name])
        assert back.truth[name].unit == mixed.truth[name].unit
    with pytest.raises(DeblendInputError, match="exists"):
        sim.write_blends(mixed, path)


# --------------------------------------------------------------------------- fields


@pytest.fixture(scope="module")
def field_and_truth():
    return sim.simulate_field(size=384, density=60, seed=5)


def test_field_layout_and_wcs(field_and_truth) -> None:
    field, truth = field_and_truth
    assert field.data.shape == (1, 384, 384) and field.data.dtype == np.float32
    assert field.band_names == ["i"] and field.noise[0] == pytest.approx(PRESET.background_sigma)
    area = (384 * 0.2 / 60) ** 2
    assert abs(len(truth) - 60 * area) < 5 * np.sqrt(60 * area)
    cd = field.wcs.wcs.cd
    assert cd[0, 0] == pytest.approx(-0.2 / 3600) and cd[1, 1] == pytest.approx(0.2 / 3600)
    assert cd[0, 1] == 0 and cd[1, 0] == 0
    assert list(field.wcs.wcs.crpix) == [192.5, 192.5]
    centre = field.wcs.pixel_to_world(191.5, 191.5)
    assert centre.ra.deg == pytest.approx(150.0) and centre.dec.deg == pytest.approx(2.0)
    sky = field.wcs.pixel_to_world(np.asarray(truth["x"]), np.asarray(truth["y"]))
    assert np.allclose(sky.ra.deg, truth["ra"], rtol=0, atol=1e-10)
    assert np.allclose(sky.dec.deg, truth["dec"], rtol=0, atol=1e-10)
    east = field.wcs.pixel_to_world(200, 191.5)
    north = field.wcs.pixel_to_world(191.5, 200)
    assert east.ra.deg < centre.ra.deg and north.dec.deg > centre.dec.deg  # east left, north up
    x, y = field.wcs.world_to_pixel(sky)
    assert np.allclose(x, truth["x"], atol=1e-6) and np.allclose(y, truth["y"], atol=1e-6)


def test_field_galaxies_at_truth_positions() -> None:
    # families whose light is centred on the truth position (knots, arms, clumps, tails are not)
    field, truth = sim.simulate_field(size=512, density=6, seed=2, noise=False,
                                      morphology="bulge_disk=1,sersic=1,compact=1,star=1,bar=1")
    image = field.data[0]
    x, y = np.asarray(truth["x"]), np.asarray(truth["y"])
    checked = 0
    for i in range(len(truth)):
        others = np.hypot(x - x[i], y - y[i])
        others[i] = np.inf
        if others.min() > 60 and 30 <= x[i] <= 481 and 30 <= y[i] <= 481:
            cx, cy = window_centroid(image, x[i], y[i], 25)
            assert abs(cx - x[i]) < 0.05 and abs(cy - y[i]) < 0.05
            checked += 1
    assert checked >= 5
    assert np.all(truth["flux_drawn"] <= truth["flux"] * 1.001)
    assert np.sum(image, dtype=np.float64) == pytest.approx(np.sum(truth["flux_drawn"]), rel=1e-4)


def test_field_noise_and_truth_file(tmp_path, field_and_truth) -> None:
    field, truth = field_and_truth
    blank = sim.simulate_field(size=256, density=0, seed=1)[0]
    assert blank.data.std() == pytest.approx(PRESET.background_sigma, rel=0.03)
    path = sim.write_truth(truth, tmp_path / "truth.ecsv")
    back = Table.read(path, format="ascii.ecsv")
    assert back["x"].unit == "pix" and back["flux"].unit == "electron" and back["ra"].unit == "deg"
    assert np.allclose(back["ra"], truth["ra"], rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sim.simulate_blends(0), "n must be"),
        (lambda: sim.simulate_blends(5, n_galaxies=0), "n_galaxies"),
        (lambda: sim.simulate_blends(5, n_galaxies=[]), "n_galaxies"),
        (lambda: sim.simulate_blends(5, preset="nope"), "unknown survey preset"),
        (lambda: sim.simulate_blends(5, separation=(0.4, 9.0)), "separation"),
        (lambda: sim.simulate_blends(5, separation=(2.0, 1.0)), "separation"),
        (lambda: sim.simulate_blends(5, mag_range=(25, 20)), "mag_range"),
        (lambda: sim.simulate_blends(5, n_workers=0), "n_workers"),
        (lambda: sim.simulate_blends(5, engine="photons"), "engine"),
        (lambda: sim.simulate_field(size=0), "size must be"),
        (lambda: sim.simulate_field(size=64, density=-1), "density"),
        (lambda: sim.simulate_field(size=64, preset="hsc-z"), "unknown survey preset"),
        (lambda: sim.iter_blend_batches(0).__next__(), "batch_size"),
    ],
)
def test_bad_parameters(call, match) -> None:
    with pytest.raises(DeblendInputError, match=match):
        call()


# --------------------------------------------------------------------------- command line


def run_cli(argv: list[str]) -> int:
    """Run ``napari-deblend`` through cli.main, or through our own parser if the CLI cannot load."""
    try:
        from napari_deblend.cli import main
    except Exception:  # other commands not importable yet
        main = None
    if main is not None:
        return main(argv)
    from napari_deblend.commands import simulate as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DeblendInputError:
        return 2


def test_cli_field_and_blends(tmp_path, capsys) -> None:
    out = tmp_path / "f.fits"
    assert run_cli(["simulate", "field", "--size", "128", "--seed", "1", "-o", str(out)]) == 0
    truth = Table.read(tmp_path / "f_truth.ecsv")
    from astropy.io import fits

    with fits.open(out) as hdul:
        assert hdul[1].data.shape == (128, 128) and hdul[1].header["PRESET"] == "lsst-i"
    assert len(truth) > 0
    blends = tmp_path / "b.fits"
    assert run_cli(["simulate", "blends", "--n", "20", "--galaxies", "1", "2", "3", "-o", str(blends)]) == 0
    back = sim.read_blends(blends)
    assert len(back) == 20 and back.components.shape[1] == 3
    printed = capsys.readouterr().out
    assert "stamps/s" in printed and str(blends) in printed and "f_truth.ecsv" in printed


def test_cli_errors(tmp_path, capsys) -> None:
    out = tmp_path / "b.fits"
    assert run_cli(["simulate", "blends", "--n", "0", "-o", str(out)]) == 2
    assert run_cli(["simulate", "field", "--size", "-5", "-o", str(tmp_path / "f.fits")]) == 2
    assert run_cli(["simulate", "field", "--size", "64", "--preset", "nope", "-o", str(tmp_path / "g.fits")]) == 2
    out.write_bytes(b"")
    assert run_cli(["simulate", "blends", "--n", "5", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--n must be" in err and "--size must be" in err and "--overwrite" in err
