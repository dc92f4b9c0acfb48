"""Simulated blend stamps: a few galaxies near the centre of a stamp, with their noiseless truth.

Stamp ``i`` of a configuration is drawn from ``numpy.random.default_rng([seed, i])``
alone, so results do not depend on the number of worker processes and the
first stamps of a longer run equal a shorter one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DeblendInputError
from ..presets import SurveyPreset, get_preset
from .catalog import morphology_columns, truth_table
from .drawing import add_noise, draw_galaxies
from .morphologies import N_MORPH_UNIFORMS, assign_families, is_parametric, mix_name, parse_mix
from .parametric import TABLES, devauc_table, install_tables, psf_mtf
from .population import N_UNIFORMS, check_mag_range, derive_parameters, galaxies_from_uniforms
from .real_family import RealPool, RealPoolSource, load_pool, resolve_pool

if TYPE_CHECKING:
    from astropy.table import Table
DEFAULT_SEPARATION = (0.4, 3.0)
"""Range of separations (arcsec) from the central galaxy of a blend stamp."""
CHUNK = 64  # blend stamps per unit of work; fixed, so results do not depend on n_workers

@dataclass
class BlendSet:
    """A set of simulated blend stamps with their noiseless components and truth.

    Attributes
    ----------
    images : numpy.ndarray
        ``(N, 1, H, W)`` float32, noisy sky-subtracted stamps in electrons.
    components : numpy.ndarray
        ``(N, K, 1, H, W)`` float32, noiseless PSF-convolved image of each galaxy,
        sorted by flux in the stamp (brightest first) and zero beyond a stamp's
        own number of galaxies; ``K`` is the largest number of galaxies.
    n_components : numpy.ndarray
        ``(N,)`` int, number of galaxies in each stamp.
    truth : astropy.table.Table
        One row per galaxy: ``stamp``, ``component`` (rank, 0 = brightest),
        ``x``, ``y`` (0-based pixels in the stamp), ``flux`` (sum of the
        noiseless component over the stamp, e-), ``flux_total`` (analytic total,
        e-), ``mag`` (of ``flux_total``), ``hlr`` (arcsec), ``bulge_fraction``,
        ``e1``, ``e2``, ``sep_arcsec`` (distance to the central galaxy) and
        ``central`` (True for the galaxy placed at the stamp centre); with a
        non-parametric mix also ``family``, ``q``, ``beta``, ``sersic_n``,
        ``morph_seed`` and ``real_index``.
    noise_sigma : float
        Background noise per pixel, electrons.
    preset : str
        Survey preset name.
    """

    images: np.ndarray
    components: np.ndarray
    n_components: np.ndarray
    truth: Table
    noise_sigma: float
    preset: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def stamp_size(self) -> int:
        """Side of the square stamps, pixels."""
        return int(self.images.shape[-1])


@dataclass(frozen=True)
class _BlendConfig:
    """Everything that defines a stream of blend stamps (picklable for workers)."""

    n_galaxies: tuple[int, ...]
    stamp_size: int
    preset: SurveyPreset
    seed: int
    separation: tuple[float, float]
    mag_range: tuple[float, float]
    noise: bool
    engine: str
    mix: tuple[tuple[str, float], ...] = (("bulge_disk", 1.0),)
    real_pool: RealPoolSource | None = None

    @property
    def k_max(self) -> int:
        return max(self.n_galaxies)


def simulate_blends(n: int, n_galaxies: int | Sequence[int] = 2, stamp_size: int = 48,
                    preset: str | SurveyPreset = "lsst-i", seed: int = 0,
                    separation: tuple[float, float] = DEFAULT_SEPARATION,
                    mag_range: tuple[float, float] | None = None, noise: bool = True,
                    n_workers: int = 1, engine: str = "fft", morphology: str | Mapping[str, float] | None = None,
                    real_pool: str | RealPoolSource | RealPool | None = None, real_split: str = "train") -> BlendSet:
    """Simulate ``n`` blend stamps with their noiseless components and truth.

    The first (central) galaxy of a stamp lies within ±1 pixel of the stamp
    centre; each other galaxy is at a separation drawn uniformly in
    ``separation`` (arcsec) and at a random angle from it, at least
    ``separation[0]`` from every other galaxy.  Stamp ``i`` is drawn from
    ``numpy.random.default_rng([seed, i])``, so results do not depend on
    ``n_workers`` and the first stamps of a longer run equal a shorter one.

    Parameters
    ----------
    n : int
        Number of stamps.
    n_galaxies : int or sequence of int
        Galaxies per stamp (1 = isolated), or the choices to draw from per stamp.
    stamp_size : int
        Side of the square stamps, pixels.
    preset : str or SurveyPreset
        Survey preset.
    seed : int
        Random seed.
    separation : tuple of float
        Range of separations from the central galaxy, arcsec.
    mag_range : tuple of float, optional
        Magnitude range; default ``(MAG_BRIGHT, preset.mag_limit)``.
    noise : bool
        Add noise to ``images`` (False: images are the sum of the components).
    n_workers : int
        Worker processes (spawned); 1 runs in this process.
    engine : {"fft", "galsim"}
        Rendering engine of the bulge + disk galaxies (see :func:`draw_galaxies`).
    morphology : str or mapping, optional
        Morphology mix (:func:`~.morphologies.parse_mix`): ``"realistic"``
        (default), ``"parametric"`` (bulge + disk only), or family weights.
    real_pool : str or Path, optional
        Real-galaxy pool directory, for a mix with ``real`` galaxies.
    real_split : {"train", "validation", "test"}
        Which split of the pool the ``real`` galaxies come from.

    Returns
    -------
    BlendSet
        Stamps, sorted components and the truth table.

    Raises
    ------
    DeblendInputError
        If a parameter is out of range.
    """
    check_positive_int(n, "n")
    check_positive_int(n_workers, "n_workers")
    config = _blend_config(n_galaxies, stamp_size, preset, seed, separation, mag_range, noise, engine,
                           morphology, real_pool, real_split)
    ranges = [(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]
    if n_workers == 1 or len(ranges) == 1:
        parts = [_simulate_range(config, start, stop) for start, stop in ranges]
    else:
        devauc_table(), psf_mtf(config.preset)  # tabulate once here, not in every worker
        with ProcessPoolExecutor(max_workers=min(n_workers, len(ranges)), mp_context=get_context("spawn"),
                                 initializer=install_tables, initargs=(dict(TABLES),)) as pool:
            parts = list(pool.map(_simulate_range, [config] * len(ranges), *zip(*ranges)))
    return _concatenate(parts, config)


def iter_blend_batches(batch_size: int, n_galaxies: int | Sequence[int] = 2, stamp_size: int = 48,
                       preset: str | SurveyPreset = "lsst-i", seed: int = 0,
                       separation: tuple[float, float] = DEFAULT_SEPARATION,
                       mag_range: tuple[float, float] | None = None, noise: bool = True,
                       shard: tuple[int, int] = (0, 1), engine: str = "fft",
                       morphology: str | Mapping[str, float] | None = None,
                       real_pool: str | RealPoolSource | RealPool | None = None,
                       real_split: str = "train") -> Iterator[BlendSet]:
    """Yield batches of blend stamps forever (for training).

    Batch ``b`` holds stamps ``b * batch_size`` to ``(b + 1) * batch_size - 1`` of
    the endless sequence of ``seed``: the same stamps :func:`simulate_blends`
    gives for that seed.  With ``shard=(i, m)`` only batches ``b`` with
    ``b % m == i`` are yielded, so that ``m`` data-loader workers share one
    sequence without overlap.

    Parameters
    ----------
    batch_size : int
        Stamps per batch.
    n_galaxies, stamp_size, preset, seed, separation, mag_range, noise, engine, morphology, real_pool, real_split
        As in :func:`simulate_blends`.
    shard : tuple of int
        ``(worker index, number of workers)``.

    Yields
    ------
    BlendSet
        One batch.
    """
    check_positive_int(batch_size, "batch_size")
    index, count = (int(v) for v in shard)
    if count < 1 or not 0 <= index < count:
        raise DeblendInputError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
    config = _blend_config(n_galaxies, stamp_size, preset, seed, separation, mag_range, noise, engine,
                           morphology, real_pool, real_split)
    batch = index
    while True:
        start = batch * batch_size
        yield _concatenate([_simulate_range(config, start, start + batch_size)], config)
        batch += count


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise DeblendInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _blend_config(n_galaxies: int | Sequence[int], stamp_size: int, preset: str | SurveyPreset,
                  seed: int, separation: tuple[float, float], mag_range: tuple[float, float] | None,
                  noise: bool, engine: str, morphology: str | Mapping[str, float] | None = None,
                  real_pool: str | RealPoolSource | RealPool | None = None,
                  real_split: str = "train") -> _BlendConfig:
    p = get_preset(preset)
    choices = (n_galaxies,) if np.isscalar(n_galaxies) else tuple(n_galaxies)
    if not choices:
        raise DeblendInputError("n_galaxies must be a positive integer or a non-empty list of them")
    for k in choices:
        check_positive_int(k, "n_galaxies")
    check_positive_int(stamp_size, "stamp_size")
    if stamp_size < 8:
        raise DeblendInputError(f"stamp_size must be at least 8 pixels, got {stamp_size}")
    if engine not in ("fft", "galsim"):
        raise DeblendInputError(f"engine must be 'fft' or 'galsim', got {engine!r}")
    sep = _check_separation(separation, stamp_size, p)
    seed = check_seed(seed)
    mix = parse_mix(morphology)
    pool = resolve_pool(real_pool, p, real_split) if "real" in mix else None
    if "real" in mix and pool is None:
        raise DeblendInputError("the morphology mix has 'real' galaxies: give a real-galaxy pool "
                                "(real_pool=..., --real-pool DIR; made by `napari-deblend real-pool build`)")
    return _BlendConfig(tuple(int(k) for k in choices), int(stamp_size), p, seed, sep,
                        check_mag_range(mag_range, p), bool(noise), engine, tuple(mix.items()),
                        None if pool is None else pool.source)


def check_seed(seed: int | None) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy % 2**63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DeblendInputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_separation(separation: tuple[float, float], stamp_size: int,
                      preset: SurveyPreset) -> tuple[float, float]:
    try:
        lo, hi = (float(s) for s in separation)
    except (TypeError, ValueError):
        raise DeblendInputError(f"separation must be (min, max) in arcsec, got {separation!r}") from None
    if not 0.0 <= lo <= hi:
        raise DeblendInputError(f"separation must satisfy 0 <= min <= max arcsec, got {separation!r}")
    limit = (stamp_size / 2.0 - 2.0) * preset.pixel_scale
    if hi > limit:
        raise DeblendInputError(
            f"separation max {hi} arcsec puts galaxies outside a {stamp_size}-pixel stamp: "
            f"expected at most {limit:.2f} arcsec (or a larger stamp_size)"
        )
    return (lo, hi)


def _place_galaxies(k: int, config: _BlendConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """0-based positions of ``k`` galaxies on a stamp, the central one first."""
    centre = (config.stamp_size - 1) / 2.0
    lo, hi = (s / config.preset.pixel_scale for s in config.separation)
    u = rng.random((k, 2))
    radius = np.concatenate([[0.0], lo + (hi - lo) * u[1:, 0]])
    angle = 2.0 * np.pi * u[1:, 1]
    x = centre + 2.0 * u[0, 0] - 1.0 + radius * np.cos(np.concatenate([[0.0], angle]))
    y = centre + 2.0 * u[0, 1] - 1.0 + radius * np.sin(np.concatenate([[0.0], angle]))
    for i in range(2, k):  # keep the others apart too: redraw a few times if needed
        for _attempt in range(50):
            if np.hypot(x[1:i] - x[i], y[1:i] - y[i]).min() >= lo:
                break
            r, a = lo + (hi - lo) * rng.random(), 2.0 * np.pi * rng.random()
            x[i], y[i] = x[0] + r * np.cos(a), y[0] + r * np.sin(a)
    return x, y


def _simulate_range(config: _BlendConfig, start: int, stop: int) -> dict:
    """Simulate stamps ``start`` to ``stop - 1`` of a configuration's sequence."""
    rngs, counts, x, y, gal = _stamp_parameters(config, start, stop)
    drawn = draw_galaxies(gal, x, y, config.stamp_size, config.preset, config.engine, _pool(config))
    stamp_flux = drawn.sum(axis=(1, 2), dtype=np.float64)
    order, rank = _sort_by_flux(stamp_flux, counts)
    n, size = stop - start, config.stamp_size
    components = np.zeros((n, config.k_max, 1, size, size), dtype=np.float32)
    images = np.empty((n, 1, size, size), dtype=np.float32)
    first = np.cumsum(counts) - counts
    for i, (k, f) in enumerate(zip(counts, first)):
        components[i, :k, 0] = drawn[order[f:f + k]]
        model = components[i, :k, 0].sum(axis=0)
        images[i, 0] = add_noise(model, config.preset, rngs[i]) if config.noise else model
    truth = _blend_truth(gal, x, y, stamp_flux, counts, rank, config.preset)
    truth = {key: value[order] for key, value in truth.items()}
    return {"images": images, "components": components, "n_components": counts, "truth": truth}


