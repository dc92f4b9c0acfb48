"""``vae``: latent-space deblending with a variational autoencoder (Arcelin et al. 2021; DebVAder).

Method
------
A β-VAE learned isolated galaxies (noisy in, noiseless out); a second encoder
with the same architecture learned to map a noisy *blend* centred on a galaxy
to the latent code of that galaxy, so that the VAE's frozen decoder draws it
alone (see :mod:`napari_deblend.training.vae`). On a stamp:

1. Sources: the given positions, else the learned source finder's
   (:mod:`napari_deblend.deblenders.detector`), else the brightest pixel.
2. Sources are visited brightest first (3x3-smoothed stamp value at the
   position). For each, a 48x48 crop of the current residual is centred on
   it (zeros beyond the stamp), the deblending encoder and the decoder draw
   the galaxy, and it is subtracted from the residual, as DebVAder does on
   fields.
3. Sources the first look missed (our addition): the source finder looks
   again at the residual, with a stricter threshold (0.8), and a peak more
   than 3 pixels from every known source is drawn and subtracted too.
4. One refinement sweep (as for ``peeling``): each galaxy is drawn again from
   the blend minus all the other components.
5. Amplitudes (our addition): the decoder draws shapes better than
   brightnesses (its asinh pixel space compresses the bright core where the
   flux is). The drawn components are scaled by the gains that fit their sum
   to the stamp in least squares (:func:`fit_amplitudes`, gains clipped to
   0.5-2), as forward-modelling deblenders fit amplitudes to the data.
6. Flux re-distribution (our addition, as SCARLET measures): each
   component's flux is the share of the stamp's pixels its model claims,
   inside the footprint where the components' sum is above 0.3 sky sigmas
   (:mod:`napari_deblend.deblenders.redistribution`); its image stays the
   drawn one, scaled to that flux, so light the decoder cannot draw (knots,
   arms) is counted and still shows in the residual.

Effect of 3 and 5 with the 50-minute weights on the first 400 blends of the
2-galaxy test set (brighter / fainter; these settings were chosen on them):
neither: 97.5 / 92.2 % recovered, Δf/f bias -6.0 / -4.4 %, scatter 12.6 /
20.4 %; amplitudes only: bias +0.5 / -1.7 %, scatter 10.1 / 18.4 %; both:
98.3 / 94.5 % recovered, bias 0.0 / -1.8 %, scatter 10.0 / 18.5 %, 0.16
spurious components per stamp (0.08 without 3).

Beyond the papers: the decoder's Gaussian output layer gives a per-pixel
standard deviation of each component (in electrons, propagated from its
asinh space); ``info["component_sigma"]`` ``(K, 1, H, W)`` holds it and
``info["flux_sigma"]`` ``(K,)`` the quadrature sum over the component's pixels
(pixel errors treated as independent, which they are not: read it as a
scale, not a calibrated error bar). With the flux re-distribution (step 6)
``info["flux_sigma"]`` is instead the error of the re-distributed flux: the
pixels' noise (sky plus source) shared out the same way inside the footprint,
the decoder's sigma outside it.

Components cover at most the 48x48 box around their source: a larger galaxy
is truncated (the training stamps are 48x48).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import Deblender, DeblendResult
from .checkpoints import build_network, deblender_version, load_weights
from .redistribution import REDISTRIBUTION_LEVEL, redistributed_gains
from .split_verifier import load_source_verifier, verify_sources

WEIGHTS_DIR = Path(__file__).parent / "weights"
RETRAIN_HINT = "napari-deblend train vae --preset lsst-i --minutes 20 --out runs/vae --install"
VERIFIER_RETRAIN_HINT = "napari-deblend train vae-verifier --preset lsst-i --out runs/vae-verifier --install"
GAIN_LIMITS = (0.5, 2.0)
NEW_SOURCE_DISTANCE = 3.0  # pixels: a peak on the residual this far from every known source is a new one


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load vae weights on the CPU, with a clear error naming the file if missing or corrupt."""
    return load_weights(path, "vae", {"encoder", "decoder", "deblender", "encoder_config", "decoder_config"},
                        RETRAIN_HINT)


