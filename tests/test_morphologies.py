"""Tests of the simulator's morphology families, the real-galaxy family and the training data mix."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from napari_deblend import simulate as sim
from napari_deblend.errors import DeblendInputError
from napari_deblend.presets import get_preset
from napari_deblend.simulate.morphologies import FAMILIES, REALISTIC_MIX, parse_mix
from napari_deblend.training.data_mix import DataMix
from napari_deblend.truth import truth_for_stamp

PRESET = get_preset("lsst-i")
PROCEDURAL = [f for f in FAMILIES if f not in ("bulge_disk", "real")]


def _centroid(image: np.ndarray) -> tuple[float, float]:
    yy, xx = np.indices(image.shape)
    return float((image * xx).sum() / image.sum()), float((image * yy).sum() / image.sum())


def test_parse_mix_names_strings_and_errors():
    assert parse_mix("parametric") == {"bulge_disk": 1.0}
    assert parse_mix(None) == pytest.approx(parse_mix("realistic"))
    assert sum(parse_mix("realistic").values()) == pytest.approx(1.0) and set(parse_mix("realistic")) == set(REALISTIC_MIX)
    assert parse_mix("knots=3,spiral=1") == {"knots": 0.75, "spiral": 0.25}
    assert parse_mix("star") == {"star": 1.0}
    for bad, match in (("nope", "unknown"), ("knots=x", "must be a number"), ("knots=-1", "non-negative"),
                       ("knots=0", "weight of 0"), ({"galaxy": 1}, "family 'galaxy' is unknown")):
        with pytest.raises(DeblendInputError, match=match):
            parse_mix(bad)


@pytest.mark.parametrize("family", PROCEDURAL)
def test_each_family_draws_its_flux_deterministically(family):
    gal = sim.sample_galaxies(4, PRESET, rng=7, mag_range=(21.0, 22.5), morphology={family: 1.0})
    assert set(gal["family"]) == {family}
    centre = np.full(4, 47.5 + 0.3)
    images = sim.draw_galaxies(gal, centre, centre - 0.6, 96, PRESET)
    again = sim.draw_galaxies(gal, centre, centre - 0.6, 96, PRESET)
    assert np.array_equal(images, again)  # a row draws the same galaxy every time
    drawn = images.sum(axis=(1, 2)) / gal["flux"]
    assert np.all(drawn > 0.98) and np.all(drawn < 1.001)
    assert np.all(images > -1e-3 * images.max())


@pytest.mark.parametrize("family", ["sersic", "compact", "star", "bar", "bulge_disk"])
def test_symmetric_families_are_centred_on_their_position(family):
    gal = sim.sample_galaxies(6, PRESET, rng=3, mag_range=(21.0, 22.0), morphology={family: 1.0})
    rng = np.random.default_rng(1)
    x, y = 40 + rng.random(6), 38 + rng.random(6)
    for image, xi, yi in zip(sim.draw_galaxies(gal, x, y, 80, PRESET), x, y):
        cx, cy = _centroid(image)
        assert abs(cx - xi) < 0.05 and abs(cy - yi) < 0.05


def test_knotty_galaxies_have_structure_a_smooth_disk_lacks():
    """The light of knotty and clumpy galaxies departs from its own 180° rotation much more than a disk's."""
    def asymmetry(family: str) -> float:
        gal = sim.sample_galaxies(12, PRESET, rng=5, mag_range=(20.0, 21.0), morphology={family: 1.0})
        gal["hlr"] = np.full(12, 1.0)
        images = sim.draw_galaxies(gal, np.full(12, 32.0), np.full(12, 32.0), 65, PRESET)
        return float(np.median([np.abs(im - im[::-1, ::-1]).sum() / im.sum() for im in images]))

    assert asymmetry("irregular") > 5 * asymmetry("sersic")
    assert asymmetry("knots") > 3 * asymmetry("sersic")


def test_realistic_field_truth_redraws_the_field():
    field, truth = sim.simulate_field(size=256, density=60, seed=4, noise=False)
    families = set(np.asarray(truth["family"]))
    assert len(families) >= 6 and truth.meta["morphology"] == "realistic"
    redrawn = truth_for_stamp(truth, (0, 0), (256, 256))
    assert np.abs(redrawn.components.sum(axis=0)[0] - field.data[0]).max() < 1e-4 * field.data.max()


def _tiny_pool(root, n=6):
    """A pool of elliptical Gaussians in the layout `napari-deblend real-pool build` writes."""
    yy, xx = np.indices((64, 64)) - 31.5
    images = np.stack([np.exp(-0.5 * ((xx / (2 + i)) ** 2 + (yy / 2.0) ** 2)) for i in range(n)]).astype(np.float32)
    images /= images.sum(axis=(1, 2), keepdims=True)
    for split in ("train", "validation", "test"):
        (root / "lsst-i").mkdir(parents=True, exist_ok=True)
        np.savez(root / "lsst-i" / f"{split}.npz", images=images, noise=np.full(n, 1e-5, np.float32),
                 hlr=np.full(n, 0.6, np.float32), galaxy_id=np.arange(n), source=np.full(n, "test.fits"),
                 snr=np.full(n, 100.0, np.float32), magnification=np.ones(n, np.float32),
                 psf_fwhm=np.full(n, 0.7, np.float32))
    return root


