"""Learned check of the peeling deblender's splits: is a fainter component a galaxy or a piece of one?

The galaxy counter reads a knot, a spiral arm or a clump left behind by a
peeled galaxy as another galaxy, and a single clumpy galaxy comes out in two
or three components. The counter's own confidence does not tell the two apart
(it is about as sure of a knot as of a companion); what does is where the
piece sits on its host and what it looks like: a knot lies well inside the
host's light, is compact and faint against the host at that place, an arm is
stretched along the host's isophotes, a companion has its own profile wherever
it falls.

:func:`split_features` measures, for every component but the brightest, the
flux-calibration features (:func:`~napari_deblend.deblenders.flux_calibration.component_features`)
and :data:`HOST_FEATURE_NAMES`, measured against its *host* (the other
component brightest at its centroid), never from any truth. A
:class:`SplitVerifier`, an average of small perceptrons, maps them to the
probability that the component is a galaxy of its own. With the deblender's
``give_back_pieces``, components below its ``split_threshold`` are given back
to their host (:func:`merge_pieces`): the images are added, so flux is
conserved and the components still add up to the model of the blend.

The verifier is trained on simulated blends of the realistic morphology mix
and of real galaxies, run through the deblender with nothing given back; a
component matched to no true galaxy is a piece (``napari-deblend train
peeling-verifier``, :mod:`napari_deblend.training.split_verifier`).

The deblenders that take their sources from the learned source finder
(``vae``, ``unet``) can carry a verifier of their own
(``napari-deblend train vae-verifier``): :func:`source_split_features` adds
the finder's map to the split features, :func:`verify_sources` gives their
results ``info["galaxy_probabilities"]``, which in a run decide their splits
(:func:`napari_deblend.parents.galaxy_scores`). They never merge components.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..moments import centroid, ellipticity, host_of, second_moments
from .flux_calibration import FEATURE_NAMES, FluxCalibrator, PeelHistory, component_features

#: Features of a component measured against its host, after the calibration features.
HOST_FEATURE_NAMES: tuple[str, ...] = (
    "log_host_level_snr", "log_host_contrast", "log_host_flux_ratio", "host_distance_in_size",
    "tangential_elongation", "own_size_in_host_size", "p_two_or_more", "p_three_or_more",
)
#: The verifier's input, in order.
SPLIT_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES + HOST_FEATURE_NAMES
#: The input of the verifier of a deblender that takes its sources from the learned source finder
#: (``vae``, ``unet``): the split features, then the finder's probability of a galaxy centre at the
#: component and at the stamp's brightest component.
SOURCE_SPLIT_FEATURE_NAMES: tuple[str, ...] = SPLIT_FEATURE_NAMES + ("source_probability", "brightest_source_probability")


def _moments(image: np.ndarray) -> tuple[float, float, float, float, float]:
    """Centroid ``(y, x)`` and second moments ``(m_yy, m_xx, m_xy)`` of the positive pixels.

    :func:`~napari_deblend.moments.centroid` and :func:`~napari_deblend.moments.second_moments`
    over the positive pixels; an image with none sits at the stamp's centre, round.
    """
    cy, cx = centroid(image)
    if not np.isfinite(cy):
        h, w = image.shape
        return (h - 1) / 2.0, (w - 1) / 2.0, 1.0, 1.0, 0.0
    mxx, myy, mxy = second_moments(image, image > 0)
    return cy, cx, myy, mxx, mxy


def host_features(components: np.ndarray, sigma: float, count_probabilities: np.ndarray | None) -> np.ndarray:
    """:data:`HOST_FEATURE_NAMES` of every component of one stamp (``(K, 1, H, W)``; zeros when alone)."""
    comps = np.asarray(components, np.float64)[:, 0]
    k = len(comps)
    out = np.zeros((k, len(HOST_FEATURE_NAMES)))
    probabilities = np.asarray(count_probabilities if count_probabilities is not None else [1.0], np.float64)
    p_two, p_three = float(probabilities[2:].sum()), float(probabilities[3:].sum())
    out[:, 6], out[:, 7] = p_two, p_three
    if k < 2:
        return out
    moments = [_moments(c) for c in comps]
    flux = np.maximum(comps.reshape(k, -1).sum(axis=1), 1e-3)
    h, w = comps.shape[-2:]
    for r in range(k):
        host = host_of(comps, r)
        cy, cx, myy, mxx, mxy = moments[r]
        hy, hx, hyy, hxx, _ = moments[host]
        y, x = min(max(int(round(cy)), 0), h - 1), min(max(int(round(cx)), 0), w - 1)
        level = max(float(comps[host, y, x]), 0.0)
        peak = max(float(comps[r].max()), 1e-3)
        host_size = np.sqrt(max(hyy + hxx, 1e-6))
        own_size = np.sqrt(max(myy + mxx, 1e-6))
        distance = float(np.hypot(cy - hy, cx - hx))
        angle = np.arctan2(cy - hy, cx - hx)  # direction from the host to the piece
        e1, e2 = ellipticity(mxx, myy, mxy)
        # elongation across the host's radius (along its isophotes): > 0 for an arm, ~0 for a round companion
        tangential = -(e1 * np.cos(2 * angle) + e2 * np.sin(2 * angle)) if distance > 0.5 else 0.0
        out[r, :6] = [np.log10(1 + level / sigma), np.log10(1 + level / peak), np.log10(1 + flux[host] / flux[r]),
                      distance / host_size, tangential, own_size / host_size]
    return out


def split_features(stamp: np.ndarray, components: np.ndarray, positions: np.ndarray, sigma: float,
                   history: PeelHistory, count_probabilities: np.ndarray | None) -> np.ndarray:
    """:data:`SPLIT_FEATURE_NAMES` of every component of one stamp, ``(K, F)`` float64 (see the module text)."""
    return np.concatenate([component_features(stamp, components, positions, sigma, history),
                           host_features(components, sigma, count_probabilities)], axis=1)


def brightest_component(components: np.ndarray) -> int:
    """Index of the brightest of ``(K, ...)`` components (by the sum of their pixels)."""
    comps = np.asarray(components)
    return int(np.argmax(comps.reshape(len(comps), -1).sum(axis=1)))


def source_split_features(stamp: np.ndarray, components: np.ndarray, positions: np.ndarray, sigma: float,
                          source_probabilities: np.ndarray) -> np.ndarray:
    """:data:`SOURCE_SPLIT_FEATURE_NAMES` of every component of one stamp of a source-finder deblender.

    Such a deblender draws its components in one pass: its history is that of a
    peeling run that counted ``K`` galaxies once and never moved their fluxes.
    ``source_probabilities`` ``(K,)`` is the finder's map at each component
    (:func:`~napari_deblend.deblenders.detector.attach_source_probabilities`).
    Returns ``(K, F)`` float64.
    """
    comps = np.asarray(components)
    k = len(comps)
    flux = comps.reshape(k, -1).sum(axis=1, dtype=np.float64)
    history = PeelHistory([k], "High", flux.copy(), flux.copy(), flux.copy(), np.zeros(k))
    scores = np.asarray(source_probabilities, np.float64).reshape(k)
    host_score = scores[brightest_component(comps)] if k else 0.0
    return np.concatenate([split_features(stamp, comps, positions, sigma, history, None),
                           np.c_[scores, np.full(k, host_score)]], axis=1)


def verify_sources(verifier: SplitVerifier | None, results: list, keep_features: bool = False) -> None:
    """Give every result of a source-finder deblender its components' galaxy probabilities, in place.

    For each result of two or more components with ``info["source_probabilities"]``:
    ``info["galaxy_probabilities"]`` (the verifier's; the brightest component's is 1),
    which decide, in a run's catalogue, which fainter components of a detection sep saw
    alone are galaxies (:func:`napari_deblend.parents.galaxy_scores`); with
    ``keep_features``, ``info["split_features"]`` (for training a verifier).
    """
    if verifier is None and not keep_features:
        return
    judged, features = [], []
    for result in results:
        scores = result.info.get("source_probabilities")
        if result.n_components < 2 or scores is None or np.size(scores) != result.n_components:
            continue
        positions = np.asarray(result.positions, float).reshape(-1, 2)
        features.append(source_split_features(result.blend, result.components, positions, float(result.noise), scores))
        judged.append(result)
        if keep_features:
            result.info["split_features"] = features[-1]
    if verifier is None or not judged:
        return
    probabilities = np.split(verifier.probabilities(np.concatenate(features)),  # one call for the batch
                             np.cumsum([len(f) for f in features])[:-1])
    for result, p in zip(judged, probabilities):
        p[brightest_component(result.components)] = 1.0
        result.info["galaxy_probabilities"] = p


class SplitVerifier(FluxCalibrator):
    """An average of small perceptrons from split features to the log-odds that a component is a galaxy.

    The same network as :class:`~napari_deblend.deblenders.flux_calibration.FluxCalibrator`
    (clipped, standardised inputs), with an unbounded output read as a logit.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, n_features)`` -> ``(N,)`` log-odds of being a galaxy, the members' mean."""
        x = self.standardise(features)
        return torch.stack([member(x)[:, 0] for member in self.members]).mean(dim=0)

    @torch.no_grad()
    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Probability ``(N,)`` that each of ``(N, n_features)`` components is a galaxy of its own."""
        if not len(features):
            return np.ones(0)
        x = torch.as_tensor(np.nan_to_num(features), dtype=torch.float32, device=self.mean.device)
        return torch.sigmoid(self.eval()(x)).cpu().numpy().astype(np.float64)


def merge_pieces(components: list[np.ndarray], probabilities: np.ndarray, threshold: float,
                 history: PeelHistory, protected: np.ndarray | None = None) -> list[int]:
    """Give each component whose galaxy probability is below ``threshold`` back to its host, in place.

    The least likely goes first; the brightest component (index 0) and the
    ``protected`` ones (bool per component, e.g. on a detection) are never given
    away. ``history``'s flux arrays are summed the same way. Returns the indices
    (in the given order) of the components that remain.
    """
    alive = list(range(len(components)))
    merged = 0
    for j in sorted(range(1, len(components)), key=lambda j: probabilities[j]):
        if probabilities[j] >= threshold or len(alive) < 2:
            break
        if protected is not None and protected[j]:
            continue
        stack = np.stack([components[i][0] for i in alive])
        host = alive[host_of(stack, alive.index(j))]
        components[host] = components[host] + components[j]
        for name in ("first_pass", "first_sweep", "before_refit"):
            values = getattr(history, name)
            if len(values) == len(components):
                values[host] += values[j]
        alive.remove(j)
        merged += 1
    keep = sorted(alive)
    if merged:
        components[:] = [components[i] for i in keep]
        for name in ("first_pass", "first_sweep", "before_refit", "flip_spread"):
            values = getattr(history, name)
            if len(values) == len(keep) + merged:
                setattr(history, name, np.asarray(values)[keep])
    return keep


def load_source_verifier(checkpoint: dict, weights: Path, model: str, remedy: str) -> SplitVerifier | None:
    """The split verifier of a source-finder deblender's weights (None when they have none).

    A clear :class:`~napari_deblend.deblenders.base.DeblendError` naming ``weights``
    when its configuration is missing, its tensors do not fit, or it takes other
    features than :data:`SOURCE_SPLIT_FEATURE_NAMES`; ``remedy`` ends the message.
    """
    from .checkpoints import load_part

    if "split_verifier" not in checkpoint:
        return None
    return load_part(SplitVerifier, checkpoint, "split_verifier", owner=f"{model} weights {weights}",
                     what="the split verifier", remedy=remedy, n_features=len(SOURCE_SPLIT_FEATURE_NAMES)).eval()
