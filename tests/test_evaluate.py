"""Tests of napari_deblend.training.evaluate and the ``evaluate`` command."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from astropy.table import Table

from napari_deblend.deblenders.base import Deblender, DeblendError, DeblendResult
from napari_deblend.errors import DeblendInputError
from napari_deblend.training.evaluate import (
    EVAL_SEED,
    FIGURES,
    REALISTIC_EVAL_SEED,
    TestSet,
    evaluate_model,
    evaluate_models,
    flux_stats,
    make_test_set,
    markdown_tables,
    near_equal_mask,
    summarize_model,
    update_model_card,
)
from napari_deblend.training.evaluation_stats import count_stats, family_stats

NOISE = 446.0


def _gaussian(y, x, flux, sigma, size=48):
    yy, xx = np.indices((size, size), dtype=float)
    return flux / (2 * np.pi * sigma**2) * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / sigma**2)


def hand_test_set(n=6, seed=0):
    """2-galaxy blends of round Gaussians 10 px apart, fluxes 1e6 and 3e5."""
    rng = np.random.default_rng(seed)
    comps = np.zeros((n, 2, 1, 48, 48), np.float32)
    positions = np.zeros((n, 2, 2))
    for i in range(n):
        centre = 23.5 + rng.uniform(-1, 1, 2)
        positions[i] = [centre, centre + [0.0, 10.0]]
        for r, flux in enumerate((1e6, 3e5)):
            comps[i, r, 0] = _gaussian(*positions[i, r], flux, 2.0)
    images = comps.sum(1) + rng.normal(0, NOISE, (n, 1, 48, 48)).astype(np.float32)
    return TestSet(images, comps, np.full(n, 2), positions, NOISE, 2, seed, "lsst-i")


class ScaledTruthDeblender(Deblender):
    """Returns the truth of each stamp, in order, times ``scale`` (an oracle for exact numbers)."""

    name = "scaled-truth"
    description = "test oracle"

    def __init__(self, test, scale=1.1, quality="High"):
        super().__init__(device="cpu")
        self.test, self.scale, self.quality, self.next = test, scale, quality, 0

    def deblend_batch(self, stamps, positions=None, noise=None):
        out = []
        for stamp in self.check_stamps(stamps):
            truth = self.test.truth(self.next)
            self.next += 1
            out.append(DeblendResult(blend=stamp, components=truth.components * self.scale,
                                     positions=truth.positions, quality=self.quality, model=self.name, noise=NOISE))
        return out


class NothingDeblender(Deblender):
    """Finds nothing: every galaxy is missed."""

    name = "nothing"
    description = "test deblender that finds nothing"

    def deblend_batch(self, stamps, positions=None, noise=None):
        stamps = self.check_stamps(stamps)
        return [DeblendResult(blend=s, components=np.zeros((0, *s.shape)), positions=np.zeros((0, 2)),
                              model=self.name, noise=NOISE) for s in stamps]


# ---- exact numbers on hand-made sets ---------------------------------------------------------------


def test_oracle_gives_exact_bias_zero_scatter_and_quality_bins():
    test = hand_test_set()
    table, facts = evaluate_model(ScaledTruthDeblender(test, scale=1.1), test, batch_size=4)
    assert len(table) == 12 and table["matched"].all()
    assert np.allclose(table["dflux_frac"], 0.1, atol=1e-5)
    s = summarize_model(table)
    assert s["ranks"]["0"]["recovered"] == 1.0 and s["ranks"]["1"]["recovered"] == 1.0
    assert s["ranks"]["0"]["bias"] == pytest.approx(0.1, abs=1e-5)
    assert s["ranks"]["0"]["scatter"] == pytest.approx(0.0, abs=1e-5)
    assert s["spurious_per_stamp"] == 0.0
    assert s["quality"]["High"]["fraction"] == 1.0 and s["quality"]["Low"]["fraction"] == 0.0
    # PSNR of truth*1.1 vs truth: MSE = 0.01 mean(truth^2), range = max(truth) - min(truth)
    truth = test.components[0, 0]
    expected = 10 * math.log10((truth.max() - truth.min()) ** 2 / np.mean((0.1 * truth.astype(float)) ** 2))
    assert table["psnr"][0] == pytest.approx(expected, rel=1e-4)
    assert 0.9 < s["ssim"]["mean"] <= 1.0
    assert facts["seconds_per_stamp"] >= 0


def test_missed_galaxies_count_as_minus_one():
    test = hand_test_set()
    table, _ = evaluate_model(NothingDeblender(device="cpu"), test)
    assert not table["matched"].any()
    assert (table["dflux_frac"] == -1).all()
    s = summarize_model(table)
    assert s["ranks"]["0"]["recovered"] == 0.0
    assert s["ranks"]["0"]["bias"] == -1.0 and s["ranks"]["0"]["scatter"] == 0.0
    assert s["quality"] == ""


def test_flux_stats_definitions():
    values = np.array([-1.0, 0.0, 0.1, 0.2, 0.3])
    s = flux_stats(values)
    p16, p84 = np.percentile(values, [16, 84])
    assert s["bias"] == pytest.approx(0.1) and s["scatter"] == pytest.approx((p84 - p16) / 2)
    assert math.isnan(flux_stats(np.array([]))["bias"])


def test_near_equal_pairs_mask():
    t = Table({"n_galaxies": [2, 2, 2, 2, 3, 3, 3], "stamp": [0, 0, 1, 1, 0, 0, 0], "rank": [0, 1, 0, 1, 0, 1, 2],
               "true_flux": [100.0, 90.0, 100.0, 50.0, 100.0, 99.0, 98.0]})
    assert near_equal_mask(t).tolist() == [True, True, False, False, False, False, False]


# ---- the whole evaluation on the simulator ---------------------------------------------------------


@pytest.fixture(scope="module")
def sextractor_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    summary = evaluate_models(["sextractor"], n=20, blends=(2, 3), out_dir=out, cache_dir=out / "cache")
    return out, summary


def test_evaluate_models_writes_every_file(sextractor_run):
    out, summary = sextractor_run
    for name in ("components.ecsv", "summary.json", "report.md", *FIGURES.values()):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "summary.json").read_text())["models"]["sextractor"]["2"]["n_stamps"] == 20
    report = (out / "report.md").read_text()
    assert "| metric | sextractor |" in report and "Near-equal flux pairs" in report
    assert "flux_recovered_vs_true.png" in report


def test_report_says_how_the_real_pool_was_split(sextractor_run):
    from napari_deblend.training.evaluation_report import markdown_report

    _, summary = sextractor_run
    settings = {**summary["settings"], "test_set": "realistic", "real_pool": "POOL"}
    registered = {"seed": 0, "registered_galaxies": 500, "galaxies": {"train": 348, "validation": 76, "test": 76}}
    report = markdown_report({**summary, "settings": {**settings, "real_pool_split": registered}})
    assert "test split (76 galaxies; 500 galaxies of the pool in their registered split)" in report
    unregistered = {**registered, "registered_galaxies": None}
    report = markdown_report({**summary, "settings": {**settings, "real_pool_split": unregistered}})
    assert "(76 galaxies; a pool built without the split register)" in report


def test_evaluate_models_numbers_are_consistent(sextractor_run):
    out, summary = sextractor_run
    table = Table.read(out / "components.ecsv")
    assert len(table) == 20 * 2 + 20 * 3
    assert set(table["model"]) == {"sextractor"}
    assert (table["dflux_frac"][~table["matched"]] == -1).all()
    for k in (2, 3):
        block = summary["models"]["sextractor"][str(k)]
        assert block["quality"] == ""
        assert block["spurious_per_stamp"] >= 0
        for r in range(k):
            stats = block["ranks"][str(r)]
            assert 0.0 <= stats["recovered"] <= 1.0
            rows = table[(table["n_galaxies"] == k) & (table["rank"] == r)]
            assert stats["recovered"] == pytest.approx(float(np.mean(rows["matched"])))
            assert stats["bias"] == pytest.approx(float(np.median(rows["dflux_frac"])))
    # the brightest galaxy of a 2-galaxy blend is almost always found
    assert summary["models"]["sextractor"]["2"]["ranks"]["0"]["recovered"] >= 0.8
    # SExtractor's flux is FLUX_AUTO and the truth flux is the sum of the noiseless component
    first = table[table["matched"]][0]
    assert first["rec_flux"] != first["true_flux"]


def test_test_set_is_cached_and_prefix_stable(sextractor_run, tmp_path):
    out, _ = sextractor_run
    cached = make_test_set(20, 2, cache_dir=out / "cache")
    assert cached.seed == EVAL_SEED and cached.n_galaxies == 2
    fresh = make_test_set(5, 2, cache_dir=tmp_path)  # simulated again, 5 stamps
    assert np.array_equal(fresh.images, cached.images[:5])
    smaller = make_test_set(10, 2, cache_dir=out / "cache")  # served from the 20-stamp file
    assert np.array_equal(smaller.components, cached.components[:10])
    assert np.isfinite(cached.positions[:, :2]).all() and np.isnan(cached.positions[:, 2:]).all()


def test_update_model_card(sextractor_run, tmp_path):
    _, summary = sextractor_run
    card = tmp_path / "model.json"
    card.write_text(json.dumps({"name": "sextractor", "metrics": {"old": 1}}))
    update_model_card(card, summary, "sextractor")
    data = json.loads(card.read_text())
    assert data["name"] == "sextractor"
    metrics = data["metrics"]["by_blend_multiplicity"]["2"]["ranks"]["0"]
    assert metrics["recovered"] == summary["models"]["sextractor"]["2"]["ranks"]["0"]["recovered"]
    assert data["metrics"]["settings"]["seed"] == EVAL_SEED
    assert "inference" not in data
    update_model_card(card, summary, "sextractor", inference={"joint_flips": 4})
    assert json.loads(card.read_text())["inference"] == {"joint_flips": 4}  # what the metrics depend on
    with pytest.raises(DeblendInputError, match="not in the evaluation summary"):
        update_model_card(card, summary, "peeling")


def test_the_shipped_peeling_card_records_how_its_metrics_were_made():
    from napari_deblend.commands.train import inference_settings
    from napari_deblend.deblenders.peeling import WEIGHTS_DIR

    card = json.loads((WEIGHTS_DIR / "peeling.json").read_text())
    assert card["inference"] == inference_settings("peeling")
    facts = card["metrics"]["by_blend_multiplicity"]["2"]
    assert facts["precision"] in ("bfloat16", "float32") and facts["device"] == "cpu"


def test_the_shipped_vae_card_records_its_inference_settings():
    """The settings its metrics depend on (flux re-distribution, split threshold, pieces given to their galaxy)."""
    from napari_deblend.commands.train import inference_settings
    from napari_deblend.deblenders.vae import WEIGHTS_DIR

    card = json.loads((WEIGHTS_DIR / "vae.json").read_text())
    assert card["inference"] == inference_settings("vae")
    assert card["inference"]["pieces_to_host"] is True and card["inference"]["redistribute_flux"] is True


def test_markdown_tables_side_by_side(sextractor_run):
    _, summary = sextractor_run
    text = markdown_tables(summary)
    assert "### 2-galaxy blends" in text and "### 3-galaxy blends" in text
    assert "| recovered, third |" in text and "| spurious per stamp |" in text
    assert "| stamps: right count / too many / too few components |" in text
    assert "| Δf/f scatter, brightest: right count / too many |" in text
    fractions = summary["models"]["sextractor"]["2"]["by_count"]
    assert sum(fractions[name]["fraction"] for name in ("right", "too many", "too few")) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n": 0}, "positive"), ({"blends": (4,)}, "among 1, 2, 3"), ({"models": []}, "at least one")],
)
def test_evaluate_models_rejects_bad_input(tmp_path, kwargs, match):
    args = {"models": ["sextractor"], "n": 5, "blends": (2,), "out_dir": tmp_path, **kwargs}
    with pytest.raises(DeblendInputError, match=match):
        evaluate_models(**args)


# ---- the command -----------------------------------------------------------------------------------


def _parser():
    from napari_deblend.commands import evaluate

    parser = argparse.ArgumentParser(prog="napari-deblend")
    sub = parser.add_subparsers(dest="command")
    evaluate.register(sub)
    return parser


def test_command_runs_and_prints_the_table(tmp_path, capsys):
    args = _parser().parse_args(
        ["evaluate", "--models", "sextractor", "--n", "4", "--blends", "2", "--out", str(tmp_path), "--no-figures",
         "--update-model-cards"]
    )
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "| metric | sextractor |" in captured.out and "recovered, brightest" in captured.out
    assert "sextractor: no model card" in captured.err
    for test_set in ("parametric", "realistic"):  # both sets by default, each in its own folder
        assert (tmp_path / test_set / "summary.json").exists()
        assert not (tmp_path / test_set / FIGURES["flux"]).exists()
    summary = json.loads((tmp_path / "realistic" / "summary.json").read_text())
    assert summary["settings"]["test_set"] == "realistic" and summary["settings"]["seed"] == REALISTIC_EVAL_SEED


def test_realistic_test_set_is_its_own():
    """The realistic set: other galaxies than the parametric one, families named, a seed of its own."""
    realistic = make_test_set(40, 1, test_set="realistic")
    parametric = make_test_set(40, 1)
    assert realistic.seed == REALISTIC_EVAL_SEED and parametric.seed == EVAL_SEED
    assert realistic.name == "realistic" and parametric.families is None
    families = set(realistic.families[:, 0])
    assert len(families) >= 6 and "bulge_disk" in families
    assert not np.allclose(realistic.images, parametric.images)
    with pytest.raises(DeblendInputError, match="test set 'nope' is unknown"):
        make_test_set(4, 1, test_set="nope")


def test_family_table_counts_spurious_per_family():
    """Isolated galaxies: a family whose stamps get two components shows 1 spurious per stamp, the others 0."""
    t = Table({"stamp": [0, 1, 2], "rank": [0, 0, 0], "n_pred": [1, 2, 1], "matched": [True, True, True],
               "dflux_frac": [0.0, -0.1, 0.05], "family": ["sersic", "knots", "sersic"], "quality": ["", "", ""]})
    stats = family_stats(t)
    assert stats["knots"]["spurious_per_stamp"] == 1.0 and stats["sersic"]["spurious_per_stamp"] == 0.0
    assert stats["sersic"]["n_true"] == 2 and stats["knots"]["recovered"] == 1.0


def test_count_stats_separate_the_right_count_from_a_split_galaxy():
    """Pairs: stamp 0 counted right, stamp 1 split its brighter galaxy (a third component took 30 % of its
    light), stamp 2 missed the fainter one."""
    t = Table({"stamp": [0, 0, 1, 1, 2, 2], "rank": [0, 1, 0, 1, 0, 1], "n_galaxies": [2] * 6,
               "n_pred": [2, 2, 3, 3, 1, 1], "matched": [True, True, True, True, True, False],
               "dflux_frac": [0.01, -0.02, -0.3, 0.05, 0.2, -1.0], "quality": [""] * 6})
    stats = count_stats(t)
    assert [stats[name]["fraction"] for name in ("right", "too many", "too few")] == pytest.approx([1 / 3] * 3)
    assert stats["right"]["ranks"]["0"]["bias"] == pytest.approx(0.01)
    assert stats["too many"]["ranks"]["0"]["bias"] == pytest.approx(-0.3)
    assert stats["too few"]["ranks"]["1"]["recovered"] == 0.0


@pytest.mark.parametrize(
    "argv, error, match",
    [
        (["--models", "nosuchmodel"], DeblendError, "unknown deblender 'nosuchmodel': expected one of .*sextractor"),
        (["--n", "0"], DeblendInputError, "--n 0: expected a positive"),
        (["--blends", "2", "4"], DeblendInputError, "--blends 2 4: expected galaxies per blend among 1 2 3"),
    ],
)
def test_command_bad_input(tmp_path, argv, error, match):
    args = _parser().parse_args(["evaluate", "--out", str(tmp_path), "--models", "sextractor", *argv])
    with pytest.raises(error, match=match):
        args.func(args)
