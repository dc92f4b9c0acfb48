"""The vae deblender and the learned source finder: training runs, loadable weights, deblending, bad input.

The training tests run a few steps on a tiny simulated set; the deblending tests use the shipped weights
(the ``vae`` and ``detector`` models are products: they must load and work as shipped).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_deblend.cli import main
from napari_deblend.deblenders import DeblendError, available_deblenders, get_deblender
from napari_deblend.deblenders.detector import SourceFinder, find_peaks, resolve_sources
from napari_deblend.deblenders.vae import VAEDeblender
from napari_deblend.deblenders.vae_nets import Decoder, Encoder, from_asinh, recentre, to_asinh
from napari_deblend.simulate import simulate_blends
from napari_deblend.training.detector import (
    DetectorTrainConfig,
    field_like_batch,
    match_counts,
    train_detector,
)
from napari_deblend.training.unet import UNetBatchMaker
from napari_deblend.training.vae import VAETrainConfig, train_vae


def _quiet(*args):
    pass


@pytest.fixture(scope="module")
def blends():
    return simulate_blends(morphology="parametric", n=6, n_galaxies=2, seed=3)


@pytest.fixture(scope="module")
def vae():
    return get_deblender("vae", device="cpu")


def test_vae_training_runs_both_phases_and_writes_loadable_weights(tmp_path):
    config = VAETrainConfig(max_steps=10, n_train=200, n_val=16, batch_size=8, workers=1, checkpoint_minutes=0.01)
    weights = train_vae(config, tmp_path, log=_quiet)
    assert weights == tmp_path / "vae.pt"
    lines = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert {line["phase"] for line in lines} == {"vae", "deblender"}
    assert all(np.isfinite(line["val_nll"]) and np.isfinite(line["flux_scatter"]) for line in lines)
    assert (tmp_path / "vae_checkpoint.pt").exists() and (tmp_path / "deblender_checkpoint.pt").exists()
    steps = {name: torch.load(tmp_path / f"{name}_checkpoint.pt", weights_only=True)["step"]
             for name in ("vae", "deblender")}
    assert steps == {"vae": 4, "deblender": 6}  # 40 % of the step budget for the VAE
    model = VAEDeblender(device="cpu", weights=weights)
    (result,) = model.deblend_batch(np.zeros((1, 1, 48, 48), np.float32) + 1.0)
    assert result.components.shape[1:] == (1, 48, 48)
    # --init keeps the VAE and fine-tunes the deblending encoder only
    again = train_vae(VAETrainConfig(max_steps=3, n_train=200, n_val=16, batch_size=8, workers=1, init=str(weights)),
                      tmp_path / "fine", log=_quiet)
    before, after = torch.load(weights), torch.load(again)
    for key, value in before["decoder"].items():
        torch.testing.assert_close(after["decoder"][key], value)
    # ... unless given a VAE share: then the VAE is fine-tuned too, and the deblending encoder goes on
    # from its own weights (not reset to the VAE encoder's)
    config = VAETrainConfig(max_steps=4, n_train=200, n_val=16, batch_size=8, workers=1, init=str(weights), vae_share=0.5)
    both = torch.load(train_vae(config, tmp_path / "both", log=_quiet))
    assert any(not torch.equal(both["decoder"][k], v) for k, v in before["decoder"].items())

    def distance(a: dict, b: dict) -> float:
        return sum(float((a[k].float() - b[k].float()).abs().sum()) for k in a if a[k].is_floating_point())

    # two deblending-encoder steps from the --init one leave it closer to that than to the VAE encoder
    assert distance(both["deblender"], before["deblender"]) < distance(both["deblender"], both["encoder"])


def test_detector_training_stores_the_best_threshold(tmp_path):
    config = DetectorTrainConfig(max_steps=5, n_train=200, n_val=16, batch_size=8, workers=1)
    weights = train_detector(config, tmp_path, log=_quiet)
    checkpoint = torch.load(weights)
    assert checkpoint["threshold"] in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    assert set(checkpoint["scores"]) == {"0.2", "0.3", "0.4", "0.5", "0.6", "0.7"}
    assert checkpoint["min_distance"] == 1
    assert SourceFinder("cpu", weights=weights).min_distance == 1


def test_field_like_stamps_put_galaxies_at_the_border_and_drop_those_that_leave():
    """--field-like: own galaxies moved, a neighbour stamp's galaxies added off the centre; targets stay on the light."""
    yy, xx = np.mgrid[:48, :48]
    components = np.zeros((4, 2, 48, 48), np.float32)
    components[:, 0] = 1e5 * np.exp(-((yy - 24.0) ** 2 + (xx - 24.0) ** 2) / 8.0)
    maker = UNetBatchMaker({"components": components, "n_components": np.ones(4, int)}, 446.0, seed=0)
    generator = torch.Generator().manual_seed(1)
    plain = field_like_batch(maker, 32, 0.0, generator, 446.0)
    centre = 23.5  # the galaxy sits at pixel 24, or 23 once flipped
    assert plain["valid"].sum() == 32 and ((plain["positions"][:, 0] - centre).abs() <= 0.5 + 1e-4).all()
    batch = field_like_batch(maker, 64, 1.0, generator, 446.0)
    assert batch["x"].shape == (64, 1, 48, 48) and batch["positions"].shape == (64, 4, 2)
    own, neighbour = batch["positions"][:, 0], batch["positions"][:, 2]
    assert (own - centre).abs().max() <= 12.5 and (own - centre).abs().max() > 0.5
    assert ((neighbour - centre).abs().amax(dim=1) >= 15.5).all()
    inside = ((neighbour >= 0) & (neighbour <= 47)).all(dim=1)
    assert torch.equal(batch["valid"][:, 2], inside) and 0 < int(inside.sum()) < 64
    assert not batch["valid"][:, [1, 3]].any()  # the stamps' empty slots stay empty
    for i in range(64):  # every target sits on its galaxy's light (a bright peak over the noise)
        for y, x in batch["positions"][i][batch["valid"][i]].round().long().tolist():
            assert batch["x"][i, 0, y, x] > 20 * 446.0


