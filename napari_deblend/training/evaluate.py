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

import json
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
    component_measurements,
    ellipticity,
    image_moments,
    magnitude,
    match_positions,
    psnr,
    ssim,
)
from .evaluation_figures import FIGURES, write_figures
from .evaluation_report import (
    markdown_report,
    markdown_tables,
    model_card_path,
    update_model_card,
)
from .evaluation_stats import (
    NEAR_EQUAL_RATIO,
    QUALITY_CLASSES,
    RANK_NAMES,
    TRUTH_MASK_NSIGMA,
    flux_stats,
    mask_iou,
    nan_to_none,
    near_equal_mask,
    summarize_model,
)
from .testsets import (
    EVAL_SEED,
    REALISTIC_EVAL_SEED,
    TestSet,
    _positions_from_truth,
    _simulator_fingerprint,
    check_n_blends,
    default_seed,
    make_test_set,
)

__all__ = [
    "EVAL_SEED", "FIGURES", "NEAR_EQUAL_RATIO", "QUALITY_CLASSES", "RANK_NAMES", "REALISTIC_EVAL_SEED",
    "TRUTH_MASK_NSIGMA", "TestSet", "evaluate_model", "evaluate_models", "flux_stats", "make_test_set",
    "markdown_report", "markdown_tables", "mask_iou", "model_card_path", "near_equal_mask", "summarize_model",
    "update_model_card", "_positions_from_truth", "_simulator_fingerprint",
]

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
            "family": "bulge_disk" if test.families is None else str(test.families[i, r]),
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
    table["family"] = [row["family"] for row in rows] if n else np.zeros(0, dtype=str)
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


# ---- the whole evaluation -------------------------------------------------------------------------


def evaluate_models(
    models: list[Any],
    n: int = 2000,
    blends: tuple[int, ...] = (2, 3),
    out_dir: str | Path = "evaluation",
    device: str = "auto",
    batch_size: int = 64,
    seed: int | None = None,
    preset: str = "lsst-i",
    stamp_size: int = 48,
    cache_dir: str | Path | None = None,
    figures: bool = True,
    progress: Any = None,
    test_set: str = "parametric",
    real_pool: str | Path | None = None,
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
    seed : int, optional
        Test-set seed (default: the test set's, :data:`EVAL_SEED` or :data:`REALISTIC_EVAL_SEED`).
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
    test_set : {"parametric", "realistic"}
        Which test set (:mod:`napari_deblend.training.testsets`).
    real_pool : str or Path, optional
        Real-galaxy pool whose ``test`` split joins the realistic set.

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

    blends = check_n_blends(n, blends)
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
    # the pool's split seed, counts and register use, read once: recorded in the summary, warned about
    pool_split = warn_if_unregistered(real_pool, p.name) if real_pool and test_set == "realistic" else None
    for k in blends:
        test = make_test_set(n, k, seed=seed, stamp_size=stamp_size, preset=p.name, cache_dir=cache_dir,
                             test_set=test_set, real_pool=real_pool)
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
            "n": n, "blends": blends, "seed": default_seed(test_set) if seed is None else seed, "preset": p.name, "stamp_size": stamp_size,
            "test_set": test_set, "real_pool": str(real_pool) if real_pool and test_set == "realistic" else None,
            "real_pool_split": pool_split,
            "noise_sigma": p.background_sigma, "match_radius": MATCH_RADIUS, "isophote_nsigma": ISOPHOTE_NSIGMA,
            "near_equal_ratio": list(NEAR_EQUAL_RATIO), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "models": summary_models,
    }
    summary["files"] = _write_outputs(components, summary, out_dir, figures)
    return nan_to_none(summary)


class PoolSplitWarning(UserWarning):
    """The real-galaxy pool's test split may hold galaxies the shipped networks learned from."""


def warn_if_unregistered(real_pool: str | Path, preset: str) -> dict:
    """Warn (:class:`PoolSplitWarning`) when a pool's splits did not follow the split register (docs/real-pool.md).

    Parameters
    ----------
    real_pool : str or Path
        The pool root.
    preset : str
        The preset folder of the pool.

    Returns
    -------
    dict
        The pool's split record (``realpool.pool_split_record``; empty without a readable ``pool.json``).
    """
    from ..realpool import pool_split_record

    record = pool_split_record(real_pool, preset)
    if record and not record.get("registered_galaxies"):
        warnings.warn(PoolSplitWarning(
            f"{real_pool}: this real-galaxy pool was not split by the split register (built before it, or with "
            "another seed or fractions): its test split may hold galaxies the shipped networks learned from; "
            "rebuild it with `napari-deblend real-pool build` and the default --seed and --split"), stacklevel=3)
    return record


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
    (out_dir / files["summary"]).write_text(json.dumps(nan_to_none(summary), indent=2))
    (out_dir / files["report"]).write_text(markdown_report(nan_to_none(summary), figure_files))
    return files


