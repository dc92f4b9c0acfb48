"""``unet``: soft masks and fluxes from a U-Net, after Boucaud et al. (2020), "blend2mask2flux".

Method
------
For every source of a stamp, a U-Net (:class:`~napari_deblend.deblenders.unet_nets.UNet`)
looks at the blend and at two hint images, a Gaussian blob at the source and
the sum of blobs at the other sources, and returns

* a mask logit map: which share of each pixel's light belongs to this source
  (trained against ``truth_i / (sum_j truth_j + 0.5 sigma)``, so 0 where there
  is no light), and
* a flux: ``log(flux / s)``, ``s`` the stamp scale of
  :func:`~napari_deblend.deblenders.nets.normalise`.

One forward pass per (stamp, source) pair; all pairs of a batch of stamps run
together. The soft masks ``m_i = sigmoid(logit_i)`` are divided by
``max(sum_i m_i, 1)`` so that no pixel hands out more than its light, and
component ``i`` is ``m_i * image`` rescaled so that its sum is the predicted
flux ``exp(log_flux) * s``. The boolean masks are ``m_i > 0.5``.

Our choices
-----------
* Sources: the given positions, in the given order (so the components match
  the caller's catalogue). Without positions, the learned source finder
  (:mod:`napari_deblend.deblenders.detector`) finds them on the stamp and the
  components are sorted brightest (predicted flux) first; if it finds nothing,
  the brightest pixel of the 3x3-smoothed stamp is the one source. An empty
  ``(0, 2)`` positions array counts as "not given". (sep found them before and
  missed the fainter galaxy of 45 % of the 2-galaxy test blends.)
* Paper vs here: the paper's mask and flux networks are separate; here one
  U-Net has both heads, and the flux head learns a correction to the flux
  under the (detached) predicted mask, which trains in CPU minutes.
* Rescaling guard: when ``m_i * image`` sums to less than 3 sigma of its own
  noise (a faint source, or noise), the shape ``m_i * max(image, 0)`` is
  rescaled instead, and ``m_i`` itself if that is empty, so a component never
  flips sign or blows up.
* ``info``: ``flux_pred`` ``(K,)`` (electrons), ``soft_masks`` ``(K, H, W)``
  float32, ``positions_from`` (``"given"``, ``"detector"`` or ``"peak"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import Deblender, DeblendResult
from .checkpoints import build_network, deblender_version, load_weights
from .inference import fold_batchnorm
from .split_verifier import load_source_verifier, verify_sources

WEIGHTS_DIR = Path(__file__).parent / "weights"
RETRAIN_HINT = "napari-deblend train unet --preset lsst-i --minutes 20 --out runs/unet --install"
VERIFIER_RETRAIN_HINT = "napari-deblend train unet-verifier --preset lsst-i --out runs/unet-verifier --install"
GUARD_SIGMAS = 3.0


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a unet checkpoint on the CPU, with a clear error naming the file if missing or corrupt."""
    return load_weights(path, "unet", {"unet", "unet_config"}, RETRAIN_HINT)


