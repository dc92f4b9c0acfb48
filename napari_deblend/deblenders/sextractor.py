"""``sextractor``: the classical baseline inside the deblender interface.

sep detects and multi-threshold-deblends the stamp (DES sxdes settings by
default) against the known background noise (no ``sep.Background`` on a small
stamp: it would eat galaxy light). Each component is the image times its
segment, so every pixel belongs to one object, as in SExtractor; ``FLUX_AUTO``
(masked Kron photometry) is reported in ``info["flux_auto"]``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..detection import extract_with_preset, get_detection_preset, kron_photometry
from .base import Deblender, DeblendResult


class SExtractorDeblender(Deblender):
    """SExtractor-style segmentation deblending with sep (the baseline every model is compared with)."""

    name: ClassVar[str] = "sextractor"
    description: ClassVar[str] = "SExtractor baseline: sep multi-threshold deblending (DES sxdes settings), pixels split by segment"
    min_stamp_size: ClassVar[int] = 8
    takes_variance: ClassVar[bool] = True
    version: ClassVar[str] = "sep-sxdes"

    def __init__(self, device: str = "auto", preset=None, detection_preset: str = "des") -> None:
        super().__init__(device="cpu", preset=preset)  # sep runs on the CPU whatever was asked
        self.detection = get_detection_preset(detection_preset)

    def deblend_batch(self, stamps, positions=None, noise=None, variance=None) -> list[DeblendResult]:
        """Deblend each stamp with sep; positions, if given, only order the output (nearest first).

        ``variance`` ``(N, C, H, W)``, when given, is the stamps' per-pixel
        variance (``inf`` = masked): sep then thresholds and measures against it.
        """
        stamps = self.check_stamps(stamps)
        sigmas = self.noise_levels(stamps, noise)
        variances = [None] * len(stamps) if variance is None else np.asarray(variance, dtype=np.float32)
        return [self._one(stamp, float(sigma), var) for stamp, sigma, var in zip(stamps, sigmas, variances)]

    def _one(self, stamp: np.ndarray, sigma: float, variance: np.ndarray | None = None) -> DeblendResult:
        # detect on the band sum (co-add); noise of the sum of C bands of equal sigma
        image = np.ascontiguousarray(stamp.sum(axis=0), dtype=np.float32)
        c = stamp.shape[0]
        err: float | np.ndarray = sigma * np.sqrt(c)
        mask = None
        if variance is not None:
            summed = variance.sum(axis=0)
            mask = ~np.isfinite(summed) | (summed <= 0)
            err = np.ascontiguousarray(np.where(mask, sigma * np.sqrt(c), np.sqrt(np.where(mask, 1.0, summed))),
                                       dtype=np.float32)
            mask = mask if mask.any() else None
        try:
            objects, seg = extract_with_preset(image, err, self.detection, mask=mask)
        except Exception:  # sep gives up on pathological stamps: report nothing found
            objects, seg = np.zeros(0, dtype=[("x", float), ("y", float)]), np.zeros(image.shape, np.int32)
        seg = np.ascontiguousarray(seg, dtype=np.int32)
        n = len(objects)
        ids = np.arange(1, n + 1, dtype=np.int32)
        if n:
            flux, fluxerr, kron, _ = kron_photometry(
                image, objects["x"], objects["y"], objects["a"], objects["b"], objects["theta"],
                ids, seg, err, mask=mask,
            )
            order = np.argsort(-flux)
        else:
            flux = fluxerr = kron = np.zeros(0)
            order = np.zeros(0, dtype=int)
        components = np.stack([stamp * (seg == ids[i]) for i in order]) if n else np.zeros((0, *stamp.shape))
        masks = np.stack([seg == ids[i] for i in order]) if n else np.zeros((0, *image.shape), bool)
        positions = np.stack([objects["y"][order], objects["x"][order]], axis=1) if n else np.zeros((0, 2))
        info = {
            "flux_auto": flux[order],
            "fluxerr_auto": fluxerr[order],
            "kron_radius": kron[order],
            "flux_iso": np.asarray(objects["flux"])[order] if n else np.zeros(0),
            "x2": np.asarray(objects["x2"])[order] if n else np.zeros(0),
            "y2": np.asarray(objects["y2"])[order] if n else np.zeros(0),
            "xy": np.asarray(objects["xy"])[order] if n else np.zeros(0),
            "segmentation": _relabel(seg, ids[order]),
        }
        return DeblendResult(
            blend=stamp,
            components=components,
            positions=positions,
            masks=masks,
            model=f"{self.name} ({self.detection.name})",
            device="cpu",
            noise=sigma,
            info=info,
        )


def _relabel(seg: np.ndarray, ordered_ids: np.ndarray) -> np.ndarray:
    """Segmentation relabelled so that component k (0-based, brightest first) has label k + 1."""
    lut = np.zeros(int(seg.max()) + 1 if seg.size else 1, dtype=np.int32)
    lut[ordered_ids] = np.arange(1, len(ordered_ids) + 1)
    return lut[seg]
