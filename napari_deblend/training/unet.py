"""Training of the ``unet`` deblender (soft masks + flux, Boucaud et al. 2020), CPU-friendly.

Data: the same cached noiseless components as the peeling training
(:func:`~napari_deblend.training.peeling.load_or_simulate`: ``(n, 3, S, S)``,
brightest first); only stamps with at least one galaxy are used. Each
galaxy's flux (sum over the stamp) and position (flux-weighted centroid of its
noiseless component) are computed once for the whole cache. Every batch draws
fresh noise (background sigma of the preset + Poisson, Gaussian
approximation), a random flip/transposition, and one target galaxy per stamp
at random; the hint positions get a 0.5-pixel jitter so that the network
tolerates sep's centroids at inference.

Targets: the soft share ``truth_t / (sum_j truth_j + 0.5 sigma)`` clipped to
[0, 1] (0 where there is no light) and ``log(flux_t / s)``. Loss:
binary cross-entropy with logits, weighted ``1 + 5`` on pixels where the blend
holds more than 1 sigma of light, plus the L1 error of the log flux.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..deblenders.checkpoints import load_training_checkpoint
from ..deblenders.nets import normalise
from ..deblenders.unet_nets import UNet, source_hints
from ..errors import DeblendInputError
from .config import TrainConfig
from .peeling import EMA, MAX_GALAXIES, VALIDATION_SEED, cosine_lr, prepare_run

SHARE_SOFTENING = 0.5  # sigma added to the denominator of the soft share
LIGHT_WEIGHT = 5.0  # extra BCE weight on pixels with light
LIGHT_SIGMAS = 1.0  # "light": sum of the truth above this many sigma
TRUTH_MASK_SIGMAS = 3.0  # IoU: the true mask is truth_t above this many sigma
POSITION_JITTER = 0.5  # pixels
FLUX_FLOOR = 1e-3  # in units of s, floor of the true flux before the log
EMA_DECAY = 0.998


@dataclass
class UNetTrainConfig(TrainConfig):
    """Options of ``napari-deblend train unet``: the shared ones and the real-galaxy mix."""

    real_galaxies: str | None = None  # export-training folder whose clean isolated galaxies join the sources
    real_fraction: float = 0.5  # probability that a training galaxy is a real one (with real_galaxies)


# ---- data ----------------------------------------------------------------------------------------


def component_stats(components: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Flux ``(n, K)`` (sum over the stamp) and flux-weighted centroid ``(n, K, 2)`` ``(y, x)`` of each component.

    The centroid weighs the positive pixels; an empty component gets the stamp centre.
    """
    n, k, h, w = components.shape
    flux = np.zeros((n, k), np.float64)
    centroid = np.zeros((n, k, 2), np.float64)
    yy, xx = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    for start in range(0, n, chunk):
        part = components[start:start + chunk].astype(np.float64)
        flux[start:start + chunk] = part.sum(axis=(2, 3))
        positive = np.clip(part, 0.0, None)
        total = positive.sum(axis=(2, 3))
        safe = np.where(total > 0, total, 1.0)
        cy = positive.sum(axis=3) @ yy / safe
        cx = positive.sum(axis=2) @ xx / safe
        centroid[start:start + chunk, :, 0] = np.where(total > 0, cy, (h - 1) / 2.0)
        centroid[start:start + chunk, :, 1] = np.where(total > 0, cx, (w - 1) / 2.0)
    return flux, centroid


class UNetBatchMaker:
    """Draws training batches: noisy blend, hints at the galaxies, one target galaxy per stamp."""

    def __init__(self, data: dict[str, np.ndarray], sigma: float, seed: int) -> None:
        keep = np.flatnonzero(data["n_components"] >= 1)
        if not len(keep):
            raise DeblendInputError("unet training: no stamp holds a galaxy")
        comps = data["components"] if len(keep) == len(data["components"]) else data["components"][keep]
        flux, centroid = component_stats(comps)
        self.components = torch.from_numpy(np.ascontiguousarray(comps, dtype=np.float32))
        self.n_components = torch.from_numpy(data["n_components"][keep].astype(np.int64))
        self.flux = torch.from_numpy(flux.astype(np.float32))
        self.centroid = torch.from_numpy(centroid.astype(np.float32))
        self.sigma = float(sigma)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.components)

    def batch(self, size: int, jitter: float = POSITION_JITTER) -> dict[str, torch.Tensor]:
        """``x`` (B,1,S,S) noisy blend, ``truth`` (B,K,S,S), ``positions`` (B,K,2), ``valid`` (B,K),
        ``target`` (B,) index of the galaxy to extract, ``flux`` (B,) its flux, ``sigma`` (B,)."""
        g = self.generator
        idx = torch.randint(len(self), (size,), generator=g)
        comps = self.components[idx]  # (B, K, S, S)
        k = self.n_components[idx]
        valid = torch.arange(comps.shape[1]).view(1, -1) < k.view(-1, 1)
        positions = self.centroid[idx].clone()
        target = (torch.rand(size, generator=g) * k.float()).long().clamp(max=k - 1)
        flux = self.flux[idx].gather(1, target.view(-1, 1)).squeeze(1)
        clean = comps.sum(dim=1, keepdim=True)
        variance = self.sigma**2 + clean.clamp(min=0)
        x = clean + torch.randn(clean.shape, generator=g) * variance.sqrt()
        stacked = torch.cat([x, comps], dim=1)
        s = stacked.shape[-1]
        if torch.rand(1, generator=g) < 0.5:
            stacked = stacked.flip(-1)
            positions[..., 1] = (s - 1) - positions[..., 1]
        if torch.rand(1, generator=g) < 0.5:
            stacked = stacked.flip(-2)
            positions[..., 0] = (s - 1) - positions[..., 0]
        if torch.rand(1, generator=g) < 0.5:
            stacked = stacked.transpose(-1, -2)
            positions = positions.flip(-1)
        if jitter > 0:
            positions = positions + jitter * torch.randn(positions.shape, generator=g)
        return {
            "x": stacked[:, :1].contiguous(),
            "truth": stacked[:, 1:].contiguous(),
            "positions": positions.contiguous(),
            "valid": valid,
            "target": target,
            "flux": flux,
            "sigma": torch.full((size,), self.sigma),
        }


