"""The pool on disk: split by galaxy, written outside the repository, read back.

Layout of a pool built for preset ``P`` in ``OUT``::

    OUT/P/train.npz, validation.npz, test.npz
    OUT/P/pool.json

Each ``.npz`` holds ``images`` ``(N, S, S)`` float32 (sum 1, 0 outside the
galaxy's footprint, flux-weighted centroid of the positive pixels, the
project's convention, at ``((S-1)/2, (S-1)/2)`` ± 0.25),
``noise`` ``(N,)`` float32 (per-pixel noise sigma left in the stamp, same
normalised units), ``galaxy_id`` ``(N,)`` int64 (variants of a galaxy share
it), ``source`` ``(N,)`` str (source file name), ``hlr`` ``(N,)`` float32
(half-light radius, arcsec, after PSF matching), ``snr`` ``(N,)`` float32
(isophotal S/N in the source image), ``magnification`` ``(N,)`` float32,
``psf_fwhm`` ``(N,)`` float32 (arcsec; the preset's, or the source's where it
is broader), and more columns: ``linear`` ``(N,)`` bool (False for stretched
pictures: shapes only), ``band`` ``(N,)`` str (multi-band sources), ``origin``
``(N,)`` str (the source table's entry, e.g. ``hst_hxdf``) and ``x``, ``y``
``(N,)`` float32 (the galaxy's position in its source image, 0-based pixels).

``pool.json`` records the preset, the builder's settings, the source table,
for every source image the sha256 of its files, its stars' FWHM and its counts
kept / rejected by reason, the split seed, fractions and counts.

Galaxies are assigned to splits per source (so each split gets its share of
every source), by a seeded permutation of their ids: all variants of a galaxy
(magnifications, bands) land in the same split. With the default seed and
fractions, a galaxy the split register knows (:mod:`.split_register`: the
galaxies of the pool the shipped weights learned from) keeps its registered
split, so a change of the builder's selection never moves a training galaxy
into the test split.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DeblendInputError
from ..presets import SurveyPreset, get_preset
from .build import COLUMNS, StampSet, build_stamps
from .sources import DEFAULT_SOURCES, SourceSpec
from .split_register import apply_split_register, load_split_register, uses_register
from .stamps import BuildSettings

SPLITS = ("train", "validation", "test")
POOL_ENV = "NAPARI_DEBLEND_REAL_POOL"
SOURCE_ENV = "NAPARI_DEBLEND_REAL_GALAXIES"
DEFAULT_SOURCE_DIR = Path("..") / "shared" / "real_galaxies"
_DTYPES = {"images": np.float32, "noise": np.float32, "galaxy_id": np.int64, "hlr": np.float32,
           "snr": np.float32, "magnification": np.float32, "psf_fwhm": np.float32, "linear": bool,
           "x": np.float32, "y": np.float32}
REQUIRED = ("images", "noise", "galaxy_id", "source", "hlr", "snr", "magnification", "psf_fwhm")


def default_pool_dir() -> Path:
    """``$NAPARI_DEBLEND_REAL_POOL``, else ``~/.cache/napari-deblend/real_pool``."""
    env = os.environ.get(POOL_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "napari-deblend" / "real_pool"


def default_source_dir() -> Path:
    """``$NAPARI_DEBLEND_REAL_GALAXIES``, else ``../shared/real_galaxies``."""
    env = os.environ.get(SOURCE_ENV)
    return Path(env).expanduser() if env else DEFAULT_SOURCE_DIR


def check_outside_repository(path: str | Path, option: str = "--out") -> Path:
    """The resolved path, or a DeblendInputError when it lies in a napari-deblend git work tree."""
    resolved = Path(path).expanduser().resolve()
    for parent in (resolved, *resolved.parents):
        if (parent / ".git").exists() and (parent / "napari_deblend").is_dir():
            raise DeblendInputError(
                f"{option} {path}: inside the napari-deblend repository {parent}; stamps cut from real images "
                f"never enter it: choose a folder outside (default {default_pool_dir()})"
            )
    return resolved


def check_split(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative fractions summing to 1 (train, validation, test)."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6 or values[0] <= 0:
        raise DeblendInputError(
            f"--split {' '.join(f'{v:g}' for v in values)}: expected three fractions (train validation test), "
            "non-negative, train > 0, summing to 1"
        )
    return values  # type: ignore[return-value]


def split_by_galaxy(galaxy_id: np.ndarray, origin: np.ndarray, fractions: Sequence[float],
                    seed: int) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) of every stamp, drawn per galaxy within each origin.

    With at least three galaxies from one origin (source table entry),
    validation and test get one each at least (when their fraction is not 0).
    """
    galaxy_id = np.asarray(galaxy_id)
    out = np.zeros(len(galaxy_id), np.int64)
    ids, first = np.unique(galaxy_id, return_index=True)
    owner = np.asarray(origin)[first]
    rng = np.random.default_rng([int(seed), 25])
    for name in sorted(set(owner.tolist())):
        members = rng.permutation(ids[owner == name])
        n = len(members)
        n_val = int(round(fractions[1] * n))
        n_test = int(round(fractions[2] * n))
        if n >= 3:
            n_val = max(n_val, 1) if fractions[1] > 0 else 0
            n_test = max(n_test, 1) if fractions[2] > 0 else 0
        n_val = min(n_val, n - 1) if n > 1 else 0
        n_test = min(n_test, max(n - 1 - n_val, 0))
        choice = np.zeros(n, np.int64)
        choice[n - n_val - n_test : n - n_test] = 1
        choice[n - n_test :] = 2
        lookup = dict(zip(members.tolist(), choice.tolist()))
        mask = np.isin(galaxy_id, members)
        out[mask] = [lookup[g] for g in galaxy_id[mask].tolist()]
    return out


