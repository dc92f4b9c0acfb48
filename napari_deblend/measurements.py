"""Measurements on deblended components: flux, magnitude, moments, ellipticity, matching, image metrics.

The same code measures truth, neural and SExtractor components (see "Measurement
definitions" in the architecture notes):

- flux: the sum of a component's pixels (neural, truth); for SExtractor its
  ``FLUX_AUTO`` (masked Kron photometry);
- magnitude: ``zp - 2.5 log10(flux)``, ``zp`` the AB magnitude of one image
  unit (:func:`napari_deblend.field.magnitude`, the one magnitude function);
- second moments ``mu20`` (along x, columns), ``mu02`` (along y, rows), ``mu11``
  (pixel²): unweighted, intensity-normalised central moments over the
  component's isophote at 3 sigma of the background noise (the 8-connected
  region holding its brightest pixel); for SExtractor, sep's isophotal
  ``x2``, ``y2``, ``xy``;
- ellipticity ``e1 = (mu20 - mu02) / (mu20 + mu02)``, ``e2 = 2 mu11 / (mu20 + mu02)``;
- matching: one-to-one by position within 3 pixels (Hungarian assignment).

Multi-band components are measured on their band sum (the detection co-add),
whose noise is ``sigma * sqrt(C)``. Pixels masked in the stamp
(``result.info["stamp_mask"]``, set by :func:`~napari_deblend.deblend` from
the field's mask) are left out of the isophotes and moments; a component's
flux stays the model's sum over the stamp, and ``masked_frac`` tells how much
of it lies on masked pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import Table
from scipy.optimize import linear_sum_assignment

from .errors import DeblendInputError
from .field.calibration import magnitude
from .image_metrics import psnr, ssim
from .moments import (
    ISOPHOTE_NSIGMA,
    centroid,
    ellipticity,
    image_moments,
    isophote_region,
    second_moments,
)

__all__ = [
    "ISOPHOTE_NSIGMA", "MATCH_RADIUS", "Truth", "as_truth", "centroid", "component_measurements", "ellipticity",
    "image_moments", "is_sextractor_result", "isophote_region", "magnitude", "match_positions", "measure", "psnr",
    "result_noise", "second_moments", "sextractor_status", "ssim", "truth_from_blendset",
]  # fmt: skip

#: Matching radius in pixels (truth <-> prediction, neural <-> SExtractor).
MATCH_RADIUS = 3.0

_MOMENT_NAMES = ("mu20", "mu02", "mu11")


# ---- matching -------------------------------------------------------------------------------------


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float).reshape(-1, 2)
    b = np.asarray(b, dtype=float).reshape(-1, 2)
    return np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])


def match_positions(
    pred: np.ndarray, true: np.ndarray, max_distance: float = MATCH_RADIUS
) -> list[tuple[int, int]]:
    """One-to-one matching of predicted to true positions within ``max_distance`` pixels.

    The Hungarian assignment (:func:`scipy.optimize.linear_sum_assignment`) first
    maximises the number of pairs closer than ``max_distance`` and, among those,
    minimises the summed distance.

    Parameters
    ----------
    pred : numpy.ndarray
        ``(K, 2)`` predicted positions (any consistent order of coordinates).
    true : numpy.ndarray
        ``(M, 2)`` true positions.
    max_distance : float
        Largest accepted distance (inclusive), pixels.

    Returns
    -------
    list of (int, int)
        ``(i_pred, j_true)`` pairs, sorted by ``i_pred``.
    """
    d = _distances(pred, true)
    if d.size == 0:
        return []
    ok = d <= max_distance
    # pairs beyond the radius cost more than any set of valid pairs, so the count is maximised first
    big = 1.0 + float(d[ok].sum()) if ok.any() else 1.0
    cost = np.where(ok, d, big)
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if ok[i, j]]


# ---- flux and magnitudes --------------------------------------------------------------------------


def is_sextractor_result(result: Any) -> bool:
    """Whether a :class:`~napari_deblend.deblenders.base.DeblendResult` carries sep's measurements."""
    info = getattr(result, "info", None) or {}
    k = len(result.components)
    return all(key in info and len(np.atleast_1d(info[key])) == k for key in ("flux_auto", "x2", "y2", "xy"))


def result_noise(result: Any, preset: Any = None) -> float:
    """The result's background sigma, or the preset's when the result has none."""
    from .presets import get_preset

    noise = float(getattr(result, "noise", float("nan")))
    return noise if np.isfinite(noise) and noise > 0 else get_preset(preset).background_sigma


