"""Learned flux calibration of the peeling deblender's components (ours, not in Wang et al. 2021).

What is left of a component's flux error after the joint sweeps and the
photometric refit is partly predictable from what the deblender itself knows:
how close and how much brighter its neighbours are, how much light the
residual still holds under it, how far the sweeps moved it, how much the four
flips of the joint refiner disagree. :func:`component_features` measures
those (:data:`FEATURE_NAMES`, from the stamp, the components and the
deblender's :class:`PeelHistory`, never from any truth) and a small
multilayer perceptron, :class:`FluxCalibrator`, maps them to the logarithm
of a flux correction, bounded by :data:`MAX_LOG_CORRECTION`; each component
image is multiplied by its correction, so the components still add up.

The calibrator is fitted on parametric simulations, like every network of the
deblender (``napari-deblend train peeling-calibration``, see
:mod:`napari_deblend.training.flux_calibration`), to the median of
``log(true flux / component flux)`` (an L1 loss), and for the inference settings it
was fitted with (sweeps, flips, refit): with other settings it is not applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

#: The features of one component, in the calibrator's input order (see :func:`component_features`).
FEATURE_NAMES: tuple[str, ...] = (
    "log_snr", "n_components", "flux_rank", "log_ratio_nearest", "log_ratio_brightest_other",
    "distance_nearest", "overlap", "correlation_others", "residual_share", "residual_footprint",
    "residual_share_wide", "chi2_footprint", "log_footprint_pixels", "log_peak_snr", "size", "e1", "e2",
    "distance_centre", "first_count", "n_counts", "quality", "flux_share", "residual_total", "log_blend_snr",
    "log_first_pass", "log_first_sweep", "log_before_refit", "flip_spread", "amplitude_residual",
)
#: Largest correction applied, as |log(factor)| (a factor between 0.67 and 1.5).
MAX_LOG_CORRECTION = 0.4
_NO_NEIGHBOUR_DISTANCE = 50.0  # pixels: the distance feature of a lone component
_QUALITY_CODES = {"High": 0, "Medium": 1, "Low": 2}


@dataclass
class PeelHistory:
    """What one peeling run of a stamp went through, for the calibration features.

    Attributes
    ----------
    counts : list of int
        The galaxy counter's answers, step by step.
    quality : str
        High / Medium / Low.
    first_pass : numpy.ndarray
        ``(K,)`` component fluxes after the peeling loop.
    first_sweep : numpy.ndarray
        ``(K,)`` fluxes after the first refinement sweep (the first pass's when none ran).
    before_refit : numpy.ndarray
        ``(K,)`` fluxes after the last sweep, before the photometric refit.
    flip_spread : numpy.ndarray
        ``(K,)`` standard deviation over the joint refiner's flips of the
        component's flux in the last sweep, over its mean (0 without flips).
    """

    counts: list[int]
    quality: str
    first_pass: np.ndarray
    first_sweep: np.ndarray
    before_refit: np.ndarray
    flip_spread: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _log_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(numerator, 1e-3) / np.maximum(denominator, 1e-3))


def component_features(stamp: np.ndarray, components: np.ndarray, positions: np.ndarray, sigma: float,
                       history: PeelHistory) -> np.ndarray:
    """The calibration features :data:`FEATURE_NAMES` of every component of one stamp.

    Parameters
    ----------
    stamp : numpy.ndarray
        The blend ``(1, H, W)``, electrons.
    components : numpy.ndarray
        ``(K, 1, H, W)`` the deblender's final components (after the refit).
    positions : numpy.ndarray
        ``(K, 2)`` their centroids ``(y, x)``.
    sigma : float
        Background noise sigma.
    history : PeelHistory
        The peeling run's counts, quality and fluxes along the way.

    Returns
    -------
    numpy.ndarray
        ``(K, len(FEATURE_NAMES))`` float64.
    """
    comps = np.asarray(components, np.float64)[:, 0]
    k = len(comps)
    if not k:
        return np.zeros((0, len(FEATURE_NAMES)))
    blend = np.asarray(stamp, np.float64)[0]
    model = comps.sum(axis=0)
    residual = blend - model
    variance = sigma**2 + np.clip(model, 0, None)
    flux = comps.reshape(k, -1).sum(axis=1)
    flux_pos = np.maximum(flux, 1e-3)
    flux_rank = np.empty(k)
    flux_rank[np.argsort(-flux)] = np.arange(k)
    yy, xx = np.indices(blend.shape)
    share = np.clip(comps / np.where(model > 1e-6, model, np.inf), 0, 1)
    rows = []
    for r in range(k):
        own, others = comps[r], model - comps[r]
        weight = np.clip(own, 0, None)
        total = weight.sum() + 1e-9
        cy, cx = (weight * yy).sum() / total, (weight * xx).sum() / total
        m20 = (weight * (xx - cx) ** 2).sum() / total
        m02 = (weight * (yy - cy) ** 2).sum() / total
        m11 = (weight * (xx - cx) * (yy - cy)).sum() / total
        trace = max(m20 + m02, 1e-6)
        if k > 1:
            distance = np.hypot(*(positions - positions[r]).T)
            distance[r] = np.inf
            nearest = int(np.argmin(distance))
            neighbour = [distance[nearest], np.log10(1 + flux[nearest] / flux_pos[r]),
                         np.log10(1 + np.delete(flux, r).max() / flux_pos[r]),
                         np.minimum(weight, np.clip(others, 0, None)).sum() / flux_pos[r],
                         (own * others).sum() / np.sqrt((own**2).sum() * (others**2).sum() + 1e-12)]
        else:
            neighbour = [_NO_NEIGHBOUR_DISTANCE, 0.0, 0.0, 0.0, 0.0]
        footprint, wide = own > sigma, own > 0.2 * sigma
        shared_residual = share[r] * residual
        rows.append([
            np.log10(flux_pos[r] / sigma), k, flux_rank[r], neighbour[1], neighbour[2], neighbour[0],
            neighbour[3], neighbour[4], shared_residual.sum() / flux_pos[r],
            residual[footprint].sum() / flux_pos[r] if footprint.any() else 0.0,
            shared_residual[wide].sum() / flux_pos[r] if wide.any() else 0.0,
            (residual**2 / variance)[footprint].mean() if footprint.any() else 1.0,
            np.log10(1 + footprint.sum()), np.log10(own.max() / sigma + 1e-3), np.sqrt(trace),
            (m20 - m02) / trace, 2 * m11 / trace,
            np.hypot(cy - (blend.shape[0] - 1) / 2, cx - (blend.shape[1] - 1) / 2),
            history.counts[0] if history.counts else 0, len(history.counts),
            _QUALITY_CODES.get(str(history.quality), 3), flux[r] / max(model.sum(), 1e-3),
            residual.sum() / flux_pos[r], np.log10(1 + blend.sum() / sigma) if blend.sum() > 0 else 0.0,
        ])
    features = np.asarray(rows, np.float64)
    spread = history.flip_spread if len(history.flip_spread) == k else np.zeros(k)
    amplitude = ((comps * residual / variance).reshape(k, -1).sum(axis=1)
                 / np.maximum((comps**2 / variance).reshape(k, -1).sum(axis=1), 1e-9))
    along_the_way = np.stack([_log_ratio(history.first_pass, flux), _log_ratio(history.first_sweep, flux),
                              _log_ratio(history.before_refit, flux), spread, amplitude], axis=1)
    return np.concatenate([features, along_the_way], axis=1)


class FluxCalibrator(nn.Module):
    """An average of small perceptrons from clipped, standardised features to a bounded log flux correction.

    Parameters
    ----------
    n_features : int
        Input features (``len(FEATURE_NAMES)``).
    width : int
        Hidden units per layer.
    depth : int
        Hidden layers.
    members : int
        Perceptrons averaged (each trained from its own seed).
    settings : dict, optional
        The deblender's inference settings the calibrator was fitted with.
    """

    def __init__(self, n_features: int = len(FEATURE_NAMES), width: int = 128, depth: int = 3, members: int = 1,
                 settings: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = {"n_features": n_features, "width": width, "depth": depth, "members": members,
                       "settings": dict(settings or {})}
        for name, value in (("low", -np.inf), ("high", np.inf), ("mean", 0.0), ("std", 1.0)):
            self.register_buffer(name, torch.full((n_features,), value))
        self.members = nn.ModuleList(_perceptron(n_features, width, depth) for _ in range(members))

    def set_standardisation(self, features: np.ndarray) -> None:
        """Clip inputs to the 0.5–99.5 percentiles of the training ``features``, then standardise them."""
        low, high = np.percentile(features, [0.5, 99.5], axis=0)
        clipped = np.clip(features, low, high)
        for name, value in (("low", low), ("high", high), ("mean", clipped.mean(axis=0)),
                            ("std", clipped.std(axis=0) + 1e-6)):
            getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32))

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """The perceptrons' input: ``features`` clipped and standardised."""
        return (torch.maximum(torch.minimum(features, self.high), self.low) - self.mean) / self.std

    def member_forward(self, index: int) -> nn.Module:
        """Member ``index`` as a module of the raw features (for training it alone)."""
        return _Member(self, index)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, n_features)`` -> ``(N,)`` log corrections, the members' mean, bounded in evaluation mode."""
        x = self.standardise(features)
        out = torch.stack([member(x)[:, 0] for member in self.members]).mean(dim=0)
        return out if self.training else out.clamp(-MAX_LOG_CORRECTION, MAX_LOG_CORRECTION)

    @torch.no_grad()
    def factors(self, features: np.ndarray) -> np.ndarray:
        """Flux factors ``(N,)`` for ``(N, n_features)`` features (evaluation mode)."""
        if not len(features):
            return np.ones(0)
        x = torch.as_tensor(np.nan_to_num(features), dtype=torch.float32, device=self.mean.device)
        return np.exp(self.eval()(x).cpu().numpy().astype(np.float64))


def _perceptron(n_features: int, width: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    size = n_features
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.SiLU()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, 1))


class _Member(nn.Module):
    """One member of a :class:`FluxCalibrator` on the raw features: ``(N, F)`` -> ``(N,)``."""

    def __init__(self, calibrator: FluxCalibrator, index: int) -> None:
        super().__init__()
        self.standardise = calibrator.standardise  # a method, not a module: only this member's weights train
        self.net = calibrator.members[index]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardise(features))[:, 0]
