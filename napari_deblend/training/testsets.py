"""The fixed simulated test sets of the evaluation: parametric and realistic blends, cached on disk.

Two test sets, each with seeds that training never uses and, for the realistic
one, galaxies of the real-galaxy pool's ``test`` split only:

``parametric``
    bulge + disk galaxies (seed :data:`EVAL_SEED`), the set every model was first measured on;
``realistic``
    the simulator's realistic morphology mix (knots, arms, bars, clumps, lopsided and edge-on
    disks, tidal tails, compact galaxies, stars) and, when a real-galaxy pool is given, real
    galaxies from its ``test`` split (seed :data:`REALISTIC_EVAL_SEED`).

Stamp ``i`` of a set depends only on ``(seed, i)``, so the first ``n`` stamps of a
larger cached set are the set of ``n``.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from ..errors import DeblendInputError
from ..measurements import Truth

#: Seed of the parametric evaluation set. Training must never draw from it.
EVAL_SEED = 2_000_000_007
#: Seed of the realistic evaluation set. Training must never draw from it either.
REALISTIC_EVAL_SEED = 2_000_001_009
#: Share of real-pool galaxies (its ``test`` split) in the realistic set when a pool is given.
REALISTIC_REAL_WEIGHT = 0.4
TEST_SETS = ("parametric", "realistic")
"""The evaluation's test sets."""
VALIDATION_SEEDS = {"parametric-validation": 424_242, "realistic-validation": 434_343}
"""Validation sets, to choose models and settings on (never on a test set): the same two kinds of
galaxies with seeds of their own and, for the realistic one, the pool's ``validation`` split."""

# ---- the test set ---------------------------------------------------------------------------------


@dataclass
class TestSet:
    """A fixed set of simulated blends with their truth.

    Attributes
    ----------
    images : numpy.ndarray
        ``(N, C, H, W)`` float32 noisy stamps.
    components : numpy.ndarray
        ``(N, Kmax, C, H, W)`` float32 noiseless components, brightest first, zero-padded.
    n_components : numpy.ndarray
        ``(N,)`` number of galaxies per stamp.
    positions : numpy.ndarray
        ``(N, Kmax, 2)`` true positions ``(y, x)``, 0-based (NaN padded).
    noise_sigma : float
        Background sigma per pixel, electrons.
    n_galaxies : int
        Galaxies per blend.
    seed : int
        Simulation seed.
    preset : str
        Survey preset name.
    families : numpy.ndarray or None
        ``(N, Kmax)`` morphology family of each true component (``""`` padded), or None for
        parametric sets.
    name : str
        ``"parametric"`` or ``"realistic"``.
    """

    __test__ = False  # not a pytest class

    images: np.ndarray
    components: np.ndarray
    n_components: np.ndarray
    positions: np.ndarray
    noise_sigma: float
    n_galaxies: int
    seed: int
    preset: str
    families: np.ndarray | None = None
    name: str = "parametric"

    def __len__(self) -> int:
        return len(self.images)

    def truth(self, i: int) -> Truth:
        """The :class:`~napari_deblend.measurements.Truth` of stamp ``i``."""
        k = int(self.n_components[i])
        return Truth(self.components[i, :k], self.positions[i, :k])


