"""The unet deblender: a few training steps give loadable weights that deblend; resume; bad input is clear.

Nothing here needs the shipped ``unet.pt``: the weights come from a few-step training run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_deblend.cli import main
from napari_deblend.deblenders import DeblendError, available_deblenders
from napari_deblend.deblenders.unet import UNetDeblender
from napari_deblend.deblenders.unet_nets import HINT_FLOOR, UNet, gaussian_blobs
from napari_deblend.simulate import simulate_blends
from napari_deblend.training.unet import (
    UNetBatchMaker,
    UNetTrainConfig,
    component_stats,
    mask_target,
    train_unet,
)

SIGMA = 446.0


def _quiet(*args):
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A unet trained for a few steps on a tiny simulated set; returns (run directory, weights)."""
    out = tmp_path_factory.mktemp("unet_run")
    config = UNetTrainConfig(max_steps=6, n_train=200, n_val=32, batch_size=16, workers=1, checkpoint_minutes=0.01)
    weights = train_unet(config, out, log=_quiet)
    return out, weights


@pytest.fixture(scope="module")
def model(trained):
    return UNetDeblender(device="cpu", weights=trained[1])


@pytest.fixture(scope="module")
def blends():
    return simulate_blends(morphology="parametric", n=4, n_galaxies=2, seed=1)


def _fake_components(n=32, size=48, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    comps = np.zeros((n, 3, size, size), np.float32)
    k = rng.integers(0, 4, n)
    for i in range(n):
        for j in range(k[i]):
            y, x = rng.uniform(12, 36, 2)
            flux = 10 ** rng.uniform(4.5, 6)
            comps[i, j] = flux / (2 * np.pi * 4) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8)
    return {"components": comps, "n_components": k}


def _check_result(result, stamp, k=None):
    h, w = stamp.shape[-2:]
    n = result.n_components
    assert n >= 1 if k is None else n == k
    assert result.components.shape == (n, 1, h, w)
    assert result.positions.shape == (n, 2)
    assert result.masks.shape == (n, h, w) and result.masks.dtype == bool
    soft = result.info["soft_masks"]
    assert soft.shape == (n, h, w) and soft.dtype == np.float32
    assert (soft >= 0).all() and (soft.sum(axis=0) <= 1 + 1e-5).all()
    np.testing.assert_array_equal(result.masks, soft > 0.5)
    flux = result.info["flux_pred"]
    assert flux.shape == (n,) and np.all(flux > 0)
    np.testing.assert_allclose(result.components.sum(axis=(1, 2, 3)), flux, rtol=1e-3)
    assert np.all((result.positions >= -0.5) & (result.positions <= np.array([h, w]) - 0.5))
    np.testing.assert_allclose(result.residual, result.blend - result.components.sum(0), atol=1e-2)
    assert result.quality == ""
    assert result.model.startswith("unet")


def test_training_writes_weights_history_and_checkpoint(trained):
    out, weights = trained
    assert weights == out / "unet.pt" and weights.exists()
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] >= 1 and {"unet", "unet_live", "opt", "unet_config"} <= set(checkpoint)
    lines = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert lines, "a validation line at the end of training"
    for key in ("flux_bias", "flux_scatter", "mask_iou", "val_mask_loss", "val_flux_loss"):
        assert np.isfinite(lines[-1][key]), key
    assert 0 <= lines[-1]["mask_iou"] <= 1
    assert json.loads((out / "config.json").read_text())["n_train"] == 200


def test_deblends_with_given_positions(model, blends):
    positions = []
    for i in range(len(blends)):
        rows = blends.truth[blends.truth["stamp"] == i]
        positions.append(np.stack([rows["y"], rows["x"]], axis=1))
    results = model.deblend_batch(blends.images, positions=positions, noise=blends.noise_sigma)
    assert len(results) == 4
    for result, stamp, given in zip(results, blends.images, positions):
        _check_result(result, stamp, k=2)
        np.testing.assert_allclose(result.positions, given)  # given order kept
        assert result.info["positions_from"] == "given"


def test_deblends_without_positions(model, blends):
    before = blends.images.copy()
    results = model.deblend_batch(blends.images, noise=blends.noise_sigma)
    np.testing.assert_array_equal(blends.images, before)
    assert len(results) == 4
    for result, stamp in zip(results, blends.images):
        _check_result(result, stamp)
        assert result.info["positions_from"] in ("detector", "peak")
        assert np.all(np.diff(result.info["flux_pred"]) <= 0)  # detected: brightest first


def test_found_sources_carry_the_finders_probability_given_ones_do_not(model, blends):
    results = model.deblend_batch(blends.images, noise=blends.noise_sigma)
    split = [r for r in results if r.n_components >= 2]
    assert split  # the source finder sees both galaxies of most of these pairs
    for result in split:
        probabilities = result.info["source_probabilities"]
        assert probabilities.shape == (result.n_components,) and np.all((probabilities > 0) & (probabilities <= 1))
        assert result.info["min_split_probability"] == UNetDeblender.min_split_probability
    positions = [np.stack([t["y"], t["x"]], axis=1) for t in (blends.truth[blends.truth["stamp"] == i]
                                                              for i in range(len(blends)))]
    given = model.deblend_batch(blends.images, positions=positions, noise=blends.noise_sigma)
    assert not any("source_probabilities" in r.info for r in given)  # the caller's positions are trusted


