"""Evaluation of deblenders on a fixed simulated test set: metrics, tables and figures.

Every model is run on the identical set of simulated blends (seed
:data:`EVAL_SEED`, which training must never use; cached on disk), its
components are matched one-to-one to the truth within 3 pixels, and the
comparison is written as a per-component table (``components.ecsv``), a
summary (``summary.json``), a Markdown report (``report.md``) and PNG figures
in the spirit of Wang et al. (2021, Figs. 6, 8, 11, Tables I and II).

Definitions (see also :mod:`napari_deblend.measurements`):

- flux of a neural or truth component: the sum of its pixels; SExtractor:
  ``FLUX_AUTO``; truth moments and neural moments at 3 sigma of the noise,
  SExtractor's isophotal moments from sep;
- ``dflux_frac = (recovered - true) / true``; a true component no prediction
  matched counts as ``-1`` (all its flux lost);
- bias: median of ``dflux_frac``; scatter: half the 16–84 percentile width;
- recovered fraction: matched true components / true components;
- spurious: predictions matched to no true component, per stamp;
- mask IoU: a matched component's mask (``DeblendResult.masks``, limited to
  the pixels where the component exceeds 3 sigma of the noise, so that every
  model is compared at the same isophote) against the truth mask, the
  noiseless component above 3 sigma (as BTK). NaN (left out) when both are empty.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import Table

from ..errors import DeblendInputError
from ..measurements import (
    ISOPHOTE_NSIGMA,
    MATCH_RADIUS,
    Truth,
    component_measurements,
    ellipticity,
    image_moments,
    magnitude,
    match_positions,
    psnr,
    ssim,
)

#: Seed of the evaluation set. Training must never draw from it.
EVAL_SEED = 2_000_000_007
#: Flux ratio range of the "near-equal flux pairs" subset (2-galaxy blends).
NEAR_EQUAL_RATIO = (0.8, 1.25)
TRUTH_MASK_NSIGMA = 3.0  # truth masks: the noiseless component above 3 sigma of the noise, as BTK
QUALITY_CLASSES = ("High", "Medium", "Low")
RANK_NAMES = ("brightest", "second", "third")
FIGURES = {
    "flux": "flux_recovered_vs_true.png",
    "dflux": "dflux_histogram.png",
    "dmag_mag": "dmag_vs_mag.png",
    "dmag_contrast": "dmag_vs_contrast.png",
    "moments": "moments_truth_vs_recovered.png",
    "recovered": "recovered_fraction.png",
}


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

    def __len__(self) -> int:
        return len(self.images)

    def truth(self, i: int) -> Truth:
        """The :class:`~napari_deblend.measurements.Truth` of stamp ``i``."""
        k = int(self.n_components[i])
        return Truth(self.components[i, :k], self.positions[i, :k])


def _simulator_fingerprint() -> str:
    from .. import simulate

    source = Path(simulate.__file__).read_bytes()
    return hashlib.sha1(source).hexdigest()[:12]


def _test_set_path(cache_dir: Path, n: int, n_galaxies: int, seed: int, stamp_size: int, preset: str) -> Path:
    return Path(cache_dir) / f"testset_{preset}_n{n}_g{n_galaxies}_s{stamp_size}_seed{seed}.npz"


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
    seed: int = EVAL_SEED,
    stamp_size: int = 48,
    preset: str = "lsst-i",
    cache_dir: str | Path | None = None,
    n_workers: int = 1,
) -> TestSet:
    """Simulate (or load from the cache) ``n`` blends of ``n_galaxies`` galaxies.

    Parameters
    ----------
    n : int
        Number of stamps.
    n_galaxies : int
        Galaxies per blend (1 to 3).
    seed : int
        Base seed; the set of multiplicity ``k`` is simulated with ``seed + k``
        so that the 2- and 3-galaxy sets are independent.
    stamp_size : int
        Stamp side, pixels.
    preset : str
        Survey preset.
    cache_dir : str or Path, optional
        Directory of cached sets (``.npz``, one file per ``n, n_galaxies,
        stamp_size, seed, preset``); ``None``: no cache.
    n_workers : int
        Simulation processes.

    Returns
    -------
    TestSet
    """
    _check_n_blends(n, [n_galaxies])
    path = None if cache_dir is None else _test_set_path(Path(cache_dir), n, n_galaxies, seed, stamp_size, preset)
    cached = None if path is None else _find_cached(path, n)
    if cached is not None:
        return _load_test_set(cached, n)
    from ..simulate import simulate_blends

    blends = simulate_blends(
        n, n_galaxies=n_galaxies, stamp_size=stamp_size, preset=preset, seed=seed + n_galaxies, n_workers=n_workers
    )
    components = np.asarray(blends.components, dtype=np.float32)
    test = TestSet(
        images=np.asarray(blends.images, dtype=np.float32),
        components=components,
        n_components=np.asarray(blends.n_components, dtype=int),
        positions=_positions_from_truth(blends.truth, n, components.shape[1]),
        noise_sigma=float(np.mean(blends.noise_sigma)),
        n_galaxies=int(n_galaxies),
        seed=int(seed),
        preset=str(preset),
    )
    if path is not None:
        _save_test_set(test, path)
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
        )


# ---- per-component table --------------------------------------------------------------------------


@dataclass
class _TruthCache:
    """Truth measurements of a test set, shared by all models."""

    flux: np.ndarray  # (N, Kmax)
    moments: np.ndarray  # (N, Kmax, 3)
    separation: np.ndarray  # (N, Kmax) to the nearest other galaxy, pixels
    mag_contrast: np.ndarray  # (N, Kmax) own mag - mag of the brightest other galaxy


def _truth_cache(test: TestSet, zp: float, exposure: float, nsigma: float) -> _TruthCache:
    n, kmax = test.components.shape[:2]
    flux = test.components.reshape(n, kmax, -1).sum(axis=2, dtype=np.float64)
    moments = np.full((n, kmax, 3), np.nan)
    separation = np.full((n, kmax), np.nan)
    contrast = np.full((n, kmax), np.nan)
    mags = magnitude(flux, zp, exposure)
    for i in range(n):
        k = int(test.n_components[i])
        moments[i, :k] = image_moments(test.components[i, :k], test.noise_sigma, nsigma)
        if k > 1:
            pos = test.positions[i, :k]
            d = np.hypot(*(pos[:, None, :] - pos[None, :, :]).transpose(2, 0, 1))
            np.fill_diagonal(d, np.inf)
            separation[i, :k] = d.min(axis=1)
            for r in range(k):
                others = np.delete(mags[i, :k], r)
                contrast[i, r] = mags[i, r] - np.nanmin(others) if np.isfinite(others).any() else np.nan
    return _TruthCache(flux, moments, separation, contrast)


def _stamp_rows(
    result: Any, test: TestSet, i: int, cache: _TruthCache, nsigma: float, max_distance: float
) -> list[dict[str, Any]]:
    """One row per true component of stamp ``i``."""
    k = int(test.n_components[i])
    meas = component_measurements(result, test.noise_sigma, nsigma)
    pairs = dict((j, p) for p, j in match_positions(result.positions, test.positions[i, :k], max_distance))
    n_pred = len(result.components)
    rows = []
    for r in range(k):
        p = pairs.get(r, -1)
        row = {
            "stamp": i,
            "rank": r,
            "n_pred": n_pred,
            "quality": str(result.quality),
            "true_x": test.positions[i, r, 1],
            "true_y": test.positions[i, r, 0],
            "true_flux": cache.flux[i, r],
            "separation": cache.separation[i, r],
            "mag_contrast": cache.mag_contrast[i, r],
            "true_mu20": cache.moments[i, r, 0],
            "true_mu02": cache.moments[i, r, 1],
            "true_mu11": cache.moments[i, r, 2],
            "matched": p >= 0,
            "pred_index": p,
        }
        if p >= 0:
            truth_img = test.components[i, r]
            row.update(
                rec_x=result.positions[p, 1],
                rec_y=result.positions[p, 0],
                rec_flux=meas["flux"][p],
                rec_mu20=meas["mu20"][p],
                rec_mu02=meas["mu02"][p],
                rec_mu11=meas["mu11"][p],
                psnr=psnr(result.components[p], truth_img),
                ssim=ssim(result.components[p], truth_img),
                mask_iou=mask_iou(
                    result.masks[p] & (result.components[p].sum(axis=0) > TRUTH_MASK_NSIGMA * test.noise_sigma),
                    truth_img.sum(axis=0) > TRUTH_MASK_NSIGMA * test.noise_sigma,
                ),
            )
        rows.append(row)
    return rows


_FLOAT_COLUMNS = (
    "true_x", "true_y", "true_flux", "separation", "mag_contrast", "true_mu20", "true_mu02", "true_mu11",
    "rec_x", "rec_y", "rec_flux", "rec_mu20", "rec_mu02", "rec_mu11", "psnr", "ssim", "mask_iou",
)
_UNITS = {
    "true_x": u.pix, "true_y": u.pix, "rec_x": u.pix, "rec_y": u.pix, "separation": u.pix,
    "true_flux": u.electron, "rec_flux": u.electron, "true_mag": u.mag, "rec_mag": u.mag, "dmag": u.mag,
    "mag_contrast": u.mag, "psnr": u.dB,
    **{f"{w}_{m}": u.pix**2 for w in ("true", "rec") for m in ("mu20", "mu02", "mu11")},
}


def _rows_to_table(rows: list[dict[str, Any]], model: str, n_galaxies: int, zp: float, exposure: float) -> Table:
    n = len(rows)
    table = Table()
    table["model"] = [model] * n
    table["n_galaxies"] = np.full(n, n_galaxies, dtype=int)
    for name in ("stamp", "rank", "n_pred", "pred_index"):
        table[name] = np.array([row[name] for row in rows], dtype=int)
    table["matched"] = np.array([row["matched"] for row in rows], dtype=bool)
    table["quality"] = [row["quality"] for row in rows] if n else np.zeros(0, dtype=str)
    for name in _FLOAT_COLUMNS:
        table[name] = np.array([row.get(name, np.nan) for row in rows], dtype=float)
    _derive_columns(table, zp, exposure)
    for name, unit in _UNITS.items():
        table[name].unit = unit
    return table


def _derive_columns(table: Table, zp: float, exposure: float) -> None:
    true_flux = np.asarray(table["true_flux"], float)
    rec_flux = np.asarray(table["rec_flux"], float)
    table["true_mag"] = np.atleast_1d(magnitude(true_flux, zp, exposure))
    table["rec_mag"] = np.atleast_1d(magnitude(rec_flux, zp, exposure))
    with np.errstate(divide="ignore", invalid="ignore"):
        dflux = np.where(true_flux > 0, (rec_flux - true_flux) / true_flux, np.nan)
    table["dflux_frac"] = np.where(np.asarray(table["matched"]), dflux, -1.0)
    table["dmag"] = table["rec_mag"] - table["true_mag"]
    for who in ("true", "rec"):
        e1, e2 = ellipticity(table[f"{who}_mu20"], table[f"{who}_mu02"], table[f"{who}_mu11"])
        table[f"{who}_e1"], table[f"{who}_e2"] = np.atleast_1d(e1), np.atleast_1d(e2)
    table["de1"] = table["rec_e1"] - table["true_e1"]
    table["de2"] = table["rec_e2"] - table["true_e2"]


def _resolve_model(model: Any, device: str, preset: str) -> tuple[str, Any]:
    from ..deblenders.base import Deblender, get_deblender

    if isinstance(model, Deblender):
        return model.name, model
    return str(model), get_deblender(str(model), device=device, preset=preset)


def evaluate_model(
    model: Any,
    test: TestSet,
    device: str = "auto",
    batch_size: int = 64,
    nsigma: float = ISOPHOTE_NSIGMA,
    max_distance: float = MATCH_RADIUS,
    truth_cache: _TruthCache | None = None,
) -> tuple[Table, dict[str, Any]]:
    """Run one model over a test set; return the per-true-component table and run facts.

    Parameters
    ----------
    model : str or Deblender
        Registry name or instance.
    test : TestSet
        The blends and truth.
    device : str
        Device for neural models.
    batch_size : int
        Stamps per ``deblend_batch`` call.
    nsigma, max_distance : float
        Isophote threshold (noise units) and matching radius (pixels).
    truth_cache : optional
        Precomputed truth measurements (internal).

    Returns
    -------
    table : astropy.table.Table
        One row per true component (see :func:`evaluate_models`).
    facts : dict
        ``seconds_per_stamp`` (deblending only), ``device``, ``model_version``; ``precision``
        for deblenders that report it.
    """
    from ..presets import get_preset

    p = get_preset(test.preset)
    name, deblender = _resolve_model(model, device, test.preset)
    cache = truth_cache or _truth_cache(test, p.zero_point, p.exposure, nsigma)
    rows: list[dict[str, Any]] = []
    seconds = 0.0
    result = None
    for start in range(0, len(test), batch_size):
        stop = min(start + batch_size, len(test))
        tic = time.perf_counter()
        results = deblender.deblend_batch(test.images[start:stop], noise=test.noise_sigma)
        seconds += time.perf_counter() - tic
        for offset, result in enumerate(results):
            rows.extend(_stamp_rows(result, test, start + offset, cache, nsigma, max_distance))
    table = _rows_to_table(rows, name, test.n_galaxies, p.zero_point, p.exposure)
    facts = {
        "seconds_per_stamp": seconds / max(len(test), 1),
        "device": getattr(deblender, "device", "cpu"),
        "model_version": str(result.model) if result is not None else name,
    }
    if hasattr(deblender, "precision_in_use"):  # the floating-point type its networks ran in
        facts["precision"] = deblender.precision_in_use()
    return table, facts


# ---- statistics -----------------------------------------------------------------------------------


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def mask_iou(mask: np.ndarray, truth_mask: np.ndarray) -> float:
    """Intersection over union of two boolean masks (NaN when both are empty)."""
    mask, truth_mask = np.asarray(mask, bool), np.asarray(truth_mask, bool)
    union = np.count_nonzero(mask | truth_mask)
    return float(np.count_nonzero(mask & truth_mask) / union) if union else float("nan")


def flux_stats(dflux: np.ndarray) -> dict[str, float]:
    """Median (bias) and 68% scatter (half the 16–84 percentile width) of ``dflux``; NaN if empty."""
    dflux = np.asarray(dflux, float)
    dflux = dflux[np.isfinite(dflux)]
    if len(dflux) == 0:
        return {"bias": float("nan"), "scatter": float("nan")}
    p16, p50, p84 = np.percentile(dflux, [16, 50, 84])
    return {"bias": float(p50), "scatter": float((p84 - p16) / 2)}


def _group_stats(t: Table) -> dict[str, Any]:
    matched = np.asarray(t["matched"], bool)
    dflux = np.asarray(t["dflux_frac"], float)
    all_stats = flux_stats(dflux)
    matched_stats = flux_stats(dflux[matched])
    return {
        "n_true": int(len(t)),
        "recovered": float(matched.mean()) if len(t) else float("nan"),
        "bias": all_stats["bias"],
        "scatter": all_stats["scatter"],
        "bias_matched": matched_stats["bias"],
        "scatter_matched": matched_stats["scatter"],
    }


def _mean_std(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(len(values))}


def _stamp_table(t: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stamp: spurious predictions, quality, and the stamp ids (sorted)."""
    stamps, first = np.unique(np.asarray(t["stamp"]), return_index=True)
    n_matched = np.bincount(np.searchsorted(stamps, t["stamp"]), weights=np.asarray(t["matched"], float))
    n_pred = np.asarray(t["n_pred"])[first]
    quality = np.asarray(t["quality"]).astype(str)[first] if len(t) else np.zeros(0, str)
    return n_pred - n_matched, quality, stamps


