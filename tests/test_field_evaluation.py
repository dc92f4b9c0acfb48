"""``napari-deblend evaluate-field``: galaxy-by-galaxy completeness, flux errors and spurious rows against the truth."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from napari_deblend.cli import main
from napari_deblend.field import write_field
from napari_deblend.field_evaluation import judge_run, match_catalogues, robust_stats
from napari_deblend.measurements import match_positions
from napari_deblend.simulate import simulate_field


def _catalog(rows):
    """A run catalogue of ``(kind, is_primary, y, x, flux_best, flux_auto)`` rows (0-based positions)."""
    table = Table(rows=rows, names=("KIND", "IS_PRIMARY", "y", "x", "FLUX_BEST", "FLUX_AUTO"))
    table["X_IMAGE"], table["Y_IMAGE"] = table["x"] + 1.0, table["y"] + 1.0
    table["ID"] = np.arange(1, len(table) + 1)
    table["DEBLEND_FLAGS"] = [1 if k == "detection" and not p else 0 for k, p in zip(table["KIND"], table["IS_PRIMARY"])]
    return table


def test_judging_a_catalogue_counts_found_blended_flux_errors_and_spurious_rows():
    truth = Table({"x": [10.0, 100.0, 108.0, 200.0], "y": [10.0, 100.0, 100.0, 200.0],
                   "flux": [1000.0, 2000.0, 1000.0, 500.0], "mag": [22.0, 21.0, 22.0, 23.0]})  # fmt: skip
    catalog = _catalog([
        ("detection", True, 10.5, 10.0, 1100.0, 1100.0),   # isolated galaxy, sep's answer: +10 %
        ("detection", False, 100.0, 104.0, 3100.0, 3100.0),  # the pair sep merged, split below
        ("component", True, 100.0, 101.0, 1800.0, np.nan),  # -10 %
        ("component", True, 100.0, 107.0, 1000.0, np.nan),  # 0 %
        ("component", True, 300.0, 300.0, 700.0, np.nan),  # nothing there: spurious
    ])  # galaxy 4 at (200, 200) is missed
    result = judge_run(catalog, truth, blend_distance_pixels=15.0)
    g = result.galaxies
    assert g["blended"].tolist() == [False, True, True, False]
    assert g["found"].tolist() == [True, True, True, False]
    assert g["by_component"].tolist() == [False, True, True, False]
    np.testing.assert_allclose(g["dflux"][:3], [0.1, -0.1, 0.0])
    s = result.summary
    assert (s["found_isolated"], s["found_blended"], s["by_component_blended"]) == (0.5, 1.0, 1.0)
    assert g["near_row"].tolist() == [True, True, True, False] and s["near_row_blended"] == 1.0
    assert s["primary_rows"] == 4 and s["spurious"] == pytest.approx(1 / 4) and len(result.spurious_rows) == 1
    assert s["spurious_detections"] == 0  # the spurious row is a component, not one of sep's detections
    assert s["bias_isolated"] == pytest.approx(0.1) and s["bias_blended"] == pytest.approx(-0.05)
    assert s["unrecognised_blends"] == 1
    catalog.add_row(("detection", True, 250.0, 20.0, 300.0, 300.0, 21.0, 251.0, 6, 0))  # a noise peak sep detected
    s = judge_run(catalog, truth, blend_distance_pixels=15.0).summary
    assert (s["spurious"], s["spurious_detections"]) == (pytest.approx(2 / 4), pytest.approx(1 / 4))


def test_a_spurious_row_beside_an_isolated_galaxy_is_counted_for_it_and_its_family():
    truth = Table({"x": [10.0, 100.0, 108.0, 200.0], "y": [10.0, 100.0, 100.0, 200.0],
                   "flux": [1000.0, 2000.0, 1000.0, 500.0], "family": ["knots", "real", "sersic", "spiral"]})  # fmt: skip
    catalog = _catalog([
        ("component", True, 10.0, 10.5, 900.0, np.nan),    # the isolated knotty galaxy ...
        ("component", True, 10.0, 16.0, 100.0, np.nan),    # ... and a knot of it taken for a galaxy
        ("component", True, 100.0, 100.0, 2000.0, np.nan),
        ("component", True, 100.0, 108.0, 1000.0, np.nan),
        ("component", True, 96.0, 104.0, 50.0, np.nan),    # a piece beside the pair: not an isolated galaxy's
        ("component", True, 200.0, 200.0, 500.0, np.nan),
        ("component", True, 400.0, 400.0, 70.0, np.nan),   # far from every galaxy
    ])  # fmt: skip
    result = judge_run(catalog, truth, blend_distance_pixels=15.0)
    assert result.galaxies["spurious_beside"].tolist() == [1, 1, 0, 0]
    assert result.galaxies["family"].tolist() == ["knots", "real", "sersic", "spiral"]
    assert result.summary["spurious"] == pytest.approx(3 / 4)
    assert result.summary["spurious_isolated"] == pytest.approx(1 / 2)  # two isolated galaxies, one split


def test_a_row_shared_by_two_close_galaxies_is_near_both_but_finds_one():
    truth = Table({"x": [50.0, 52.5], "y": [50.0, 50.0], "flux": [1000.0, 800.0]})
    catalog = _catalog([("detection", True, 50.0, 51.2, 1800.0, 1800.0)])  # sep merged the pair into one row
    result = judge_run(catalog, truth, blend_distance_pixels=15.0)
    assert result.galaxies["near_row"].tolist() == [True, True]
    assert result.galaxies["found"].sum() == 1  # one row answers one galaxy
    assert (result.summary["near_row_blended"], result.summary["found_blended"]) == (1.0, 0.5)


def test_grouped_matching_is_the_global_hungarian_one_and_the_scatter_is_the_68_percent_half_width():
    rng = np.random.default_rng(4)
    truth = rng.uniform(0, 300, (300, 2))
    rows = np.r_[truth[:250] + rng.normal(0, 1.2, (250, 2)), rng.uniform(0, 300, (40, 2))]
    paired = match_catalogues(truth, rows)
    reference = np.full(len(truth), -1)
    for i, j in match_positions(truth, rows):
        reference[i] = j
    assert (paired >= 0).sum() == (reference >= 0).sum() >= 225
    assert len(set(paired[paired >= 0])) == (paired >= 0).sum()  # one to one
    assert np.all(np.hypot(*(truth[paired >= 0] - rows[paired[paired >= 0]]).T) <= 3.0)
    median, scatter = robust_stats(rng.normal(0.02, 0.1, 20000))
    assert median == pytest.approx(0.02, abs=0.005) and scatter == pytest.approx(0.1, rel=0.05)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    directory = tmp_path_factory.mktemp("evalfield")
    field, truth = simulate_field(256, seed=11, density=60.0)
    path = write_field(field, directory / "sim.fits")
    truth.write(directory / "sim_truth.ecsv")
    return path, directory / "sim_truth.ecsv", truth


def test_evaluate_field_command_compares_runs_side_by_side(tmp_path, simulated, capsys):
    path, truth_path, truth = simulated
    for name, candidates in (("singles", "extended"), ("blends", "blends")):
        argv = ["run", str(path), "--out", str(tmp_path / name), "--model", "sextractor", "--candidates", candidates,
                "--quiet"]  # fmt: skip
        assert main(argv) == 0
    out = tmp_path / "eval"
    code = main(["evaluate-field", str(tmp_path / "singles"), str(tmp_path / "blends"), "--truth", str(truth_path),
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| metric | singles | blends |" in printed and "blended galaxies found" in printed
    summary = Table.read(out / "summary.ecsv")
    assert summary.colnames == ["metric", "description", "singles", "blends"]
    values = {m: (a, b) for m, a, b in zip(summary["metric"], summary["singles"], summary["blends"])}
    assert values["galaxies"] == (len(truth), len(truth))
    assert values["found_isolated"][0] >= 0.8 and values["found_isolated"][1] >= 0.8
    assert abs(values["bias_isolated"][1]) < 0.2 and 0 < values["scatter_isolated"][1] < 0.3
    galaxies = Table.read(out / "galaxies_singles.ecsv")
    assert len(galaxies) == len(truth) and {"found", "blended", "dflux", "nn_distance"} <= set(galaxies.colnames)
    for figure in ("found_fraction.png", "flux_error.png"):
        assert (out / figure).stat().st_size > 10_000


def test_evaluate_field_bad_input_is_one_line(tmp_path, simulated, capsys):
    path, truth_path, _ = simulated
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate-field", str(empty), "--truth", str(truth_path), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no catalog.ecsv" in err[0]
    missing = tmp_path / "nothing_truth.ecsv"
    assert main(["evaluate-field", str(empty), "--truth", str(missing), "--out", str(tmp_path / "e")]) == 2
    assert "truth catalogue" in capsys.readouterr().err
    bad_truth = tmp_path / "bad_truth.ecsv"
    Table({"ra": [1.0]}).write(bad_truth)
    assert main(["evaluate-field", str(empty), "--truth", str(bad_truth), "--out", str(tmp_path / "e")]) == 2
    assert "lacks the columns x, y, flux" in capsys.readouterr().err
