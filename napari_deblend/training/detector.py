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
MATCH_RADIUS = 2.0  # pixels
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass
class DetectorTrainConfig(TrainConfig):
    """Options of ``napari-deblend train detector``: the shared ones and the network's widths."""

    minutes: float = 25.0
    widths: tuple[int, int, int] = (16, 32, 64)


def centre_target(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, 1, S, S)``: the maximum of the blobs at the valid galaxy centroids."""
    blobs = gaussian_blobs(batch["positions"], tuple(batch["x"].shape[-2:]), TARGET_SIGMA)
    blobs = blobs * batch["valid"][..., None, None].to(blobs.dtype)
    return blobs.amax(dim=1, keepdim=True)


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

    def step() -> torch.Tensor:
        batch = {k: v.to(device) for k, v in maker.batch(config.batch_size, jitter=0.0).items()}
        return detector_loss(net, batch)

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
