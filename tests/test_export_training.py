"""export-training writes FITS cut-outs with WCS and an index; train --real-galaxies reads them back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from napari_deblend import detect, find_blends, read_field, write_field
from napari_deblend.cli import main
from napari_deblend.labels import LabelStore
from napari_deblend.labels.book import FieldLabels
from napari_deblend.labels.targets import isolated_galaxies
from napari_deblend.real_galaxies import load_real_galaxies, mix_real_galaxies

from .conftest import gaussian_field

SOURCES = [
    (40, 40, 4e5, 2.0),
    (200, 60, 3e5, 2.5),
    (60, 200, 2e5, 2.0),
    (200, 190, 5e5, 3.0),
    (150, 150, 6e5, 3.0),
    (150, 162, 3e5, 2.5),
]


@pytest.fixture
def exported(tmp_path):
    from napari_deblend.simulate import field_wcs

    field = gaussian_field(SOURCES, n_bands=2)
    field.wcs = field_wcs(256, "lsst-i", 150.0, 2.0)
    field.band_names = ["r", "i"]
    path = write_field(field, tmp_path / "labelled.fits")
    field = read_field(path)
    cat, seg = detect(field)
    blends = find_blends(cat, seg)
    isolated = isolated_galaxies(cat, field.shape)
    db = tmp_path / "labels.sqlite"
    with LabelStore(db) as store:
        book = FieldLabels(store, field, blends, isolated)
        for galaxy in isolated:
            book.label("isolated", galaxy.id, "clean")
        book.label("isolated", isolated[-1].id, "bad", failure="artefact")  # the latest verdict wins
        book.label("blend", blends[0].id, "clean", model="sextractor")
        book.label(
            "blend",
            blends[0].id,
            "clean",
            component=1,
            component_position=blends[0].positions[0],
            model="sextractor",
        )
        book.label(
            "blend",
            blends[0].id,
            "bad",
            failure="shredded",
            component=2,
            component_position=blends[0].positions[1],
            model="sextractor",
        )
    out = tmp_path / "training"
    assert main(["export-training", "--labels", str(db), "--fields", str(path), "--out", str(out)]) == 0
    return field, isolated, blends, out


def test_export_training_cutouts(exported):
    field, isolated, blends, out = exported
    index = Table.read(out / "index.ecsv", format="ascii.ecsv")
    assert sorted(index["kind"]) == ["blend"] + ["isolated"] * (len(isolated) - 1)
    row = index[index["kind"] == "blend"][0]
    accepted = json.loads(row["accepted_components"])
    assert [c["component"] for c in accepted] == [1]
    assert json.loads(row["rejected_components"])[0]["failure"] == "shredded"
    for row in index:
        with fits.open(out / row["file"]) as hdul:
            cube, header = hdul[0].data, hdul[0].header
            assert cube.shape[0] == 2 and [header["BAND1"], header["BAND2"]] == ["r", "i"]
            y0, x0 = row["origin_y"], row["origin_x"]
            h, w = cube.shape[1:]
            np.testing.assert_array_equal(cube, field.data[:, y0 : y0 + h, x0 : x0 + w])
            # the cut-out's WCS puts the centre at the same sky position as the field's
            wcs = WCS(header).celestial
            cy, cx = row["center_y"] - y0, row["center_x"] - x0
            sky = wcs.all_pix2world([[cx, cy]], 0)[0]
            np.testing.assert_allclose(
                sky, field.wcs.all_pix2world([[row["center_x"], row["center_y"]]], 0)[0], atol=1e-9
            )
            assert hdul["MASK"].data.shape == cube.shape
            if row["kind"] == "blend":  # the accepted component, drawn again by the judged model
                drawn = hdul["COMPONENTS"]
                assert drawn.header["MODEL"] == "sextractor"
                assert drawn.data.shape == (1, *cube.shape)
                (comp,) = json.loads(row["accepted_components"])
                yy, xx = np.mgrid[:h, :w]
                image = drawn.data[0].sum(axis=0)
                assert image.sum() > 0 and image.max() > 0
                cy, cx = (image * yy).sum() / image.sum(), (image * xx).sum() / image.sum()
                assert np.hypot(cy - comp["y"], cx - comp["x"]) < 2.0  # the component at its labelled place
            else:
                assert "COMPONENTS" not in hdul


def test_real_galaxies_join_training(exported, tmp_path):
    _, isolated, _, out = exported
    real = load_real_galaxies(out)
    assert len(real) == len(isolated) - 1
    assert all(image.shape[0] % 2 == 1 and image.shape[0] == image.shape[1] for image in real.images)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    comps = np.zeros((20, 3, 48, 48), np.float32)
    for i in range(20):
        for j, flux in enumerate((2e5, 5e4)):
            y, x = rng.uniform(18, 30, 2)
            comps[i, j] = flux / (2 * np.pi * 4) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8)
    data = {"components": comps, "n_components": np.full(20, 2)}
    mixed, n_real = mix_real_galaxies(data, real, fraction=0.5, seed=1)
    assert 0 < n_real < 40
    np.testing.assert_allclose(mixed["components"].sum(axis=(2, 3)), comps.sum(axis=(2, 3)), rtol=0.02)
    assert np.all(mixed["components"][:, 0].sum(axis=(1, 2)) >= mixed["components"][:, 1].sum(axis=(1, 2)))


def test_export_then_train_smoke(exported, tmp_path):
    """``train peeling --real-galaxies`` fine-tunes the shipped weights for a few steps."""
    from napari_deblend.training.evaluate import _simulator_fingerprint
    from napari_deblend.training.peeling import TRAIN_SEED_BASE, VALIDATION_SEED

    _, _, _, out = exported
    run = tmp_path / "run"
    # the simulator is exercised by test_simulate.py; give this run its cached parametric stamps
    cache = run / "cache"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:48, :48]
    for n, seed in ((100, TRAIN_SEED_BASE), (400, VALIDATION_SEED)):
        comps = np.zeros((n, 3, 48, 48), np.float32)
        counts = rng.integers(1, 4, n)
        for i in range(n):
            for j, flux in enumerate(np.sort(10 ** rng.uniform(4.5, 6, counts[i]))[::-1]):
                y, x = rng.uniform(16, 32, 2)
                comps[i, j] = flux / (2 * np.pi * 4) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8)
        np.savez(
            cache / f"peeling_lsst-i_48_{n}_{seed}_{_simulator_fingerprint()}.npz",
            components=comps,
            n_components=counts,
        )
    code = main(
        [
            "train",
            "peeling",
            "--real-galaxies",
            str(out),
            "--real-fraction",
            "0.5",
            "--steps",
            "3",
            "--n-train",
            "100",
            "--batch-size",
            "4",
            "--workers",
            "1",
            "--out",
            str(run),
            "--lr",
            "3e-4",
        ]
    )
    assert code == 0
    from napari_deblend.deblenders.peeling import PeelingDeblender

    config = json.loads((run / "config.json").read_text())
    assert config["real_galaxies"] == str(out) and config["init"].endswith("peeling.pt")
    deblender = PeelingDeblender(device="cpu", weights=run / "peeling.pt")
    assert deblender.deblend_batch(np.zeros((1, 1, 48, 48), np.float32), noise=446.0)


def test_train_real_galaxy_options_are_checked(tmp_path):
    assert main(["train", "peeling", "--real-fraction", "0.3", "--out", str(tmp_path)]) == 2
    assert main(["train", "peeling", "--real-galaxies", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert main(["export-training", "--labels", str(tmp_path / "none.sqlite"), "--out", str(tmp_path)]) == 2
