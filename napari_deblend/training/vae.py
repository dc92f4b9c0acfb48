"""Training of the ``vae`` deblender (Arcelin et al. 2021), in two phases, CPU-friendly.

Data: the cached noiseless components of the peeling training
(:func:`~napari_deblend.training.peeling.load_or_simulate`), drawn by
:class:`~napari_deblend.training.unet.UNetBatchMaker` (fresh noise, flips, one
target galaxy per stamp, its centroid jittered by :data:`POSITION_JITTER`
pixels so that the networks tolerate the source finder's positions). Every
stamp is re-centred on the (jittered) target position (:func:`recentre`).

1. **VAE** (fraction :data:`VAE_FRACTION` of the time): the encoder sees the
   target galaxy *alone* with fresh noise, the decoder reconstructs it
   noiseless; loss = Gaussian negative log-likelihood of the noiseless galaxy
   under the decoder's mean and sigma in asinh space (summed over pixels)
   + ``beta`` KL (``beta`` = :data:`BETA`, a small value: sharp reconstructions)
   + the relative L1 error in electrons (:func:`relative_l1`, times the pixel
   count), which the asinh-space likelihood alone under-weighs in the bright
   core where the flux is.
2. **Deblending encoder** (the rest): a second encoder (initialised from the
   first) sees the noisy *blend* re-centred on the target, the decoder is
   frozen, and the same likelihood and L1 terms of the target's noiseless
   image are minimised through it (latent mean, no sampling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..deblenders.nets import normalise
from ..deblenders.vae_nets import STAMP, Decoder, Encoder, from_asinh, recentre, to_asinh
from .config import TrainConfig
from .loop import Phase, run_phase, save_weights
from .peeling import VALIDATION_SEED, prepare_run
from .unet import UNetBatchMaker

POSITION_JITTER = 0.7  # pixels
BETA = 0.1
FLUX_WEIGHT = 1.0  # times the pixel count: the relative L1 term weighs about as much as the likelihood
VAE_FRACTION = 0.4


@dataclass
class VAETrainConfig(TrainConfig):
    """Options of ``napari-deblend train vae``: the shared ones and the latent size.

    ``init`` warm-starts the VAE and the deblending encoder from these vae weights;
    ``vae_share`` is the share of the budget spent on the VAE phase (default
    :data:`VAE_FRACTION`, or 0 with ``init``: the VAE stays and only the deblending
    encoder is fine-tuned; give a share to fine-tune the VAE on new morphologies too).
    """

    latent: int = 32
    vae_share: float | None = None


def relative_l1(image: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-stamp ``sum |image - truth| / sum truth`` ``(B,)`` in electrons (weighs the bright core)."""
    return (image - truth).abs().flatten(1).sum(dim=1) / truth.flatten(1).sum(dim=1).clamp(min=1.0)


def gaussian_nll(mean: torch.Tensor, log_sigma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-stamp negative log-likelihood (pixels summed, constant dropped) ``(B,)``."""
    return (0.5 * ((target - mean) / torch.exp(log_sigma)) ** 2 + log_sigma).flatten(1).sum(dim=1)


class VAEBatches:
    """Re-centred training pairs: (noisy isolated target, noisy blend) inputs and the noiseless target."""

    def __init__(self, data: dict[str, np.ndarray], sigma: float, seed: int) -> None:
        self.maker = UNetBatchMaker(data, sigma, seed)
        self.generator = torch.Generator().manual_seed(seed + 17)

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        """``isolated``, ``blend``, ``truth`` ``(B, 1, 48, 48)`` re-centred; ``sigma`` ``(B,)``."""
        b = self.maker.batch(size, jitter=POSITION_JITTER)
        rows = torch.arange(size)
        truth = b["truth"][rows, b["target"]].unsqueeze(1)
        centre = b["positions"][rows, b["target"]]
        noise = torch.randn(truth.shape, generator=self.generator)
        isolated = truth + noise * (b["sigma"].view(-1, 1, 1, 1) ** 2 + truth.clamp(min=0)).sqrt()
        stacked, _ = recentre(torch.cat([isolated, b["x"], truth], dim=1), centre)
        return {"isolated": stacked[:, :1].contiguous(), "blend": stacked[:, 1:2].contiguous(),
                "truth": stacked[:, 2:].contiguous(), "sigma": b["sigma"]}


def reconstruction(encoder: Encoder, decoder: Decoder, x: torch.Tensor, sigma: torch.Tensor, sample: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoder mean, log sigma (asinh space) and the KL term ``(B,)`` for inputs ``x`` in electrons."""
    inp, _ = normalise(x, sigma)
    mu, log_var = encoder(inp)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var) if sample else mu
    mean, log_sigma = decoder(z)
    kl = 0.5 * (mu**2 + log_var.exp() - 1.0 - log_var).sum(dim=1)
    return mean, log_sigma, kl