def test_real_family_draws_pool_galaxies(tmp_path):
    pool = sim.resolve_pool(_tiny_pool(tmp_path), "lsst-i", "test")
    gal = sim.sample_galaxies(5, PRESET, rng=2, mag_range=(21.0, 22.0), morphology="real", real_pool=pool)
    assert set(gal["family"]) == {"real"} and np.all(gal["real_index"] >= 0)
    x, y = np.full(5, 40.3), np.full(5, 39.8)
    images = sim.draw_galaxies(gal, x, y, 80, PRESET, real_pool=pool)
    assert images.sum(axis=(1, 2)) == pytest.approx(gal["flux"], rel=1e-3)
    for image, xi, yi in zip(images, x, y):
        cx, cy = _centroid(image)
        assert abs(cx - xi) < 0.05 and abs(cy - yi) < 0.05
    blends = sim.simulate_blends(8, n_galaxies=2, seed=1, morphology="real=1,sersic=1", real_pool=tmp_path,
                                 real_split="validation")
    assert "real" in set(blends.truth["family"]) and blends.truth.meta["real_split"] == "validation"


def test_real_galaxies_follow_the_size_magnitude_relation(tmp_path):
    """A bright galaxy draws a large pool image, a faint one a small image: no faint, huge, diffuse galaxies."""
    pool = sim.resolve_pool(_tiny_pool(tmp_path), "lsst-i", "test")
    pool.hlr = np.array([0.42, 0.5, 0.6, 0.8, 1.0, 1.4])
    bright = sim.sample_galaxies(400, PRESET, rng=3, mag_range=(19.5, 20.5), morphology="real", real_pool=pool)
    faint = sim.sample_galaxies(400, PRESET, rng=3, mag_range=(25.0, 26.0), morphology="real", real_pool=pool)
    assert np.median(bright["hlr"]) >= 0.8 and np.median(faint["hlr"]) <= 0.5
    assert np.mean(faint["hlr"] >= 1.0) < 0.01
    assert len(np.unique(faint["real_index"])) >= 2  # several images at one size, not always the nearest


def test_real_family_errors(tmp_path):
    with pytest.raises(DeblendInputError, match="give a real-galaxy pool"):
        sim.simulate_blends(2, morphology="real")
    with pytest.raises(DeblendInputError, match="none"):
        sim.simulate_blends(2, morphology="real", real_pool=tmp_path / "none")
    with pytest.raises(DeblendInputError, match="split 'all' is unknown"):
        sim.resolve_pool(tmp_path, "lsst-i", "all")


def test_data_mix_weights_and_cache_tags(tmp_path):
    _tiny_pool(tmp_path)
    assert DataMix("parametric").tag() == "parametric"
    mixed = DataMix("realistic", str(tmp_path), 0.3)
    assert mixed.weights()["real"] == pytest.approx(0.3) and sum(mixed.weights().values()) == pytest.approx(1.0)
    assert mixed.tag() != DataMix("realistic").tag() != DataMix("realistic", str(tmp_path), 0.5).tag()
    assert mixed.simulate_kwargs("validation")["real_split"] == "validation"
    with pytest.raises(DeblendInputError, match="--real-weight 1.0"):
        DataMix("realistic", str(tmp_path), 1.0).weights()


def test_texture_leftover_leaves_structure_but_no_galaxy():
    """A batch of fully peeled stamps: the count is 0, and the residual holds the galaxies' fine structure."""
    from napari_deblend.training.peeling import BatchMaker

    blends = sim.simulate_blends(16, n_galaxies=1, seed=3, noise=False, morphology="knots")
    data = {"components": np.concatenate([blends.components[:, :, 0], np.zeros((16, 2, 48, 48), np.float32)], 1),
            "n_components": np.ones(16, np.int64)}
    plain = BatchMaker(data, sigma=1e-3, seed=0).batch(16, empty_fraction=1.0)
    textured = BatchMaker(data, sigma=1e-3, seed=0, texture=1.0).batch(16, empty_fraction=1.0)
    assert torch.all(plain["count"] == 0) and torch.all(textured["count"] == 0)
    assert float(textured["x"].abs().sum()) > 1.5 * float(plain["x"].abs().sum())


def test_families_contact_sheet_command(tmp_path):
    from napari_deblend.cli import build_parser

    out = tmp_path / "families.png"
    args = build_parser().parse_args(["simulate", "families", "--n", "2", "--families", "knots", "star", "-o", str(out)])
    assert args.func(args) == 0 and out.stat().st_size > 10_000
    args = build_parser().parse_args(["simulate", "families", "--families", "real", "-o", str(tmp_path / "r.png")])
    with pytest.raises(DeblendInputError, match="needs --real-pool"):
        args.func(args)
    assert isinstance(args, argparse.Namespace)
