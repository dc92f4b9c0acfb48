"""Statistics of the evaluation: flux bias and scatter, recovered fractions, quality classes, mask IoU."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from astropy.table import Table

#: Flux ratio range of the "near-equal flux pairs" subset (2-galaxy blends).
NEAR_EQUAL_RATIO = (0.8, 1.25)
TRUTH_MASK_NSIGMA = 3.0  # truth masks: the noiseless component above 3 sigma of the noise, as BTK
QUALITY_CLASSES = ("High", "Medium", "Low")
RANK_NAMES = ("brightest", "second", "third")

def nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(v) for v in value]
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
        "by_count": count_stats(t),
        **({"by_family": family_stats(t)} if "family" in t.colnames and len(set(t["family"])) > 1 else {}),
    }


#: How a stamp's number of components compares with its number of true galaxies.
COUNT_CLASSES = ("right", "too many", "too few")


def count_stats(t: Table) -> dict[str, Any]:
    """The stamps grouped by whether the deblender returned as many components as there are galaxies.

    Per class of :data:`COUNT_CLASSES`: the fraction of stamps and the per-rank statistics of
    their galaxies. It separates the flux error of a deblender that counted right from what a
    wrong count costs (a knot taken for a galaxy takes light from its host).
    """
    n_pred, n_true = np.asarray(t["n_pred"]), np.asarray(t["n_galaxies"])
    classes = {"right": n_pred == n_true, "too many": n_pred > n_true, "too few": n_pred < n_true}
    n_stamps = len(np.unique(np.asarray(t["stamp"])))
    out: dict[str, Any] = {}
    for name in COUNT_CLASSES:
        rows = t[classes[name]]
        ranks = np.asarray(rows["rank"])
        out[name] = {
            "fraction": len(np.unique(np.asarray(rows["stamp"]))) / n_stamps if n_stamps else float("nan"),
            "ranks": {str(r): _group_stats(rows[ranks == r]) for r in sorted(set(ranks))},
        }
    return out


def family_stats(t: Table) -> dict[str, Any]:
    """Per morphology family of the true galaxies: recovered, bias, scatter and spurious predictions.

    Spurious predictions are counted per stamp whose galaxies are all of that family (for
    isolated galaxies: spurious components per galaxy of the family).
    """
    spurious, _, stamps = _stamp_table(t)
    families = np.asarray(t["family"]).astype(str)
    stamp_of_row = np.searchsorted(stamps, np.asarray(t["stamp"]))
    out = {}
    for family in sorted(set(families)):
        rows = families == family
        pure = np.ones(len(stamps), bool)
        pure[stamp_of_row[~rows]] = False  # a stamp with a galaxy of another family
        pure &= np.isin(np.arange(len(stamps)), stamp_of_row[rows])
        out[family] = {**_group_stats(t[rows]), "n_stamps_pure": int(pure.sum()),
                       "spurious_per_stamp": float(spurious[pure].mean()) if pure.any() else float("nan")}
    return out