@torch.no_grad()
def flux_metrics(encoder: Encoder, decoder: Decoder, val: dict[str, torch.Tensor], key: str) -> dict[str, float]:
    """NLL per stamp and the Δf/f median / 68% half-width of the drawn galaxy (inputs ``val[key]``)."""
    encoder.eval()
    decoder.eval()
    sigma = val["sigma"]
    mean, log_sigma, _ = reconstruction(encoder, decoder, val[key], sigma, sample=False)
    nll = gaussian_nll(mean, log_sigma, to_asinh(val["truth"], sigma.view(-1, 1, 1, 1)))
    image, _ = from_asinh(mean, log_sigma, sigma.view(-1, 1, 1, 1))
    true = val["truth"].sum(dim=(1, 2, 3)).clamp(min=1e-9)
    err = ((image.sum(dim=(1, 2, 3)) - true) / true).numpy()
    p16, p50, p84 = np.percentile(err, [16, 50, 84])
    return {"val_nll": float(nll.mean()), "flux_bias": float(p50), "flux_scatter": float((p84 - p16) / 2)}


def train_vae(config: VAETrainConfig, out_dir: str | Path, resume: bool = False,
              log: Callable[[str], None] = print, progress: Callable[[float], None] | None = None) -> Path:
    """Train the VAE, then the deblending encoder, for ``config.minutes`` in all; returns ``vae.pt``'s path."""
    out, device, preset, train_data, val_data = prepare_run(config, out_dir, log)
    val = VAEBatches(val_data, preset.background_sigma, seed=VALIDATION_SEED).batch(config.n_val)
    batches = VAEBatches(train_data, preset.background_sigma, seed=config.seed)
    del train_data
    encoder, decoder = Encoder(latent=config.latent).to(device), Decoder(latent=config.latent).to(device)
    deblender = Encoder(latent=config.latent).to(device)
    share = config.vae_share if config.vae_share is not None else (0.0 if config.init else VAE_FRACTION)
    vae_seconds = share * config.minutes * 60
    vae_steps = None if config.max_steps is None else round(share * config.max_steps)
    if config.init and not resume:
        from ..deblenders.vae import load_checkpoint

        init = load_checkpoint(Path(config.init))
        encoder.load_state_dict(init["encoder"])
        decoder.load_state_dict(init["decoder"])
        deblender.load_state_dict(init["deblender"])
        if share > 0:
            log(f"warm start from {config.init}: the VAE is fine-tuned for {share:.0%} of the budget, "
                "then the deblending encoder")
        else:
            log(f"warm start from {config.init}: the VAE stays, the deblending encoder is fine-tuned")

    def to_device(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(device) for k, v in batch.items()}

    def loss_of(enc: Encoder, key: str, sample: bool) -> torch.Tensor:
        b = to_device(batches.batch(config.batch_size))
        sigma = b["sigma"]
        mean, log_sigma, kl = reconstruction(enc, decoder, b[key], sigma, sample)
        nll = gaussian_nll(mean, log_sigma, to_asinh(b["truth"], sigma.view(-1, 1, 1, 1)))
        image, _ = from_asinh(mean, log_sigma, sigma.view(-1, 1, 1, 1))
        flux_term = FLUX_WEIGHT * mean[0].numel() * relative_l1(image, b["truth"])
        return (nll + flux_term + BETA * kl).mean() if sample else (nll + flux_term).mean()

    val_cpu = {k: v.cpu() for k, v in val.items()}

    class Pair(torch.nn.Module):  # the VAE phase averages encoder and decoder together
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.decoder = encoder, decoder

    if vae_seconds > 0 and vae_steps != 0:
        pair = Pair()
        phase = Phase("vae", pair, torch.optim.AdamW(pair.parameters(), lr=config.lr, weight_decay=1e-5),
                      lambda: loss_of(encoder, "isolated", sample=True),
                      lambda m: flux_metrics(m.encoder.cpu(), m.decoder.cpu(), val_cpu, "isolated"),
                      config.lr, vae_seconds, steps=vae_steps)
        averaged = run_phase(phase, out, log, progress, checkpoint_minutes=config.checkpoint_minutes, resume=resume)
        encoder.load_state_dict(averaged.encoder.state_dict())
        decoder.load_state_dict(averaged.decoder.state_dict())
        if not config.init:  # a fresh deblending encoder starts from the VAE's; a warm-started one stays
            deblender.load_state_dict(encoder.state_dict())
    decoder.eval().requires_grad_(False)
    decoder_cpu = Decoder(latent=config.latent)
    decoder_cpu.load_state_dict(decoder.state_dict())
    phase = Phase("deblender", deblender, torch.optim.AdamW(deblender.parameters(), lr=config.lr, weight_decay=1e-5),
                  lambda: loss_of(deblender, "blend", sample=False),
                  lambda m: flux_metrics(m.cpu(), decoder_cpu, val_cpu, "blend"),
                  config.lr, config.minutes * 60 - vae_seconds,
                  steps=None if config.max_steps is None else config.max_steps - vae_steps)
    deblender = run_phase(phase, out, log, progress, checkpoint_minutes=config.checkpoint_minutes, resume=resume)

    def weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in net.state_dict().items()}

    return save_weights(out / "vae.pt", {
        "encoder": weights(encoder), "decoder": weights(decoder), "deblender": weights(deblender),
        "encoder_config": encoder.config, "decoder_config": decoder.config,
        "stamp_size": STAMP, "preset": preset.name, "version": "1", "config": asdict(config),
    })
