"""``napari-deblend run`` / ``run_fields``: tiling, outputs, resume, bad input, atomic writes (real FITS, sep, models)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from napari_deblend.cli import main
from napari_deblend.field import write_field
from napari_deblend.pipeline import RunSettings, plan_tiles, run_fields
from napari_deblend.simulate import simulate_field

#: No sep multi-threshold deblending: sep splits the fringe pixels of deblended children at random
#: (SExtractor's Monte Carlo assignment, seeded per call), which a crop changes; see the README.
NO_SEP_SPLIT = {"deblend_cont": 1.0}


@pytest.fixture(scope="module")
def field_path(tmp_path_factory):
    """A simulated 512x512 lsst-i field (a dozen blends) written to FITS with its WCS."""
    field, _ = simulate_field(512, seed=1)
    return write_field(field, tmp_path_factory.mktemp("fields") / "tile512.fits")


def _detections(path):
    catalog = Table.read(path)
    return catalog[catalog["KIND"] == "detection"], catalog[catalog["KIND"] == "component"]


def _assert_same_table(a: Table, b: Table) -> None:
    assert a.colnames == b.colnames and len(a) == len(b)
    for name in a.colnames:
        x, y = a[name], b[name]
        if x.dtype.kind in "fi":
            x = np.ma.filled(np.ma.asarray(x, dtype=float), np.nan)
            y = np.ma.filled(np.ma.asarray(y, dtype=float), np.nan)
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=name)
        else:
            assert np.array_equal(np.ma.filled(x, ""), np.ma.filled(y, "")), name


def test_tiles_partition_the_field_and_every_position_has_one_owner():
    tiles = plan_tiles((1000, 700), tile_size=256, overlap=40)
    assert len(tiles) == 4 * 3
    covered = np.zeros((1000, 700), int)
    for tile in tiles:
        ymin, ymax, xmin, xmax = tile.core
        covered[ymin:ymax, xmin:xmax] += 1
        oy0, oy1, ox0, ox1 = tile.outer
        assert oy0 == max(ymin - 40, 0) and ox1 == min(xmax + 40, 700)
    assert (covered == 1).all()
    rng = np.random.default_rng(0)
    y, x = rng.uniform(-0.5, 999.5, 5000), rng.uniform(-0.5, 699.5, 5000)
    y[:4], x[:4] = [-0.5, 999.49, 255.5, 255.4999], [-0.5, 699.49, 10, 10]  # edges and core borders
    owners = np.sum([tile.owns(y, x) for tile in tiles], axis=0)
    assert (owners == 1).all()
    assert plan_tiles((100, 100), tile_size=256)[0].covers_field


def test_tiled_run_gives_the_same_catalogue_components_and_residual(tmp_path, field_path):
    settings = {"model": "sextractor", "detection_overrides": NO_SEP_SPLIT, "overlap": 64}
    whole = run_fields(
        [field_path], tmp_path / "whole", RunSettings(tile_size=1024, **settings), progress=False
    )
    tiled = run_fields(
        [field_path], tmp_path / "tiled", RunSettings(tile_size=150, **settings), progress=False
    )
    assert whole.exit_code == tiled.exit_code == 0
    assert whole.fields[0].record["tiles"] == 1 and tiled.fields[0].record["tiles"] == 16
    assert tiled.fields[0].record["blends"] >= 5
    a, b = (
        Table.read(tmp_path / "whole/tile512/catalog.ecsv"),
        Table.read(tmp_path / "tiled/tile512/catalog.ecsv"),
    )
    _assert_same_table(a, b)
    # no detection counted twice, none lost
    det, _ = _detections(tmp_path / "tiled/tile512/catalog.ecsv")
    assert len(np.unique(np.round(np.c_[det["X_IMAGE"], det["Y_IMAGE"]], 6), axis=0)) == len(det)
    for name in ("residual.fits", "components.fits"):
        with (
            fits.open(tmp_path / "whole/tile512" / name) as x,
            fits.open(tmp_path / "tiled/tile512" / name) as y,
        ):
            assert len(x) == len(y)
            for hx, hy in zip(x, y):
                assert hx.header.get("ORIGIN_X") == hy.header.get("ORIGIN_X")
                assert (
                    np.array_equal(hx.data, hy.data, equal_nan=True)
                    if hx.data is not None
                    else hy.data is None
                )


def test_tile_grows_its_halo_for_a_blend_wider_than_the_overlap(tmp_path, field_path):
    settings = RunSettings(model="sextractor", detection_overrides=NO_SEP_SPLIT, tile_size=150, overlap=8)
    summary = run_fields([field_path], tmp_path / "narrow", settings, progress=False)
    record = summary.fields[0].record
    assert summary.exit_code == 0 and record["tiles_grown"] >= 1
    reference = run_fields(
        [field_path], tmp_path / "whole", RunSettings(model="sextractor", detection_overrides=NO_SEP_SPLIT,
                                                      tile_size=1024), progress=False,
    )  # fmt: skip
    assert reference.exit_code == 0
    _assert_same_table(Table.read(tmp_path / "narrow/tile512/catalog.ecsv"),
                       Table.read(tmp_path / "whole/tile512/catalog.ecsv"))  # fmt: skip


# components.fits keeps the field's WCS in its data-less primary HDU, which astropy's WCS() notes
@pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")
def test_run_command_outputs_missing_and_bad_files_resume_and_refusal(tmp_path, field_path, capsys):
    bogus = tmp_path / "bogus.fits"
    bogus.write_text("not a FITS file\n")
    out = tmp_path / "out"
    argv = ["run", str(field_path), str(tmp_path / "missing.fits"), str(bogus), "--out", str(out),
            "--model", "peeling", "--device", "cpu", "--tile-size", "300"]  # fmt: skip
    assert main(argv) == 1  # the good field is done, the two bad ones reported
    captured = capsys.readouterr()
    assert "1/3 field(s) done" in captured.out
    assert "FAILED" in captured.err and "missing.fits" in captured.err and "bogus.fits" in captured.err

    field_dir = out / "tile512"
    det, comp = _detections(field_dir / "catalog.ecsv")
    assert len(det) > 50 and len(comp) >= 10
    for column in ("NUMBER", "BLEND_ID", "X_IMAGE", "FLUX_AUTO", "MAG_AUTO", "ALPHA_J2000", "DELTA_J2000"):
        assert np.isfinite(np.asarray(det[column], float)).all(), column
    for column in ("FLUX_MODEL", "MAG_MODEL", "MU20", "MU02", "MU11", "E1", "E2", "ALPHA_J2000"):
        assert np.isfinite(np.asarray(comp[column], float)).any(), column
    assert set(comp["QUALITY"]) <= {"High", "Medium", "Low"} and set(comp["MODEL"]) == {"peeling"}
    assert comp["MODEL_VERSION"][0] and (np.asarray(comp["BLEND_ID"]) > 0).all()
    assert set(comp["BLEND_ID"]) <= set(det["BLEND_ID"])
    assert abs(float(np.mean(det["ALPHA_J2000"])) - 150.0) < 0.02  # the simulation's WCS centre

    original = fits.getdata(field_path, 1)
    residual = fits.getdata(field_dir / "residual.fits", 1)
    with fits.open(field_dir / "components.fits") as hdul:
        assert hdul[0].header["NBLENDS"] == len(set(det["BLEND_ID"]) - {0})
        model = np.zeros_like(original)
        for hdu in hdul[1:]:
            y0, x0 = hdu.header["ORIGIN_Y"], hdu.header["ORIGIN_X"]
            stamp = hdu.data.sum(axis=0)
            ys, xs = slice(max(y0, 0), y0 + stamp.shape[0]), slice(max(x0, 0), x0 + stamp.shape[1])
            model[ys, xs] += stamp[max(-y0, 0) :, max(-x0, 0) :][
                : model[ys, xs].shape[0], : model[ys, xs].shape[1]
            ]
            assert hdu.header["CTYPE1"] == "RA---TAN" and hdu.header["CRPIX1"] != hdul[0].header["CRPIX1"]
            # the stamp's WCS is the field's, moved to the stamp's origin
            np.testing.assert_allclose(WCS(hdu.header).celestial.pixel_to_world_values(3.0, 5.0),
                                       WCS(hdul[0].header).pixel_to_world_values(x0 + 3.0, y0 + 5.0), atol=1e-10)
    np.testing.assert_allclose(residual, original - model, rtol=1e-5, atol=1.0)

    record = json.loads((field_dir / "run.json").read_text())
    assert record["status"] == "done" and record["parameters"]["model"] == "peeling"
    assert set(record["timings"]) >= {"read", "detect", "deblend", "measure", "write"}
    assert record["versions"]["napari_deblend"] and not (field_dir / "work").exists()
    run_record = json.loads((out / "run.json").read_text())
    assert run_record["fields"]["missing"]["status"] == "failed" and run_record["status"] == "failed"

    # a rerun skips the finished field and retries the failed ones
    stamp_time = (field_dir / "catalog.ecsv").stat().st_mtime_ns
    assert main([*argv[:2], "--out", str(out), "--model", "peeling", "--tile-size", "300"]) == 0
    assert "already done" in capsys.readouterr().err
    assert (field_dir / "catalog.ecsv").stat().st_mtime_ns == stamp_time

    # a different run in the same directory: refused, unless --overwrite
    other = [*argv[:2], "--out", str(out), "--model", "sextractor", "--tile-size", "300"]
    assert main(other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different parameters (model)" in err[0] and "--overwrite" in err[0]
    assert main([*other, "--overwrite", "--quiet"]) == 0
    _, comp = _detections(field_dir / "catalog.ecsv")
    assert set(comp["MODEL"]) == {"sextractor"}


def test_interrupted_run_resumes_without_redoing_finished_tiles(tmp_path, field_path):
    settings = RunSettings(model="sextractor", tile_size=256, keep_work=True)
    first = run_fields([field_path], tmp_path / "out", settings, progress=False)
    assert first.exit_code == 0
    field_dir = tmp_path / "out/tile512"
    reference = Table.read(field_dir / "catalog.ecsv")
    # as if killed during tile 2: tiles 0, 1, 3 finished, nothing assembled
    parts = sorted((field_dir / "work/parts").glob("tile_*.fits"))
    assert len(parts) == 4
    parts[2].unlink()
    for name in ("catalog.ecsv", "components.fits", "residual.fits", "run.json"):
        (field_dir / name).unlink()
    kept = {p: p.stat().st_mtime_ns for p in parts if p.exists()}
    lines = []

    class Lines:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    from napari_deblend.pipeline.progress import RunProgress

    second = run_fields([field_path], tmp_path / "out", settings, progress=RunProgress(stream=Lines()))
    assert second.exit_code == 0
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # finished tiles were not redone
    text = "".join(lines)
    assert text.count("already done") == 3 and "tile 2 " in text and "[4/4 tiles" in text  # plain log lines
    _assert_same_table(reference, Table.read(field_dir / "catalog.ecsv"))


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG as an OSError, like ENOSPC on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_while_writing_leaves_no_half_written_output(tmp_path, field_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "napari_deblend.cli", "run", str(field_path), "--out", str(out),
               "--model", "sextractor", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the scratch copy of the field (1 MiB + 128 bytes) fits; a later, larger file (tile record or residual) does not
    limited = subprocess.run(
        command, capture_output=True, text=True, env=env, preexec_fn=_limit_file_size(1_050_000)
    )
    assert limited.returncode == 1, limited.stderr
    assert "FAILED" in limited.stderr and "OSError" in limited.stderr  # EFBIG, reported like ENOSPC
    field_dir = out / "tile512"
    assert not (field_dir / "residual.fits").exists() and not (field_dir / "run.json").exists()
    assert not list(out.rglob("*.part"))  # no half-written file under any name
    if (field_dir / "catalog.ecsv").exists():  # written completely before the residual failed
        assert len(Table.read(field_dir / "catalog.ecsv")) > 50
    # with room again, the rerun finishes the field from its finished tiles
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert fits.getdata(field_dir / "residual.fits", 1).shape == (512, 512)


def test_vae_run_exports_the_sigma_images_and_flux_errors(tmp_path, field_path):
    out = tmp_path / "vae"
    run_fields([field_path], out, RunSettings(model="vae", device="cpu"))
    detections, components = _detections(out / "tile512" / "catalog.ecsv")
    assert len(components) and np.all(np.asarray(components["FLUX_MODEL_ERR"]) > 0)
    with fits.open(out / "tile512" / "components.fits") as hdul:
        blends = [h for h in hdul if h.name == "BLEND"]
        sigmas = {h.ver: h for h in hdul if h.name == "SIGMA"}
        assert blends and set(sigmas) == {h.ver for h in blends}
        for blend in blends:
            assert sigmas[blend.ver].data.shape == blend.data.shape
            assert np.all(sigmas[blend.ver].data >= 0)