def _quality_stats(t: Table) -> dict[str, Any] | str:
    _, quality, _ = _stamp_table(t)
    if len(quality) == 0 or not any(quality):
        return ""
    out: dict[str, Any] = {}
    stamp_quality = np.asarray(t["quality"]).astype(str)
    for cls in QUALITY_CLASSES:
        sub = t[stamp_quality == cls]
        out[cls] = {"fraction": float(np.mean(quality == cls)), **_group_stats(sub)}
    return out


def near_equal_mask(t: Table, ratio: tuple[float, float] = NEAR_EQUAL_RATIO) -> np.ndarray:
    """Rows of 2-galaxy stamps whose two true (pixel-sum) fluxes have a ratio within ``ratio``."""
    mask = np.zeros(len(t), dtype=bool)
    two = np.asarray(t["n_galaxies"]) == 2
    if not two.any():
        return mask
    keys = np.asarray(t["stamp"]) * 10 + np.asarray(t["rank"])
    flux = dict(zip(keys[two], np.asarray(t["true_flux"], float)[two]))
    for row in np.flatnonzero(two):
        s = int(t["stamp"][row])
        f0, f1 = flux.get(s * 10), flux.get(s * 10 + 1)
        if f0 and f1 and f1 > 0:
            mask[row] = ratio[0] <= f0 / f1 <= ratio[1]
    return mask