def stamp_mask(result: Any) -> np.ndarray | None:
    """``(H, W)`` bad pixels of a result's stamp (any band), or None when it has none."""
    mask = (getattr(result, "info", None) or {}).get("stamp_mask")
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    mask = mask.any(axis=0) if mask.ndim == 3 else mask
    return mask if mask.shape == np.shape(result.blend)[-2:] and mask.any() else None


def component_measurements(
    result: Any, noise: float | None = None, nsigma: float = ISOPHOTE_NSIGMA
) -> dict[str, np.ndarray]:
    """Flux and second moments of each component of a deblend result, by the model's own definition.

    Parameters
    ----------
    result : DeblendResult
        Output of a deblender.
    noise : float, optional
        Background sigma (default: ``result.noise``, else the default preset's).
    nsigma : float
        Isophote threshold for neural components.

    Returns
    -------
    dict
        ``flux``, ``mu20``, ``mu02``, ``mu11``, ``masked_frac``: ``(K,)`` arrays.
        SExtractor results give ``FLUX_AUTO`` and sep's isophotal ``x2, y2, xy``;
        other results the sum of the component's pixels and its isophotal
        moments (masked pixels left out). ``masked_frac``: the fraction of the
        component's flux on masked pixels (0 without a mask).
    """
    mask = stamp_mask(result)
    if is_sextractor_result(result):
        info = result.info
        return {
            "flux": np.asarray(info["flux_auto"], dtype=float),
            "mu20": np.asarray(info["x2"], dtype=float),
            "mu02": np.asarray(info["y2"], dtype=float),
            "mu11": np.asarray(info["xy"], dtype=float),
            "masked_frac": _masked_fraction(result.components, mask),
        }
    noise = result_noise(result) if noise is None else float(noise)
    comps = np.asarray(result.components, dtype=np.float64)
    moments = image_moments(comps, noise, nsigma, mask) if len(comps) else np.zeros((0, 3))
    return {
        "flux": comps.reshape(len(comps), -1).sum(axis=1) if len(comps) else np.zeros(0),
        "mu20": moments[:, 0],
        "mu02": moments[:, 1],
        "mu11": moments[:, 2],
        "masked_frac": _masked_fraction(comps, mask),
    }


def _masked_fraction(components: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    comps = np.asarray(components, dtype=np.float64)
    if mask is None or len(comps) == 0:
        return np.zeros(len(comps))
    summed = comps.sum(axis=1) if comps.ndim == 4 else comps
    total = np.clip(summed, 0, None).reshape(len(comps), -1).sum(axis=1)
    on_mask = np.clip(summed, 0, None)[:, mask].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, on_mask / total, 0.0)


# ---- truth ----------------------------------------------------------------------------------------


@dataclass
class Truth:
    """Noiseless truth of one stamp.

    Attributes
    ----------
    components : numpy.ndarray
        ``(M, C, H, W)`` (or ``(M, H, W)``) noiseless components.
    positions : numpy.ndarray
        ``(M, 2)`` positions ``(y, x)``, 0-based stamp pixels.
    """

    components: np.ndarray
    positions: np.ndarray

    def __post_init__(self) -> None:
        comps = np.asarray(self.components, dtype=np.float64)
        if comps.ndim == 3:
            comps = comps[:, None]
        if comps.ndim != 4:
            raise DeblendInputError(f"truth components have shape {comps.shape}: expected (M, C, H, W)")
        self.components = comps
        self.positions = np.asarray(self.positions, dtype=float).reshape(-1, 2)
        if len(self.positions) != len(comps):
            raise DeblendInputError(
                f"truth has {len(comps)} components but {len(self.positions)} positions: expected one each"
            )


def truth_from_blendset(blendset: Any, index: int) -> Truth:
    """The :class:`Truth` of stamp ``index`` of a simulated ``BlendSet``."""
    k = int(blendset.n_components[index])
    comps = np.asarray(blendset.components[index][:k])
    table = blendset.truth
    rows = table[np.asarray(table["stamp"]) == index]
    rank_col = "component" if "component" in rows.colnames else "rank"
    if rank_col in rows.colnames:
        rows = rows[np.argsort(np.asarray(rows[rank_col]))]
    positions = np.stack([np.asarray(rows["y"], float), np.asarray(rows["x"], float)], axis=1)[:k]
    return Truth(comps, positions)


