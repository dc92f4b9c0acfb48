"""Training a deblender's split verifier (``napari-deblend train peeling-verifier``, ``vae-verifier``, ``unet-verifier``).

Data: blends of 1, 2 and 3 galaxies of the ``--morphology`` mix (and the
``--real-pool``'s ``train`` split; the run's validation rows come from its
``validation`` split), with seeds of their own, never the evaluation's, run
through the peeling deblender of the ``--init`` weights with no piece given
back and the flux calibration off. Every component but the brightest of a stamp of two
or more is a sample: its split features
(:func:`~napari_deblend.deblenders.split_verifier.split_features`) and the label
1 when it is matched to a true galaxy (:func:`~napari_deblend.measurements.match_positions`,
as the evaluation matches), 0 when it is a piece of one. The verifier
(:class:`~napari_deblend.deblenders.split_verifier.SplitVerifier`, a few small
perceptrons from different seeds) learns the log-odds with a cross-entropy
loss; each member keeps its best epoch on the validation rows. The weights
file written is the ``--init`` one with the verifier added (a flux calibration
in it stays: it corrects whatever components it is given).

``vae`` and ``unet`` take their sources from the learned source finder: their
components' features are :data:`~napari_deblend.deblenders.split_verifier.SOURCE_SPLIT_FEATURE_NAMES`
(the split features and the finder's map at the component), measured by the
deblender itself (``keep_split_features``); the rest is the same.
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

from ..deblenders.split_verifier import brightest_component
from ..errors import DeblendInputError
from .data_mix import DataMix, data_mix
from .flux_calibration import (
    CalibrationTrainConfig,
    deblended_simulations,
    fit_members,
    multiplicity_counts,
    start_perceptron_fit,
)
from .loop import save_weights
from .peeling import cached_npz

VERIFIER_SEED = 6_000_000  # simulation seeds of the verifier's data; never the evaluation's
VERIFIER_VALIDATION_SEED = 6_999_999
#: Share of blends of 1, 2 and 3 galaxies in the verifier's data (single galaxies give most pieces).
MULTIPLICITY_SHARES = {1: 0.4, 2: 0.4, 3: 0.2}


@dataclass
class VerifierTrainConfig(CalibrationTrainConfig):
    """Options of ``napari-deblend train peeling-verifier`` / ``vae-verifier`` / ``unet-verifier``.

    ``model`` names whose components are judged, ``init`` its weights (default: the shipped ones).

    As :class:`~napari_deblend.training.flux_calibration.CalibrationTrainConfig`, with
    other defaults: ``minutes`` bounds the fitting (the simulations and deblending come
    first); ``n_train`` and ``n_val`` count blends.
    """

    minutes: float = 5.0
    n_train: int = 30_000
    epochs: int = 30
    width: int = 64
    model: str = "peeling"  # whose components: peeling, vae or unet (the weights of ``init``, default shipped)
    field_like: float = 0.0  # share of the stamps composed like a field run's (see field_like_deblended)


#: Deblenders that can have a split verifier.
VERIFIED_MODELS = ("peeling", "vae", "unet")


def verifier_samples(deblender: Any, n: int, stamp_size: int, preset: str, seed: int, workers: int,
                     log: Callable[[str], None] = print, mix: DataMix | None = None,
                     split: str = "train", field_like: float = 0.0) -> dict[str, np.ndarray]:
    """Simulate ``n`` blends, deblend them unverified, and label every fainter component galaxy (1) or piece (0).

    With ``field_like``, that share of the stamps is composed like a field run's
    (:func:`field_like_deblended`).

    Returns
    -------
    dict
        Per component (``M`` rows): ``features`` ``(M, F)``, ``label``,
        ``n_galaxies`` (true galaxies in its blend) and ``stamp`` (a blend index).
    """
    from ..measurements import match_positions

    switches = {"give_back_pieces": False, "keep_split_features": True, "calibrate_flux": False}
    switches = {name: value for name, value in switches.items() if hasattr(deblender, name)}
    saved = {name: getattr(deblender, name) for name in switches}
    for name, value in switches.items():
        setattr(deblender, name, value)
    rows: dict[str, list] = {"features": [], "label": [], "n_galaxies": [], "stamp": []}
    try:
        make = field_like_deblended if field_like > 0 else deblended_simulations
        extra = {"share": field_like} if field_like > 0 else {}
        for stamp, (k, result, true_positions, _flux) in enumerate(make(
                deblender, multiplicity_counts(n, MULTIPLICITY_SHARES), stamp_size, preset, seed, workers, mix, split,
                lambda text: log(f"verifier data: {text}"), **extra)):
            features = result.info.get("split_features")
            if features is None:
                continue
            matched = {p for p, _ in match_positions(result.positions, true_positions)}
            # never judged (its probability is 1): peeling's first (the first peeled), else the brightest
            skipped = 0 if deblender.name == "peeling" else brightest_component(result.components)
            for p in range(len(features)):
                if p == skipped:
                    continue
                rows["features"].append(features[p])
                rows["label"].append(1.0 if p in matched else 0.0)
                rows["n_galaxies"].append(k)
                rows["stamp"].append(stamp)
    finally:
        for name, value in saved.items():
            setattr(deblender, name, value)
    from ..deblenders.split_verifier import SOURCE_SPLIT_FEATURE_NAMES, SPLIT_FEATURE_NAMES

    n_features = len(SPLIT_FEATURE_NAMES if deblender.name == "peeling" else SOURCE_SPLIT_FEATURE_NAMES)
    return {"features": np.array(rows["features"], np.float64).reshape(-1, n_features),
            "label": np.asarray(rows["label"], np.float64), "n_galaxies": np.asarray(rows["n_galaxies"], np.int64),
            "stamp": np.asarray(rows["stamp"], np.int64)}


def field_like_deblended(deblender: Any, counts: dict[int, int], stamp_size: int, preset: str, seed: int,
                         workers: int, mix: DataMix | None, split: str, log: Callable[[str], None],
                         share: float = 0.5) -> Iterator[tuple[int, Any, np.ndarray, np.ndarray]]:
    """:func:`~napari_deblend.training.flux_calibration.deblended_simulations` with stamps like a field run's.

    In a run, a detection sep saw alone is deblended on a stamp cut around it,
    with its neighbours and galaxies cut by the stamp's edge. ``share`` of the
    stamps move their galaxies by up to :data:`~napari_deblend.training.detector.MAX_SHIFT`
    pixels and take another stamp's galaxies
    :data:`~napari_deblend.training.detector.NEIGHBOUR_OFFSET` pixels off the
    centre, under fresh noise (sky and the sources' Poisson noise); the true
    galaxies are those whose centre is on the stamp. Yields
    ``(k, result, true_positions (M, 2), true_fluxes)`` (fluxes NaN: not used).
    """
    from ..simulate import simulate_blends
    from .detector import MAX_SHIFT, NEIGHBOUR_OFFSET, _shifted
    from .testsets import _positions_from_truth

    rng = np.random.default_rng(seed)
    low, high = NEIGHBOUR_OFFSET
    start = time.perf_counter()
    for k, count in counts.items():
        blends = simulate_blends(count, n_galaxies=k, stamp_size=stamp_size, preset=preset, seed=seed * 10 + k,
                                 n_workers=workers, **(mix or DataMix("parametric")).simulate_kwargs(split))
        positions = _positions_from_truth(blends.truth, count, k)
        truths = [p[np.isfinite(p).all(axis=1)] for p in positions]
        clean = torch.from_numpy(blends.components.sum(axis=1))  # (count, C, S, S) noiseless
        images, sigma = blends.images.copy(), float(np.mean(blends.noise_sigma))
        for i in np.flatnonzero(rng.random(count) < share):
            j = int(rng.integers(count))
            own = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, 2)
            neighbour = rng.integers(-high, high + 1, 2)
            while np.abs(neighbour).max() < low:
                neighbour = rng.integers(-high, high + 1, 2)
            composed = (_shifted(clean[i], *map(int, own)) + _shifted(clean[j], *map(int, neighbour))).numpy()
            noise = rng.normal(size=composed.shape) * np.sqrt(sigma**2 + np.clip(composed, 0, None))
            images[i] = (composed + noise).astype(images.dtype)
            moved = np.concatenate([truths[i] + own, truths[j] + neighbour])
            truths[i] = moved[((moved >= 0) & (moved <= stamp_size - 1)).all(axis=1)]
        for lo in range(0, count, 256):
            for offset, result in enumerate(deblender.deblend_batch(images[lo:lo + 256], noise=blends.noise_sigma)):
                yield k, result, truths[lo + offset], np.full(len(truths[lo + offset]), np.nan)
        log(f"{count} blends of {k} ({share:.0%} field-like) in {time.perf_counter() - start:.0f} s")


def verifier_figures(data: dict[str, np.ndarray], probabilities: np.ndarray,
                     thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)) -> dict[str, Any]:
    """Per threshold: the share of pieces given back and of galaxies wrongly given back, by multiplicity."""
    out: dict[str, Any] = {}
    for threshold in thresholds:
        merged = probabilities < threshold
        row: dict[str, Any] = {}
        for k in np.unique(data["n_galaxies"]):
            sel = data["n_galaxies"] == k
            pieces, galaxies = sel & (data["label"] == 0), sel & (data["label"] == 1)
            row[f"{k}_galaxies"] = {
                "pieces": int(pieces.sum()), "pieces_given_back": float(merged[pieces].mean()) if pieces.any() else None,
                "galaxies": int(galaxies.sum()),
                "galaxies_given_back": float(merged[galaxies].mean()) if galaxies.any() else None}
        out[str(threshold)] = row
    return out


def train_verifier(config: VerifierTrainConfig, out_dir: str | Path, log: Callable[[str], None] = print,
                   progress: Callable[[float], None] | None = None) -> Path:
    """Train the split verifier of the ``config.model``'s ``config.init`` weights; return the new weights file.

    The simulated and deblended data are cached in ``OUT/cache``; ``OUT/history.jsonl``
    holds each member's validation loss and the validation figures of :func:`verifier_figures`.
    """
    from ..deblenders.split_verifier import SplitVerifier

    if config.model not in VERIFIED_MODELS:
        raise DeblendInputError(f"model {config.model!r}: a split verifier is made for {', '.join(VERIFIED_MODELS)}")
    out, preset, checkpoint, deblender, tag = start_perceptron_fit(config, out_dir)
    base = {k: v for k, v in checkpoint.items() if not k.startswith("split_verifier")}
    mix = data_mix(config)
    tag += f"_{mix.tag()}" + (f"_fieldlike{config.field_like:g}" if config.field_like > 0 else "")
    data, val = (
        cached_npz(out / "cache", f"verifier_{name}_{tag}_{n}_{seed}.npz",
                   lambda n=n, seed=seed, split=split: verifier_samples(
                       deblender, n, config.stamp_size, preset.name, seed, config.workers, log, mix, split,
                       config.field_like))
        for name, n, seed, split in (("train", config.n_train, VERIFIER_SEED + config.seed, "train"),
                                     ("val", config.n_val, VERIFIER_VALIDATION_SEED, "validation"))
    )
    labels = np.concatenate([data["label"], val["label"]])
    if len(data["label"]) < 10 or len(val["label"]) < 1 or len(np.unique(labels)) < 2:
        raise DeblendInputError(f"--n-train={config.n_train}: too few split components ({len(data['label'])} / "
                                f"{len(val['label'])}, of both kinds) to train a verifier; simulate more blends")
    torch.manual_seed(config.seed)  # the initial weights do not depend on what the process drew before
    verifier = SplitVerifier(data["features"].shape[1], config.width, config.depth, config.members)
    verifier.set_standardisation(data["features"])
    tensors = [torch.as_tensor(np.nan_to_num(a), dtype=torch.float32)
               for a in (data["features"], data["label"], val["features"], val["label"])]
    history = fit_members(verifier, tensors, config, log, progress, "cross-entropy", torch.nn.BCEWithLogitsLoss())
    verifier.eval()
    summary = {"validation": verifier_figures(val, verifier.probabilities(val["features"])),
               "n_train_samples": int(len(data["label"])), "n_val_samples": int(len(val["label"])),
               "train_piece_share": float(1 - data["label"].mean()), "members": history}
    with open(out / "history.jsonl", "a") as f:
        f.write(json.dumps(summary) + "\n")
    log(f"validation: {summary['validation']}")
    state = {k: v.detach().cpu() for k, v in verifier.state_dict().items()}
    return save_weights(out / f"{config.model}.pt",
                        {**base, "split_verifier": state, "split_verifier_config": verifier.config})

