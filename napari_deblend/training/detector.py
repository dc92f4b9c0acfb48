"""Training of the learned source finder (:mod:`napari_deblend.deblenders.detector`).

Data: the cached noiseless components of the peeling training
(:func:`~napari_deblend.training.peeling.load_or_simulate`), drawn by
:class:`~napari_deblend.training.unet.UNetBatchMaker` (fresh noise, flips, no
position jitter). Target: the maximum over the stamp's galaxies of unit-peak
Gaussian blobs (sigma :data:`~napari_deblend.deblenders.detector.TARGET_SIGMA`)
at their light-weighted centroids. Loss: binary cross-entropy with logits,
weighted ``1 + 20 target`` (centre pixels are rare). At the end the peak
threshold that maximises F2 (:func:`best_threshold`; 2-pixel match) on the
validation stamps is stored with the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..deblenders.detector import MIN_DISTANCE, TARGET_SIGMA, CentreNet, find_peaks
from ..deblenders.nets import normalise
from ..deblenders.unet_nets import gaussian_blobs
from .config import TrainConfig
from .loop import Phase, run_phase, save_weights
from .peeling import VALIDATION_SEED, prepare_run
from .unet import UNetBatchMaker

CENTRE_WEIGHT = 20.0
MAX_SHIFT = 12  # pixels: how far a field-like stamp's own galaxies move off the centre
NEIGHBOUR_OFFSET = (16, 40)  # pixels: how far off the centre a field-like stamp's neighbour stamp lies
MATCH_RADIUS = 2.0  # pixels
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass
class DetectorTrainConfig(TrainConfig):
    """Options of ``napari-deblend train detector``: the shared ones, the network's widths, ``field_like``.

    ``field_like``: the share of training stamps composed like the stamps of a field run
    (:func:`field_like_batch`), with galaxies at and across the stamp's border.
    """

    minutes: float = 25.0
    widths: tuple[int, int, int] = (16, 32, 64)
    field_like: float = 0.0


def centre_target(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, 1, S, S)``: the maximum of the blobs at the valid galaxy centroids."""
    blobs = gaussian_blobs(batch["positions"], tuple(batch["x"].shape[-2:]), TARGET_SIGMA)
    blobs = blobs * batch["valid"][..., None, None].to(blobs.dtype)
    return blobs.amax(dim=1, keepdim=True)


def _shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``(C, S, S)`` images moved by ``(dy, dx)`` pixels, zero where nothing moved in."""
    out = torch.zeros_like(images)
    s = images.shape[-1]
    ys, yd = (slice(0, s - dy), slice(dy, s)) if dy >= 0 else (slice(-dy, s), slice(0, s + dy))
    xs, xd = (slice(0, s - dx), slice(dx, s)) if dx >= 0 else (slice(-dx, s), slice(0, s + dx))
    out[:, yd, xd] = images[:, ys, xs]
    return out


def field_like_batch(maker: UNetBatchMaker, size: int, share: float, generator: torch.Generator,
                     sigma: float) -> dict[str, torch.Tensor]:
    """A batch of which ``share`` of the stamps look like a field run's: galaxies near and across the border.

    In a field run the finder sees stamps cut around sep's detections, with
    neighbours and galaxies cut by the stamp's edge; the simulated stamps hold
    centred blends only. A field-like stamp moves its own galaxies by up to
    :data:`MAX_SHIFT` pixels and adds a second stamp's galaxies
    :data:`NEIGHBOUR_OFFSET` pixels off the centre, then draws fresh noise over
    the whole stamp. Galaxies whose centre leaves the stamp are no target.
    """
    if share <= 0:  # the plain stamps, drawn as before the option existed
        return maker.batch(size, jitter=0.0)
    first, second = maker.batch(size, jitter=0.0), maker.batch(size, jitter=0.0)
    chosen = torch.rand(size, generator=generator) < share
    if not bool(chosen.any()):
        return first
    s, k = first["x"].shape[-1], first["positions"].shape[1]
    clean = first["truth"].sum(dim=1, keepdim=True)
    positions = torch.cat([first["positions"], second["positions"]], dim=1)
    valid = torch.cat([first["valid"], torch.zeros_like(second["valid"])], dim=1)
    low, high = NEIGHBOUR_OFFSET
    for i in torch.nonzero(chosen).flatten().tolist():
        dy, dx = (int(v) for v in torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2,), generator=generator))
        ny, nx = (int(v) for v in torch.randint(-high, high + 1, (2,), generator=generator))
        while max(abs(ny), abs(nx)) < low:
            ny, nx = (int(v) for v in torch.randint(-high, high + 1, (2,), generator=generator))
        clean[i] = _shifted(first["truth"][i].sum(dim=0, keepdim=True), dy, dx) \
            + _shifted(second["truth"][i].sum(dim=0, keepdim=True), ny, nx)
        positions[i, :k] += torch.tensor([dy, dx], dtype=positions.dtype)
        positions[i, k:] += torch.tensor([ny, nx], dtype=positions.dtype)
        valid[i, k:] = second["valid"][i]
    inside = ((positions >= 0) & (positions <= s - 1)).all(dim=-1)
    valid = valid & (inside | ~chosen[:, None])
    noisy = clean + torch.randn(clean.shape, generator=generator) * (sigma**2 + clean.clamp(min=0)).sqrt()
    x = torch.where(chosen[:, None, None, None], noisy, first["x"])
    return {"x": x, "positions": positions, "valid": valid, "sigma": first["sigma"]}


def detector_loss(net: CentreNet, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Weighted BCE of the logit map against :func:`centre_target`."""
    inp, _ = normalise(batch["x"], batch["sigma"])
    target = centre_target(batch)
    return F.binary_cross_entropy_with_logits(net(inp), target, weight=1.0 + CENTRE_WEIGHT * target)