class UNetDeblender(Deblender):
    """Soft masks and fluxes per source from a U-Net (Boucaud et al. 2020)."""

    name: ClassVar[str] = "unet"
    description: ClassVar[str] = "U-Net (Boucaud et al. 2020): soft mask and flux per detected source, mask x image scaled to the flux"
    bands: ClassVar[int | None] = 1
    stamp_size: ClassVar[int | None] = None  # fully convolutional; trained on 48x48
    min_stamp_size: ClassVar[int] = 16
    needs_positions: ClassVar[bool] = False
    uses_positions: ClassVar[bool] = True
    batch_size: int = 64  # (stamp, source) pairs per forward pass
    mask_threshold: float = 0.5
    # a detection deblended alone keeps a second source only where the source finder's map reaches this
    # (parents.confirm_split); chosen on a validation field (docs/evaluation/field/README.md)
    min_split_probability: float = 0.85
    # the split verifier (when the weights have one) gives each fainter component the probability that it is a
    # galaxy of its own (info["galaxy_probabilities"], the catalogue's P_GALAXY), which then decides a split in a
    # run (parents.galaxy_scores) in place of the finder's map; see split_verifier.verify_sources
    keep_split_features: bool = False  # put each result's split features in its info (for training a verifier)

    def __init__(self, device: str = "auto", preset=None, weights: str | Path | None = None) -> None:
        super().__init__(device=device, preset=preset)
        import torch

        from .detector import SourceFinder
        from .unet_nets import UNet

        torch.set_flush_denormal(True)
        self.weights = Path(weights) if weights else WEIGHTS_DIR / "unet.pt"
        checkpoint = load_checkpoint(self.weights)
        self.net = build_network(UNet, checkpoint["unet_config"], checkpoint["unet"],
                                 refusal=f"unet weights {self.weights} do not fit the network",
                                 remedy=f"retrain with `{RETRAIN_HINT}`")
        self.net = fold_batchnorm(self.net).to(self.device)
        self.hint_sigma = float(self.net.config["hint_sigma"])
        self.version = str(checkpoint.get("version", "1"))
        self.train_stamp_size = int(checkpoint.get("stamp_size", 48))
        self.finder = SourceFinder(self.device)
        self.verifier = load_source_verifier(checkpoint, self.weights, "unet", f"retrain it with `{VERIFIER_RETRAIN_HINT}`")

    # ---- inference -------------------------------------------------------------------------------

    def deblend_batch(self, stamps, positions=None, noise=None) -> list[DeblendResult]:
        """Deblend ``(N, 1, H, W)`` stamps; ``positions[i]`` ``(K, 2)`` ``(y, x)`` or None (find them)."""
        from .detector import attach_source_probabilities, resolve_sources

        stamps = self.check_stamps(stamps)
        sigmas = self.noise_levels(stamps, noise)
        n = len(stamps)
        maps: dict[int, np.ndarray] = {}
        sources = resolve_sources(self.name, stamps, positions, sigmas, self.finder, maps)
        results = self.run_in_chunks(
            n, lambda chunk, size: self._deblend(stamps[chunk], sigmas[chunk], sources[chunk], size)
        )
        attach_source_probabilities(results, maps, self.min_split_probability)
        verify_sources(self.verifier, results, self.keep_split_features)
        return results

    def _deblend(self, stamps: np.ndarray, sigmas: np.ndarray, sources: list[tuple[np.ndarray, str]],
                 pair_batch: int) -> list[DeblendResult]:
        import torch

        from .nets import normalise
        from .unet_nets import source_hints

        device = torch.device(self.device)
        use_half = device.type == "cuda"
        n, _, h, w = stamps.shape
        counts = np.array([len(pos) for pos, _ in sources])
        kmax = int(counts.max())
        padded = np.zeros((n, kmax, 2), np.float32)
        valid = np.zeros((n, kmax), bool)
        for i, (pos, _) in enumerate(sources):
            padded[i, : len(pos)] = pos
            valid[i, : len(pos)] = True
        pair_stamp = np.repeat(np.arange(n), counts)
        pair_source = np.concatenate([np.arange(k) for k in counts])
        logits = np.zeros((len(pair_stamp), h, w), np.float32)
        log_flux = np.zeros(len(pair_stamp), np.float64)
        with torch.inference_mode(), torch.autocast(device.type, enabled=use_half):
            x = torch.from_numpy(stamps).to(device)
            inp, scale = normalise(x, torch.from_numpy(sigmas.astype(np.float32)).to(device))
            pos_t = torch.from_numpy(padded).to(device)
            valid_t = torch.from_numpy(valid).to(device)
            for start in range(0, len(pair_stamp), pair_batch):
                sel = slice(start, start + pair_batch)
                si = torch.from_numpy(pair_stamp[sel]).to(device)
                ki = torch.from_numpy(pair_source[sel]).to(device)
                others = valid_t[si] & (torch.arange(kmax, device=device)[None, :] != ki[:, None])
                hints = source_hints(pos_t[si, ki], pos_t[si], others, (h, w), self.hint_sigma)
                logit, flux = self.net(torch.cat([inp[si], hints.to(inp.dtype)], dim=1))
                logits[sel] = logit[:, 0].float().cpu().numpy()
                log_flux[sel] = flux.float().cpu().numpy()
            scale_np = scale.view(-1).float().cpu().numpy().astype(np.float64)
        results = []
        label = f"{self.name} {deblender_version(self)}"  # the weights' version, as MODEL_VERSION
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for i in range(n):
            pairs = slice(offsets[i], offsets[i + 1])
            results.append(self._result(stamps[i], sources[i], logits[pairs], log_flux[pairs], scale_np[i],
                                        float(sigmas[i]), label))
        return results

    def _result(self, stamp: np.ndarray, source: tuple[np.ndarray, str], logits: np.ndarray,
                log_flux: np.ndarray, scale: float, sigma: float, label: str) -> DeblendResult:
        pos, origin = source
        h, w = stamp.shape[-2:]
        soft = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -60.0, 60.0)))
        soft /= np.maximum(soft.sum(axis=0), 1.0)
        # a source holds at most a few times the stamp's area at the scale's level: keeps exp() finite
        flux = np.exp(np.clip(log_flux, -30.0, np.log(4.0 * h * w))) * scale
        image = stamp[0].astype(np.float64)
        components = np.stack([scale_to_flux(image, m, f, sigma) for m, f in zip(soft, flux)])
        order = np.argsort(-flux, kind="stable") if origin != "given" else np.arange(len(flux))
        soft32 = soft[order].astype(np.float32)
        return DeblendResult(
            blend=stamp,
            components=components[order][:, None].astype(np.float32),
            positions=pos[order],
            masks=soft32 > self.mask_threshold,
            model=label,
            device=self.device,
            noise=sigma,
            info={"flux_pred": flux[order], "soft_masks": soft32, "positions_from": origin},
        )


def scale_to_flux(image: np.ndarray, mask: np.ndarray, flux: float, sigma: float) -> np.ndarray:
    """``mask * image`` rescaled to sum to ``flux``, with the guard of the module docstring."""
    profile = mask * image
    total = profile.sum()
    if not total > GUARD_SIGMAS * sigma * np.sqrt((mask**2).sum()):
        profile = mask * np.clip(image, 0.0, None)
        total = profile.sum()
        if not total > 0:
            profile, total = mask, mask.sum()
    if not total > 0:
        return np.zeros_like(image)
    return profile * (flux / total)