def test_empty_stamp_falls_back_to_the_peak(model):
    stamp = np.random.default_rng(0).normal(0, SIGMA, (1, 1, 32, 40)).astype(np.float32)  # not a multiple of 8
    result = model.deblend_batch(stamp, noise=SIGMA)[0]
    _check_result(result, stamp[0])
    assert result.info["positions_from"] in ("detector", "peak")
    pure_zero = model.deblend_batch(np.zeros((1, 1, 16, 16), np.float32), noise=SIGMA)[0]
    assert pure_zero.info["positions_from"] == "peak" and pure_zero.n_components == 1
    assert np.isfinite(pure_zero.components).all()


def test_resume_continues_the_run(trained):
    out, _ = trained
    first = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert first == 6
    config = UNetTrainConfig(max_steps=10, n_train=200, n_val=32, batch_size=16, workers=1, checkpoint_minutes=0.01)
    weights = train_unet(config, out, resume=True, log=_quiet)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 10  # the step budget counts them all
    assert len((out / "history.jsonl").read_text().splitlines()) >= 2
    UNetDeblender(device="cpu", weights=weights)


def test_batches_targets_and_positions():
    data = _fake_components()
    maker = UNetBatchMaker(data, sigma=SIGMA, seed=3)
    assert len(maker) == int((data["n_components"] >= 1).sum())
    batch = maker.batch(32, jitter=0.0)
    rows = torch.arange(32)
    assert torch.all(batch["target"] < batch["valid"].sum(dim=1))
    target = batch["truth"][rows, batch["target"]].numpy()
    np.testing.assert_allclose(batch["flux"].numpy(), target.sum(axis=(1, 2)), rtol=1e-4)
    # positions follow the flips: the centroid of the flipped truth
    _, centroid = component_stats(target[:, None])
    np.testing.assert_allclose(batch["positions"][rows, batch["target"]].numpy(), centroid[:, 0], atol=1e-3)
    share, weight = mask_target(batch)
    assert share.min() >= 0 and share.max() <= 1 and share.max() > 0.9
    assert set(torch.unique(weight).tolist()) <= {1.0, 6.0}
    noise = batch["x"] - batch["truth"].sum(dim=1, keepdim=True)
    assert abs(float(noise[weight == 1].std()) - SIGMA) / SIGMA < 0.1


def test_network_size_hints_and_odd_shapes():
    net = UNet().eval()
    n_params = sum(p.numel() for p in net.parameters())
    assert 3e5 <= n_params <= 6e5
    blobs = gaussian_blobs(torch.tensor([[10.0, 20.0]]), (48, 48))
    assert blobs.max() == pytest.approx(1.0, abs=1e-3)
    nonzero = blobs[blobs > 0]
    assert nonzero.min() >= HINT_FLOOR  # no denormal-sized values
    with torch.no_grad():
        logit, log_flux = net(torch.randn(3, 4, 37, 21))
    assert logit.shape == (3, 1, 37, 21) and log_flux.shape == (3,)


def test_registry_and_train_command(capsys, tmp_path):
    assert "unet" in available_deblenders()
    assert main(["train", "unet", "--no-symmetric", "--out", str(tmp_path)]) == 2
    assert "--no-symmetric" in capsys.readouterr().err
    import argparse
    import shlex

    from napari_deblend.commands import train

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    args = parser.parse_args(["train", "unet", "--minutes", "20", "--out", "runs/unet", "--batch-size", "64"])
    again = parser.parse_args(shlex.split(train.training_command(args))[1:])
    assert vars(again) | {"install": False} == vars(args) | {"install": False}


def test_bad_input_and_weights(tmp_path, model, trained):
    with pytest.raises(DeblendError, match="takes 1 band"):
        model.deblend_batch(np.zeros((1, 2, 48, 48), np.float32))
    with pytest.raises(DeblendError, match="too small"):
        model.deblend_batch(np.zeros((1, 1, 8, 8), np.float32))
    stamp = np.zeros((1, 1, 48, 48), np.float32)
    stamp[0, 0, 5, 5] = np.nan
    with pytest.raises(DeblendError, match="NaN"):
        model.deblend_batch(stamp)
    good = np.zeros((1, 1, 48, 48), np.float32)
    with pytest.raises(DeblendError, match="outside the 48x48 stamp"):
        model.deblend_batch(good, positions=[np.array([[60.0, 10.0]])])
    with pytest.raises(DeblendError, match="expected \\(K, 2\\)"):
        model.deblend_batch(good, positions=[np.zeros(3)])
    with pytest.raises(DeblendError, match="one per stamp"):
        model.deblend_batch(good, positions=[None, None])
    missing = tmp_path / "nope.pt"
    with pytest.raises(DeblendError, match="nope.pt are missing.*napari-deblend train unet"):
        UNetDeblender(device="cpu", weights=missing)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(DeblendError, match="broken.pt are corrupted.*napari-deblend train unet"):
        UNetDeblender(device="cpu", weights=broken)
    wrong = tmp_path / "wrong.pt"
    torch.save({"something": 1}, wrong)
    with pytest.raises(DeblendError, match="wrong.pt are corrupted or not a unet checkpoint"):
        UNetDeblender(device="cpu", weights=wrong)
    resized = tmp_path / "resized.pt"
    checkpoint = torch.load(trained[1], weights_only=True)
    checkpoint["unet_config"] = {**checkpoint["unet_config"], "widths": [8, 16, 32]}
    torch.save(checkpoint, resized)
    with pytest.raises(DeblendError, match="resized.pt do not fit the network"):
        UNetDeblender(device="cpu", weights=resized)
