"""The split verifier of the source-finder deblenders (vae, unet): features, training, loading, the catalogue's use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_deblend.cli import main
from napari_deblend.deblenders.base import DeblendError
from napari_deblend.deblenders.split_verifier import SOURCE_SPLIT_FEATURE_NAMES, source_split_features
from napari_deblend.deblenders.vae import WEIGHTS_DIR, VAEDeblender
from napari_deblend.parents import galaxy_scores
from napari_deblend.simulate import simulate_blends
from napari_deblend.training.split_verifier import VerifierTrainConfig, train_verifier

from .verifier_files import assert_only_a_verifier_added, with_other_verifier


@pytest.fixture(scope="module")
def trained_vae_verifier(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae_verifier")
    config = VerifierTrainConfig(model="vae", n_train=60, n_val=30, epochs=2, members=2, device="cpu", workers=1,
                                 max_steps=20, morphology="realistic")  # fmt: skip
    return out, train_verifier(config, out, log=lambda *a: None)


@pytest.fixture(scope="module")
def realistic_pairs():
    return simulate_blends(n=8, n_galaxies=2, seed=11, morphology="realistic")


def test_source_split_features_add_the_finders_map_to_the_split_features():
    yy, xx = np.indices((32, 32))
    blob = lambda y, x, f: (f * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0))[None, None]  # noqa: E731
    components = np.concatenate([blob(16, 12, 100.0), blob(16, 22, 40.0)]).astype(np.float32)
    stamp = components.sum(axis=0) + 0.1
    features = source_split_features(stamp, components, np.array([[16.0, 12.0], [16.0, 22.0]]), 1.0,
                                     np.array([0.97, 0.6]))  # fmt: skip
    assert features.shape == (2, len(SOURCE_SPLIT_FEATURE_NAMES)) and np.isfinite(features).all()
    assert features[:, -2].tolist() == [0.97, 0.6] and features[:, -1].tolist() == [0.97, 0.97]


def test_train_vae_verifier_few_steps_then_the_catalogue_uses_it(trained_vae_verifier, realistic_pairs):
    _out, weights = trained_vae_verifier
    assert_only_a_verifier_added(weights, WEIGHTS_DIR / "vae.pt", ("encoder", "decoder", "deblender"),
                                 len(SOURCE_SPLIT_FEATURE_NAMES))
    verified = VAEDeblender(device="cpu", weights=weights)
    assert verified.verifier is not None and VAEDeblender(device="cpu").verifier is not None  # the shipped one has one
    plain = VAEDeblender(device="cpu")
    plain.verifier = None  # as weights without a verifier
    blends = realistic_pairs
    with_verifier = verified.deblend_batch(blends.images, noise=blends.noise_sigma)
    without = plain.deblend_batch(blends.images, noise=blends.noise_sigma)
    split = [i for i, r in enumerate(without) if r.n_components >= 2]
    assert split
    for i in split:
        a, b = with_verifier[i], without[i]
        np.testing.assert_array_equal(a.components, b.components)  # the verifier only judges the components
        p = a.info["galaxy_probabilities"]
        brightest = int(np.argmax(a.components.reshape(a.n_components, -1).sum(axis=1)))
        assert p.shape == (a.n_components,) and p[brightest] == 1.0 and np.all((p >= 0) & (p <= 1))
        # in a run, a split of a detection alone is decided by the verifier where there is one, else by the finder
        np.testing.assert_array_equal(galaxy_scores(a), p)
        np.testing.assert_array_equal(galaxy_scores(b), b.info["source_probabilities"])
        assert "galaxy_probabilities" not in b.info


def test_a_vae_verifier_of_other_features_names_the_file_and_the_command(trained_vae_verifier, tmp_path):
    broken = tmp_path / "broken.pt"
    checkpoint = with_other_verifier(trained_vae_verifier[1], len(SOURCE_SPLIT_FEATURE_NAMES) - 2, broken)
    with pytest.raises(DeblendError, match=f"vae weights .*broken.pt: the split verifier takes "
                                           f"{len(SOURCE_SPLIT_FEATURE_NAMES) - 2} features.*train vae-verifier"):
        VAEDeblender(device="cpu", weights=broken)
    del checkpoint["split_verifier_config"]
    torch.save(checkpoint, broken)
    with pytest.raises(DeblendError, match="broken.pt: the split verifier has no split_verifier_config"):
        VAEDeblender(device="cpu", weights=broken)


def test_train_unet_verifier_command_names_its_weights_and_refuses_other_options(capsys, tmp_path):
    assert main(["train", "unet-verifier", "--blocks", "8", "--out", str(tmp_path)]) == 2
    assert "--blocks: not options of unet-verifier, which fits the split verifier of the unet weights" in (
        capsys.readouterr().err)
    assert main(["train", "vae-verifier", "--n-train", "5", "--out", str(tmp_path)]) == 2
    assert "--n-train=5: expected at least 10 blends" in capsys.readouterr().err


def test_field_like_verifier_stamps_move_their_galaxies_and_add_a_neighbours(capsys, tmp_path):
    from napari_deblend.training.data_mix import DataMix
    from napari_deblend.training.flux_calibration import deblended_simulations
    from napari_deblend.training.split_verifier import field_like_deblended

    model = VAEDeblender(device="cpu")
    args = (model, {1: 6}, 48, "lsst-i", 123, 1, DataMix("parametric"), "train", lambda *a: None)
    plain = list(deblended_simulations(*args))
    composed = list(field_like_deblended(*args, share=1.0))
    assert len(plain) == len(composed) == 6
    moved = 0
    for (_, plain_result, plain_truth, _), (_, result, truth, _) in zip(plain, composed):
        assert truth.ndim == 2 and truth.shape[1] == 2 and ((truth >= 0) & (truth <= 47)).all()
        moved += len(truth) != len(plain_truth) or not np.allclose(truth[0], plain_truth[0])
        assert not np.array_equal(result.blend, plain_result.blend)  # other noise, galaxies moved
    assert moved >= 5  # up to 12 px each way: a galaxy left where it was is rare
    assert main(["train", "peeling-calibration", "--field-like", "0.5", "--out", str(tmp_path)]) == 2
    assert "--field-like=0.5: only detector and the verifiers have it" in capsys.readouterr().err