def summarize_model(t: Table) -> dict[str, Any]:
    """Summary statistics of one model on one multiplicity (rows of a single model and ``n_galaxies``)."""
    spurious, _, stamps = _stamp_table(t)
    matched = np.asarray(t["matched"], bool)
    ranks = {str(r): _group_stats(t[np.asarray(t["rank"]) == r]) for r in sorted(set(np.asarray(t["rank"])))}
    near = near_equal_mask(t)
    return {
        "n_stamps": int(len(stamps)),
        "ranks": ranks,
        "all": _group_stats(t),
        "spurious_per_stamp": float(spurious.mean()) if len(stamps) else float("nan"),
        "psnr": _mean_std(np.asarray(t["psnr"])[matched]),
        "ssim": _mean_std(np.asarray(t["ssim"])[matched]),
        "mask_iou": _mean_std(np.asarray(t["mask_iou"])[matched]),
        "quality": _quality_stats(t),
        "near_equal": {"n_stamps": int(near.sum() // 2), **_group_stats(t[near])},
        "de1_scatter": flux_stats(np.asarray(t["de1"])[matched])["scatter"],
        "de2_scatter": flux_stats(np.asarray(t["de2"])[matched])["scatter"],
    }


# ---- the whole evaluation -------------------------------------------------------------------------


def _check_n_blends(n: int, blends: Any) -> list[int]:
    if not isinstance(n, int | np.integer) or n <= 0:
        raise DeblendInputError(f"n={n!r}: expected a positive number of blends")
    blends = list(blends)
    bad = [b for b in blends if not isinstance(b, int | np.integer) or not 1 <= b <= 3]
    if not blends or bad:
        raise DeblendInputError(f"blends={blends!r}: expected galaxies per blend among 1, 2, 3")
    return [int(b) for b in blends]


def evaluate_models(
    models: list[Any],
    n: int = 2000,
    blends: tuple[int, ...] = (2, 3),
    out_dir: str | Path = "evaluation",
    device: str = "auto",
    batch_size: int = 64,
    seed: int = EVAL_SEED,
    preset: str = "lsst-i",
    stamp_size: int = 48,
    cache_dir: str | Path | None = None,
    figures: bool = True,
    progress: Any = None,
) -> dict[str, Any]:
    """Evaluate deblenders on the same simulated blends and write tables, report and figures.

    Parameters
    ----------
    models : list of str or Deblender
        Registry names (``"peeling"``, ``"sextractor"``, ...) or instances.
    n : int
        Blends per multiplicity.
    blends : tuple of int
        Galaxies per blend to evaluate (each in 1..3).
    out_dir : str or Path
        Output directory (created).
    device : str
        Device for neural models (``"auto"``: CUDA, MPS, CPU).
    batch_size : int
        Stamps per batch.
    seed : int
        Test-set seed (default :data:`EVAL_SEED`).
    preset : str
        Survey preset (noise given to the deblenders, zero point, exposure).
    stamp_size : int
        Stamp side, pixels.
    cache_dir : str or Path, optional
        Where test sets are cached (default ``out_dir / "testsets"``).
    figures : bool
        Write the PNG figures.
    progress : callable, optional
        Called with one line of text per finished (model, multiplicity).

    Returns
    -------
    dict
        The summary written to ``summary.json``: ``settings`` and, per model,
        per multiplicity (``"2"``, ``"3"``): ``ranks`` (per true rank ``"0"``
        brightest: ``n_true``, ``recovered``, ``bias``, ``scatter`` with missed
        components at -1, ``bias_matched``, ``scatter_matched``), ``all``,
        ``spurious_per_stamp``, ``psnr`` and ``ssim`` (mean, std over matched
        components), ``quality`` (High/Medium/Low fractions, ``""`` if the model
        has none), ``near_equal`` (2-galaxy blends of flux ratio 0.8–1.25),
        ``seconds_per_stamp``; plus ``files``.

    Notes
    -----
    ``components.ecsv`` has one row per true component per model and
    multiplicity: ``model, n_galaxies, stamp, rank, n_pred, pred_index,
    matched, quality, true_x, true_y, true_flux, true_mag, separation,
    mag_contrast, true_mu20/mu02/mu11, true_e1/e2, rec_x, rec_y, rec_flux,
    rec_mag, rec_mu20/mu02/mu11, rec_e1/e2, dflux_frac, dmag, de1, de2, psnr, ssim``.
    """
    from ..presets import get_preset

    blends = _check_n_blends(n, blends)
    if not models:
        raise DeblendInputError("no models given: expected at least one deblender name")
    if batch_size <= 0:
        raise DeblendInputError(f"batch_size={batch_size}: expected a positive number of stamps")
    p = get_preset(preset)
    resolved = [_resolve_model(m, device, p.name) for m in models]  # unknown names fail before simulating
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = out_dir / "testsets" if cache_dir is None else Path(cache_dir)
    tables, summary_models = [], {name: {} for name, _ in resolved}
    for k in blends:
        test = make_test_set(n, k, seed=seed, stamp_size=stamp_size, preset=p.name, cache_dir=cache_dir)
        cache = _truth_cache(test, p.zero_point, p.exposure, ISOPHOTE_NSIGMA)
        for name, deblender in resolved:
            table, facts = evaluate_model(deblender, test, device, batch_size, truth_cache=cache)
            table["model"] = [name] * len(table)
            tables.append(table)
            summary_models[name][str(k)] = {**summarize_model(table), **facts}
            if progress is not None:
                progress(_progress_line(name, k, summary_models[name][str(k)]))
    components = _vstack(tables)
    summary = {
        "settings": {
            "n": n, "blends": blends, "seed": seed, "preset": p.name, "stamp_size": stamp_size,
            "noise_sigma": p.background_sigma, "match_radius": MATCH_RADIUS, "isophote_nsigma": ISOPHOTE_NSIGMA,
            "near_equal_ratio": list(NEAR_EQUAL_RATIO), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "models": summary_models,
    }
    summary["files"] = _write_outputs(components, summary, out_dir, figures)
    return _nan_to_none(summary)


def _vstack(tables: list[Table]) -> Table:
    from astropy.table import vstack

    return vstack(tables, metadata_conflicts="silent") if tables else Table()


def _progress_line(name: str, k: int, s: dict[str, Any]) -> str:
    ranks = ", ".join(
        f"rank {r}: {100 * v['recovered']:.1f}% found, bias {100 * v['bias']:+.1f}%, scatter {100 * v['scatter']:.1f}%"
        for r, v in s["ranks"].items()
    )
    return f"{name}, {k}-galaxy blends: {ranks}"


def _write_outputs(components: Table, summary: dict[str, Any], out_dir: Path, figures: bool) -> dict[str, str]:
    files = {"components": "components.ecsv", "summary": "summary.json", "report": "report.md"}
    components.meta.update({"settings": summary["settings"]})
    components.write(out_dir / files["components"], format="ascii.ecsv", overwrite=True)
    figure_files: dict[str, str] = {}
    if figures:
        figure_files = write_figures(components, out_dir)
    files.update({f"figure_{k}": v for k, v in figure_files.items()})
    summary["files"] = files
    (out_dir / files["summary"]).write_text(json.dumps(_nan_to_none(summary), indent=2))
    (out_dir / files["report"]).write_text(markdown_report(_nan_to_none(summary), figure_files))
    return files


# ---- Markdown -------------------------------------------------------------------------------------


def _pct(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * value:+.1f}%" if signed else f"{100 * value:.1f}%"


def _num(value: Any, fmt: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, fmt)


def _metric_rows(block: dict[str, dict[str, Any]], k: int) -> list[tuple[str, list[str]]]:
    names = list(block)
    rows: list[tuple[str, list[str]]] = []
    for r in range(k):
        label = RANK_NAMES[r]
        ranks = [block[m]["ranks"].get(str(r), {}) for m in names]
        rows.append((f"recovered, {label}", [_pct(s.get("recovered")) for s in ranks]))
        rows.append((f"Δf/f bias, {label}", [_pct(s.get("bias"), True) for s in ranks]))
        rows.append((f"Δf/f scatter, {label}", [_pct(s.get("scatter")) for s in ranks]))
        rows.append((f"scatter (matched only), {label}", [_pct(s.get("scatter_matched")) for s in ranks]))
    rows.append(("spurious per stamp", [_num(block[m]["spurious_per_stamp"], ".3f") for m in names]))
    for metric, fmt in (("psnr", ".1f"), ("ssim", ".3f"), ("mask_iou", ".3f")):
        label = {"psnr": "PSNR (matched) [dB]", "ssim": "SSIM (matched)",
                 "mask_iou": f"mask IoU vs truth > {TRUTH_MASK_NSIGMA:g}σ (matched)"}[metric]
        rows.append(
            (
                label,
                [f"{_num(block[m][metric]['mean'], fmt)} ± {_num(block[m][metric]['std'], fmt)}" for m in names],
            )
        )
    for cls in QUALITY_CLASSES:
        rows.append(
            (
                f"quality {cls} (stamps)",
                [_pct(block[m]["quality"][cls]["fraction"]) if block[m]["quality"] else "" for m in names],
            )
        )
    rows.append(("ms per stamp (deblending)", [_num(1e3 * block[m]["seconds_per_stamp"], ".2f") for m in names]))
    return rows


def _markdown_table(header: list[str], rows: list[tuple[str, list[str]]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([label, *cells]) + " |" for label, cells in rows]
    return "\n".join(lines)


def markdown_tables(summary: dict[str, Any]) -> str:
    """The Markdown tables of a summary: per multiplicity, the models side by side; near-equal pairs."""
    models = list(summary["models"])
    settings = summary["settings"]
    parts = []
    for k in settings["blends"]:
        block = {m: summary["models"][m][str(k)] for m in models}
        n_stamps = next(iter(block.values()))["n_stamps"]
        parts.append(f"### {k}-galaxy blends ({n_stamps} stamps)\n")
        parts.append(_markdown_table(["metric", *models], _metric_rows(block, k)) + "\n")
    if 2 in settings["blends"]:
        lo, hi = settings["near_equal_ratio"]
        block = {m: summary["models"][m]["2"]["near_equal"] for m in models}
        n_pairs = next(iter(block.values()))["n_stamps"]
        parts.append(f"### Near-equal flux pairs (2-galaxy blends, flux ratio {lo}–{hi}; {n_pairs} stamps)\n")
        rows = [
            ("recovered", [_pct(block[m]["recovered"]) for m in models]),
            ("Δf/f bias", [_pct(block[m]["bias"], True) for m in models]),
            ("Δf/f scatter", [_pct(block[m]["scatter"]) for m in models]),
            ("scatter (matched only)", [_pct(block[m]["scatter_matched"]) for m in models]),
        ]
        parts.append(_markdown_table(["metric", *models], rows) + "\n")
    return "\n".join(parts)


def markdown_report(summary: dict[str, Any], figure_files: dict[str, str] | None = None) -> str:
    """The full ``report.md``: settings, definitions, tables and figure links."""
    s = summary["settings"]
    lines = [
        "# Deblender evaluation",
        "",
        f"{s['n']} simulated blends per multiplicity ({', '.join(map(str, s['blends']))} galaxies), preset "
        f"`{s['preset']}` (σ = {s['noise_sigma']:.0f} e⁻), {s['stamp_size']}×{s['stamp_size']} stamps, seed "
        f"{s['seed']}; {s['date']}.",
        "",
        f"Components are matched one-to-one to the truth within {s['match_radius']:g} px. Δf/f = (recovered − "
        "true)/true with true = sum of the noiseless component's pixels; a missed galaxy counts as Δf/f = −1. "
        "Bias = median, scatter = half the 16–84 percentile width. SExtractor flux = FLUX_AUTO. Ranks: "
        "brightest first. PSNR/SSIM compare each matched component with its noiseless truth.",
        "",
        markdown_tables(summary),
    ]
    if figure_files:
        lines += ["## Figures", ""]
        lines += [f"![{key}]({name})" for key, name in figure_files.items()]
        lines.append("")
    return "\n".join(lines)


# ---- model cards ----------------------------------------------------------------------------------


def update_model_card(card_path: str | Path, summary: dict[str, Any], model: str,
                      inference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a model's evaluation numbers into its model-card JSON under ``"metrics"``.

    Parameters
    ----------
    card_path : str or Path
        Model-card JSON (created if absent).
    summary : dict
        Output of :func:`evaluate_models`.
    model : str
        Model name in ``summary["models"]``.
    inference : dict, optional
        How the deblender used the weights in this evaluation (written under
        ``"inference"``: the metrics depend on it).

    Returns
    -------
    dict
        The updated card.
    """
    if model not in summary.get("models", {}):
        known = ", ".join(summary.get("models", {})) or "none"
        raise DeblendInputError(f"model {model!r} is not in the evaluation summary: expected one of {known}")
    card_path = Path(card_path)
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card["metrics"] = _nan_to_none(
        {
            "source": "napari_deblend.training.evaluate.evaluate_models",
            "settings": summary["settings"],
            "by_blend_multiplicity": summary["models"][model],
        }
    )
    if inference is not None:
        card["inference"] = inference
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2))
    tmp.replace(card_path)
    return card


def model_card_path(model: Any, device: str = "cpu", preset: Any = None) -> Path | None:
    """Where a model's card lives: beside its weights (``<weights>.json``), else ``weights/<name>.json``.

    Returns ``None`` for models without weights or card (e.g. ``sextractor``).
    """
    from ..deblenders import base

    deblender = model if isinstance(model, base.Deblender) else base.get_deblender(str(model), device, preset)
    weights = getattr(deblender, "weights", None)
    if weights is not None and Path(weights).exists():
        return Path(weights).with_suffix(".json")
    card = Path(base.__file__).parent / "weights" / f"{deblender.name}.json"
    return card if card.exists() else None


# ---- figures --------------------------------------------------------------------------------------

_RANK_COLORS = ("tab:blue", "tab:orange", "tab:green")
_LINESTYLES = {1: ":", 2: "-", 3: "--"}


def _models_and_blends(t: Table) -> tuple[list[str], list[int]]:
    models = list(dict.fromkeys(np.asarray(t["model"]).astype(str)))
    blends = sorted({int(k) for k in np.asarray(t["n_galaxies"])})
    return models, blends


def _model_colors(models: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def _select(t: Table, model: str | None = None, k: int | None = None) -> Table:
    mask = np.ones(len(t), dtype=bool)
    if model is not None:
        mask &= np.asarray(t["model"]).astype(str) == model
    if k is not None:
        mask &= np.asarray(t["n_galaxies"]) == k
    return t[mask]


def binned_stats(x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_count: int = 5) -> dict[str, np.ndarray]:
    """Median and 16/84 percentiles of ``y`` in bins of ``x`` (NaN where fewer than ``min_count`` points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    nb = len(edges) - 1
    out = {k: np.full(nb, np.nan) for k in ("median", "p16", "p84")}
    out["center"] = 0.5 * (edges[:-1] + edges[1:])
    out["count"] = np.zeros(nb, dtype=int)
    which = _bin_index(x, edges)
    for b in range(nb):
        vals = y[which == b]
        out["count"][b] = len(vals)
        if len(vals) >= min_count:
            out["p16"][b], out["median"][b], out["p84"][b] = np.percentile(vals, [16, 50, 84])
    return out


def _bin_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value (-1 / len(edges) - 1 outside); the last bin includes its right edge."""
    which = np.digitize(x, edges) - 1
    which[x == edges[-1]] = len(edges) - 2
    return which


def binned_mean(x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_count: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres and mean of ``y`` in bins of ``x`` (NaN where fewer than ``min_count`` points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    which = _bin_index(x[ok], edges)
    nb = len(edges) - 1
    inside = (which >= 0) & (which < nb)
    count = np.bincount(which[inside], minlength=nb)
    total = np.bincount(which[inside], weights=y[ok][inside], minlength=nb)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count >= min_count, total / count, np.nan)
    return 0.5 * (edges[:-1] + edges[1:]), mean


def _edges(values: np.ndarray, width: float, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.array([0.0, width])
    lo = np.floor(values.min() / width) * width if lo is None else lo
    hi = np.ceil(values.max() / width) * width if hi is None else hi
    return np.arange(lo, hi + width / 2, width) if hi > lo else np.array([lo, lo + width])


def _new_figure(nrows: int, ncols: int, width: float = 4.2, height: float = 3.6, **kw: Any):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def plot_flux_recovered(t: Table):
    """Recovered vs true flux, log-log with ``y = x`` (Wang et al. 2021 Figs. 6, 11); missed at the bottom."""
    models, blends = _models_and_blends(t)
    width = max(3.8, 6.0 / len(models))  # a single model's column still holds the title
    fig, axes = _new_figure(len(blends), len(models), width, 3.6, sharex=True, sharey=True)
    true_flux = np.asarray(t["true_flux"], float)
    pos = true_flux[true_flux > 0]
    lo, hi = (pos.min() / 3, pos.max() * 3) if len(pos) else (1.0, 10.0)
    for row, k in enumerate(blends):
        for col, model in enumerate(models):
            ax = axes[row, col]
            sub = _select(t, model, k)
            matched = np.asarray(sub["matched"], bool)
            for r in range(k):
                sel = matched & (np.asarray(sub["rank"]) == r)
                rec = np.clip(np.asarray(sub["rec_flux"], float)[sel], lo * 1.2, None)
                ax.scatter(sub["true_flux"][sel], rec, s=4, alpha=0.5, color=_RANK_COLORS[r],
                           label=f"{RANK_NAMES[r]}", rasterized=True)
            miss = ~matched
            ax.scatter(sub["true_flux"][miss], np.full(miss.sum(), lo * 1.2), marker="|", s=40, color="0.4",
                       alpha=0.6, label="missed")
            ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
            ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
            ax.set_title(f"{model}, {k} galaxies: {100 * matched.mean():.0f}% recovered"
                         if len(sub) else f"{model}, {k} galaxies", fontsize=10)
            if row == len(blends) - 1:
                ax.set_xlabel("true flux [e⁻]")
            if col == 0:
                ax.set_ylabel("recovered flux [e⁻]")
            ax.legend(loc="upper left", fontsize=7, markerscale=2, frameon=False)
    fig.suptitle("Recovered vs true flux\n(line: y = x; missed galaxies as ticks at the bottom)", fontsize=11)
    return fig


def plot_dflux_histogram(t: Table):
    """Histograms of Δf/f per true rank, models overlaid (missed galaxies at −1)."""
    models, blends = _models_and_blends(t)
    colors = _model_colors(models)
    nranks = max(blends)
    fig, axes = _new_figure(len(blends), nranks, 3.8, 3.0)
    edges = np.linspace(-1.05, 1.05, 43)
    for row, k in enumerate(blends):
        for r in range(nranks):
            ax = axes[row, r]
            if r >= k:
                ax.set_axis_off()
                continue
            for model in models:
                sub = _select(t, model, k)
                sel = np.asarray(sub["rank"]) == r
                d = np.clip(np.asarray(sub["dflux_frac"], float)[sel], -1.04, 1.04)
                s = flux_stats(d)
                missed = 1.0 - float(np.mean(np.asarray(sub["matched"])[sel])) if sel.any() else np.nan
                ax.hist(d, bins=edges, histtype="step", color=colors[model], lw=1.3,
                        label=f"{model}: {100 * missed:.0f}% missed\n{100 * s['bias']:+.0f}% ± {100 * s['scatter']:.0f}%")
            ax.axvline(0, color="k", lw=0.6)
            ax.set_yscale("log")
            ax.set_ylim(0.7, 40 * max(ax.get_ylim()[1], 1.0))  # room for the legend above the bars
            ax.set_xlim(edges[0], edges[-1])
            ax.set_title(f"{k} galaxies, {RANK_NAMES[r]}", fontsize=10)
            ax.set_xlabel("Δf/f (clipped to ±1; −1 = missed)")
            ax.set_ylabel("galaxies")
            ax.legend(fontsize=7, frameon=False, loc="upper right")
    fig.suptitle("Flux residuals Δf/f per brightness rank (legend: missed fraction; median ± 68% half-width, "
                 "missed counted as −1)")
    return fig


def plot_dmag(t: Table, xcol: str, xlabel: str, title: str, width: float = 0.5):
    """Binned median Δmag (matched galaxies) against ``xcol``, models overlaid, one panel per multiplicity."""
    models, blends = _models_and_blends(t)
    colors = _model_colors(models)
    fig, axes = _new_figure(1, len(blends), 4.8, 3.8, sharey=True)
    edges = _edges(np.asarray(t[xcol], float), width)
    for col, k in enumerate(blends):
        ax = axes[0, col]
        for model in models:
            sub = _select(t, model, k)
            matched = np.asarray(sub["matched"], bool)
            b = binned_stats(np.asarray(sub[xcol])[matched], np.asarray(sub["dmag"])[matched], edges)
            ax.fill_between(b["center"], b["p16"], b["p84"], color=colors[model], alpha=0.2, lw=0)
            ax.plot(b["center"], b["median"], "o-", color=colors[model], ms=3, label=model)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(f"{k}-galaxy blends", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8, frameon=False)
    axes[0, 0].set_ylabel("Δmag = recovered − true [mag]")
    ylim = _robust_limits(np.asarray(t["dmag"], float), pad=0.1)
    axes[0, 0].set_ylim(ylim)
    fig.suptitle(f"{title}\n(matched galaxies; line: median, band: 16–84 percentiles)", fontsize=11)
    return fig


def _robust_limits(values: np.ndarray, pad: float = 0.05, q: tuple[float, float] = (2, 98)) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return (-1.0, 1.0)
    lo, hi = np.percentile(values, q)
    span = max(hi - lo, 1e-3)
    return (float(lo - pad * span), float(hi + pad * span))


def plot_moments(t: Table):
    """Truth vs recovered μ11, e1 and e2 (Wang et al. 2021 Fig. 8), one row per model."""
    models, blends = _models_and_blends(t)
    quantities = (("mu11", "μ11 [pix²]"), ("e1", "e1"), ("e2", "e2"))
    fig, axes = _new_figure(len(models), 3, 3.6, 3.4)
    mu_all = np.abs(np.concatenate([np.asarray(t["true_mu11"], float), np.asarray(t["rec_mu11"], float)]))
    mu_all = mu_all[np.isfinite(mu_all)]
    mu_max = 1.3 * float(np.percentile(mu_all, 99.5)) if len(mu_all) else 1.0
    mu_lim = (-max(mu_max, 2.0), max(mu_max, 2.0))
    for row, model in enumerate(models):
        sub = _select(t, model)
        matched = np.asarray(sub["matched"], bool)
        for col, (q, label) in enumerate(quantities):
            ax = axes[row, col]
            lim = mu_lim if q == "mu11" else (-1.0, 1.0)
            for k in blends:
                sel = matched & (np.asarray(sub["n_galaxies"]) == k)
                x = np.asarray(sub[f"true_{q}"], float)[sel]
                y = np.clip(np.asarray(sub[f"rec_{q}"], float)[sel], *lim)
                ax.scatter(x, y, s=4, alpha=0.4, label=f"{k} galaxies", rasterized=True)
            ax.plot(lim, lim, color="k", lw=0.8)
            if q == "mu11":  # most galaxies are small: linear within ±1 pix², logarithmic beyond
                ax.set_xscale("symlog", linthresh=1.0)
                ax.set_yscale("symlog", linthresh=1.0)
            ax.set(xlim=lim, ylim=lim, xlabel=f"true {label}", ylabel=f"recovered {label}")
            ax.set_title(model, fontsize=10)
            ax.legend(fontsize=7, markerscale=2, frameon=False, loc="upper left")
    fig.suptitle("Second moments and ellipticity, truth vs recovered (matched galaxies; line y = x)")
    return fig


def plot_recovered(t: Table):
    """Recovered fraction vs separation and per rank, models side by side."""
    models, blends = _models_and_blends(t)
    colors = _model_colors(models)
    fig, axes = _new_figure(1, 2, 5.6, 3.9)
    ax = axes[0, 0]
    edges = _edges(np.asarray(t["separation"], float), 1.0, lo=0.0)
    for model in models:
        for k in blends:
            sub = _select(t, model, k)
            centers, frac = binned_mean(sub["separation"], np.asarray(sub["matched"], float), edges)
            ax.plot(centers, frac, _LINESTYLES.get(k, "-"), marker="o", ms=3, color=colors[model],
                    label=f"{model}, {k} gal.")
    ax.set(xlabel="distance to nearest neighbour [pix]", ylabel="recovered fraction", ylim=(-0.02, 1.02))
    ax.set_title("vs separation", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax = axes[0, 1]
    groups = [(k, r) for k in blends for r in range(k)]
    wbar = 0.8 / max(len(models), 1)
    for m, model in enumerate(models):
        fracs = []
        for k, r in groups:
            sub = _select(t, model, k)
            sel = np.asarray(sub["rank"]) == r
            fracs.append(float(np.mean(np.asarray(sub["matched"])[sel])) if sel.any() else np.nan)
        x = np.arange(len(groups)) + (m - (len(models) - 1) / 2) * wbar
        ax.bar(x, fracs, width=wbar, color=colors[model], label=model)
    ax.set_xticks(np.arange(len(groups)), [f"{k} gal.\n{RANK_NAMES[r]}" for k, r in groups], fontsize=8)
    ax.set(ylabel="recovered fraction", ylim=(0, 1.2), yticks=np.linspace(0, 1, 6))
    ax.set_title("per brightness rank", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper center", ncol=min(len(models), 4))
    fig.suptitle(f"Recovered galaxies (matched within {MATCH_RADIUS:g} px)")
    return fig


def write_figures(t: Table, out_dir: str | Path) -> dict[str, str]:
    """Write every evaluation figure (PNG) of a ``components`` table into ``out_dir``; return key -> file."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    out_dir = Path(out_dir)
    if len(t) == 0:
        return {}
    makers = {
        "flux": plot_flux_recovered,
        "dflux": plot_dflux_histogram,
        "dmag_mag": lambda t: plot_dmag(t, "true_mag", "true magnitude [AB]", "Magnitude residual vs magnitude"),
        "dmag_contrast": lambda t: plot_dmag(
            t, "mag_contrast", "magnitude difference to the brightest neighbour [mag]",
            "Magnitude residual vs magnitude difference (> 0: fainter than its neighbour)"),
        "moments": plot_moments,
        "recovered": plot_recovered,
    }
    written = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key, make in makers.items():
            fig = make(t)
            fig.savefig(out_dir / FIGURES[key], dpi=110)
            written[key] = FIGURES[key]
    return written