def test_shipped_source_finder_finds_both_galaxies_of_separated_pairs(blends):
    finder = SourceFinder("cpu")
    found = finder.find(blends.images, blends.noise_sigma)
    hits = total = 0
    for i, pos in enumerate(found):
        k = int(blends.n_components[i])
        truth = np.array([[row["y"], row["x"]] for row in blends.truth[blends.truth["stamp"] == i]])[:k]
        h, _ = match_counts(pos, truth, radius=2.0)
        hits, total = hits + h, total + k
    assert hits >= total - 2, f"found {hits} of {total} galaxies"


def test_find_peaks_orders_and_refines():
    prob = np.zeros((20, 20))
    prob[5, 5], prob[5, 6] = 0.9, 0.45
    prob[14, 10] = 0.6
    peaks = find_peaks(prob, threshold=0.5)
    assert peaks.shape == (2, 2)
    assert peaks[0, 0] == pytest.approx(5.0) and 5.0 < peaks[0, 1] < 6.0  # pulled towards its neighbour
    np.testing.assert_allclose(peaks[1], [14.0, 10.0])
    assert find_peaks(np.zeros((8, 8)), 0.5).shape == (0, 2)


def test_find_peaks_keeps_galaxies_two_pixels_apart():
    prob = np.zeros((12, 12))
    prob[6, 4], prob[6, 5], prob[6, 6] = 0.9, 0.6, 0.8  # two centres 2 px apart, a saddle between
    np.testing.assert_allclose(find_peaks(prob, 0.5, min_distance=1)[:, 0], [6.0, 6.0])
    assert len(find_peaks(prob, 0.5, min_distance=1)) == 2
    assert len(find_peaks(prob, 0.5, min_distance=2)) == 1  # the old 5x5 box merged them
    assert SourceFinder("cpu").min_distance == 1  # as shipped


def test_recentre_and_paste_round_trip():
    from napari_deblend.deblenders.vae import _paste

    images = torch.arange(2 * 60 * 50, dtype=torch.float32).reshape(2, 1, 60, 50)
    crops, offsets = recentre(images, torch.tensor([[30.2, 20.7], [3.0, 47.0]]))
    assert crops.shape == (2, 1, 48, 48)
    assert crops[0, 0, 24, 24] == images[0, 0, 30, 21]
    assert crops[1, 0, 24, 24] == images[1, 0, 3, 47] and crops[1, 0, 0, 0] == 0  # beyond the image: zeros
    back = _paste(crops.numpy(), offsets.numpy(), (2, 1, 60, 50))
    assert back[0, 0, 30, 21] == images[0, 0, 30, 21] and back[1, 0, 3, 47] == images[1, 0, 3, 47]
    assert back[0, 0, 0, 0] == 0  # outside the crop


def test_asinh_space_round_trip():
    sigma = torch.tensor(445.0).view(1, 1, 1, 1)
    x = torch.tensor([0.0, 100.0, 1e4, 1e6]).view(1, 1, 1, 4)
    image, pixel_sigma = from_asinh(to_asinh(x, sigma), torch.full_like(x, -5.0), sigma)
    torch.testing.assert_close(image, x, rtol=1e-4, atol=1e-2)
    assert torch.all(pixel_sigma[..., 1:] > pixel_sigma[..., :-1])  # brighter pixels, larger sigma in electrons
    enc, dec = Encoder(), Decoder()
    mean, log_var = enc(torch.zeros(2, 2, 48, 48))
    assert mean.shape == (2, 32)
    out_mean, out_log_sigma = dec(mean)
    assert out_mean.shape == out_log_sigma.shape == (2, 1, 48, 48)


