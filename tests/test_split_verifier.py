"""The peeling deblender's split verifier: host features, giving pieces back, its training and loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_deblend.cli import main
from napari_deblend.deblenders.base import DeblendError
from napari_deblend.deblenders.flux_calibration import PeelHistory
from napari_deblend.deblenders.peeling import WEIGHTS_DIR, PeelingDeblender
from napari_deblend.deblenders.split_verifier import (
    HOST_FEATURE_NAMES,
    SPLIT_FEATURE_NAMES,
    SplitVerifier,
    host_features,
    host_of,
    merge_pieces,
)
from napari_deblend.simulate import simulate_blends
from napari_deblend.training.split_verifier import VerifierTrainConfig, train_verifier, verifier_figures

from .verifier_files import assert_only_a_verifier_added, with_other_verifier


def _blob(y: float, x: float, flux: float, width: float = 2.0, size: int = 48, q: float = 1.0) -> np.ndarray:
    yy, xx = np.indices((size, size))
    image = np.exp(-((yy - y) ** 2 / q**2 + (xx - x) ** 2) / (2 * width**2))
    return (flux * image / image.sum())[None].astype(np.float32)


def _history(fluxes) -> PeelHistory:
    fluxes = np.asarray(fluxes, np.float64)
    return PeelHistory([len(fluxes), 0], "High", fluxes.copy(), fluxes.copy(), fluxes.copy(), np.zeros(len(fluxes)))


def test_host_features_tell_a_knot_on_a_disk_from_a_companion_beside_it():
    sigma = 400.0
    disk = _blob(24, 24, 4e5, width=5.0)
    knot = _blob(24, 28, 2e4, width=1.0)  # inside the disk, where it is bright
    arm = _blob(18, 24, 3e4, width=2.5, q=0.3)  # above the centre, stretched along x: across the radius
    companion = _blob(24, 42, 2e4, width=1.5)  # beyond the disk's light
    features = host_features(np.stack([disk, knot, arm, companion]), sigma, np.array([0.1, 0.2, 0.6, 0.1]))
    assert features.shape == (4, len(HOST_FEATURE_NAMES))
    f = dict(zip(HOST_FEATURE_NAMES, features.T))
    assert f["log_host_level_snr"][1] > f["log_host_level_snr"][3] + 0.5  # the disk is bright under the knot
    assert f["host_distance_in_size"][1] < 1 < f["host_distance_in_size"][3]
    assert f["tangential_elongation"][2] > 0.5 and abs(f["tangential_elongation"][3]) < 0.05
    np.testing.assert_allclose(f["p_two_or_more"], 0.7)
    np.testing.assert_allclose(f["p_three_or_more"], 0.1)
    assert host_of(np.stack([disk, knot, companion])[:, 0], 1) == 0
    alone = host_features(disk[None], sigma, None)
    assert alone.shape == (1, len(HOST_FEATURE_NAMES)) and np.all(alone[0, :6] == 0)


def test_merge_pieces_gives_the_unlikely_ones_to_their_host_and_keeps_the_flux():
    disk, knot, companion = _blob(24, 24, 4e5, width=5.0), _blob(24, 28, 2e4, width=1.0), _blob(24, 42, 2e4)
    components = [disk, knot, companion]
    total = np.sum(components, axis=0)
    history = _history([4e5, 2e4, 2e4])
    kept = merge_pieces(components, np.array([1.0, 0.1, 0.9]), 0.5, history)
    assert kept == [0, 2] and len(components) == 2
    np.testing.assert_allclose(np.sum(components, axis=0), total, rtol=1e-6)  # the components still add up
    np.testing.assert_allclose(components[0].sum(), 4.2e5, rtol=1e-5)
    np.testing.assert_allclose(history.first_pass, [4.2e5, 2e4])
    assert len(history.flip_spread) == 2
    # nothing below the threshold, or only the brightest: nothing moves
    assert merge_pieces(components, np.array([0.0, 0.9]), 0.5, _history([4.2e5, 2e4])) == [0, 1]
    assert len(components) == 2


def test_verifier_probabilities_are_a_probability_per_component():
    torch.manual_seed(0)
    verifier = SplitVerifier(n_features=3, width=8, depth=2, members=2)
    verifier.set_standardisation(np.random.default_rng(0).normal(size=(500, 3)))
    p = verifier.probabilities(np.array([[1e6, 0.0, -3.0], [0.0, 0.0, 0.0]]))
    assert p.shape == (2,) and np.all((p > 0) & (p < 1))
    assert verifier.probabilities(np.zeros((0, 3))).shape == (0,)


@pytest.fixture(scope="module")
def trained_verifier(tmp_path_factory):
    out = tmp_path_factory.mktemp("verifier")
    config = VerifierTrainConfig(n_train=60, n_val=30, epochs=2, members=2, device="cpu", workers=1, max_steps=20)
    return out, train_verifier(config, out, log=lambda *a: None)


def test_train_verifier_few_steps_then_deblend(trained_verifier):
    out, weights = trained_verifier
    assert_only_a_verifier_added(weights, WEIGHTS_DIR / "peeling.pt", ("rdn", "counter", "joint"),
                                 len(SPLIT_FEATURE_NAMES))
    summary = json.loads((out / "history.jsonl").read_text().splitlines()[-1])
    assert set(summary["validation"]) == {"0.3", "0.5", "0.7"} and summary["n_train_samples"] > 0
    assert len(list((out / "cache").glob("verifier_*.npz"))) == 2
    model = PeelingDeblender(device="cpu", weights=weights)
    assert model.verifier is not None and not model.give_back_pieces and model.calibration_applies()
    blends = simulate_blends(n=6, n_galaxies=2, seed=5, morphology="realistic")
    # by default every component of a split gets its probability, and nothing is merged
    kept = model.deblend_batch(blends.images, noise=blends.noise_sigma)
    split = [r for r in kept if r.n_components >= 2]
    assert split and all(len(r.info["galaxy_probabilities"]) == r.n_components for r in split)
    assert all(r.info["galaxy_probabilities"][0] == 1.0 and not r.info["split_pieces_merged"] for r in split)
    model.give_back_pieces, model.split_threshold = True, 1.01  # every fainter component is a piece
    results = model.deblend_batch(blends.images, noise=blends.noise_sigma)
    for result in results:
        assert result.n_components == 1
        np.testing.assert_allclose(result.components.sum() + result.residual.sum(), result.blend.sum(), rtol=1e-3)
    merged = [r for r in results if r.info.get("split_pieces_merged")]
    assert merged and all(r.info["galaxy_probabilities"].tolist() == [1.0] for r in merged)
    # a component on a given detection stays, whatever its probability
    first = split[0]
    index = kept.index(first)
    hints = [None] * len(blends.images)
    hints[index] = first.positions[1:]
    again = model.deblend_batch(blends.images, positions=hints, noise=blends.noise_sigma)
    assert again[index].n_components == first.n_components
    # positions that are no (y, x) list: one sentence naming the stamp, no numpy error
    hints[index] = [[1.0, 2.0, 3.0]]
    with pytest.raises(DeblendError, match=f"peeling: positions of stamp {index} have shape \\(1, 3\\): expected"):
        model.deblend_batch(blends.images, positions=hints, noise=blends.noise_sigma)
    with pytest.raises(DeblendError, match="peeling: 2 position lists for 6 stamps"):
        model.deblend_batch(blends.images, positions=hints[:2], noise=blends.noise_sigma)


def test_verifier_figures_count_pieces_and_galaxies_given_back():
    data = {"label": np.array([0, 0, 1, 1, 1.0]), "n_galaxies": np.array([1, 1, 2, 2, 2])}
    figures = verifier_figures(data, np.array([0.1, 0.8, 0.2, 0.9, 0.95]), thresholds=(0.5,))
    assert figures["0.5"]["1_galaxies"]["pieces_given_back"] == 0.5
    assert figures["0.5"]["2_galaxies"]["galaxies_given_back"] == pytest.approx(1 / 3)
    assert figures["0.5"]["1_galaxies"]["galaxies_given_back"] is None


def test_train_verifier_command_and_options_it_does_not_take(capsys, tmp_path):
    assert main(["train", "peeling-verifier", "--blocks", "8", "--out", str(tmp_path)]) == 2
    assert "--blocks: not options of peeling-verifier, which fits the split verifier" in capsys.readouterr().err
    assert main(["train", "peeling-verifier", "--n-train", "5", "--out", str(tmp_path)]) == 2
    assert "--n-train=5: expected at least 10 blends" in capsys.readouterr().err


def test_weights_with_a_verifier_of_other_features_name_the_file_and_the_command(trained_verifier, tmp_path):
    broken = tmp_path / "broken.pt"
    with_other_verifier(trained_verifier[1], len(SPLIT_FEATURE_NAMES) - 1, broken)
    with pytest.raises(DeblendError, match=f"broken.pt: the split verifier takes {len(SPLIT_FEATURE_NAMES) - 1} "
                                           "features.*train peeling-verifier"):
        PeelingDeblender(device="cpu", weights=broken)
