"""``peeling``: iterative peeling with a Residual Dense Network and a galaxy counter (Wang et al. 2021).

At each step the counter says how many galaxies the current image holds; if
none, stop. Otherwise the RDN returns the noiseless *brightest* galaxy, which
is subtracted, and the residual (re-normalised: see
:func:`~napari_deblend.deblenders.nets.normalise`) is fed back. The loop stops
when the count reaches 0, after three equal counts in a row, or after
``max_steps``. Quality: ``High`` when the count drops by one at every step and
ends at 0, ``Medium`` when it ends at 0 otherwise, ``Low`` when stuck.

Pieces given back (ours): a component that lies inside a brighter one, with
less than half its flux, is merged into it (see ``_merge_inner``): knots,
arms and clumps of one real galaxy that the counter took for galaxies.
After the refit, a learned split verifier (when the weights have one) gives
each fainter component the probability that it is a galaxy of its own; with
``give_back_pieces``, those below ``split_threshold`` go back to their host (see
:mod:`~napari_deblend.deblenders.split_verifier`).

Refinement (our addition to the paper): the first pass hands the brightest
galaxy part of an overlapping neighbour's light (the neighbour then comes out
too faint: -16 % median flux on the fainter of two). After peeling, each
component is extracted again by the RDN from the blend minus all the *other*
components, brightest first (one Gauss-Seidel sweep per ``refine_sweeps``).
With the first (40-minute) weights this moved the 2-galaxy flux bias from
+3.4 % / -16.4 % to -1.4 % / -6.2 % (brighter / fainter). The shipped weights
leak much less (-1.6 % / -2.0 % without the sweep, -2.2 % / -0.8 % with it);
the sweep now matters most on 3-galaxy blends, where it cuts the Δf/f scatter
of the 2nd and 3rd galaxies from 21.4 / 56.3 % to 18.6 / 48.8 % (2000-blend
test set, ``refine_sweeps`` 0 vs 1). Cost: one RDN pass per component.

Joint refiner (ours, when the weights have one): the refinement sweep is then
made by a second RDN that sees, besides the blend minus the other components,
the other components and the component's own first-pass estimate, and
re-extracts every component of a stamp at once (see
:mod:`napari_deblend.training.peeling_joint`), in two sweeps (``joint_sweeps``:
the second starts from the first's components). On 1000 validation pairs
(seed 424242) the Δf/f scatter went 5.93 / 14.06 % -> 5.81 / 13.54 %
(brighter / fainter) and on 1000 triples 8.2 / 16.3 / 22.1 % -> 7.8 / 15.0 /
21.6 %, for one more pass per component. Its output is averaged over the four
flips of its input (``joint_flips``, test-time augmentation: 5.81 / 13.54 % ->
5.65 / 12.96 % on the pairs, 4 against 1 flip; the first-pass RDN gained
nothing from it: 4 flips there lost 0.6 % of the fainter galaxies).

Precision (``precision="auto"``): the networks run in float16 on CUDA and in
bfloat16 on a CPU that computes it natively (about twice as fast; the same
validation figures to 0.05 point), float32 elsewhere or with ``"float32"``.

Photometric refit (also ours): last, the brightest component is refit to the
blend minus the others as a non-negative mix of itself and a broadened copy
(:mod:`~napari_deblend.deblenders.refit`), which undoes most of the flux the
RDN leaves out of a galaxy's faint wings.

Flux calibration (ours, when the weights have one and ``calibrate_flux``):
after the refit each component is multiplied by a factor (0.67-1.5) that a
small perceptron ensemble predicts from what the run itself measured
(:mod:`~napari_deblend.deblenders.flux_calibration`; fitted on simulations by
``napari-deblend train peeling-calibration``); test pairs 6.05 / 12.39 % ->
5.83 / 11.29 % Δf/f scatter (brighter / fainter). It is applied only with the
inference settings it was fitted with; ``info["flux_correction"]`` holds the factors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..measurements import MATCH_RADIUS
from .base import Deblender, DeblendError, DeblendResult
from .checkpoints import deblender_version, load_part, load_weights
from .flux_calibration import FEATURE_NAMES, FluxCalibrator, PeelHistory, component_features
from .inference import FLIPS, autocast_dtype_for, flip_outputs, fold_batchnorm, memory_format_for
from .refit import refit_component
from .split_verifier import SPLIT_FEATURE_NAMES, SplitVerifier, merge_pieces, split_features

WEIGHTS_DIR = Path(__file__).parent / "weights"
RETRAIN_HINT = "napari-deblend train peeling --preset lsst-i --minutes 40 --out runs/peeling --install"
JOINT_RETRAIN_HINT = "napari-deblend train peeling-joint --preset lsst-i --minutes 60 --out runs/joint --install"
CALIBRATION_RETRAIN_HINT = "napari-deblend train peeling-calibration --preset lsst-i --out runs/calibration --install"
VERIFIER_RETRAIN_HINT = "napari-deblend train peeling-verifier --preset lsst-i --out runs/verifier --install"


def peeling_quality(counts: list[int], reached_zero: bool) -> str:
    """High / Medium / Low from the sequence of galaxy counts (see module docstring)."""
    if not reached_zero:
        return "Low"
    return "High" if np.all(np.diff(counts) == -1) else "Medium"  # [0] alone (nothing to peel) is High


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a peeling checkpoint on the CPU, with a clear error naming the file if missing or corrupt."""
    return load_weights(path, "peeling", {"rdn", "counter", "rdn_config", "counter_config"}, RETRAIN_HINT)