def network_input(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The U-Net input ``(B, 4, S, S)`` for the batch's target galaxies, and the stamp scale ``s``."""
    inp, scale = normalise(batch["x"], batch["sigma"])
    b, k = batch["valid"].shape
    rows = torch.arange(b, device=inp.device)
    this = batch["positions"][rows, batch["target"]]
    others = batch["valid"] & (torch.arange(k, device=inp.device).view(1, -1) != batch["target"].view(-1, 1))
    hints = source_hints(this, batch["positions"], others, tuple(inp.shape[-2:]))
    return torch.cat([inp, hints], dim=1), scale


def mask_target(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft share of the target ``(B, 1, S, S)`` and the BCE pixel weights."""
    rows = torch.arange(len(batch["target"]), device=batch["truth"].device)
    mine = batch["truth"][rows, batch["target"]].unsqueeze(1)
    total = batch["truth"].sum(dim=1, keepdim=True)
    sigma = batch["sigma"].view(-1, 1, 1, 1)
    share = (mine / (total + SHARE_SOFTENING * sigma)).clamp(0.0, 1.0)
    weight = 1.0 + LIGHT_WEIGHT * (total > LIGHT_SIGMAS * sigma).float()
    return share, weight


def unet_loss(logit, log_flux, batch, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-batch mask loss (weighted BCE) and flux loss (L1 of the log flux)."""
    share, weight = mask_target(batch)
    mask_loss = F.binary_cross_entropy_with_logits(logit, share, weight=weight)
    true_log = torch.log((batch["flux"] / scale.view(-1)).clamp(min=FLUX_FLOOR))
    flux_loss = (log_flux - true_log).abs().mean()
    return mask_loss, flux_loss


@torch.no_grad()
def validate(net: UNet, val: dict[str, torch.Tensor]) -> dict[str, float]:
    """Metrics on a fixed batch: losses, Δf/f median and 68% half-width (flux head and mask alone), mask IoU."""
    net.eval()
    inp, scale = network_input(val)
    logit, log_flux = net(inp)
    mask_loss, flux_loss = unet_loss(logit, log_flux, val, scale)
    flux_true = val["flux"].clamp(min=1e-9)
    err = ((log_flux.exp() * scale.view(-1) - flux_true) / flux_true).numpy()
    mask = torch.sigmoid(logit)
    masked = (mask * val["x"]).sum(dim=(1, 2, 3))
    err_mask = ((masked - flux_true) / flux_true).numpy()
    rows = torch.arange(len(val["target"]))
    truth = val["truth"][rows, val["target"]].unsqueeze(1) > TRUTH_MASK_SIGMAS * val["sigma"].view(-1, 1, 1, 1)
    pred = mask > 0.5
    inter = (truth & pred).sum(dim=(1, 2, 3)).float()
    union = (truth | pred).sum(dim=(1, 2, 3)).float()
    has = union > 0
    iou = float((inter[has] / union[has]).mean()) if has.any() else float("nan")
    p16, p50, p84 = np.percentile(err, [16, 50, 84])
    q16, q50, q84 = np.percentile(err_mask, [16, 50, 84])
    net.train()
    return {
        "val_mask_loss": float(mask_loss), "val_flux_loss": float(flux_loss),
        "flux_bias": float(p50), "flux_scatter": float((p84 - p16) / 2),
        "mask_flux_bias": float(q50), "mask_flux_scatter": float((q84 - q16) / 2),
        "mask_iou": iou,
    }


# ---- training -------------------------------------------------------------------------------------


def save_checkpoint(path: Path, net: UNet, state: dict[str, Any]) -> None:
    """Write weights (+ resumable state) atomically."""
    payload = {
        "unet": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "unet_config": net.config,
        **state,
    }
    tmp = path.with_name(path.name + ".part")
    torch.save(payload, tmp)
    tmp.replace(path)


def train_unet(config: UNetTrainConfig, out_dir: str | Path, resume: bool = False,
               log: Callable[[str], None] = print, progress: Callable[[float], None] | None = None) -> Path:
    """Train the unet deblender for ``config.minutes`` of wall time; returns the weights path.

    Writes into ``out_dir``: ``checkpoint.pt`` (resumable, every ``checkpoint_minutes``),
    ``unet.pt`` (the EMA weights to ship), ``history.jsonl`` (validation curve,
    every 2 minutes and at the end) and ``config.json``.
    """

    out, device, preset, train_data, val_data = prepare_run(config, out_dir, log)
    for name, data in (("training", train_data), ("validation", val_data)):
        if data["components"].shape[1] != MAX_GALAXIES or data["components"].shape[-1] != config.stamp_size:
            raise DeblendInputError(f"unet training: {name} components have shape {data['components'].shape}: "
                                    f"expected (n, {MAX_GALAXIES}, {config.stamp_size}, {config.stamp_size})")
    val = UNetBatchMaker(val_data, preset.background_sigma, seed=VALIDATION_SEED).batch(config.n_val)

    net = UNet().to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-5)
    if config.init and not resume:
        from ..deblenders.unet import load_checkpoint

        init = load_checkpoint(Path(config.init))
        if init["unet_config"] != net.config:
            raise DeblendInputError(f"--init {config.init}: a network of another size ({init['unet_config']}); "
                                    f"expected {net.config}")
        net.load_state_dict(init["unet"])
        log(f"warm start from {config.init}")
    ema = EMA(net, decay=EMA_DECAY)
    elapsed_before, step = 0.0, 0
    checkpoint_path = out / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        state = load_training_checkpoint(checkpoint_path, {"unet_live", "opt", "unet", "elapsed", "step"})
        net.load_state_dict(state["unet_live"])
        opt.load_state_dict(state["opt"])
        ema.shadow = {k: v.to(device) for k, v in state["unet"].items()}
        elapsed_before, step = state["elapsed"], state["step"]
        log(f"resumed at step {step}, {elapsed_before / 60:.1f} min")
    # a resumed run draws batches it has not drawn before
    maker = UNetBatchMaker(train_data, preset.background_sigma, seed=config.seed * 1_000_003 + step)
    del train_data

    budget = config.minutes * 60.0
    start = time.perf_counter() - elapsed_before
    last_checkpoint = last_val = time.perf_counter()
    history = open(out / "history.jsonl", "a")

    def elapsed() -> float:
        return time.perf_counter() - start

    def ema_model() -> UNet:
        model = UNet(**net.config)
        model.load_state_dict({k: v.cpu() for k, v in ema.shadow.items()})
        return model

    def validation_line(loss: float) -> None:
        metrics = {"step": step, "minutes": round(elapsed() / 60, 2), "loss": loss if np.isfinite(loss) else None,
                   **validate(ema_model(), val)}
        history.write(json.dumps(metrics) + "\n")
        history.flush()
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))

    def snapshot(final: bool = False) -> None:
        live = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        meta = {"stamp_size": config.stamp_size, "preset": preset.name, "version": "1"}
        state = {"unet_live": live, "opt": opt.state_dict(), "elapsed": elapsed(), "step": step, **meta}
        model = ema_model()
        save_checkpoint(checkpoint_path, model, state)
        if final:
            save_checkpoint(out / "unet.pt", model, meta)

    net.train()
    loss = float("nan")
    while (now := elapsed()) < budget:
        for group in opt.param_groups:
            group["lr"] = config.lr * cosine_lr(1.0, now / budget)
        batch = {k: v.to(device) for k, v in maker.batch(config.batch_size).items()}
        inp, scale = network_input(batch)
        logit, log_flux = net(inp)
        mask_loss, flux_loss = unet_loss(logit, log_flux, batch, scale)
        total = mask_loss + flux_loss
        opt.zero_grad()
        total.backward()
        opt.step()
        ema.decay = min(EMA_DECAY, (1 + step) / (10 + step))  # warm-up: short runs ship trained weights too
        ema.update(net)
        loss = total.item()
        step += 1
        if progress is not None:
            progress(min(elapsed() / budget, 1.0))
        if time.perf_counter() - last_val > 120:
            validation_line(loss)
            last_val = time.perf_counter()
        if time.perf_counter() - last_checkpoint > config.checkpoint_minutes * 60:
            snapshot()
            last_checkpoint = time.perf_counter()
    validation_line(loss)
    snapshot(final=True)
    history.close()
    log(f"done: {step} steps in {elapsed() / 60:.1f} min -> {out / 'unet.pt'}")
    return out / "unet.pt"
