"""A learned source finder for stamps: a small U-Net draws a "galaxy centre" heat map.

sep (SExtractor) finds both galaxies of a 2-galaxy blend only about half the
time (almost never below 1″ separation), and the deblenders that need
positions (``unet``, ``vae``) can do no better than the positions they are
given. This network sees the same normalised stamp as the deblenders
(:func:`~napari_deblend.deblenders.nets.normalise`) and returns a logit map whose
sigmoid is ~1 within ~1 pixel of each galaxy's light-weighted centre (trained
against Gaussian blobs of sigma :data:`TARGET_SIGMA` at the true centroids,
see :mod:`napari_deblend.training.detector`). Sources are the local maxima of
the map above ``threshold`` at least ``min_distance`` pixels apart, refined to
sub-pixel positions by the map's weighted centroid in a 3x3 box.

It is not a deblender: :class:`SourceFinder` is used by the deblenders that
need positions when none are given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .base import DeblendError
from .checkpoints import build_network, load_weights
from .unet_nets import DoubleConv

WEIGHTS_DIR = Path(__file__).parent / "weights"
RETRAIN_HINT = "napari-deblend train detector --preset lsst-i --minutes 25 --out runs/detector --install"
TARGET_SIGMA = 1.0  # pixels, the blobs of the training target
MAX_SOURCES = 6  # per stamp
#: Peaks are maxima of their (2 MIN_DISTANCE + 1)^2 box: 1 keeps galaxies 2 px apart apart (weights
#: made before it was stored with them used 2).
MIN_DISTANCE = 1


class CentreNet(nn.Module):
    """Two-level U-Net (full, 1/2, 1/4 resolution) from the 2 normalised channels to one logit map.

    Parameters
    ----------
    in_channels : int
        2 per band: linear and asinh channels of :func:`~napari_deblend.deblenders.nets.normalise`.
    widths : tuple of int
        Channels at full, 1/2 and 1/4 resolution.
    """

    def __init__(self, in_channels: int = 2, widths: tuple[int, int, int] = (8, 16, 32)) -> None:
        super().__init__()
        w1, w2, w3 = (int(w) for w in widths)
        self.config = {"in_channels": in_channels, "widths": [w1, w2, w3]}
        self.enc1 = DoubleConv(in_channels, w1, "group")
        self.enc2 = DoubleConv(w1, w2, "group")
        self.enc3 = DoubleConv(w2, w3, "group")
        self.up2 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
        self.dec2 = DoubleConv(2 * w2, w2, "group")
        self.up1 = nn.ConvTranspose2d(w2, w1, 2, stride=2)
        self.dec1 = DoubleConv(2 * w1, w1, "group")
        self.head = nn.Conv2d(w1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit map ``(B, 1, H, W)`` of a ``(B, in_channels, H, W)`` input (any H, W)."""
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % 4, (-w) % 4
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(e3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)[..., :h, :w]


def find_peaks(prob: np.ndarray, threshold: float, min_distance: int = MIN_DISTANCE,
               max_sources: int = MAX_SOURCES) -> np.ndarray:
    """Local maxima of a probability map, strongest first, as sub-pixel ``(K, 2)`` ``(y, x)``.

    Parameters
    ----------
    prob : numpy.ndarray
        ``(H, W)`` map in [0, 1].
    threshold : float
        Minimum value of a peak.
    min_distance : int
        A peak is the maximum of its ``(2 min_distance + 1)`` square neighbourhood.
    max_sources : int
        Keep at most this many (the strongest).
    """
    from scipy import ndimage

    local_max = ndimage.maximum_filter(prob, size=2 * min_distance + 1, mode="constant") == prob
    ys, xs = np.nonzero(local_max & (prob > threshold))
    order = np.argsort(-prob[ys, xs], kind="stable")[:max_sources]
    h, w = prob.shape
    peaks = []
    for y, x in zip(ys[order], xs[order]):
        y0, y1, x0, x1 = max(y - 1, 0), min(y + 2, h), max(x - 1, 0), min(x + 2, w)
        box = prob[y0:y1, x0:x1].astype(np.float64)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        peaks.append((float((box * yy).sum() / box.sum()), float((box * xx).sum() / box.sum())))
    return np.array(peaks, dtype=float).reshape(-1, 2)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load detector weights on the CPU, with a clear error naming the file if missing or corrupt."""
    return load_weights(path, "detector", {"net", "net_config"}, RETRAIN_HINT)


class SourceFinder:
    """Galaxy positions on single-band stamps from the shipped :class:`CentreNet`.

    Parameters
    ----------
    device : str
        A resolved torch device name (``"cpu"``, ``"cuda"``, ``"mps"``).
    weights : str or Path, optional
        Checkpoint (default: the shipped ``detector.pt``).
    """

    def __init__(self, device: str = "cpu", weights: str | Path | None = None) -> None:
        torch.set_flush_denormal(True)
        self.weights = Path(weights) if weights else WEIGHTS_DIR / "detector.pt"
        checkpoint = load_checkpoint(self.weights)
        self.net = build_network(CentreNet, checkpoint["net_config"], checkpoint["net"],
                                 refusal=f"detector weights {self.weights} do not fit the network",
                                 remedy=f"retrain with `{RETRAIN_HINT}`")
        self.net.eval().to(device)
        self.device = device
        self.threshold = float(checkpoint.get("threshold", 0.5))
        self.min_distance = int(checkpoint.get("min_distance", 2))

    def probability(self, stamps: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` centre probability of ``(N, 1, H, W)`` stamps with noise ``sigmas`` ``(N,)``."""
        from .nets import normalise

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(stamps, dtype=np.float32)).to(self.device)
            inp, _ = normalise(x, torch.from_numpy(np.asarray(sigmas, np.float32)).to(self.device))
            return torch.sigmoid(self.net(inp)[:, 0].float()).cpu().numpy()

    def find(self, stamps: np.ndarray, sigmas: np.ndarray, threshold: float | None = None) -> list[np.ndarray]:
        """Positions ``(K_i, 2)`` ``(y, x)`` per stamp, strongest first (``K_i`` may be 0).

        ``threshold`` defaults to the one stored with the weights.
        """
        threshold = self.threshold if threshold is None else threshold
        return [find_peaks(p, threshold, self.min_distance) for p in self.probability(stamps, sigmas)]