def as_truth(truth: Any) -> Truth:
    """Coerce a :class:`Truth`, a dict / object with ``components`` and ``positions``, or ``(BlendSet, i)``."""
    if isinstance(truth, Truth):
        return truth
    if isinstance(truth, tuple) and len(truth) == 2 and hasattr(truth[0], "n_components"):
        return truth_from_blendset(truth[0], int(truth[1]))
    if isinstance(truth, dict):
        try:
            return Truth(truth["components"], truth["positions"])
        except KeyError as exc:
            raise DeblendInputError(f"truth dict lacks {exc}: expected keys 'components' and 'positions'") from None
    if hasattr(truth, "components") and hasattr(truth, "positions"):
        return Truth(truth.components, truth.positions)
    raise DeblendInputError(
        f"truth of type {type(truth).__name__}: expected a Truth, a dict with 'components' and 'positions', "
        "or a (BlendSet, index) pair"
    )


# ---- SExtractor status ----------------------------------------------------------------------------


def sextractor_status(
    positions: np.ndarray, sep_positions: np.ndarray, max_distance: float = MATCH_RADIUS
) -> tuple[list[str], np.ndarray]:
    """How SExtractor saw each component, and which SExtractor object stands for it.

    Let ``M`` be the one-to-one matching (:func:`match_positions`) of components
    to SExtractor objects within ``max_distance``. Component ``k`` is

    - ``"missed"``: no SExtractor object lies within ``max_distance`` of it;
    - ``"merged"``: it is left unmatched by ``M`` although a SExtractor object
      lies within ``max_distance`` (that object, the nearest, already stands for
      another component); this component *and* every component matched to that
      object are ``"merged"`` (one object covers two or more components);
    - ``"split"``: it is matched, and at least one further SExtractor object
      left unmatched by ``M`` lies within ``max_distance`` and has ``k`` as its
      nearest component (two or more objects for one component);
    - ``"matched"``: otherwise (one object, one component).

    ``"merged"`` takes precedence over ``"split"``.

    Parameters
    ----------
    positions : numpy.ndarray
        ``(K, 2)`` component positions.
    sep_positions : numpy.ndarray
        ``(L, 2)`` SExtractor positions, same coordinate order.
    max_distance : float
        Matching radius, pixels.

    Returns
    -------
    status : list of str
        One status per component.
    index : numpy.ndarray
        ``(K,)`` index of the SExtractor object standing for each component
        (its match, or for merged ones the shared object); -1 when missed.
    """
    positions = np.asarray(positions, float).reshape(-1, 2)
    sep_positions = np.asarray(sep_positions, float).reshape(-1, 2)
    k, n_sep = len(positions), len(sep_positions)
    index = np.full(k, -1, dtype=int)
    status = ["missed"] * k
    if k == 0 or n_sep == 0:
        return status, index
    d = _distances(positions, sep_positions)
    for i, j in match_positions(positions, sep_positions, max_distance):
        index[i], status[i] = j, "matched"
    assigned = set(index[index >= 0].tolist())
    for i in np.flatnonzero(index < 0):
        if d[i].min() <= max_distance:
            j = int(np.argmin(d[i]))
            index[i] = j
            for other in np.flatnonzero(index == j):
                status[other] = "merged"
    nearest_component = np.argmin(d, axis=0)
    for j in range(n_sep):
        i = int(nearest_component[j])
        if j not in assigned and d[i, j] <= max_distance and status[i] == "matched":
            status[i] = "split"
    return status, index


# ---- the comparison table -------------------------------------------------------------------------


def _sextractor_result(result: Any, sextractor: Any, preset: Any) -> Any:
    """The SExtractor result to compare with: given, the result itself, or computed on its blend."""
    if sextractor is None or sextractor is False:
        return None
    if sextractor is not True:
        return sextractor
    if is_sextractor_result(result):
        return result
    return sextractor_on_blend(result, preset)


def sextractor_on_blend(result: Any, preset: Any = None, noise: float | None = None) -> Any:
    """The ``sextractor`` deblender on a result's stamp, with the stamp's per-pixel variance when it has one."""
    from .deblenders.base import get_deblender

    if noise is None:
        noise = float(getattr(result, "noise", float("nan")))
        noise = noise if np.isfinite(noise) and noise > 0 else None
    variance = (getattr(result, "info", None) or {}).get("stamp_variance")
    extra = {} if variance is None else {"variance": np.asarray(variance)[None]}
    return get_deblender("sextractor", preset=preset).deblend_batch(result.blend[None], noise=noise, **extra)[0]