def test_vae_deblends_simulated_pairs(vae, blends):
    results = vae.deblend_batch(blends.images, noise=blends.noise_sigma)
    good = 0
    for i, result in enumerate(results):
        k = result.n_components
        assert result.components.shape == (k, 1, 48, 48)
        sig = result.info["component_sigma"]
        assert sig.shape == result.components.shape and np.all(sig >= 0)
        assert result.info["flux_sigma"].shape == (k,) and np.all(result.info["flux_sigma"] > 0)
        assert result.info["positions_from"] == "detector"
        true = blends.components[i, :2].sum(axis=(1, 2, 3))
        fluxes = np.sort(result.fluxes[:, 0])[::-1]
        if k == 2 and np.all(np.abs(fluxes - np.sort(true)[::-1]) / np.sort(true)[::-1] < 0.3):
            good += 1
        np.testing.assert_allclose(result.residual, result.blend - result.components.sum(0), atol=1e-2)
    assert good >= 4, f"{good} of 6 blends with both fluxes within 30%"


def test_vae_keeps_given_positions_in_order(vae, blends):
    truth = blends.truth[blends.truth["stamp"] == 0]
    given = np.array([[row["y"], row["x"]] for row in truth])[::-1]  # fainter first
    (result,) = vae.deblend_batch(blends.images[:1], positions=[given], noise=blends.noise_sigma)
    np.testing.assert_allclose(result.positions, given)
    assert result.info["positions_from"] == "given"


def test_sources_fall_back_to_the_brightest_pixel():
    finder = SourceFinder("cpu")
    stamps = np.zeros((1, 1, 32, 32), np.float32)
    ((pos, origin),) = resolve_sources("vae", stamps, None, np.array([445.0]), finder)
    assert origin == "peak" and pos.shape == (1, 2)


def test_vae_bad_input_and_weights(vae, tmp_path):
    with pytest.raises(DeblendError, match="takes 1 band"):
        vae.deblend_batch(np.zeros((1, 2, 48, 48), np.float32))
    with pytest.raises(DeblendError, match="too small"):
        vae.deblend_batch(np.zeros((1, 1, 8, 8), np.float32))
    stamp = np.zeros((1, 1, 48, 48), np.float32)
    stamp[0, 0, 3, 3] = np.inf
    with pytest.raises(DeblendError, match="NaN"):
        vae.deblend_batch(stamp)
    with pytest.raises(DeblendError, match="outside the 48x48 stamp"):
        vae.deblend_batch(np.zeros((1, 1, 48, 48), np.float32), positions=[np.array([[10.0, -4.0]])])
    with pytest.raises(DeblendError, match="nope.pt are missing.*napari-deblend train vae"):
        VAEDeblender(device="cpu", weights=tmp_path / "nope.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x00garbage")
    with pytest.raises(DeblendError, match="broken.pt are corrupted.*napari-deblend train vae"):
        VAEDeblender(device="cpu", weights=broken)
    with pytest.raises(DeblendError, match="nope.pt are missing.*napari-deblend train detector"):
        SourceFinder("cpu", weights=tmp_path / "nope.pt")
    with pytest.raises(DeblendError, match="'gpu7' is not available on this machine"):
        get_deblender("vae", device="gpu7")


def test_registry_and_train_command(capsys, tmp_path):
    assert "vae" in available_deblenders()
    assert main(["train", "vae", "--no-symmetric", "--out", str(tmp_path)]) == 2
    assert "--no-symmetric" in capsys.readouterr().err
    assert main(["train", "detector", "--minutes", "0", "--out", str(tmp_path)]) == 2


def test_sigma_image_becomes_a_layer_and_amplitudes_are_fitted(vae, blends):
    from napari_deblend.deblenders.vae import fit_amplitudes
    from napari_deblend.layers import deblend_result_layers

    (result,) = vae.deblend_batch(blends.images[:1], noise=blends.noise_sigma)
    assert result.info["pieces_to_host"] is True  # runs and the viewer give its pieces' light to their galaxy
    layers = {kwargs["name"]: (data, kind) for data, kwargs, kind in deblend_result_layers(result, "vae")}
    data, kind = layers["blend 0 · vae · sigma"]
    assert kind == "image" and data.shape == (48, 48) and np.all(data >= 0)
    expected = np.sqrt((result.info["component_sigma"][:, 0].astype(np.float64) ** 2).sum(axis=0))
    np.testing.assert_allclose(data, expected, rtol=1e-5)
    # the fitted sum matches the stamp better than any other scaling of the same shapes (without the flux
    # re-distribution, which rescales the components afterwards)
    drawn_only = VAEDeblender(device="cpu")  # its own instance: get_deblender's is shared
    drawn_only.redistribute_flux = False
    (plain,) = drawn_only.deblend_batch(blends.images[:1], noise=blends.noise_sigma)
    gains = fit_amplitudes(plain.blend, plain.components)
    np.testing.assert_allclose(gains, 1.0, atol=1e-3)  # already applied
    shapes = np.stack([np.ones((1, 8, 8)), np.pad(np.ones((1, 4, 4)), ((0, 0), (2, 2), (2, 2)))])
    blend = 3.0 * shapes[0] + 0.7 * shapes[1]
    np.testing.assert_allclose(fit_amplitudes(blend, shapes), [2.0, 0.7 + 0.0], atol=1e-9)  # 3 clipped to 2