def _stamp_parameters(config: _BlendConfig, start: int, stop: int) -> tuple:
    """Per-stamp generators, galaxy counts, positions and parameters (concatenated)."""
    mix = dict(config.mix)
    parametric = is_parametric(mix)
    rngs, counts, xs, ys, params, morph, seeds = [], [], [], [], [], [], []
    for index in range(start, stop):
        rng = np.random.default_rng([config.seed, index])
        k = config.n_galaxies[0] if len(config.n_galaxies) == 1 else int(rng.choice(config.n_galaxies))
        x, y = _place_galaxies(k, config, rng)
        params.append(rng.random((k, N_UNIFORMS)))
        if not parametric:  # the parametric stream stays the one the first networks learned from
            morph.append(rng.random((k, N_MORPH_UNIFORMS)))
            seeds.append(rng.integers(1, 2**62, size=k))
        rngs.append(rng)
        counts.append(k)
        xs.append(x)
        ys.append(y)
    gal = derive_parameters(galaxies_from_uniforms(np.concatenate(params), config.mag_range), config.preset)
    if not parametric:
        gal = assign_families(gal, np.concatenate(morph), np.concatenate(seeds), mix, config.preset, _pool(config))
    return rngs, np.array(counts), np.concatenate(xs), np.concatenate(ys), gal


