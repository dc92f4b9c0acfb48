"""The ``real`` morphology family: galaxies drawn from a pool of real galaxy images.

A pool (``napari-deblend real-pool build``) holds clean, isolated real galaxies
already at a preset's pixel scale and PSF, each normalised to unit flux, split
by galaxy into ``train``, ``validation`` and ``test``.  A simulated ``real``
galaxy is one of them, turned by a random angle, flipped at random, moved to its
sub-pixel position and scaled to the flux the population gave it.

A galaxy keeps the magnitude the population gave it, and the pool image is
chosen to have the size the population gave it at that magnitude (the pool's
half-light radii are measured through the PSF, so they are compared with the
population's radius broadened by the PSF; :meth:`RealPool.pick_by_size`): real
galaxies then follow the simulator's size-magnitude relation, and a large, bright
galaxy of the pool is not drawn as a faint, low-surface-brightness one.

Real stamps keep their own noise inside the galaxy's footprint; a galaxy is
never made so bright that this noise exceeds ``NOISE_CAP`` of the preset's
background noise (its flux is lowered instead), so the noise of a blend stays
the simulator's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import DeblendInputError
from ..presets import SurveyPreset, get_preset
from ._pixels import add_stamp

SIZE_MATCH_SCATTER = 0.15
"""Log-normal width (natural log) of the size match between a pool galaxy and the population's size."""
KOLMOGOROV_HLR_PER_FWHM = 0.569
"""Half-light radius of a Kolmogorov PSF in units of its FWHM (GalSim's ``Kolmogorov``)."""
NOISE_CAP = 0.5
"""Largest noise of a real stamp, scaled to its simulated flux, as a fraction of the preset's background noise."""
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class RealPoolSource:
    """Where a pool's split lives: picklable, so worker processes load it themselves."""

    path: str
    preset: str
    split: str


@dataclass
class RealPool:
    """One split of a real-galaxy pool.

    Attributes
    ----------
    images : numpy.ndarray
        ``(N, S, S)`` float32, unit sum, centred at ``((S - 1) / 2, (S - 1) / 2)``.
    noise : numpy.ndarray
        ``(N,)`` per-pixel noise left in each image, in the same units.
    hlr : numpy.ndarray
        ``(N,)`` half-light radius, arcsec.
    galaxy_id : numpy.ndarray
        ``(N,)`` the galaxy each image shows (its variants share it).
    source : RealPoolSource
        Where it was read from.
    """

    images: np.ndarray
    noise: np.ndarray
    hlr: np.ndarray
    galaxy_id: np.ndarray
    source: RealPoolSource

    def __len__(self) -> int:
        return len(self.images)

    def pick_by_size(self, hlr: np.ndarray, preset: SurveyPreset, uniforms: np.ndarray) -> np.ndarray:
        """Pool images whose half-light radii match the population's ``hlr``, one per galaxy.

        Image ``j`` is chosen for galaxy ``i`` with a probability proportional to
        ``exp(-((ln r_j - ln t_i) / SIZE_MATCH_SCATTER)**2 / 2)``, where ``r_j`` is the
        image's half-light radius and ``t_i`` galaxy ``i``'s intrinsic ``hlr`` broadened
        by the preset's PSF (in quadrature).  Below the smallest image the smallest ones
        are chosen.

        Parameters
        ----------
        hlr : numpy.ndarray
            ``(n,)`` intrinsic half-light radii, arcsec.
        preset : SurveyPreset
            The preset (its PSF FWHM).
        uniforms : numpy.ndarray
            ``(n,)`` uniform deviates in [0, 1) choosing among the matching images.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` int64 indices into the pool.
        """
        target = np.hypot(np.asarray(hlr, float), KOLMOGOROV_HLR_PER_FWHM * preset.psf_fwhm)
        pool_log = np.log(np.maximum(self.hlr, 1e-6))
        log_weight = -0.5 * ((pool_log[None, :] - np.log(target)[:, None]) / SIZE_MATCH_SCATTER) ** 2
        weight = np.exp(log_weight - log_weight.max(axis=1, keepdims=True))
        cumulative = np.cumsum(weight, axis=1)
        chosen = (cumulative < np.asarray(uniforms, float)[:, None] * cumulative[:, -1:]).sum(axis=1)
        return np.minimum(chosen, len(self) - 1).astype(np.int64)

    def flux_cap(self, index: np.ndarray, preset: SurveyPreset) -> np.ndarray:
        """Largest flux (e-) at which image ``index``'s own noise stays under ``NOISE_CAP`` of the preset's."""
        return NOISE_CAP * preset.background_sigma / np.maximum(self.noise[index], 1e-12)


def resolve_pool(real_pool: str | Path | RealPoolSource | RealPool | None, preset: str | SurveyPreset,
                 split: str = "train") -> RealPool | None:
    """The pool split a simulation draws from (None when no pool is given).

    Parameters
    ----------
    real_pool : str, Path, RealPoolSource, RealPool or None
        A pool directory (``OUT`` of ``napari-deblend real-pool build``), or an already resolved pool.
    preset : str or SurveyPreset
        The preset the pool was built for.
    split : {"train", "validation", "test"}
        Which split.

    Returns
    -------
    RealPool or None

    Raises
    ------
    DeblendInputError
        If the split file is missing or malformed.
    """
    if real_pool is None or isinstance(real_pool, RealPool):
        return real_pool
    if isinstance(real_pool, RealPoolSource):
        return load_pool(real_pool)
    if split not in SPLITS:
        raise DeblendInputError(f"real-pool split {split!r} is unknown: expected one of {', '.join(SPLITS)}")
    return load_pool(RealPoolSource(str(Path(real_pool).expanduser().resolve()), get_preset(preset).name, split))


@lru_cache(maxsize=8)
def load_pool(source: RealPoolSource) -> RealPool:
    """Read a pool split (cached per process)."""
    from ..realpool.pool import load_real_pool

    pool = load_real_pool(source.path, source.split, source.preset)
    if not len(pool):
        raise DeblendInputError(f"real-galaxy pool {pool.path} holds no galaxies")
    images, noise = pool.images, pool.noise.astype(np.float64)
    hlr, galaxy_id = pool.hlr.astype(np.float64), pool.galaxy_id
    return RealPool(images, noise, hlr, galaxy_id, source)


def draw_real(pool: RealPool, index: int, flux: float, x: float, y: float, seed: int, out: np.ndarray) -> None:
    """Add pool image ``index``, turned, flipped and scaled to ``flux``, centred at ``(x, y)`` of ``out``.

    Parameters
    ----------
    pool : RealPool
        The pool.
    index : int
        Image of the pool.
    flux : float
        Flux to give it, electrons.
    x, y : float
        0-based pixel position of its centre on ``out``.
    seed : int
        Seed of its rotation and flip.
    out : numpy.ndarray
        ``(H, W)`` image it is added to (light outside is lost).
    """
    rng = np.random.default_rng(int(seed))
    image = pool.images[int(index)].astype(np.float64)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = ndimage.rotate(image, rng.uniform(0.0, 360.0), reshape=False, order=3, mode="constant")
    centre = (image.shape[0] - 1) / 2.0
    below = int(math.floor(centre))  # image pixel `below` lands on the pixel nearest to (x, y)
    cx, cy = int(round(x)), int(round(y))
    image = ndimage.shift(image, (y - cy - (centre - below), x - cx - (centre - below)), order=3, mode="constant")
    total = image.sum()
    if total > 0:
        add_stamp(out, (image * (flux / total)).astype(np.float32), cy - below, cx - below)
