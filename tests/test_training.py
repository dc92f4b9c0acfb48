"""Training runs end to end for a few steps, checkpoints, resumes, and writes loadable weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_deblend.cli import main
from napari_deblend.deblenders.peeling import PeelingDeblender
from napari_deblend.training.peeling import (
    AMBIGUOUS_RATIO,
    BatchMaker,
    PeelingTrainConfig,
    image_loss,
    rdn_loss,
    train_peeling,
)


def _fake_components(n=64, size=48, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    comps = np.zeros((n, 3, size, size), np.float32)
    k = rng.integers(1, 4, n)
    for i in range(n):
        fluxes = np.sort(10 ** rng.uniform(4.5, 6, k[i]))[::-1]
        for j in range(k[i]):
            y, x = rng.uniform(16, 32, 2)
            comps[i, j] = fluxes[j] / (2 * np.pi * 4) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8)
    return {"components": comps, "n_components": k}


def test_batches_hold_the_brightest_remaining_galaxy():
    maker = BatchMaker(_fake_components(), sigma=446.0, seed=1)
    batch = maker.batch(64, peel_probability=0.5, empty_fraction=0.2)
    f0 = batch["target"].sum(dim=(1, 2, 3))
    f1 = batch["second"].sum(dim=(1, 2, 3))
    assert torch.all(f0 >= f1)
    assert torch.all((batch["count"] == 0) == (f0 == 0))
    assert batch["count"].max() <= 3 and (batch["count"] == 0).any()
    noise = (batch["x"] - batch["target"] - batch["second"])[batch["count"] == 0]
    assert abs(float(noise.std()) - 446.0) / 446.0 < 0.1


def test_symmetric_loss_does_not_punish_the_other_equal_galaxy():
    maker = BatchMaker(_fake_components(), sigma=446.0, seed=2)
    batch = maker.batch(32)
    scale = torch.full((32, 1, 1, 1), 1e4)
    pred = batch["second"] / scale  # the network returned the second galaxy
    batch["ratio"] = torch.full((32,), AMBIGUOUS_RATIO + 0.1)
    assert float(rdn_loss(pred, batch, scale, symmetric=True)) < float(rdn_loss(pred, batch, scale, symmetric=False))


def test_flux_weight_adds_the_relative_flux_error():
    maker = BatchMaker(_fake_components(), sigma=446.0, seed=3)
    batch = maker.batch(16)
    has = batch["count"] > 0
    target, sigma = batch["target"][has], batch["sigma"][has]
    scale = torch.full((len(target), 1, 1, 1), 1e4)
    pred = 0.9 * target / scale  # every galaxy 10 % too faint
    plain = image_loss(pred, target, scale, sigma)
    with_flux = image_loss(pred, target, scale, sigma, flux_weight=0.05)
    torch.testing.assert_close(with_flux - plain, torch.full_like(plain, 0.05 * 0.1), rtol=1e-3, atol=1e-6)
    assert torch.equal(image_loss(target / scale, target, scale, sigma, flux_weight=0.05),
                       image_loss(target / scale, target, scale, sigma))


def test_train_few_steps_resume_and_load(tmp_path, monkeypatch):
    from napari_deblend.training import peeling as training

    monkeypatch.setattr(training, "load_or_simulate", lambda n, *args, **kwargs: _fake_components(n))
    config = PeelingTrainConfig(max_steps=8, n_train=64, n_val=32, batch_size=8, checkpoint_minutes=0.01)
    weights = train_peeling(config, tmp_path, log=lambda *a: None)
    assert (tmp_path / "checkpoint.pt").exists()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 8
    config.max_steps = 12  # a step budget counts the steps made before the resume
    train_peeling(config, tmp_path, resume=True, log=lambda *a: None)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 12
    model = PeelingDeblender(device="cpu", weights=weights)
    out = model.deblend_batch(_fake_components(2)["components"].sum(axis=1, keepdims=True))
    assert len(out) == 2
    assert json.loads((tmp_path / "config.json").read_text())["max_steps"] == 12


def test_train_command_bad_input(capsys, tmp_path):
    assert main(["train", "nosuchmodel", "--out", str(tmp_path)]) == 2
    assert "cannot train 'nosuchmodel'" in capsys.readouterr().err
    assert main(["train", "peeling", "--minutes", "0", "--out", str(tmp_path)]) == 2
    assert "--minutes=0" in capsys.readouterr().err
    assert main(["train", "unet", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert "--steps=0: expected a positive number of optimiser steps" in capsys.readouterr().err
    assert main(["train", "peeling-calibration", "--steps", "-3", "--out", str(tmp_path)]) == 2
    assert "--steps=-3" in capsys.readouterr().err
    assert main(["train", "unet", "--flux-weight", "0.1", "--out", str(tmp_path)]) == 2
    assert "only peeling" in capsys.readouterr().err
    assert main(["train", "unet", "--refine-width", "8", "--out", str(tmp_path)]) == 2
    assert "only peeling" in capsys.readouterr().err
    assert main(["train", "peeling", "--refine-width", "-1", "--out", str(tmp_path)]) == 2
    assert "--refine-width=-1" in capsys.readouterr().err
    assert main(["train", "peeling", "--phases", "0", "0", "0", "--out", str(tmp_path)]) == 2
    assert "--phases 0.0 0.0 0.0" in capsys.readouterr().err
    assert main(["train", "peeling", "--blocks", "0", "--out", str(tmp_path)]) == 2
    assert "--blocks=0" in capsys.readouterr().err
    assert main(["train", "vae", "--blocks", "8", "--out", str(tmp_path)]) == 2
    assert "only peeling" in capsys.readouterr().err
    assert main(["train", "vae", "--vae-share", "1", "--out", str(tmp_path)]) == 2
    assert "--vae-share=1.0" in capsys.readouterr().err
    assert main(["train", "unet", "--vae-share", "0.2", "--out", str(tmp_path)]) == 2
    assert "only vae" in capsys.readouterr().err
    assert main(["train", "unet", "--field-like", "0.5", "--out", str(tmp_path)]) == 2
    assert "only detector" in capsys.readouterr().err
    assert main(["train", "detector", "--field-like", "1.5", "--out", str(tmp_path)]) == 2
    assert "--field-like=1.5" in capsys.readouterr().err


def test_recorded_training_command_reproduces_the_options():
    import argparse
    import shlex

    from napari_deblend.commands import train

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    args = parser.parse_args(["train", "peeling", "--minutes", "12.5", "--out", "runs/x", "--no-symmetric",
                              "--flux-weight", "0.05", "--refine-width", "8", "--phases", "0.8", "0.05", "0.15",
                              "--blocks", "9", "--steps", "500"])
    again = parser.parse_args(shlex.split(train.training_command(args))[1:])
    assert vars(again) | {"install": False} == vars(args) | {"install": False}
    assert again.install
    args = parser.parse_args(["train", "detector", "--minutes", "30", "--out", "runs/d", "--field-like", "0.5"])
    again = parser.parse_args(shlex.split(train.training_command(args))[1:])
    assert again.field_like == 0.5 and vars(again) | {"install": False} == vars(args) | {"install": False}


def _warm_started_from(given, started, path) -> tuple[str, torch.Tensor]:
    """Warm-start ``started`` from ``given`` saved at ``path``; check both compute the same; the log and an input."""
    from napari_deblend.deblenders.nets import GalaxyCounter
    from napari_deblend.training.peeling import save_checkpoint, warm_start

    save_checkpoint(path, given, GalaxyCounter(), {})
    messages = []
    warm_start(started, GalaxyCounter(), path, log=messages.append)
    x = torch.rand(3, 2, 40, 44)
    with torch.no_grad():
        torch.testing.assert_close(started.eval()(x), given.eval()(x))
    return messages[0], x


def test_refiner_grafted_on_weights_without_one_starts_from_their_output(tmp_path):
    from napari_deblend.deblenders.nets import RDN, GalaxyCounter
    from napari_deblend.training.peeling import warm_start

    torch.manual_seed(0)
    plain = RDN()
    assert "refine_width" not in plain.config  # older weights keep loading as they are
    grafted = RDN(refine_width=8)
    message, x = _warm_started_from(plain, grafted, tmp_path / "plain.pt")
    assert "refiner grafted on" in message
    # the refiner learns: after one step its output is no longer zero
    grafted.train()
    torch.optim.SGD(grafted.refiner.parameters(), lr=0.1).zero_grad()
    loss = (grafted(x) - 1.0).abs().mean()
    loss.backward()
    assert grafted.refiner.out.weight.grad.abs().sum() > 0
    with pytest.raises(Exception, match="networks of another size"):
        warm_start(RDN(features=16, refine_width=8), GalaxyCounter(), tmp_path / "plain.pt")


def test_deeper_rdn_grown_from_shallower_weights_starts_from_their_output(tmp_path):
    from napari_deblend.deblenders.nets import RDN, GalaxyCounter
    from napari_deblend.training.peeling import warm_start

    torch.manual_seed(0)
    shallow = RDN(n_blocks=2)
    with torch.no_grad():  # trained-looking weights: every block and fusion does something
        for parameter in shallow.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    deep = RDN(n_blocks=4)
    message, x = _warm_started_from(shallow, deep, tmp_path / "shallow.pt")
    assert "2 residual dense blocks grown to 4" in message
    # without --blocks a run trains as many blocks as the weights it starts from (the fine-tune path)
    from napari_deblend.training.peeling import rdn_blocks

    assert rdn_blocks(PeelingTrainConfig(init=str(tmp_path / "shallow.pt")), tmp_path, resume=False) == 2
    assert rdn_blocks(PeelingTrainConfig(init=str(tmp_path / "shallow.pt"), blocks=4), tmp_path, resume=False) == 4
    assert rdn_blocks(PeelingTrainConfig(), tmp_path, resume=False) == 6
    # the added blocks learn: first the global fusion's new inputs, then (a step later) the blocks themselves
    deep.train()
    optimiser = torch.optim.SGD(deep.parameters(), lr=0.01)
    (deep(x) - 1.0).abs().mean().backward()
    assert deep.global_fuse[0].weight.grad[:, 2 * deep.config["features"]:].abs().sum() > 0
    optimiser.step()
    optimiser.zero_grad()
    (deep(x) - 1.0).abs().mean().backward()
    assert deep.blocks[3].fuse.weight.grad.abs().sum() > 0
    # grown and grafted at once: still the given weights' output
    message, _ = _warm_started_from(shallow, RDN(n_blocks=3, refine_width=8), tmp_path / "shallow.pt")
    assert "refiner grafted on" in message and "grown to 3" in message
    # shrinking, another width or a refiner of another width is not a warm start
    with pytest.raises(Exception, match="networks of another size"):
        _warm_started_from(RDN(n_blocks=2, refine_width=8), RDN(n_blocks=4, refine_width=16), tmp_path / "r8.pt")
    with pytest.raises(Exception, match="networks of another size"):
        warm_start(RDN(n_blocks=1), GalaxyCounter(), tmp_path / "shallow.pt")
    with pytest.raises(Exception, match="networks of another size"):
        warm_start(RDN(n_blocks=4, growth=8), GalaxyCounter(), tmp_path / "shallow.pt")


def test_noise_rms_image_loss_is_the_residual_in_noise_units():
    from napari_deblend.training.peeling import NOISE_RMS_WEIGHT, image_loss

    target = torch.zeros(2, 1, 4, 4)
    target[:, :, 1, 1] = 300.0  # variance there: sigma² + 300
    scale = torch.full((2, 1, 1, 1), 10.0)
    sigma = torch.full((2,), 10.0)
    assert torch.allclose(image_loss(target / scale, target, scale, sigma, kind="noise-rms"),
                          torch.full((2,), NOISE_RMS_WEIGHT * 1e-3), atol=1e-6)
    pred = target / scale
    pred[0, 0, 0, 0] += 2.0  # 20 e- on a sky-only pixel: 2 sigma, in one of 16 pixels
    pred[1, 0, 1, 1] += 4.0  # 40 e- on the source pixel: 40 / sqrt(400) = 2 sigma too
    loss = image_loss(pred, target, scale, sigma, kind="noise-rms")
    expected = NOISE_RMS_WEIGHT * np.sqrt(4.0 / 16 + 1e-6)
    np.testing.assert_allclose(loss.numpy(), [expected, expected], rtol=1e-4)
    # the L1 loss counts the two differently (it ignores the noise)
    l1 = image_loss(pred, target, scale, sigma, kind="l1")
    assert not torch.allclose(l1[0], l1[1])


def test_image_loss_option_reaches_the_config_and_the_model_cards_command(tmp_path):
    import argparse

    from napari_deblend.commands.train import training_command

    args = argparse.Namespace(model="peeling", preset="lsst-i", minutes=1.0, device="cpu", out="runs/x",
                              n_train=10, seed=0, workers=1, batch_size=None, lr=1e-3, init=None,
                              no_symmetric=False, flux_weight=0.0, refine_width=0, phases=None,
                              real_galaxies=None, image_loss="noise-rms", blocks=None)
    assert "--image-loss noise-rms" in training_command(args)
    assert main(["train", "unet", "--image-loss", "noise-rms", "--out", str(tmp_path)]) == 2


def test_validation_loss_is_the_loss_being_trained():
    from napari_deblend.deblenders.nets import RDN, GalaxyCounter, normalise
    from napari_deblend.training.peeling import BatchMaker, image_loss, validate

    val = BatchMaker(_fake_components(16), sigma=400.0, seed=1).batch(16)
    rdn, counter = RDN(), GalaxyCounter()
    with torch.no_grad():
        rdn.eval()
        inp, scale = normalise(val["x"], val["sigma"])
        pred = rdn(inp)
        has = val["count"] > 0
        expected = {kind: float(image_loss(pred[has], val["target"][has], scale[has], val["sigma"][has], kind=kind)
                                .mean()) for kind in ("l1", "noise-rms")}
    for kind in ("l1", "noise-rms"):
        # symmetric in near-equal pairs: at most the loss against the brightest alone
        assert validate(rdn, counter, val, kind)["val_loss"] <= expected[kind] + 1e-6
    assert validate(rdn, counter, val, "noise-rms")["val_loss"] != pytest.approx(validate(rdn, counter, val)["val_loss"])