def _pool(config: _BlendConfig) -> RealPool | None:
    return None if config.real_pool is None else load_pool(config.real_pool)


def _sort_by_flux(flux: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order putting each stamp's galaxies brightest first, and each galaxy's rank."""
    order = np.empty(len(flux), dtype=int)
    rank = np.empty(len(flux), dtype=int)
    for f, k in zip(np.cumsum(counts) - counts, counts):
        local = np.argsort(-flux[f:f + k], kind="stable")
        order[f:f + k] = f + local
        rank[f + local] = np.arange(k)
    return order, rank


def _blend_truth(gal: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, stamp_flux: np.ndarray,
                 counts: np.ndarray, rank: np.ndarray, preset: SurveyPreset) -> dict[str, np.ndarray]:
    """Truth columns in drawing order (central galaxy first within a stamp)."""
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return {
        "stamp": np.repeat(np.arange(len(counts)), counts), "component": rank, "x": x, "y": y,
        "flux": stamp_flux, "flux_total": gal["flux"], "mag": gal["mag"], "hlr": gal["hlr"],
        "bulge_fraction": gal["bulge_fraction"], "e1": gal["e1"], "e2": gal["e2"],
        "sep_arcsec": np.hypot(x - x[first], y - y[first]) * preset.pixel_scale,
        "central": np.arange(len(x)) == first, **morphology_columns(gal),
    }


def _concatenate(parts: list[dict], config: _BlendConfig) -> BlendSet:
    offsets = np.cumsum([0] + [len(p["images"]) for p in parts[:-1]])
    for part, offset in zip(parts, offsets):
        part["truth"]["stamp"] = part["truth"]["stamp"] + offset
    truth = {key: np.concatenate([p["truth"][key] for p in parts]) for key in parts[0]["truth"]}
    meta = {"preset": config.preset.name, "seed": config.seed, "separation": list(config.separation),
            "mag_range": list(config.mag_range), "engine": config.engine, "morphology": mix_name(dict(config.mix))}
    if config.real_pool is not None:
        meta.update(real_pool=config.real_pool.path, real_split=config.real_pool.split)
    return BlendSet(
        images=np.concatenate([p["images"] for p in parts]),
        components=np.concatenate([p["components"] for p in parts]),
        n_components=np.concatenate([p["n_components"] for p in parts]),
        truth=truth_table(truth, meta),
        noise_sigma=float(config.preset.background_sigma) if config.noise else 0.0,
        preset=config.preset.name,
    )