def match_counts(found: np.ndarray, truth: np.ndarray, radius: float = MATCH_RADIUS) -> tuple[int, int]:
    """``(true positives, found)``: greedy one-to-one matches of ``found`` to ``truth`` within ``radius``."""
    used: set[int] = set()
    hits = 0
    for f in found:
        d = np.hypot(*(truth - f).T) if len(truth) else np.zeros(0)
        for j in np.argsort(d):
            if d[j] > radius:
                break
            if j not in used:
                used.add(int(j))
                hits += 1
                break
    return hits, len(found)


@torch.no_grad()
def detection_scores(net: CentreNet, val: dict[str, torch.Tensor],
                     thresholds: tuple[float, ...] = THRESHOLDS) -> dict[float, dict[str, float]]:
    """Recall, precision and F1 of the peaks at each threshold on the validation batch."""
    net.eval()
    inp, _ = normalise(val["x"], val["sigma"])
    prob = torch.sigmoid(net(inp)[:, 0]).numpy()
    truths = [val["positions"][i][val["valid"][i]].numpy() for i in range(len(prob))]
    n_true = sum(len(t) for t in truths)
    scores = {}
    for threshold in thresholds:
        hits = found = 0
        for p, t in zip(prob, truths):
            h, f = match_counts(find_peaks(p, threshold), t)
            hits, found = hits + h, found + f
        recall, precision = hits / max(n_true, 1), hits / max(found, 1)
        scores[threshold] = {"recall": recall, "precision": precision,
                             "f1": 2 * recall * precision / max(recall + precision, 1e-9)}
    return scores


def best_threshold(scores: dict[float, dict[str, float]]) -> float:
    """The threshold with the best F2 score (recall weighted 4x precision).

    A missed galaxy costs a deblender all of its flux (and leaves its light in
    the neighbours'); a spurious source costs a small component, so recall
    counts more.
    """
    def f2(s: dict[str, float]) -> float:
        return 5 * s["precision"] * s["recall"] / max(4 * s["precision"] + s["recall"], 1e-9)

    return max(scores, key=lambda t: f2(scores[t]))


def train_detector(config: DetectorTrainConfig, out_dir: str | Path, resume: bool = False,
                   log: Callable[[str], None] = print, progress: Callable[[float], None] | None = None) -> Path:
    """Train the source finder for ``config.minutes``; returns the path of ``detector.pt`` in ``out_dir``."""
    out, device, preset, train_data, val_data = prepare_run(config, out_dir, log)
    val = UNetBatchMaker(val_data, preset.background_sigma, seed=VALIDATION_SEED).batch(config.n_val, jitter=0.0)
    maker = UNetBatchMaker(train_data, preset.background_sigma, seed=config.seed)
    del train_data
    net = CentreNet(widths=tuple(config.widths)).to(device)
    if config.init and not resume:
        from ..deblenders.detector import load_checkpoint

        net.load_state_dict(load_checkpoint(Path(config.init))["net"])
        log(f"warm start from {config.init}")

    generator = torch.Generator().manual_seed(config.seed + 1)

    def step() -> torch.Tensor:
        batch = field_like_batch(maker, config.batch_size, config.field_like, generator, preset.background_sigma)
        return detector_loss(net, {k: v.to(device) for k, v in batch.items()})

    def validate(model: CentreNet) -> dict[str, float]:
        val_cpu = {k: v.cpu() for k, v in val.items()}
        model = model.cpu()
        with torch.no_grad():
            loss = float(detector_loss(model, val_cpu))
        best = max(detection_scores(model, val_cpu, (0.5,)).values(), key=lambda s: s["f1"])
        return {"val_loss": loss, **best}

    phase = Phase("detector", net, torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-5), step,
                  validate, config.lr, config.minutes * 60, steps=config.max_steps)
    model = run_phase(phase, out, log, progress, checkpoint_minutes=config.checkpoint_minutes, resume=resume)
    scores = detection_scores(model.cpu(), {k: v.cpu() for k, v in val.items()})
    threshold = best_threshold(scores)
    log("thresholds: " + ", ".join(f"{t}: R={s['recall']:.3f} P={s['precision']:.3f}" for t, s in scores.items()))
    return save_weights(out / "detector.pt", {
        "net": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "net_config": model.config,
        "threshold": threshold, "min_distance": MIN_DISTANCE, "scores": {str(t): s for t, s in scores.items()},
        "stamp_size": config.stamp_size, "preset": preset.name, "version": "1", "config": asdict(config),
    })
