"""The simulated galaxy population: magnitudes, sizes, shapes of parametric bulge + disk galaxies.

Magnitudes follow a number-count law ``dN/dm ∝ 10^(COUNT_SLOPE m)`` between
``MAG_BRIGHT`` and the preset's ``mag_limit``; brighter galaxies are larger
(``HLR_AT_MAG20``, ``HLR_MAG_SLOPE``, log-normal ``HLR_SCATTER``).  Every galaxy,
whatever its morphology family (:mod:`.morphologies`), starts from these
parameters: its magnitude, size, inclination and position angle.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import betaincinv, gammainc, ndtri

from ..errors import DeblendInputError
from ..presets import SurveyPreset

MAG_BRIGHT = 19.5
"""Brightest simulated magnitude."""
COUNT_SLOPE = 0.33
"""Slope of the galaxy number counts, d log10 N / dm."""
BULGE_TRUNCATION = 5.0
"""De Vaucouleurs bulges are truncated at this many half-light radii."""
DISK_THICKNESS = 0.2
"""Intrinsic axis ratio of an edge-on disk."""
HLR_AT_MAG20 = 0.85
"""Median half-light radius (arcsec) of an i = 20 galaxy."""
HLR_MAG_SLOPE = 0.09
"""The median half-light radius scales as 10^(-HLR_MAG_SLOPE (m - 20))."""
HLR_SCATTER = 0.35
"""Log-normal scatter (natural log) of the half-light radius at fixed magnitude."""
HLR_LIMITS = (0.12, 2.5)
"""Half-light radii are clipped to this range, arcsec."""

N_UNIFORMS = 8  # uniform deviates defining one galaxy
EXP_B = 1.6783469900166605  # exponential: half-light radius / scale radius


def sample_magnitudes(n: int, mag_range: tuple[float, float], rng: np.random.Generator,
                      slope: float = COUNT_SLOPE) -> np.ndarray:
    """Draw magnitudes from the number counts ``dN/dm ∝ 10^(slope m)``.

    Parameters
    ----------
    n : int
        Number of magnitudes.
    mag_range : tuple of float
        Brightest and faintest magnitude.
    rng : numpy.random.Generator
        Random generator.
    slope : float
        Logarithmic slope of the counts.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` magnitudes.
    """
    return _magnitudes_from_uniform(rng.random(n), mag_range, slope)


def _magnitudes_from_uniform(uniform: np.ndarray, mag_range: tuple[float, float],
                             slope: float = COUNT_SLOPE) -> np.ndarray:
    """Inverse CDF of the number counts ``10^(slope m)`` on ``mag_range``."""
    lo, hi = mag_range
    span = 10.0 ** (slope * (hi - lo)) - 1.0
    return lo + np.log10(1.0 + uniform * span) / slope


def galaxies_from_uniforms(uniforms: np.ndarray, mag_range: tuple[float, float]) -> dict[str, np.ndarray]:
    """Galaxy properties from ``(n, N_UNIFORMS)`` uniform deviates, by inverse CDFs.

    One draw per galaxy lets stamps be seeded one by one at little cost while the
    transformations run vectorized over many stamps.
    """
    u_mag, u_kind, u_bulge, u_size, u_incl, u_round, u_angle, u_ratio = uniforms.T
    mag = _magnitudes_from_uniform(u_mag, mag_range)
    bulge_fraction = np.where(u_kind < 0.35, 0.0,
                              np.where(u_kind < 0.85, betaincinv(1.5, 5.0, u_bulge), 0.6 + 0.4 * u_bulge))
    bulge_fraction = np.where(u_kind >= 0.95, 1.0, bulge_fraction)
    median = HLR_AT_MAG20 * 10.0 ** (-HLR_MAG_SLOPE * (mag - 20.0)) * np.where(bulge_fraction >= 0.6, 0.75, 1.0)
    hlr = np.clip(median * np.exp(HLR_SCATTER * ndtri(u_size)), *HLR_LIMITS)
    q_disk = np.sqrt(u_incl**2 + DISK_THICKNESS**2 * (1.0 - u_incl**2))  # cos(inclination) uniform
    q_bulge = np.where(bulge_fraction >= 1.0, 0.5 + 0.5 * u_round, np.maximum(q_disk, 0.6 + 0.4 * u_round))
    return {"mag": mag, "bulge_fraction": bulge_fraction, "hlr": hlr, "q_disk": q_disk, "q_bulge": q_bulge,
            "beta": np.pi * u_angle, "ratio": 0.2 + 0.3 * u_ratio}


def derive_parameters(raw: dict[str, np.ndarray], preset: SurveyPreset) -> dict[str, np.ndarray]:
    """Component sizes and shears from :func:`_galaxies_from_uniforms` (vectorized)."""
    bulge_fraction, beta = raw["bulge_fraction"], raw["beta"]
    disk_hlr = raw["hlr"] / _composite_hlr(bulge_fraction, raw["ratio"])
    g_disk = (1.0 - raw["q_disk"]) / (1.0 + raw["q_disk"])
    g_bulge = (1.0 - raw["q_bulge"]) / (1.0 + raw["q_bulge"])
    g_mean = (1.0 - bulge_fraction) * g_disk + bulge_fraction * g_bulge
    cos2b, sin2b = np.cos(2.0 * beta), np.sin(2.0 * beta)
    return {
        "mag": raw["mag"],
        "flux": preset.flux(raw["mag"]),
        "hlr": raw["hlr"],
        "bulge_fraction": bulge_fraction,
        "disk_hlr": disk_hlr,
        "bulge_hlr": raw["ratio"] * disk_hlr,
        "disk_g1": g_disk * cos2b,
        "disk_g2": g_disk * sin2b,
        "bulge_g1": g_bulge * cos2b,
        "bulge_g2": g_bulge * sin2b,
        "e1": g_mean * cos2b,
        "e2": g_mean * sin2b,
        "beta": beta,
    }


def check_mag_range(mag_range: tuple[float, float] | None, preset: SurveyPreset) -> tuple[float, float]:
    if mag_range is None:
        return (MAG_BRIGHT, preset.mag_limit)
    try:
        lo, hi = (float(m) for m in mag_range)
    except (TypeError, ValueError):
        raise DeblendInputError(f"mag_range must be two magnitudes (bright, faint), got {mag_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DeblendInputError(f"mag_range must be finite with bright < faint, got {mag_range!r}")
    return (lo, hi)


@lru_cache(maxsize=1)
def devauc_scale() -> float:
    """Scale radius / half-light radius of the truncated de Vaucouleurs profile."""
    from scipy.optimize import brentq

    def half(s: float) -> float:
        return gammainc(8, (1.0 / s) ** 0.25) - 0.5 * gammainc(8, (BULGE_TRUNCATION / s) ** 0.25)

    return float(brentq(half, 1e-9, 10.0, xtol=1e-16))


def _enclosed_disk(r: np.ndarray) -> np.ndarray:
    """Fraction of an exponential's light within ``r`` half-light radii."""
    x = EXP_B * r
    return 1.0 - (1.0 + x) * np.exp(-x)


def _enclosed_bulge(r: np.ndarray) -> np.ndarray:
    """Fraction of a truncated de Vaucouleurs' light within ``r`` half-light radii."""
    s = devauc_scale()
    inner = gammainc(8, (np.minimum(r, BULGE_TRUNCATION) / s) ** 0.25)
    return inner / gammainc(8, (BULGE_TRUNCATION / s) ** 0.25)


def _composite_hlr(bulge_fraction: np.ndarray, ratio: np.ndarray, n_iter: int = 50) -> np.ndarray:
    """Half-light radius of bulge + disk in units of the disk's, by bisection."""
    lo = np.zeros_like(bulge_fraction)
    hi = np.full_like(bulge_fraction, 10.0)
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        enclosed = (1.0 - bulge_fraction) * _enclosed_disk(mid) + bulge_fraction * _enclosed_bulge(mid / ratio)
        below = enclosed < 0.5
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)