def _add_own_columns(table: Table, result: Any, meas: dict[str, np.ndarray], zp: float) -> None:
    k = len(result.components)
    table["model"] = [str(result.model)] * k
    table["component"] = np.arange(1, k + 1)  # 1-based, as in the layer names and figures
    table["x"] = np.asarray(result.positions[:, 1], float) * u.pix
    table["y"] = np.asarray(result.positions[:, 0], float) * u.pix
    table["flux"] = meas["flux"] * u.electron
    flux_sigma = getattr(result, "info", {}).get("flux_sigma")
    if flux_sigma is not None:  # the model's own flux uncertainty (vae's sigma image)
        table["flux_err"] = np.asarray(flux_sigma, float).reshape(k) * u.electron
    table["mag"] = np.atleast_1d(magnitude(meas["flux"], zp)) * u.mag
    for name in _MOMENT_NAMES:
        table[name] = meas[name] * u.pix**2
    e1, e2 = ellipticity(meas["mu20"], meas["mu02"], meas["mu11"])
    table["e1"], table["e2"] = np.atleast_1d(e1), np.atleast_1d(e2)
    table["quality"] = [str(result.quality)] * k
    p_galaxy = getattr(result, "info", {}).get("galaxy_probabilities")
    if p_galaxy is not None and np.size(p_galaxy) == k:  # the deblender's split verifier
        table["p_galaxy"] = np.asarray(p_galaxy, float).reshape(k)
    if "stamp_mask" in (getattr(result, "info", None) or {}):
        table["masked_frac"] = meas["masked_frac"]


def _add_sep_columns(
    table: Table, result: Any, sep_result: Any, zp: float, max_distance: float
) -> None:
    k = len(result.components)
    sep_meas = component_measurements(sep_result)
    status, index = sextractor_status(result.positions, sep_result.positions, max_distance)
    ok = index >= 0
    safe = np.where(ok, index, 0)

    def pick(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, float)
        if len(values) == 0:
            return np.full(k, np.nan)
        return np.where(ok, values[safe], np.nan)

    table["sep_status"] = status
    table["sep_x"] = pick(sep_result.positions[:, 1]) * u.pix
    table["sep_y"] = pick(sep_result.positions[:, 0]) * u.pix
    table["sep_flux"] = pick(sep_meas["flux"]) * u.electron
    table["sep_mag"] = np.atleast_1d(magnitude(table["sep_flux"].value, zp)) * u.mag
    for name in _MOMENT_NAMES:
        table[f"sep_{name}"] = pick(sep_meas[name]) * u.pix**2
    e1, e2 = ellipticity(table["sep_mu20"].value, table["sep_mu02"].value, table["sep_mu11"].value)
    table["sep_e1"], table["sep_e2"] = np.atleast_1d(e1), np.atleast_1d(e2)


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, (a - b) / b, np.nan)


def _add_truth_columns(
    table: Table, result: Any, truth: Truth, noise: float, nsigma: float, zp: float, max_distance: float,
) -> None:
    k = len(result.components)
    m = len(truth.components)
    t_flux = truth.components.reshape(m, -1).sum(axis=1) if m else np.zeros(0)
    t_mom = image_moments(truth.components, noise, nsigma, stamp_mask(result)) if len(t_flux) else np.zeros((0, 3))
    index = np.full(k, -1, dtype=int)
    for i, j in match_positions(result.positions, truth.positions, max_distance):
        index[i] = j
    ok = index >= 0
    safe = np.where(ok, index, 0)

    def pick(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, float)
        return np.where(ok, values[safe], np.nan) if len(values) else np.full(k, np.nan)

    table["truth_index"] = index
    table["truth_x"] = pick(truth.positions[:, 1]) * u.pix
    table["truth_y"] = pick(truth.positions[:, 0]) * u.pix
    table["truth_flux"] = pick(t_flux) * u.electron
    table["truth_mag"] = np.atleast_1d(magnitude(table["truth_flux"].value, zp)) * u.mag
    for c, name in enumerate(_MOMENT_NAMES):
        table[f"truth_{name}"] = pick(t_mom[:, c]) * u.pix**2
    e1, e2 = ellipticity(table["truth_mu20"].value, table["truth_mu02"].value, table["truth_mu11"].value)
    table["truth_e1"], table["truth_e2"] = np.atleast_1d(e1), np.atleast_1d(e2)
    truth_flux = table["truth_flux"].value
    table["dflux_frac"] = _relative(table["flux"].value, truth_flux)
    table["dmag"] = (table["mag"].value - table["truth_mag"].value) * u.mag
    table["de1"] = table["e1"] - table["truth_e1"]
    table["de2"] = table["e2"] - table["truth_e2"]
    if "sep_flux" in table.colnames:
        table["sep_dflux_frac"] = _relative(table["sep_flux"].value, truth_flux)
    table.meta["truth_unmatched"] = sorted(set(range(len(t_flux))) - set(index[ok].tolist()))