def _simulator_fingerprint() -> str:
    """A hash of the simulator's source files: cached data made by another version are recognised."""
    from .. import simulate

    digest = hashlib.sha1()
    for path in sorted(Path(simulate.__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _test_set_path(cache_dir: Path, n: int, n_galaxies: int, seed: int, stamp_size: int, preset: str,
                   tag: str = "") -> Path:
    tag = f"_{tag}" if tag else ""
    return Path(cache_dir) / f"testset_{preset}_n{n}_g{n_galaxies}_s{stamp_size}_seed{seed}{tag}.npz"


def _find_cached(path: Path, n: int) -> Path | None:
    """The smallest cached set of the same kind holding at least ``n`` stamps.

    Stamp ``i`` of the simulator depends only on ``(seed, i)``, so the first
    ``n`` stamps of a larger set are the set of ``n``.
    """
    if path.exists():
        return path
    prefix, suffix = path.name.split(f"_n{n}_", 1)
    best = None
    for candidate in path.parent.glob(f"{prefix}_n*_{suffix}"):
        size = candidate.name[len(prefix) + 2:].split("_", 1)[0]
        if size.isdigit() and int(size) >= n and (best is None or int(size) < best[0]):
            best = (int(size), candidate)
    return None if best is None else best[1]


def _positions_from_truth(truth: Table, n: int, kmax: int) -> np.ndarray:
    positions = np.full((n, kmax, 2), np.nan)
    stamp = np.asarray(truth["stamp"], int)
    rank_col = "component" if "component" in truth.colnames else "rank"
    if rank_col in truth.colnames:
        rank = np.asarray(truth[rank_col], int)
    else:  # rows in stamp order, brightest first
        rank = np.concatenate([np.arange(c) for c in np.bincount(stamp, minlength=n)])
    positions[stamp, rank, 0] = np.asarray(truth["y"], float)
    positions[stamp, rank, 1] = np.asarray(truth["x"], float)
    return positions


def make_test_set(
    n: int,
    n_galaxies: int,
    seed: int | None = None,
    stamp_size: int = 48,
    preset: str = "lsst-i",
    cache_dir: str | Path | None = None,
    n_workers: int = 1,
    test_set: str = "parametric",
    real_pool: str | Path | None = None,
) -> TestSet:
    """Simulate (or load from the cache) ``n`` blends of ``n_galaxies`` galaxies of one test set.

    Parameters
    ----------
    n : int
        Number of stamps.
    n_galaxies : int
        Galaxies per blend (1 to 3).
    seed : int, optional
        Base seed (default: the test set's, :data:`EVAL_SEED` or :data:`REALISTIC_EVAL_SEED`);
        the set of multiplicity ``k`` is simulated with ``seed + k`` so that the 1-, 2- and
        3-galaxy sets are independent.
    stamp_size : int
        Stamp side, pixels.
    preset : str
        Survey preset.
    cache_dir : str or Path, optional
        Directory of cached sets (``.npz``, one file per ``n, n_galaxies,
        stamp_size, seed, preset``); ``None``: no cache.
    n_workers : int
        Simulation processes.
    test_set : {"parametric", "realistic"}
        Which test set (see the module docstring).
    real_pool : str or Path, optional
        Real-galaxy pool whose ``test`` split joins the realistic set.

    Returns
    -------
    TestSet
    """
    check_n_blends(n, [n_galaxies])
    simulation, tag = test_set_mix(test_set, real_pool)
    seed = default_seed(test_set) if seed is None else seed
    path = None if cache_dir is None else _test_set_path(Path(cache_dir), n, n_galaxies, seed, stamp_size, preset,
                                                        tag)
    cached = None if path is None else _find_cached(path, n)
    if cached is not None:
        return _load_test_set(cached, n)
    from ..simulate import simulate_blends

    blends = simulate_blends(
        n, n_galaxies=n_galaxies, stamp_size=stamp_size, preset=preset, seed=seed + n_galaxies, n_workers=n_workers,
        **simulation,
    )
    test = blends_to_test_set(blends, n_galaxies, seed, preset, test_set)
    if path is not None:
        _save_test_set(test, path)
    return test


def blends_to_test_set(blends: Any, n_galaxies: int, seed: int, preset: str, name: str) -> TestSet:
    """A :class:`TestSet` of simulated blends (a :class:`~napari_deblend.simulate.BlendSet`).

    Parameters
    ----------
    blends : BlendSet
        What :func:`~napari_deblend.simulate.simulate_blends` returned.
    n_galaxies : int
        Galaxies per blend.
    seed : int
        The seed they were simulated with (recorded).
    preset : str
        Their survey preset.
    name : str
        The set's name (``"parametric"``, ``"realistic"``, ...).

    Returns
    -------
    TestSet
    """
    n = len(blends.images)
    components = np.asarray(blends.components, dtype=np.float32)
    families = None
    if "family" in blends.truth.colnames:
        families = np.full(components.shape[:2], "", dtype="<U10")
        families[np.asarray(blends.truth["stamp"], int), np.asarray(blends.truth["component"], int)] = \
            np.asarray(blends.truth["family"]).astype(str)
    test = TestSet(
        images=np.asarray(blends.images, dtype=np.float32),
        components=components,
        n_components=np.asarray(blends.n_components, dtype=int),
        positions=_positions_from_truth(blends.truth, n, components.shape[1]),
        noise_sigma=float(np.mean(blends.noise_sigma)),
        n_galaxies=int(n_galaxies),
        seed=int(seed),
        preset=str(preset),
        families=families,
        name=name,
    )
    return test


def _save_test_set(test: TestSet, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        images=test.images,
        components=test.components,
        n_components=test.n_components,
        positions=test.positions,
        noise_sigma=test.noise_sigma,
        n_galaxies=test.n_galaxies,
        seed=test.seed,
        preset=test.preset,
        simulator=_simulator_fingerprint(),
        name=test.name,
        **({} if test.families is None else {"families": test.families}),
    )
    tmp.replace(path)


def _load_test_set(path: Path, n: int | None = None) -> TestSet:
    """Read a cached set (its first ``n`` stamps)."""
    keep = slice(None, n)
    with np.load(path) as data:
        if str(data["simulator"]) != _simulator_fingerprint():
            warnings.warn(
                f"{path} was simulated by another version of napari_deblend.simulate; using it so that "
                "models stay comparable (delete it to re-simulate)",
                stacklevel=3,
            )
        return TestSet(
            images=data["images"][keep],
            components=data["components"][keep],
            n_components=data["n_components"][keep],
            positions=data["positions"][keep],
            noise_sigma=float(data["noise_sigma"]),
            n_galaxies=int(data["n_galaxies"]),
            seed=int(data["seed"]),
            preset=str(data["preset"]),
            families=data["families"][keep] if "families" in data.files else None,
            name=str(data["name"]) if "name" in data.files else "parametric",
        )


def default_seed(test_set: str) -> int:
    """The seed reserved for a test (or validation) set."""
    if test_set in VALIDATION_SEEDS:
        return VALIDATION_SEEDS[test_set]
    return EVAL_SEED if test_set == "parametric" else REALISTIC_EVAL_SEED


def test_set_mix(test_set: str, real_pool: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """``simulate_blends`` keyword arguments of a test set, and a tag naming its cache files.

    The realistic set holds the simulator's realistic mix and, with a pool, real galaxies of its
    ``test`` split (:data:`REALISTIC_REAL_WEIGHT` of them).
    """
    from .data_mix import DataMix

    if test_set in ("parametric", "parametric-validation"):
        return {"morphology": "parametric"}, ""
    if test_set not in ("realistic", "realistic-validation"):
        raise DeblendInputError(f"test set {test_set!r} is unknown: expected one of "
                                f"{', '.join((*TEST_SETS, *VALIDATION_SEEDS))}")
    mix = DataMix("realistic", str(real_pool) if real_pool else None, REALISTIC_REAL_WEIGHT)
    split = "test" if test_set == "realistic" else "validation"
    return mix.simulate_kwargs(split), mix.tag() + ("" if split == "test" else "_validation")


def check_n_blends(n: int, blends: Any) -> list[int]:
    """The multiplicities of an evaluation (each 1 to 3), or one sentence saying what is wrong."""
    if not isinstance(n, int | np.integer) or n <= 0:
        raise DeblendInputError(f"n={n!r}: expected a positive number of blends")
    blends = list(blends)
    bad = [b for b in blends if not isinstance(b, int | np.integer) or not 1 <= b <= 3]
    if not blends or bad:
        raise DeblendInputError(f"blends={blends!r}: expected galaxies per blend among 1, 2, 3")
    return [int(b) for b in blends]
