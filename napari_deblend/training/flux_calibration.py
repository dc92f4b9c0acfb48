"""Fitting the peeling deblender's flux calibration (``napari-deblend train peeling-calibration``).

Data: parametric blends of 1, 2 and 3 galaxies from our simulator (seeds of
their own, never the evaluation's), run through the peeling deblender of the
``--init`` weights with its calibration off; every component matched to a true
galaxy gives a sample: its features
(:func:`~napari_deblend.deblenders.flux_calibration.component_features`) and
the target ``log(true flux / component flux)``. A validation set of other
seeds picks the best epoch (lowest L1 loss) and gives the figures of the
model card: Δf/f bias and scatter per rank, missed galaxies counted as −1,
before and after the calibration.

The calibrator (:class:`~napari_deblend.deblenders.flux_calibration.FluxCalibrator`)
is an average of a few small perceptrons trained from different seeds (one alone
moved the validation figures by ±0.2 point from seed to seed). The weights
file written is the ``--init`` one with the calibrator added.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DeblendInputError
from .config import TrainConfig
from .data_mix import DataMix, data_mix
from .loop import save_weights
from .peeling import cached_npz, start_run

CALIBRATION_SEED = 5_000_000  # simulation seeds of the calibration data; never the evaluation's
CALIBRATION_VALIDATION_SEED = 5_999_999
#: Share of blends of 1, 2 and 3 galaxies in the calibration data.
MULTIPLICITY_SHARES = {1: 0.1, 2: 0.6, 3: 0.3}
TARGET_CLIP = 1.0  # |log(true / component flux)| larger than this (a factor 2.7) is clipped as a target


@dataclass
class CalibrationTrainConfig(TrainConfig):
    """Options of ``napari-deblend train peeling-calibration`` (``init``: the peeling weights to calibrate).

    ``minutes`` bounds the fitting (the simulations and deblending come first), unless
    ``max_steps`` is given: each member then makes at most that many steps, whatever the time;
    ``n_train`` and ``n_val`` count blends.
    """

    minutes: float = 10.0
    n_train: int = 60_000
    n_val: int = 3_000
    batch_size: int = 256
    lr: float = 2e-3
    epochs: int = 40
    width: int = 128
    depth: int = 3
    members: int = 4


def calibration_samples(deblender: Any, n: int, stamp_size: int, preset: str, seed: int, workers: int,
                        log: Callable[[str], None] = print, mix: DataMix | None = None,
                        split: str = "train") -> dict[str, np.ndarray]:
    """Simulate ``n`` blends, deblend them uncalibrated, and pair each true galaxy with its component.

    ``mix`` is the morphology mix and real-galaxy pool (default parametric), ``split`` the pool's split.

    Returns
    -------
    dict
        Per true galaxy (``M`` rows): ``features`` ``(M, F)`` (NaN where it was
        missed), ``flux`` (its component's, NaN if missed), ``true_flux``,
        ``rank`` (brightness order among the blend's true galaxies) and
        ``n_galaxies``.
    """
    from ..measurements import match_positions

    saved = deblender.calibrate_flux, deblender.keep_calibration_features
    deblender.calibrate_flux, deblender.keep_calibration_features = False, True
    rows: dict[str, list] = {"features": [], "flux": [], "true_flux": [], "rank": [], "n_galaxies": []}
    n_features = None
    try:
        for k, result, true_positions, true_flux in deblended_simulations(
                deblender, multiplicity_counts(n), stamp_size, preset, seed, workers, mix, split,
                lambda text: log(f"calibration data: {text}")):
            features = result.info["calibration_features"]
            n_features = features.shape[1]
            matched = {j: p for p, j in match_positions(result.positions, true_positions)}
            for j in range(k):
                p = matched.get(j)
                rows["features"].append(features[p] if p is not None else None)
                rows["flux"].append(float(result.components[p].sum()) if p is not None else np.nan)
                rows["true_flux"].append(true_flux[j])
                rows["rank"].append(j)
                rows["n_galaxies"].append(k)
    finally:
        deblender.calibrate_flux, deblender.keep_calibration_features = saved
    empty = np.full(n_features or 0, np.nan)
    return {
        "features": np.array([f if f is not None else empty for f in rows["features"]], np.float64),
        "flux": np.asarray(rows["flux"], np.float64),
        "true_flux": np.asarray(rows["true_flux"], np.float64),
        "rank": np.asarray(rows["rank"], np.int64),
        "n_galaxies": np.asarray(rows["n_galaxies"], np.int64),
    }


def deblended_simulations(deblender: Any, counts: dict[int, int], stamp_size: int, preset: str, seed: int,
                          workers: int, mix: DataMix | None, split: str,
                          log: Callable[[str], None]) -> Iterator[tuple[int, Any, np.ndarray, np.ndarray]]:
    """Simulate ``counts[k]`` blends of ``k`` galaxies (seed ``seed * 10 + k``) and deblend them in batches of 256.

    Yields, per blend, ``(k, result, true_positions (k, 2), true_fluxes (k,))``, brightest galaxy first;
    ``mix`` is the morphology mix and real-galaxy pool (default parametric), ``split`` the pool's split.
    """
    from ..simulate import simulate_blends
    from .evaluate import _positions_from_truth

    start = time.perf_counter()
    for k, count in counts.items():
        blends = simulate_blends(count, n_galaxies=k, stamp_size=stamp_size, preset=preset, seed=seed * 10 + k,
                                 n_workers=workers, **(mix or DataMix("parametric")).simulate_kwargs(split))
        positions = _positions_from_truth(blends.truth, count, k)
        true_flux = blends.components[:, :k].reshape(count, k, -1).sum(axis=2, dtype=np.float64)
        for lo in range(0, count, 256):
            results = deblender.deblend_batch(blends.images[lo:lo + 256], noise=blends.noise_sigma)
            for offset, result in enumerate(results):
                yield k, result, positions[lo + offset], true_flux[lo + offset]
        log(f"{count} blends of {k} in {time.perf_counter() - start:.0f} s")


def multiplicity_counts(n: int, shares: dict[int, float] | None = None) -> dict[int, int]:
    """Blends of each multiplicity in ``n`` (``shares``, default :data:`MULTIPLICITY_SHARES`; at least one each)."""
    return {k: max(1, int(round(n * share))) for k, share in (shares or MULTIPLICITY_SHARES).items()}



def flux_scatter_by_rank(data: dict[str, np.ndarray], factors: np.ndarray | None = None) -> dict[str, Any]:
    """Δf/f bias (median) and scatter (half the 16–84 % width) per multiplicity and rank; missed = −1.

    ``factors`` multiply the components' fluxes (per row of ``data``; None: as they are).
    """
    flux = data["flux"] if factors is None else data["flux"] * factors
    dflux = np.where(np.isfinite(flux), flux / data["true_flux"] - 1.0, -1.0)
    out: dict[str, Any] = {}
    for k in np.unique(data["n_galaxies"]):
        if k < 2:
            continue
        ranks = []
        for r in range(k):
            sel = (data["n_galaxies"] == k) & (data["rank"] == r)
            p16, p50, p84 = np.percentile(dflux[sel], [16, 50, 84])
            ranks.append({"bias": float(p50), "scatter": float((p84 - p16) / 2)})
        out[f"{k}_galaxies"] = ranks
    return out


def _training_pairs(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Features and clipped log flux ratios of the matched galaxies with a positive component flux."""
    ok = np.isfinite(data["flux"]) & (data["flux"] > 0) & np.isfinite(data["features"]).all(axis=1)
    target = np.clip(np.log(data["true_flux"][ok] / data["flux"][ok]), -TARGET_CLIP, TARGET_CLIP)
    return data["features"][ok], target


def _l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output - target).abs().mean()


def fit_member(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
               config: CalibrationTrainConfig, deadline: float, log: Callable[[str], None],
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _l1) -> float:
    """Train one perceptron (one-cycle schedule, ``loss_fn``: L1 by default); keep its best validation epoch."""
    optimizer = torch.optim.AdamW(net.parameters(), config.lr, weight_decay=1e-4)
    steps_per_epoch = max(1, len(y) // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:  # a step budget: no time bound
        total_steps, deadline = min(total_steps, max(config.max_steps, 1)), np.inf
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=total_steps)
    best, best_state = np.inf, None
    for epoch in range(-(-total_steps // steps_per_epoch)):
        net.train()
        order = torch.randperm(len(y))
        for b in range(min(steps_per_epoch, total_steps - epoch * steps_per_epoch)):
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            loss = loss_fn(net(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        net.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(net(x_val), y_val))
        if val_loss < best:
            best, best_state = val_loss, {k: v.clone() for k, v in net.state_dict().items()}
        if time.perf_counter() > deadline:
            log(f"time budget reached at epoch {epoch + 1}")
            break
    net.load_state_dict(best_state)
    return best


def start_perceptron_fit(config: CalibrationTrainConfig, out_dir: str | Path) -> tuple[Path, Any, dict, Any, str]:
    """The common start of fitting a perceptron part of the ``config.init`` weights of ``config.model``.

    ``config.model`` is ``peeling`` (a calibration config has none) or, for a split
    verifier, ``vae`` or ``unet``. Checks the ensemble options, resolves ``init``
    (default: the shipped weights) and starts the run directory. Returns
    ``(out, preset, checkpoint, deblender, tag)``: the ``init`` checkpoint, its
    deblender (a verifier it already has switched off: the samples are its
    components as it makes them), and a cache tag of the networks that make them.
    """
    import importlib

    from ..deblenders.base import _load_class
    from .peeling_joint import _networks_hash

    if config.members < 1 or config.epochs < 1:
        raise DeblendInputError(f"members={config.members}, epochs={config.epochs}: expected at least 1 of each")
    model = getattr(config, "model", "peeling")
    module = importlib.import_module(f"napari_deblend.deblenders.{model}")
    init = Path(config.init) if config.init else module.WEIGHTS_DIR / f"{model}.pt"
    config.init = str(init)
    out, _device, preset = start_run(config, out_dir)
    deblender = _load_class(model)(device=config.device, preset=preset.name, weights=init)
    if model == "peeling":
        networks = [deblender.rdn, deblender.counter] + ([deblender.joint] if deblender.joint is not None else [])
        prefix = ""  # the tag of the cached peeling data, as before other models had verifiers
    else:
        deblender.verifier = None
        networks = [deblender.finder.net] + [getattr(deblender, name) for name in ("net", "encoder", "decoder")
                                             if hasattr(deblender, name)]
        prefix = f"{model}_"
    tag = f"{prefix}{preset.name}_{config.stamp_size}_{_networks_hash(networks)}"
    return out, preset, module.load_checkpoint(init), deblender, tag


def fit_members(model: Any, tensors: list[torch.Tensor], config: CalibrationTrainConfig, log: Callable[[str], None],
                progress: Callable[[float], None] | None, loss_name: str,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _l1) -> list[dict[str, Any]]:
    """Fit every member of ``model`` in turn (:func:`fit_member`, seeds of their own, one ``config.minutes`` budget).

    ``tensors``: training features and targets, validation features and targets.
    Returns each member's best validation loss as ``{"member": m, "val_<loss_name>": loss}``.
    """
    deadline = time.perf_counter() + config.minutes * 60.0
    key = "val_" + loss_name.lower().replace("-", "_")
    history = []
    for m in range(config.members):
        torch.manual_seed(config.seed * 1000 + m)
        loss = fit_member(model.member_forward(m), *tensors, config, deadline, log, loss_fn)
        history.append({"member": m, key: loss})
        log(f"member {m + 1} / {config.members}: validation {loss_name} {loss:.4f}")
        if progress:
            progress((m + 1) / config.members)
    return history


def train_calibration(config: CalibrationTrainConfig, out_dir: str | Path, resume: bool = False,
                      log: Callable[[str], None] = print, progress: Callable[[float], None] | None = None) -> Path:
    """Fit the flux calibration of the ``config.init`` peeling weights; return the new weights file.

    The simulated and deblended data are cached in ``OUT/cache`` (so a second
    run, or ``--resume``, only fits); ``OUT/history.jsonl`` holds each member's
    validation loss and the validation figures before and after.
    """
    from ..deblenders.flux_calibration import FluxCalibrator

    out, preset, base, deblender, tag = start_perceptron_fit(config, out_dir)
    mix = data_mix(config)
    if mix.tag() != "parametric":
        tag += f"_{mix.tag()}"
    data, val = (
        cached_npz(out / "cache", f"calibration_{name}_{tag}_{n}_{seed}.npz",
                   lambda n=n, seed=seed, split=split: calibration_samples(
                       deblender, n, config.stamp_size, preset.name, seed, config.workers, log, mix, split))
        for name, n, seed, split in (("train", config.n_train, CALIBRATION_SEED + config.seed, "train"),
                                     ("val", config.n_val, CALIBRATION_VALIDATION_SEED, "validation"))
    )
    x, y = _training_pairs(data)
    x_val, y_val = _training_pairs(val)
    if len(y) < 10 or len(y_val) < 1:
        raise DeblendInputError(f"--n-train={config.n_train} / n_val={config.n_val}: too few matched galaxies "
                                f"({len(y)} / {len(y_val)}) to fit a calibration; simulate more blends")
    calibrator = FluxCalibrator(x.shape[1], config.width, config.depth, config.members,
                                settings=deblender.calibration_settings())
    calibrator.set_standardisation(x)
    tensors = [torch.as_tensor(a, dtype=torch.float32) for a in (x, y, x_val, y_val)]
    history = fit_members(calibrator, tensors, config, log, progress, "L1")
    calibrator.eval()
    factors = _factors_for(calibrator, val)
    summary = {"before": flux_scatter_by_rank(val), "after": flux_scatter_by_rank(val, factors),
               "n_train_samples": int(len(y)), "n_val_samples": int(len(y_val)), "members": history}
    with open(out / "history.jsonl", "a") as f:
        f.write(json.dumps(summary) + "\n")
    log(f"validation before: {summary['before']}")
    log(f"validation after:  {summary['after']}")
    state = {k: v.detach().cpu() for k, v in calibrator.state_dict().items()}
    return save_weights(out / "peeling.pt", {**base, "flux_calibrator": state,
                                             "flux_calibrator_config": calibrator.config})


def _factors_for(calibrator: Any, data: dict[str, np.ndarray]) -> np.ndarray:
    """Flux factors of every matched row of ``data`` (1 where missed)."""
    factors = np.ones(len(data["flux"]))
    ok = np.isfinite(data["features"]).all(axis=1)
    factors[ok] = calibrator.factors(data["features"][ok])
    return factors