def measure(
    result: Any,
    truth: Any = None,
    sextractor: Any = True,
    preset: Any = None,
    zero_point: float | None = None,
    exposure: float | None = None,
    nsigma: float = ISOPHOTE_NSIGMA,
    max_distance: float = MATCH_RADIUS,
) -> Table:
    """Compare a deblend result with SExtractor (and the truth, on simulations): one row per component.

    Parameters
    ----------
    result : DeblendResult
        Output of a deblender.
    truth : Truth, dict, object or (BlendSet, int), optional
        Noiseless truth: ``components`` ``(M, C, H, W)`` and ``positions``
        ``(M, 2)`` ``(y, x)``; measured with the same code, at ``nsigma`` of the
        result's noise, and matched one-to-one to the components within
        ``max_distance`` pixels.
    sextractor : bool or DeblendResult or None
        ``True``: run the ``sextractor`` deblender on ``result.blend`` with
        ``result.noise`` (or use ``result`` itself when it comes from
        SExtractor); a ``DeblendResult``: use it; ``None``/``False``: no
        SExtractor columns.
    preset : str or SurveyPreset, optional
        Survey preset giving the fallback noise and, without ``zero_point``,
        the calibration (its per-second zero point and exposure).
    zero_point : float, optional
        AB magnitude of one unit of the result's images (a Field's
        ``zero_point``); with ``exposure``, of one unit per second.
    exposure : float, optional
        Exposure time for a per-second ``zero_point`` (or the preset's).
    nsigma : float
        Isophote threshold in units of the noise.
    max_distance : float
        Matching radius, pixels.

    Returns
    -------
    astropy.table.Table
        Columns ``model, component, x, y, flux, mag, mu20, mu02, mu11, e1, e2,
        quality``; with SExtractor ``sep_status, sep_x, sep_y, sep_flux,
        sep_mag, sep_mu20, sep_mu02, sep_mu11, sep_e1, sep_e2`` (see
        :func:`sextractor_status`); with truth ``truth_index, truth_x, truth_y,
        truth_flux, truth_mag, truth_mu20, truth_mu02, truth_mu11, truth_e1,
        truth_e2, dflux_frac, dmag, de1, de2`` (and ``sep_dflux_frac``);
        NaN where nothing matched; ``masked_frac`` when the result carries its
        stamp's mask (``info["stamp_mask"]``). ``meta`` holds the calibration (``mag_zero_point``), the noise and
        (with truth) ``truth_unmatched``, the truth components no component matched.
        Fluxes of neural components are pixel sums; a SExtractor result
        reports ``FLUX_AUTO`` and sep's isophotal moments.
    """
    from .catalog_photometry import calibration_meta
    from .presets import get_preset

    p = get_preset(preset)
    if zero_point is None:
        zero_point, exposure = p.zero_point, p.exposure if exposure is None else exposure
    zp = float(zero_point) + (2.5 * math.log10(float(exposure)) if exposure is not None else 0.0)
    noise = result_noise(result, p)
    table = Table()
    _add_own_columns(table, result, component_measurements(result, noise, nsigma), zp)
    sep_result = _sextractor_result(result, sextractor, p)
    if sep_result is not None:
        _add_sep_columns(table, result, sep_result, zp, max_distance)
    if truth is not None:
        _add_truth_columns(table, result, as_truth(truth), noise, nsigma, zp, max_distance)
    table.meta.update(
        {"model": str(result.model), **calibration_meta(zp, exposure if exposure is not None else p.exposure),
         "noise": noise, "nsigma": nsigma, "match_radius": max_distance}
    )
    return table