def attach_source_probabilities(results: list, maps: dict[int, np.ndarray], min_split_probability: float) -> None:
    """Give each result of two or more components the finder's probability of a galaxy centre at each, in place.

    ``info["source_probabilities"]`` ``(K,)``: the highest value of the
    finder's map ``maps[i]`` (of the stamp as given, from :func:`resolve_sources`)
    within one pixel of each component's position, and
    ``info["min_split_probability"]``: with them a detection deblended alone
    keeps only the components the finder is sure of
    (:func:`napari_deblend.parents.confirm_split`). Stamps without a map (their
    sources were given by the caller) are left as they are.
    """
    for i, result in enumerate(results):
        prob = maps.get(i)
        if prob is None or result.n_components < 2:
            continue
        padded = np.pad(prob, 1)  # the 3x3 box around each position, zero outside the stamp
        pos = np.asarray(result.positions, float).reshape(-1, 2)
        yy, xx = (np.clip(np.round(np.nan_to_num(c)).astype(int), 0, n - 1) for c, n in zip(pos.T, prob.shape))
        result.info["source_probabilities"] = np.array([padded[y:y + 3, x:x + 3].max() for y, x in zip(yy, xx)])
        result.info["min_split_probability"] = float(min_split_probability)


def check_given_positions(name: str, given: Any, shape: tuple[int, int], index: int) -> np.ndarray:
    """Validate caller positions of stamp ``index``: ``(K, 2)`` finite ``(y, x)`` inside the stamp."""
    h, w = shape
    try:
        pos = np.asarray(given, dtype=float).reshape(-1, 2)
    except (TypeError, ValueError):
        raise DeblendError(
            f"{name}: positions of stamp {index} have shape {np.shape(given)}: expected (K, 2) (y, x)"
        ) from None
    outside = ~np.isfinite(pos).all(axis=1) | (pos[:, 0] < -0.5) | (pos[:, 0] > h - 0.5) \
        | (pos[:, 1] < -0.5) | (pos[:, 1] > w - 0.5)
    if outside.any():
        raise DeblendError(
            f"{name}: position(s) {pos[outside].tolist()} of stamp {index} are not finite or "
            f"outside the {h}x{w} stamp: expected (y, x) stamp pixels"
        )
    return pos


def brightest_pixel(image: np.ndarray) -> np.ndarray:
    """``(1, 2)``: the brightest pixel of the 3x3-smoothed image (the one source when nothing is found)."""
    h, w = image.shape
    padded = np.pad(image, 1, mode="edge")
    smooth = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    return np.array([np.unravel_index(int(np.argmax(smooth)), smooth.shape)], dtype=float)


def resolve_sources(name: str, stamps: np.ndarray, positions: Any, sigmas: np.ndarray,
                    finder: SourceFinder, maps: dict[int, np.ndarray] | None = None) -> list[tuple[np.ndarray, str]]:
    """Per stamp, ``(K, 2)`` positions (``K >= 1``) and where they came from.

    Given positions are validated and kept in their order (``"given"``); a stamp
    without them (None or an empty array) gets the :class:`SourceFinder`'s
    (``"detector"``), or its brightest pixel if the finder sees nothing (``"peak"``).
    ``maps``, when given, receives the finder's probability map of each stamp it
    looked at (by stamp index), for :func:`attach_source_probabilities`.
    """
    n = len(stamps)
    if positions is None:
        positions = [None] * n
    elif len(positions) != n:
        raise DeblendError(f"{name}: {len(positions)} position arrays for {n} stamps: expected one per stamp")
    given = [None if p is None else check_given_positions(name, p, stamps.shape[-2:], i)
             for i, p in enumerate(positions)]
    missing = [i for i, p in enumerate(given) if p is None or not len(p)]
    probabilities = finder.probability(stamps[missing], sigmas[missing]) if missing else []
    found = [find_peaks(p, finder.threshold, finder.min_distance) for p in probabilities]
    if maps is not None:
        maps.update(zip(missing, probabilities))
    sources: list[tuple[np.ndarray, str]] = [(p, "given") if p is not None else (p, "") for p in given]
    for i, pos in zip(missing, found):
        sources[i] = (pos, "detector") if len(pos) else (brightest_pixel(stamps[i].sum(axis=0)), "peak")
    return sources