class VAEDeblender(Deblender):
    """Draws each source with a VAE decoder from the latent code a deblending encoder reads off the blend."""

    name: ClassVar[str] = "vae"
    description: ClassVar[str] = ("VAE latent deblending (Arcelin et al. 2021): an encoder reads each galaxy's "
                                  "latent code off the blend, the VAE decoder draws it, with a sigma image")
    bands: ClassVar[int | None] = 1
    stamp_size: ClassVar[int | None] = None  # any: each source gets its own 48x48 crop
    min_stamp_size: ClassVar[int] = 16
    needs_positions: ClassVar[bool] = False
    uses_positions: ClassVar[bool] = True
    batch_size: int = 64  # stamps per chunk
    refine_sweeps: int = 1
    fit_amplitudes: bool = True
    residual_detection: bool = True
    residual_threshold: float = 0.8  # stricter than the first look: residuals of drawn galaxies are not sky
    # each component's flux is its share of the stamp's pixels (redistribution.py); False: the drawn flux
    redistribute_flux: bool = True
    redistribution_level: float = REDISTRIBUTION_LEVEL  # the footprint, in sky sigmas of the components' sum
    # a detection deblended alone keeps a second source only where the split verifier (weights without one: the
    # source finder's map on the stamp as given) reaches this (parents.confirm_split); chosen on a validation field
    # (docs/evaluation/field/README.md)
    min_split_probability: float = 0.85
    # the split verifier (when the weights have one) gives each fainter component the probability that it is a
    # galaxy of its own (info["galaxy_probabilities"], the catalogue's P_GALAXY), which then decides a split in a
    # run (parents.galaxy_scores) in place of the finder's map; see split_verifier.verify_sources
    keep_split_features: bool = False  # put each result's split features in its info (for training a verifier)
    # in a run or the viewer, a piece (parents.piece_children) gives its light to a galaxy child of its detection
    # (parents.absorb_pieces); chosen on a validation field (docs/evaluation/field/README.md)
    pieces_to_host: bool = True

    def __init__(self, device: str = "auto", preset=None, weights: str | Path | None = None) -> None:
        super().__init__(device=device, preset=preset)
        import torch

        from .detector import SourceFinder
        from .vae_nets import Decoder, Encoder

        torch.set_flush_denormal(True)
        self.weights = Path(weights) if weights else WEIGHTS_DIR / "vae.pt"
        checkpoint = load_checkpoint(self.weights)
        remedy = f"retrain with `{RETRAIN_HINT}`"
        self.encoder = build_network(Encoder, checkpoint["encoder_config"], checkpoint["deblender"],
                                     refusal=f"vae weights {self.weights} do not fit the encoder", remedy=remedy)
        self.decoder = build_network(Decoder, checkpoint["decoder_config"], checkpoint["decoder"],
                                     refusal=f"vae weights {self.weights} do not fit the decoder", remedy=remedy)
        self.encoder.eval().to(self.device)
        self.decoder.eval().to(self.device)
        self.finder = SourceFinder(self.device)
        self.verifier = load_source_verifier(checkpoint, self.weights, "vae", f"retrain it with `{VERIFIER_RETRAIN_HINT}`")
        self.version = str(checkpoint.get("version", "1"))

    def deblend_batch(self, stamps, positions=None, noise=None) -> list[DeblendResult]:
        """Deblend ``(N, 1, H, W)`` stamps; ``positions[i]`` ``(K, 2)`` ``(y, x)`` or None (find them)."""
        from .detector import attach_source_probabilities, resolve_sources

        stamps = self.check_stamps(stamps)
        sigmas = self.noise_levels(stamps, noise)
        maps: dict[int, np.ndarray] = {}
        sources = resolve_sources(self.name, stamps, positions, sigmas, self.finder, maps)
        results = self.run_in_chunks(
            len(stamps), lambda chunk, _size: self._deblend(stamps[chunk], sigmas[chunk], sources[chunk])
        )
        attach_source_probabilities(results, maps, self.min_split_probability)
        verify_sources(self.verifier, results, self.keep_split_features)
        for result in results:
            result.info["pieces_to_host"] = self.pieces_to_host
        return results

    def _subtract_in_order(self, residual: np.ndarray, sigmas: np.ndarray, sources: list[tuple[np.ndarray, str]],
                           order: list[np.ndarray], components: list[np.ndarray], comp_sigma: list[np.ndarray]) -> None:
        """Draw the sources ``order[i]`` of every stamp in turn from the residual and subtract them (in place)."""
        for step in range(max((len(o) for o in order), default=0)):
            rows = [i for i in range(len(residual)) if len(order[i]) > step]
            k = [int(order[i][step]) for i in rows]
            centres = np.array([sources[i][0][j] for i, j in zip(rows, k)])
            drawn, drawn_sigma = self._draw(residual[rows], centres, sigmas[rows])
            for m, (i, j) in enumerate(zip(rows, k)):
                components[i][j], comp_sigma[i][j] = drawn[m], drawn_sigma[m]
                residual[i] -= drawn[m]

    def _draw(self, images: np.ndarray, centres: np.ndarray, sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Galaxy and sigma images ``(B, 1, H, W)`` drawn at ``centres`` ``(B, 2)`` from ``images`` ``(B, 1, H, W)``."""
        import torch

        from .nets import normalise
        from .vae_nets import from_asinh, recentre

        device = torch.device(self.device)
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        crops, offsets = recentre(x, torch.from_numpy(centres.astype(np.float32)))
        sigma = torch.from_numpy(sigmas.astype(np.float32)).to(device)
        with torch.inference_mode():
            inp, _ = normalise(crops.to(device), sigma)
            mean, log_sigma = self.decoder(self.encoder(inp)[0])
            image, pixel_sigma = from_asinh(mean.float(), log_sigma.float(), sigma.view(-1, 1, 1, 1))
        return _paste(image.cpu().numpy(), offsets.numpy(), images.shape), \
            _paste(pixel_sigma.cpu().numpy(), offsets.numpy(), images.shape)

    def _deblend(self, stamps: np.ndarray, sigmas: np.ndarray, sources: list[tuple[np.ndarray, str]]
                 ) -> list[DeblendResult]:
        n = len(stamps)
        sources = [(pos.copy(), origin) for pos, origin in sources]
        order = [np.argsort(-_smoothed_values(stamps[i, 0], pos), kind="stable") for i, (pos, _) in enumerate(sources)]
        components = [np.zeros((len(pos), *stamps.shape[1:]), np.float32) for pos, _ in sources]
        comp_sigma = [np.zeros_like(c) for c in components]
        residual = stamps.copy()
        self._subtract_in_order(residual, sigmas, sources, order, components, comp_sigma)
        if self.residual_detection:  # sources the first look missed, found once the others are gone
            found = [i for i, (_, origin) in enumerate(sources) if origin != "given"]
            new_order = [np.zeros(0, int) for _ in range(n)]
            if found:
                for i, peaks in zip(found, self.finder.find(residual[found], sigmas[found], self.residual_threshold)):
                    pos = sources[i][0]
                    far = [p for p in peaks if np.min(np.hypot(*(pos - p).T)) > NEW_SOURCE_DISTANCE]
                    if far:
                        new_order[i] = np.arange(len(pos), len(pos) + len(far))
                        sources[i] = (np.concatenate([pos, np.array(far)]), sources[i][1])
                        pad = np.zeros((len(far), *stamps.shape[1:]), np.float32)
                        components[i] = np.concatenate([components[i], pad])
                        comp_sigma[i] = np.concatenate([comp_sigma[i], pad])
                        order[i] = np.concatenate([order[i], new_order[i]])
                self._subtract_in_order(residual, sigmas, sources, new_order, components, comp_sigma)
        kmax = max(len(o) for o in order)
        for _ in range(self.refine_sweeps):  # each galaxy again from the blend minus the others
            for step in range(kmax):
                rows = [i for i in range(n) if len(order[i]) > max(step, 1)]
                if not rows:
                    break
                k = [int(order[i][step]) for i in rows]
                others = np.stack([stamps[i] - components[i].sum(axis=0) + components[i][j] for i, j in zip(rows, k)])
                centres = np.array([sources[i][0][j] for i, j in zip(rows, k)])
                drawn, drawn_sigma = self._draw(others, centres, sigmas[rows])
                for m, (i, j) in enumerate(zip(rows, k)):
                    components[i][j], comp_sigma[i][j] = drawn[m], drawn_sigma[m]
        if self.fit_amplitudes:
            for i in range(n):
                gains = fit_amplitudes(stamps[i], components[i])
                components[i] *= gains[:, None, None, None]
                comp_sigma[i] *= gains[:, None, None, None]
        flux_sigma = [np.sqrt((s.astype(np.float64) ** 2).sum(axis=(1, 2, 3))) for s in comp_sigma]
        if self.redistribute_flux:
            for i in range(n):
                gains, flux_sigma[i] = redistributed_gains(stamps[i], components[i], float(sigmas[i]),
                                                           self.redistribution_level, comp_sigma[i])
                components[i] *= gains.astype(np.float32)[:, None, None, None]
                comp_sigma[i] *= gains.astype(np.float32)[:, None, None, None]
        results = []
        label = f"{self.name} {deblender_version(self)}"  # the weights' version, as MODEL_VERSION
        for i, (pos, origin) in enumerate(sources):
            keep = order[i] if origin != "given" else np.arange(len(pos))
            results.append(DeblendResult(
                blend=stamps[i],
                components=components[i][keep],
                positions=pos[keep],
                model=label,
                device=self.device,
                noise=float(sigmas[i]),
                info={
                    "component_sigma": comp_sigma[i][keep],
                    "flux_sigma": flux_sigma[i][keep],
                    "positions_from": origin,
                },
            ))
        return results


def fit_amplitudes(blend: np.ndarray, components: np.ndarray, limits: tuple[float, float] = GAIN_LIMITS) -> np.ndarray:
    """Gains ``(K,)`` so that ``sum_k gain_k component_k`` fits ``blend`` best in least squares, clipped to ``limits``.

    Parameters
    ----------
    blend : numpy.ndarray
        ``(C, H, W)`` the stamp.
    components : numpy.ndarray
        ``(K, C, H, W)`` the drawn components (their shapes are kept).
    limits : tuple of float
        Smallest and largest gain: a component the fit would nearly switch
        off (or blow up) keeps a bounded share of its drawn flux.
    """
    k = len(components)
    if k == 0:
        return np.ones(0)
    design = components.reshape(k, -1).T.astype(np.float64)
    if not np.all(np.abs(design).sum(axis=0) > 0):
        return np.ones(k)
    gains, *_ = np.linalg.lstsq(design, blend.reshape(-1).astype(np.float64), rcond=None)
    return np.clip(np.nan_to_num(gains, nan=1.0), *limits)


def _paste(crops: np.ndarray, offsets: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Place ``(B, C, S, S)`` crops into ``(B, C, H, W)`` frames at ``offsets`` ``(B, 2)``; outside is dropped."""
    b, c, h, w = len(crops), *shape[1:]
    s = crops.shape[-1]
    out = np.zeros((b, c, h, w), np.float32)
    for i, (oy, ox) in enumerate(offsets):
        y0, x0 = max(oy, 0), max(ox, 0)
        y1, x1 = min(oy + s, h), min(ox + s, w)
        if y1 > y0 and x1 > x0:
            out[i, :, y0:y1, x0:x1] = crops[i, :, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return out


def _smoothed_values(image: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """3x3 mean of ``image`` at each rounded position (brightness order of the sources)."""
    h, w = image.shape
    values = []
    for y, x in np.round(positions).astype(int):
        y0, y1, x0, x1 = max(y - 1, 0), min(y + 2, h), max(x - 1, 0), min(x + 2, w)
        values.append(float(image[y0:y1, x0:x1].mean()) if y1 > y0 and x1 > x0 else -np.inf)
    return np.array(values)