def build_real_pool(source_dir: str | Path | None = None, preset: str | SurveyPreset = "lsst-i",
                    out: str | Path | None = None,
                    stamp_size: int = 64, seed: int = 0, split: Sequence[float] = (0.7, 0.15, 0.15),
                    min_snr: float = 30.0, sources: Sequence[SourceSpec] = DEFAULT_SOURCES,
                    log: Callable[[str], None] = print) -> Path:
    """Build the pool of real galaxy stamps for one preset and write it (see the module docstring).

    Parameters
    ----------
    source_dir : str or Path, optional
        Folder of the source table's folders (default :func:`default_source_dir`).
    preset : str or SurveyPreset
        Survey preset (its pixel scale and PSF FWHM are matched).
    out : str or Path, optional
        Output root (default :func:`default_pool_dir`); never inside the repository.
    stamp_size : int
        Stamp side, preset pixels.
    seed : int
        Seed of the split.
    split : sequence of float
        Fractions of galaxies in train, validation and test. With the
        register's seed and fractions (0; 0.7, 0.15, 0.15) the split register
        decides for the galaxies it knows.
    min_snr : float
        Minimum isophotal S/N of a galaxy.
    sources : sequence of SourceSpec
        The source table.
    log : callable
        Progress lines.

    Returns
    -------
    Path
        ``OUT/<preset>``.

    Raises
    ------
    DeblendInputError
        For a bad option, a missing or unreadable input, an output inside the
        repository, or when no galaxy survives.
    """
    survey = get_preset(preset)
    fractions = check_split(split)
    if int(stamp_size) != stamp_size or stamp_size < 16:
        raise DeblendInputError(f"--stamp-size {stamp_size}: expected an integer of at least 16 pixels")
    if int(seed) != seed or seed < 0:
        raise DeblendInputError(f"--seed {seed}: expected a non-negative integer")
    if not min_snr > 0:
        raise DeblendInputError(f"--min-snr {min_snr}: expected a positive number")
    root = Path(source_dir) if source_dir is not None else default_source_dir()
    if not root.is_dir():
        raise DeblendInputError(f"--source {root}: no such folder (the folder holding the real galaxy images)")
    target_root = check_outside_repository(out if out is not None else default_pool_dir())
    settings = BuildSettings(stamp_size=int(stamp_size), min_snr=float(min_snr))
    start = time.perf_counter()
    stamps, reports = build_stamps(root, survey, settings, sources, log=log)
    if not len(stamps):
        raise DeblendInputError(f"--source {root}: no galaxy passed the selection; nothing written")
    arrays = _arrays(stamps, int(stamp_size))
    assignment = split_by_galaxy(arrays["galaxy_id"], arrays["origin"], fractions, int(seed))
    register = load_split_register()
    n_registered = 0
    if uses_register(register, int(seed), fractions):
        assignment, n_registered = apply_split_register(assignment, arrays["galaxy_id"], arrays["origin"],
                                                        arrays["x"], arrays["y"], register)
        log(f"split register: {n_registered} of {len(np.unique(arrays['galaxy_id']))} galaxies keep their "
            "registered split")
    manifest = {
        "preset": {"name": survey.name, "pixel_scale": survey.pixel_scale, "psf_fwhm": survey.psf_fwhm},
        "settings": asdict(settings),
        "source_dir": str(root.resolve()),
        "sources": [asdict(spec) for spec in sources],
        "images": reports,
        "per_source": _per_source(reports),
        "split": {"seed": int(seed), "fractions": dict(zip(SPLITS, fractions)),
                  "registered_galaxies": n_registered, "counts": _split_counts(arrays, assignment)},
        "build_seconds": round(time.perf_counter() - start, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    target = target_root / survey.name
    _write(target, arrays, assignment, manifest)
    log(f"wrote {len(assignment)} stamps of {len(np.unique(arrays['galaxy_id']))} galaxies to {target}")
    return target


def _arrays(stamps: StampSet, size: int) -> dict[str, np.ndarray]:
    columns = stamps.columns
    out = {name: np.asarray(columns[name], dtype=_DTYPES.get(name, str)) for name in COLUMNS}
    out["images"] = out["images"].reshape(-1, size, size)
    return out


def _per_source(reports: list[dict]) -> dict[str, dict]:
    summary: dict[str, dict] = {}
    for report in reports:
        entry = summary.setdefault(report["source"], {"detections": 0, "galaxies_kept": 0, "stamps": 0,
                                                      "rejected": {}, "variants_skipped": {}})
        for key in ("detections", "galaxies_kept", "stamps"):
            entry[key] += report[key]
        for key in ("rejected", "variants_skipped"):
            for reason, count in report[key].items():
                entry[key][reason] = entry[key].get(reason, 0) + count
    return summary


def _split_counts(arrays: dict[str, np.ndarray], assignment: np.ndarray) -> dict[str, dict]:
    counts = {}
    for index, name in enumerate(SPLITS):
        chosen = assignment == index
        per_origin: dict[str, list[int]] = {}
        for origin, galaxy in zip(arrays["origin"][chosen].tolist(), arrays["galaxy_id"][chosen].tolist()):
            per_origin.setdefault(origin, []).append(galaxy)
        counts[name] = {"stamps": int(chosen.sum()), "galaxies": int(len(np.unique(arrays["galaxy_id"][chosen]))),
                        "per_source": {origin: {"stamps": len(ids), "galaxies": len(set(ids))}
                                       for origin, ids in sorted(per_origin.items())}}
    return counts


def _write(target: Path, arrays: dict[str, np.ndarray], assignment: np.ndarray, manifest: dict) -> None:
    """Write every file into a fresh sibling folder, then swap it in (nothing half-written)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        for index, name in enumerate(SPLITS):
            chosen = assignment == index
            np.savez(partial / f"{name}.npz", **{key: value[chosen] for key, value in arrays.items()})
        (partial / "pool.json").write_text(json.dumps(manifest, indent=1, default=_json_default))
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            target.rename(old)
            partial.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@dataclass
class RealPool:
    """One split of a pool of real galaxy stamps (see the module docstring for the columns)."""

    images: np.ndarray
    noise: np.ndarray
    galaxy_id: np.ndarray
    source: np.ndarray
    hlr: np.ndarray
    snr: np.ndarray
    magnification: np.ndarray
    psf_fwhm: np.ndarray
    linear: np.ndarray
    band: np.ndarray
    origin: np.ndarray
    x: np.ndarray
    y: np.ndarray
    path: Path

    def __len__(self) -> int:
        return len(self.images)


def pool_file(path: str | Path | None = None, split: str = "train", preset: str = "lsst-i") -> Path:
    """The ``.npz`` of one split: ``path/<preset>/<split>.npz``, or ``path/<split>.npz`` for a preset folder."""
    if split not in SPLITS:
        raise DeblendInputError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    root = Path(path).expanduser() if path is not None else default_pool_dir()
    name = get_preset(preset).name
    for candidate in (root / name / f"{split}.npz", root / f"{split}.npz"):
        if candidate.exists():
            return candidate
    raise DeblendInputError(
        f"{root / name / f'{split}.npz'}: no such file; build the pool with "
        f"`napari-deblend real-pool build --preset {name} --out {root}`"
    )


def load_real_pool(path: str | Path | None = None, split: str = "train", preset: str = "lsst-i") -> RealPool:
    """Read one split of a pool.

    Parameters
    ----------
    path : str or Path, optional
        Pool root (holding ``<preset>/``) or a preset folder; default :func:`default_pool_dir`.
    split : str
        ``"train"``, ``"validation"`` or ``"test"``.
    preset : str
        Survey preset the pool was built for.

    Raises
    ------
    DeblendInputError
        When the file is missing, unreadable or malformed (the message names it).
    """
    file = pool_file(path, split, preset)
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DeblendInputError(f"{file}: not a readable pool file ({exc})") from None
    missing = [key for key in REQUIRED if key not in arrays]
    if missing:
        raise DeblendInputError(f"{file}: not a real-galaxy pool (missing {', '.join(missing)})")
    images = arrays["images"]
    n = len(images)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DeblendInputError(f"{file}: images of shape {images.shape}: expected (N, S, S)")
    wrong = [key for key in REQUIRED if arrays[key].shape[:1] != (n,)]
    if wrong:
        raise DeblendInputError(f"{file}: {', '.join(wrong)} do not have one entry per image ({n})")
    linear = arrays.get("linear", np.ones(n, bool))
    band = arrays.get("band", np.full(n, ""))
    origin = arrays.get("origin", arrays["source"])
    x, y = (arrays.get(key, np.full(n, np.nan)).astype(np.float32) for key in ("x", "y"))
    return RealPool(images.astype(np.float32, copy=False), arrays["noise"].astype(np.float32),
                    arrays["galaxy_id"].astype(np.int64), arrays["source"].astype(str),
                    arrays["hlr"].astype(np.float32), arrays["snr"].astype(np.float32),
                    arrays["magnification"].astype(np.float32), arrays["psf_fwhm"].astype(np.float32),
                    linear.astype(bool), band.astype(str), origin.astype(str), x, y, file)


def pool_split_record(path: str | Path | None = None, preset: str = "lsst-i") -> dict:
    """What a figure measured on a pool's split says of the pool: its split seed, counts and register use.

    Parameters
    ----------
    path : str or Path, optional
        Pool root (holding ``<preset>/``) or a preset folder; default :func:`default_pool_dir`.
    preset : str
        Survey preset the pool was built for.

    Returns
    -------
    dict
        ``seed``, ``registered_galaxies`` (None for a pool built before the
        split register) and the galaxies of each split; empty when the pool
        has no readable ``pool.json``.
    """
    manifest_file = pool_file(path, "test", preset).parent / "pool.json"
    try:
        split = json.loads(manifest_file.read_text())["split"]
        return {"seed": split["seed"], "registered_galaxies": split.get("registered_galaxies"),
                "galaxies": {name: split["counts"][name]["galaxies"] for name in SPLITS}}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