class PeelingDeblender(Deblender):
    """Iterative peeling: RDN returns the brightest galaxy, a CNN counts what is left."""

    name: ClassVar[str] = "peeling"
    description: ClassVar[str] = "Iterative peeling (Wang et al. 2021): RDN extracts the brightest galaxy, a classifier counts the rest"
    bands: ClassVar[int | None] = 1
    stamp_size: ClassVar[int | None] = None  # fully convolutional; trained on 48x48
    min_stamp_size: ClassVar[int] = 16
    detection_hints: ClassVar[bool] = True  # the stamp's detections keep their components (see deblend_batch)
    max_steps: int = 4
    batch_size: int = 64
    refine_sweeps: int = 1  # RDN sweeps (weights without a joint refiner): a second one made the pairs worse
    joint_sweeps: int = 2  # joint-refiner sweeps (validation pairs and triples: 2 better than 1 and 3)
    joint_flips: int = 4  # the joint refiner's output averaged over this many flips of its input (1 to 4)
    precision: str = "auto"  # "auto" (float16 on CUDA, bfloat16 on a CPU that has it) or "float32"
    refit_brightest: bool = True  # photometric refit of the brightest component (see refit.py)
    calibrate_flux: bool = True  # the learned flux calibration, when the weights have one (see flux_calibration.py)
    # ... also on stamps of one component (on the realistic validation set it helped blends and hurt single galaxies)
    calibrate_single: bool = False
    # peeled pieces inside a brighter component (knots, arms, clumps) go back to it: see _merge_inner
    merge_inner: bool = True
    merge_level: float = 8.0  # the brighter component at the piece's centroid, in noise sigmas
    merge_peak_ratio: float = 4.0  # ... and in units of the piece's own peak
    merge_flux_ratio: float = 0.5  # the piece's flux below this share of the brighter component's
    # a detection sep saw alone is split only when the counter's first look gives two or more galaxies at least
    # this probability (else its components are summed into one; see parents.confirm_split): chosen on a
    # validation field, it halves the spurious splits of single galaxies for a few true pairs
    min_split_probability: float = 0.8
    keep_calibration_features: bool = False  # put each result's calibration features in its info (for fitting one)
    # the split verifier (when the weights have one) gives every fainter component of a split the probability that
    # it is a galaxy (info["galaxy_probabilities"], the catalogue's P_GALAXY); with give_back_pieces, those below
    # split_threshold go back to their host. Off: on the validation sets and field it removed a fifth to two fifths
    # of the spurious components for 1-2 points of scatter on the fainter galaxies (docs/models/peeling.md)
    give_back_pieces: bool = False
    split_threshold: float = 0.5
    keep_split_features: bool = False  # put each result's split features in its info (for training a verifier)

    def __init__(self, device: str = "auto", preset=None, weights: str | Path | None = None) -> None:
        super().__init__(device=device, preset=preset)
        import torch

        from .nets import RDN, GalaxyCounter

        torch.set_flush_denormal(True)
        self.weights = Path(weights) if weights else WEIGHTS_DIR / "peeling.pt"
        checkpoint = load_checkpoint(self.weights)
        self.rdn = self._load_part(RDN, checkpoint, "rdn", "the RDN", f"retrain with `{RETRAIN_HINT}`")
        self.counter = self._load_part(GalaxyCounter, checkpoint, "counter", "the galaxy counter",
                                       f"retrain with `{RETRAIN_HINT}`")
        self.memory_format = memory_format_for(self.device)
        self.joint = None  # the joint refiner, when the weights have one (see training/peeling_joint.py)
        if "joint" in checkpoint:
            self.joint = self._load_part(RDN, checkpoint, "joint", "the joint refiner", f"retrain with "
                                         f"`{JOINT_RETRAIN_HINT}`")
            self.joint.eval().to(self.device, memory_format=self.memory_format)
        # the flux calibration and the split verifier, when the weights have them (training/flux_calibration.py,
        # training/split_verifier.py)
        self.calibrator = self._load_perceptrons(FluxCalibrator, checkpoint, "flux_calibrator", "the flux calibrator",
                                                 len(FEATURE_NAMES), f"refit it with `{CALIBRATION_RETRAIN_HINT}`")
        self.verifier = self._load_perceptrons(SplitVerifier, checkpoint, "split_verifier", "the split verifier",
                                               len(SPLIT_FEATURE_NAMES), f"retrain it with `{VERIFIER_RETRAIN_HINT}`")
        self.rdn.eval().to(self.device, memory_format=self.memory_format)
        self.counter = fold_batchnorm(self.counter).to(self.device, memory_format=self.memory_format)
        self.version = str(checkpoint.get("version", "1"))
        self.train_stamp_size = int(checkpoint.get("stamp_size", 48))

    def _load_part(self, cls, checkpoint: dict, key: str, what: str, remedy: str, n_features: int | None = None):
        """``cls(**checkpoint[key + "_config"])`` with ``checkpoint[key]`` loaded; a clear error if they don't fit."""
        return load_part(cls, checkpoint, key, owner=f"peeling weights {self.weights}", what=what, remedy=remedy,
                         n_features=n_features)

    def _load_perceptrons(self, cls, checkpoint: dict, key: str, what: str, n_features: int, remedy: str):
        """The part ``key`` of the weights (None when absent), checked to take the ``n_features`` measured here."""
        if key not in checkpoint:
            return None
        return self._load_part(cls, checkpoint, key, what, remedy, n_features).eval()

    def precision_in_use(self) -> str:
        """The floating-point type the networks run in here: ``"float16"``, ``"bfloat16"`` or ``"float32"``."""
        dtype = self._autocast_dtype()
        return "float32" if dtype is None else str(dtype).removeprefix("torch.")

    def _autocast_dtype(self):
        """The reduced precision of ``self.precision`` on this device (None: float32), or a clear error."""
        try:
            return autocast_dtype_for(self.device, self.precision)
        except ValueError as exc:
            raise DeblendError(f"peeling: {exc}") from None

    def deblend_batch(self, stamps, positions=None, noise=None) -> list[DeblendResult]:
        """Peel every stamp of ``(N, 1, H, W)``.

        ``positions[i]`` (``(M, 2)`` ``(y, x)``, optional) are detections on stamp
        ``i``: not taken as the sources, but a component within
        :data:`~napari_deblend.measurements.MATCH_RADIUS` of one is never given back
        to its host by the split verifier (a detection is evidence of a galaxy).
        """
        stamps = self.check_stamps(stamps)
        sigmas = self.noise_levels(stamps, noise)
        hints = [None] * len(stamps) if positions is None else list(positions)
        if len(hints) != len(stamps):
            raise DeblendError(f"peeling: {len(hints)} position lists for {len(stamps)} stamps")
        hints = [None if p is None else _hint_positions(p, i) for i, p in enumerate(hints)]
        return self.run_in_chunks(len(stamps), lambda chunk, _size: self._peel(stamps[chunk], sigmas[chunk],
                                                                               hints[chunk]))

    def _peel(self, stamps: np.ndarray, sigmas: np.ndarray, hints: list | None = None) -> list[DeblendResult]:
        import torch

        from .nets import normalise

        device = torch.device(self.device)
        dtype = self._autocast_dtype()
        x = torch.tensor(stamps, device=device)  # a copy: peeling subtracts in place, the caller's stamps stay
        sigma = torch.from_numpy(sigmas.astype(np.float32)).to(device)
        n = len(stamps)
        components: list[list[np.ndarray]] = [[] for _ in range(n)]
        counts: list[list[int]] = [[] for _ in range(n)]
        done = np.zeros(n, dtype=bool)
        reached_zero = np.zeros(n, dtype=bool)
        first_look = None
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            for _ in range(self.max_steps + 1):
                active = np.flatnonzero(~done)
                if not len(active):
                    break
                idx = torch.from_numpy(active).to(device)
                inp, scale = normalise(x[idx], sigma[idx])
                inp = inp.contiguous(memory_format=self.memory_format)
                logits = self.counter(inp).float()
                count = logits.argmax(dim=1).cpu().numpy()
                if first_look is None:  # the counter's probabilities on the stamp as given (see split_probability)
                    first_look = torch.softmax(logits, dim=1).cpu().numpy()
                peel = []
                for j, i in enumerate(active):
                    counts[i].append(int(count[j]))
                    last = counts[i][-3:]
                    if count[j] == 0:
                        done[i] = reached_zero[i] = True
                    elif len(last) == 3 and len(set(last)) == 1 or len(components[i]) >= self.max_steps:
                        done[i] = True
                    else:
                        peel.append(j)
                if not peel:
                    continue
                sel = torch.as_tensor(peel, device=device)
                galaxy = (self.rdn(inp[sel]) * scale[sel]).float()
                x[idx[sel]] = x[idx[sel]] - galaxy
                galaxy_np = galaxy.cpu().numpy()
                for k, j in enumerate(peel):
                    components[active[j]].append(galaxy_np[k])
            merged = [self._merge_inner(comps, float(sigmas[i])) for i, comps in enumerate(components)]
            first_pass = [_fluxes(comps) for comps in components]
            first_sweep, spreads = first_pass, [np.zeros(len(comps)) for comps in components]
            for sweep in range(self.joint_sweeps if self.joint is not None else self.refine_sweeps):
                spreads = self._refine(stamps, sigma, components)
                if sweep == 0:
                    first_sweep = [_fluxes(comps) for comps in components]
        before_refit = [_fluxes(comps) for comps in components]
        if self.refit_brightest:
            for i, comps in enumerate(components):
                if comps:
                    comps[0] = refit_component(stamps[i], np.stack(comps), 0, float(sigmas[i]))
        histories = [
            PeelHistory(counts[i], peeling_quality(counts[i], bool(reached_zero[i])), first_pass[i], first_sweep[i],
                        before_refit[i], spreads[i])
            for i in range(n)
        ]
        verified = self._verify_splits(stamps, components, sigmas, histories, first_look, hints or [None] * n)
        stacked = [np.stack(comps) if comps else np.zeros((0, *stamps.shape[1:]), np.float32) for comps in components]
        positions = [np.array([_centroid(c.sum(axis=0)) for c in comps]).reshape(-1, 2) for comps in stacked]
        features, factors = self._flux_calibration(stamps, stacked, positions, sigmas, histories, verified)
        for v in verified:
            v.pop("_features", None)
        results = []
        label = f"{self.name} {deblender_version(self)}"  # the weights' version, as MODEL_VERSION
        for i in range(n):
            info = {"counts": counts[i], "merged_inner": merged[i], "count_probabilities": first_look[i],
                    "min_split_probability": self.min_split_probability, **verified[i]}
            if factors is not None:
                info["flux_correction"] = factors[i]
            if features is not None and self.keep_calibration_features:
                info["calibration_features"] = features[i]
            comps = stacked[i] if factors is None else stacked[i] * factors[i].astype(np.float32)[:, None, None, None]
            results.append(DeblendResult(
                blend=stamps[i], components=comps, positions=positions[i], quality=histories[i].quality,
                model=label, device=self.device, noise=float(sigmas[i]), info=info,
            ))
        return results

    def _merge_inner(self, components: list[np.ndarray], sigma: float) -> int:
        """Give each peeled piece that lies inside a brighter component back to it, in place; return how many.

        A knot, arm or clump that the counter took for a galaxy comes out of the
        loop as a faint component sitting on a brighter one. Component ``j`` is
        merged into the brighter component ``b`` that is brightest at ``j``'s
        centroid when there ``b`` is above ``merge_level`` times the noise and
        ``merge_peak_ratio`` times ``j``'s own peak, and ``j`` has less than
        ``merge_flux_ratio`` of ``b``'s flux: the contrast test of SExtractor's
        deblending, applied to the network's components. A real companion sits
        where the brighter galaxy is faint, and stays.
        """
        if not self.merge_inner or len(components) < 2:
            return 0
        merged = 0
        j = 1
        while j < len(components):
            piece = components[j]
            y, x = (min(max(int(round(v)), 0), n - 1) for v, n in zip(_centroid(piece.sum(axis=0)), piece.shape[-2:]))
            levels = [float(components[b][:, y, x].sum()) for b in range(j)]
            b = int(np.argmax(levels))
            flux_b, flux_j = float(components[b].sum()), float(piece.sum())
            if (levels[b] > self.merge_level * sigma and levels[b] > self.merge_peak_ratio * float(piece.sum(axis=0).max())
                    and flux_j < self.merge_flux_ratio * flux_b):
                components[b] = components[b] + piece
                del components[j]
                merged += 1
            else:
                j += 1
        return merged

    def _verify_splits(self, stamps, components, sigmas, histories, first_look, hints) -> list[dict[str, Any]]:
        """The split verifier's galaxy probabilities; with ``give_back_pieces``, the doubtful components merged.

        Components below ``split_threshold`` go back to their hosts, in place; one
        within :data:`~napari_deblend.measurements.MATCH_RADIUS` of a position of
        ``hints[i]`` (a detection) stays, whatever its probability.

        Returns, per stamp, what goes into the result's info: ``galaxy_probabilities``
        (of the components that remain; the brightest's is 1),
        ``split_pieces_merged`` and, with ``keep_split_features``, ``split_features``.
        """
        out: list[dict[str, Any]] = [{} for _ in components]
        rows = [i for i, comps in enumerate(components) if len(comps) >= 2]
        if not rows or (self.verifier is None and not self.keep_split_features):
            return out
        centres = {i: np.array([_centroid(c.sum(axis=0)) for c in components[i]]) for i in rows}
        features = [split_features(stamps[i], np.stack(components[i]), centres[i], float(sigmas[i]), histories[i],
                                   first_look[i]) for i in rows]
        for i, f in zip(rows, features):
            out[i]["_features"] = f  # reused for the calibration when nothing is merged (then dropped)
            if self.keep_split_features:
                out[i]["split_features"] = f
        if self.verifier is None:
            return out
        probabilities = np.split(self.verifier.probabilities(np.concatenate(features)),
                                 np.cumsum([len(f) for f in features])[:-1])
        for i, p in zip(rows, probabilities):
            p = p.copy()
            p[0] = 1.0  # the brightest component is never given away
            protected = None
            if hints[i] is not None and len(hints[i]):
                distance = np.hypot(*(centres[i][:, None, :] - hints[i][None]).T)
                protected = distance.min(axis=0) <= MATCH_RADIUS
            kept = (merge_pieces(components[i], p, self.split_threshold, histories[i], protected)
                    if self.give_back_pieces else list(range(len(p))))
            out[i]["galaxy_probabilities"] = p[kept]
            out[i]["split_pieces_merged"] = len(p) - len(kept)
        return out

    def calibration_settings(self) -> dict[str, Any]:
        """The inference settings a flux calibration depends on (it is applied only with those it was fitted with)."""
        settings = {"max_steps": self.max_steps, "joint": self.joint is not None, "joint_sweeps": self.joint_sweeps,
                    "joint_flips": self.joint_flips, "refine_sweeps": self.refine_sweeps,
                    "refit_brightest": self.refit_brightest}
        if self.merge_inner:
            settings["merge_inner"] = [self.merge_level, self.merge_peak_ratio, self.merge_flux_ratio]
        return settings

    def calibration_applies(self) -> bool:
        """Whether the weights' flux calibration is used: present, switched on, fitted with these settings."""
        return (self.calibrator is not None and self.calibrate_flux
                and self.calibrator.config["settings"] == self.calibration_settings())

    def _flux_calibration(self, stamps, components, positions, sigmas, histories, verified):
        """Calibration features and flux factors of every stamp's components (None where not needed).

        A stamp whose components the split verifier left as they were reuses the
        features it measured (their first columns are the calibration features).
        """
        applies = self.calibration_applies()
        if not (applies or self.keep_calibration_features):
            return None, None
        features = [v["_features"][:, :len(FEATURE_NAMES)] if "_features" in v and not v.get("split_pieces_merged")
                    else component_features(stamps[i], components[i], positions[i], float(sigmas[i]), histories[i])
                    for i, v in enumerate(verified)]
        if not applies:
            return features, None
        factors = self.calibrator.factors(np.concatenate(features))
        factors = np.split(factors, np.cumsum([len(f) for f in features])[:-1])
        if not self.calibrate_single:  # one component: the refit's flux stands (see calibrate_single)
            factors = [np.ones_like(f) if len(f) == 1 else f for f in factors]
        return features, factors

    def _refine(self, stamps: np.ndarray, sigma, components: list[list[np.ndarray]]) -> list[np.ndarray]:
        """One sweep: component ``r`` (brightest first) = RDN(blend - the other components), in place.

        With a joint refiner, every component of a stamp is re-extracted at once
        from the blend minus the others, the others and its own estimate.
        Returns, per stamp, the spread of each component's flux over the joint
        refiner's flips (standard deviation / mean; zeros without flips).
        """
        import torch

        from .nets import joint_input, normalise

        device = sigma.device
        if not 1 <= self.joint_flips <= len(FLIPS):
            raise DeblendError(f"peeling: joint_flips={self.joint_flips!r}: expected 1 to {len(FLIPS)} flips")
        spreads = [np.zeros(len(comps)) for comps in components]
        if self.joint is not None:
            rows = [(i, r) for i, comps in enumerate(components) if len(comps) >= 2 for r in range(len(comps))]
            if not rows:
                return spreads
            totals = {i: np.sum(components[i], axis=0) for i in {i for i, _ in rows}}
            own = np.stack([components[i][r] for i, r in rows])
            others = np.stack([totals[i] for i, _ in rows]) - own
            residual = np.stack([stamps[i] for i, _ in rows]) - others
            idx = torch.as_tensor([i for i, _ in rows], device=device)
            inp, scale = joint_input(*(torch.from_numpy(a).to(device) for a in (residual, others, own)), sigma[idx])
            out, flip_fluxes = [], []
            for lo in range(0, len(rows), self.batch_size):
                chunk = slice(lo, lo + self.batch_size)
                flips = flip_outputs(self.joint, inp[chunk], self.joint_flips, self.memory_format) * scale[chunk]
                out.append(flips.mean(dim=0).cpu().numpy())
                flip_fluxes.append(flips.sum(dim=(2, 3, 4)).double().cpu().numpy())
            galaxy = np.concatenate(out)
            fluxes = np.concatenate(flip_fluxes, axis=1)  # (flips, rows)
            spread = fluxes.std(axis=0) / np.maximum(np.abs(fluxes.mean(axis=0)), 1e-6)
            for k, (i, r) in enumerate(rows):
                components[i][r] = galaxy[k]
                spreads[i][r] = spread[k]
            return spreads
        for rank in range(max((len(c) for c in components), default=0)):
            rows = [i for i, comps in enumerate(components) if len(comps) >= 2 and len(comps) > rank]
            if not rows:
                break
            others = np.stack([np.sum(components[i], axis=0) - components[i][rank] for i in rows])
            x = torch.from_numpy(stamps[rows] - others).to(device)
            idx = torch.as_tensor(rows, device=device)
            inp, scale = normalise(x, sigma[idx])
            galaxy = (self.rdn(inp.contiguous(memory_format=self.memory_format)) * scale).float().cpu().numpy()
            for k, i in enumerate(rows):
                components[i][rank] = galaxy[k]
        return spreads


def _hint_positions(given: Any, index: int) -> np.ndarray:
    """Detections of stamp ``index`` as ``(M, 2)`` floats (anywhere: one off the stamp protects nothing)."""
    try:
        return np.asarray(given, dtype=float).reshape(-1, 2)
    except (TypeError, ValueError):
        raise DeblendError(f"peeling: positions of stamp {index} have shape {np.shape(given)}: "
                           "expected (K, 2) (y, x)") from None


def _fluxes(components: list[np.ndarray]) -> np.ndarray:
    """``(K,)`` total flux of each component."""
    return np.array([float(c.sum()) for c in components])


def _centroid(image: np.ndarray) -> tuple[float, float]:
    """Flux-weighted centroid ``(y, x)`` of the positive pixels."""
    w = np.clip(image, 0, None)
    total = w.sum()
    if total <= 0:
        h, wd = image.shape
        return (h - 1) / 2.0, (wd - 1) / 2.0
    yy, xx = np.indices(image.shape)
    return float((w * yy).sum() / total), float((w * xx).sum() / total)
