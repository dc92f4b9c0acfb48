"""Procedural galaxy morphologies beyond bulge + disk, drawn through the preset's PSF.

Each family builds the galaxy's light before the PSF on a grid ``OVERSAMPLE``
times finer than the pixels, from its parameters (``hlr``, ``q``, ``beta``,
``sersic_n``) and its own random generator seeded by ``morph_seed`` (so the
same row of a truth table always redraws the same galaxy).  The fine grid is
averaged into pixels (the pixel response), scaled to the galaxy's flux and
convolved with the preset's Kolmogorov PSF by FFT; point sources (stars) are
drawn directly in Fourier space at their sub-pixel position.

Families (the light profiles are in units of arcsec, centred on the galaxy;
``hlr`` is the circularised half-light radius of the main body):

``sersic``      one Sérsic profile, n = 0.5-6, truncated at 5 hlr;
``knots``       an exponential disk plus star-forming knots placed by GalSim's
                ``RandomKnots`` random walk (15-50 % of the light);
``spiral``      an exponential disk whose light is wound into 1-3 logarithmic
                arms, a Sérsic bulge, knots along the arms;
``bar``         bulge + disk + a Ferrers bar (and, for half of them, a ring);
``irregular``   3-10 clumps of various sizes and brightnesses scattered
                asymmetrically over a faint off-centre envelope;
``lopsided``    a disk whose light is pushed to one side (an m = 1 mode);
``edge_on``     a thin disk seen edge-on (sech² vertical profile) crossed by a
                dust lane, with a small bulge;
``tidal``       a Sérsic host with one or two curved tidal tails;
``compact``     a barely resolved Sérsic galaxy (hlr 0.03-0.12″);
``star``        a point source.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.special import gammaincinv, k1

from ..presets import SurveyPreset
from ._pixels import add_stamp
from .parametric import kgrid, psf_mtf

OVERSAMPLE = 4
"""Fine grid points per pixel side on which the light before the PSF is built (at least)."""
MAX_FINE = 480
"""Most fine grid points per side of a galaxy's box (bounds the cost of thin, large galaxies)."""
MAX_OVERSAMPLE = 16
"""Most fine grid points per pixel side (for the smallest galaxies: at least ~3 per half-light radius)."""
SERSIC_TRUNCATION = 5.0
"""Sérsic components are truncated at this many of their half-light radii."""
PSF_MARGIN = 4.0
"""Arcsec of PSF wing drawn around a galaxy's light (0.4 % of the PSF light lies beyond)."""
MAX_RADIUS = 12.0
"""Largest radius (arcsec) drawn around a galaxy."""

#: extent of each family's light, in units of its hlr (a tidal tail reaches farthest)
EXTENT = {"sersic": SERSIC_TRUNCATION, "knots": 4.5, "spiral": 4.5, "bar": 4.5, "irregular": 4.0,
          "lopsided": 5.0, "edge_on": 4.5, "tidal": 7.0, "compact": SERSIC_TRUNCATION, "star": 0.0}


# ---- profiles ------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _sersic_b(n: float) -> float:
    return float(gammaincinv(2.0 * n, 0.5))


def _sersic(u: np.ndarray, v: np.ndarray, hlr: float, n: float, q: float) -> np.ndarray:
    """Unit-sum Sérsic profile (circularised ``hlr``, axis ratio ``q`` along ``u``), truncated."""
    r = np.sqrt(q * u * u + v * v / q) / max(hlr, 1e-4)
    image = np.where(r < SERSIC_TRUNCATION, np.exp(-_sersic_b(n) * r ** (1.0 / n)), 0.0)
    return _unit(image)


def _unit(image: np.ndarray) -> np.ndarray:
    total = image.sum()
    return image / total if total > 0 else image


def _disk_plane(u: np.ndarray, v: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in the plane of an inclined disk (axis ratio ``q``, circularised convention)."""
    return u * math.sqrt(q), v / math.sqrt(q)


def _blobs(shape: tuple[int, int], grid: dict, points: np.ndarray, fluxes: np.ndarray,
           sigmas: np.ndarray) -> np.ndarray:
    """Round Gaussian blobs at galaxy-frame ``(u, v)`` points (arcsec) on the fine grid, unit sum.

    The points are rotated into the image frame of the fine grid, deposited
    bilinearly, and each group of similar widths is blurred once.
    """
    out = np.zeros(shape)
    if not len(points):
        return out
    c, s = math.cos(grid["beta"]), math.sin(grid["beta"])
    gx = c * points[:, 0] - s * points[:, 1]
    gy = s * points[:, 0] + c * points[:, 1]
    col = (gx - grid["origin"][0]) / grid["step"]
    row = (gy - grid["origin"][1]) / grid["step"]
    sig = np.maximum(sigmas / grid["step"], 0.5)
    groups = np.clip(np.floor(np.log(sig / sig.min()) / np.log(1.5)).astype(int), 0, 8)
    for g in np.unique(groups):
        chosen = groups == g
        layer = np.zeros(shape)
        c0, r0 = np.floor(col[chosen]).astype(int), np.floor(row[chosen]).astype(int)
        fc, fr = col[chosen] - c0, row[chosen] - r0
        for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            rr, cc = r0 + dr, c0 + dc
            ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
            np.add.at(layer, (rr[ok], cc[ok]), (fluxes[chosen] * w)[ok])
        out += ndimage.gaussian_filter(layer, float(np.median(sig[chosen])), mode="constant", truncate=3.5)
    return _unit(out)


def _project(points: np.ndarray, q: float) -> np.ndarray:
    """Disk-plane points (arcsec) seen at axis ratio ``q``: galaxy-frame ``(u, v)``."""
    return np.stack([points[:, 0] / math.sqrt(q), points[:, 1] * math.sqrt(q)], axis=1)


def _profile_sersic(u, v, p, rng, grid):
    return _sersic(u, v, p["hlr"], p["sersic_n"], p["q"])


def _profile_compact(u, v, p, rng, grid):
    return _sersic(u, v, p["hlr"], p["sersic_n"], p["q"])


def _knot_points(n: int, hlr: float, seed: int) -> np.ndarray:
    """Disk-plane positions (arcsec) of GalSim ``RandomKnots`` with this half-light radius."""
    import galsim

    knots = galsim.RandomKnots(int(n), half_light_radius=float(hlr), flux=1.0, rng=galsim.BaseDeviate(int(seed)))
    return np.asarray(knots.points, float)


def _profile_knots(u, v, p, rng, grid):
    hlr, q = p["hlr"], p["q"]
    knot_fraction = rng.uniform(0.15, 0.5)
    points = _knot_points(rng.integers(12, 50), hlr, rng.integers(1, 2**31 - 1))
    points = _project(points, q)
    sigmas = rng.uniform(0.025, 0.06, len(points)) * max(1.0, hlr / 0.6)
    knots = _blobs(u.shape, grid, points, np.ones(len(points)), sigmas)
    return (1.0 - knot_fraction) * _sersic(u, v, hlr, 1.0, q) + knot_fraction * knots


def _sample_from(weight: np.ndarray, u: np.ndarray, v: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` (u, v) points drawn from a non-negative image."""
    flat = weight.ravel()
    total = flat.sum()
    if total <= 0:
        return np.zeros((0, 2))
    idx = rng.choice(flat.size, size=n, p=flat / total)
    return np.stack([u.ravel()[idx], v.ravel()[idx]], axis=1)


def _profile_spiral(u, v, p, rng, grid):
    hlr, q = p["hlr"], max(p["q"], 0.3)
    x, y = _disk_plane(u, v, q)
    r = np.hypot(x, y) / hlr
    theta = np.arctan2(y, x)
    arms = int(rng.choice([1, 2, 2, 2, 3]))
    pitch = math.radians(rng.uniform(12.0, 32.0))
    sharp = int(rng.integers(1, 4))
    strength = rng.uniform(0.5, 0.95)
    phase = np.cos(arms * (theta - np.log(np.maximum(r, 1e-3)) / math.tan(pitch)) + rng.uniform(0, 2 * np.pi))
    mean_w = math.comb(2 * sharp, sharp) / 4.0**sharp
    w = ((1.0 + phase) / 2.0) ** sharp / mean_w
    a = strength * (1.0 - np.exp(-((r / 0.5) ** 2)))
    disk = np.where(r < 4.5, np.exp(-1.678 * r), 0.0) * (1.0 - a + a * w)
    disk = _unit(disk)
    bulge_fraction = rng.uniform(0.05, 0.35)
    bulge = _sersic(u, v, hlr * rng.uniform(0.1, 0.25), rng.uniform(1.5, 4.0), max(q, 0.7))
    knot_fraction = rng.uniform(0.05, 0.2)
    points = _sample_from(np.clip(disk * (w - 1.0), 0, None), u, v, int(rng.integers(15, 50)), rng)
    knots = _blobs(u.shape, grid, points, np.ones(len(points)),
                   rng.uniform(0.03, 0.07, len(points)))
    return (1 - bulge_fraction - knot_fraction) * disk + bulge_fraction * bulge + knot_fraction * knots


def _profile_bar(u, v, p, rng, grid):
    hlr, q = p["hlr"], max(p["q"], 0.3)
    x, y = _disk_plane(u, v, q)
    angle = rng.uniform(0, np.pi)
    xb = x * math.cos(angle) + y * math.sin(angle)
    yb = -x * math.sin(angle) + y * math.cos(angle)
    length = rng.uniform(0.7, 1.3) * hlr
    m2 = (xb / length) ** 2 + (yb / (rng.uniform(0.2, 0.35) * length)) ** 2
    bar = _unit(np.where(m2 < 1.0, (1.0 - m2) ** 2, 0.0))
    bar_fraction, bulge_fraction = rng.uniform(0.15, 0.35), rng.uniform(0.05, 0.25)
    parts = [(bar_fraction, bar), (bulge_fraction, _sersic(u, v, hlr * rng.uniform(0.1, 0.2), rng.uniform(2.0, 4.0),
                                                           max(q, 0.7)))]
    if rng.random() < 0.5:
        radius = np.hypot(x, y)
        ring = _unit(np.exp(-0.5 * ((radius - rng.uniform(1.0, 1.3) * length) / (0.15 * length)) ** 2))
        parts.append((rng.uniform(0.05, 0.15), ring))
    rest = 1.0 - sum(f for f, _ in parts)
    return rest * _sersic(u, v, hlr, 1.0, q) + sum(f * img for f, img in parts)


def _profile_irregular(u, v, p, rng, grid):
    hlr, q = p["hlr"], p["q"]
    envelope_fraction = rng.uniform(0.2, 0.45)
    offset = rng.normal(0.0, 0.15 * hlr, 2)
    envelope = _sersic(u - offset[0], v - offset[1], hlr * rng.uniform(0.9, 1.2), p["sersic_n"], max(q, 0.4))
    n = int(rng.integers(3, 11))
    centres = rng.normal(0.0, 0.5 * hlr, (int(rng.integers(1, 3)), 2))
    points = centres[rng.integers(0, len(centres), n)] + rng.normal(0.0, 0.45 * hlr, (n, 2))
    rms = np.sqrt(np.mean(np.sum(points**2, axis=1)))
    points *= hlr / max(rms, 1e-6)
    points[:, 1] *= math.sqrt(max(q, 0.4))
    fluxes = np.exp(rng.normal(0.0, 0.7, n))
    clumps = _blobs(u.shape, grid, points, fluxes, rng.uniform(0.03, 0.12, n) * max(1.0, hlr / 0.8))
    return envelope_fraction * envelope + (1.0 - envelope_fraction) * clumps


def _profile_lopsided(u, v, p, rng, grid):
    hlr, q = p["hlr"], max(p["q"], 0.3)
    x, y = _disk_plane(u, v, q)
    r = np.hypot(x, y) / hlr
    theta = np.arctan2(y, x)
    mode = 1.0 + rng.uniform(0.35, 0.8) * np.minimum(r, 3.0) * np.cos(theta - rng.uniform(0, 2 * np.pi))
    disk = np.where(r < 5.0, np.exp(-_sersic_b(p["sersic_n"]) * r ** (1.0 / p["sersic_n"])), 0.0)
    return _unit(disk * np.clip(mode, 0.05, None))


def _profile_edge_on(u, v, p, rng, grid):
    hlr, thickness = p["hlr"], p["q"]
    scale = hlr / 1.2
    x = np.abs(u) / scale
    disk = np.where(x < 6.0, np.where(x > 1e-6, x * k1(np.maximum(x, 1e-6)), 1.0), 0.0)
    disk = disk / np.cosh(v / max(thickness * hlr, 0.02)) ** 2
    bulge_fraction = rng.uniform(0.0, 0.3)
    light = (1 - bulge_fraction) * _unit(disk) + bulge_fraction * _sersic(
        u, v, hlr * rng.uniform(0.15, 0.3), rng.uniform(2.0, 3.5), rng.uniform(0.6, 0.9))
    width = rng.uniform(0.3, 0.6) * thickness * hlr + 0.04
    lane = rng.uniform(0.6, 0.97) * np.exp(-0.5 * ((v - rng.uniform(-0.5, 0.5) * thickness * hlr) / width) ** 2)
    lane *= np.exp(-((np.abs(u) / (2.5 * scale)) ** 2))
    return _unit(light * (1.0 - lane))


def _profile_tidal(u, v, p, rng, grid):
    hlr, q = p["hlr"], max(p["q"], 0.4)
    tail_fraction = rng.uniform(0.06, 0.2)
    host = _sersic(u, v, hlr, p["sersic_n"], q)
    start, bend = rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.6)
    reach = min(rng.uniform(3.0, 6.0) * hlr, 0.9 * grid["radius"])
    t = np.linspace(0.0, 1.0, 60)
    points, fluxes, sigmas = [], [], []
    for k in range(int(rng.integers(1, 3))):
        radius = 0.7 * hlr + (reach - 0.7 * hlr) * t
        angle = start + k * np.pi + bend * t
        points.append(np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1))
        fluxes.append(np.exp(-2.0 * t) * rng.uniform(0.5, 1.0))
        sigmas.append((0.08 + 0.25 * t) * hlr + 0.05)
    tails = _blobs(u.shape, grid, np.concatenate(points), np.concatenate(fluxes),
                   np.concatenate(sigmas))
    return (1.0 - tail_fraction) * host + tail_fraction * tails


PROFILES: dict[str, Callable] = {
    "sersic": _profile_sersic, "knots": _profile_knots, "spiral": _profile_spiral, "bar": _profile_bar,
    "irregular": _profile_irregular, "lopsided": _profile_lopsided, "edge_on": _profile_edge_on,
    "tidal": _profile_tidal, "compact": _profile_compact,
}
"""The light before the PSF of each procedural family (``star`` is drawn in Fourier space)."""


# ---- drawing -------------------------------------------------------------------------------------


def light_radius(family: str, hlr: float, q: float, preset: SurveyPreset) -> float:
    """Radius (pixels) of a galaxy's light before the PSF, along its major axis.

    ``hlr`` is circularised, so the major axis reaches ``hlr / sqrt(q)``; an edge-on disk's
    ``hlr`` is already measured along its length.
    """
    major = hlr if family == "edge_on" else hlr / math.sqrt(max(q, 0.05))
    return min(EXTENT.get(family, 5.0) * major, MAX_RADIUS) / preset.pixel_scale


@lru_cache(maxsize=32)
def _psf_only(preset: SurveyPreset, size: int) -> np.ndarray:
    """The preset's PSF (no pixel response) on an ``size x size`` rfft grid."""
    scale = preset.pixel_scale
    ky = 2.0 * np.pi * np.fft.fftfreq(size, d=scale)
    kx = 2.0 * np.pi * np.fft.rfftfreq(size, d=scale)
    return np.interp(np.hypot(kx[None, :], ky[:, None]), *psf_mtf(preset)).astype(np.float32)


def draw_procedural(params: dict[str, np.ndarray], i: int, x: float, y: float, out: np.ndarray,
                    preset: SurveyPreset) -> None:
    """Add galaxy ``i`` of ``params`` (a procedural family), PSF-convolved, at ``(x, y)`` of ``out``.

    Parameters
    ----------
    params : dict of str to numpy.ndarray
        Galaxy parameters with ``family``, ``flux``, ``hlr``, ``q``, ``beta``,
        ``sersic_n`` and ``morph_seed``.
    i : int
        Row of the galaxy.
    x, y : float
        0-based pixel position of its centre on ``out``.
    out : numpy.ndarray
        ``(H, W)`` float image the galaxy is added to (light falling outside is lost).
    preset : SurveyPreset
        Pixel scale and PSF.
    """
    family = str(params["family"][i])
    flux = float(params["flux"][i])
    scale = preset.pixel_scale
    if family == "star":
        _draw_point(flux, x, y, out, preset)
        return
    p = {key: float(params[key][i]) for key in ("hlr", "q", "beta", "sersic_n")}
    rng = np.random.default_rng(int(params["morph_seed"][i]))
    half = int(math.ceil(light_radius(family, p["hlr"], p["q"], preset))) + 1
    side = 2 * half + 1
    cx, cy = int(round(x)), int(round(y))
    minor = p["hlr"] * math.sqrt(min(max(p["q"], 0.05), 1.0))
    oversample = int(min(max(OVERSAMPLE, math.ceil(scale / (0.35 * max(minor, 1e-3)))), MAX_OVERSAMPLE,
                         max(OVERSAMPLE, MAX_FINE // side)))
    fine = side * oversample
    step = scale / oversample
    axis = (np.arange(fine) + 0.5) * step - side * scale / 2.0  # arcsec from the box centre
    gx, gy = np.meshgrid(axis, axis)  # the galaxy is drawn centred, then moved by a phase (no aliasing of the offset)
    c, s = math.cos(p["beta"]), math.sin(p["beta"])
    u, v = c * gx + s * gy, -s * gx + c * gy
    grid = {"step": step, "radius": half * scale, "beta": p["beta"], "origin": (gx[0, 0], gy[0, 0])}
    light = PROFILES[family](u, v, p, rng, grid)
    pixels = light.reshape(side, oversample, side, oversample).sum(axis=(1, 3))
    total = pixels.sum()
    if total <= 0:
        return
    pixels *= flux / total
    margin = int(math.ceil(PSF_MARGIN / scale))
    size = scipy.fft.next_fast_len(side + 4 * margin, real=True)
    padded = np.zeros((size, size))
    padded[:side, :side] = pixels
    kimage = scipy.fft.rfft2(padded) * _psf_only(preset, size) * _phase(size, margin + x - cx, margin + y - cy)
    blurred = scipy.fft.irfft2(kimage, s=(size, size))[: side + 2 * margin, : side + 2 * margin]
    add_stamp(out, blurred.astype(np.float32), cy - half - margin, cx - half - margin)


def _phase(size: int, dx: float, dy: float) -> np.ndarray:
    """The rfft2 phase that moves an ``size x size`` image by ``(dx, dy)`` pixels."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return np.exp(-2j * np.pi * (fx * dx + fy * dy))


def _draw_point(flux: float, x: float, y: float, out: np.ndarray, preset: SurveyPreset) -> None:
    """A point source at ``(x, y)`` through the PSF and the pixel response."""
    scale = preset.pixel_scale
    margin = int(math.ceil(PSF_MARGIN / scale))
    cx, cy = int(round(x)), int(round(y))
    side = 2 * margin + 1
    size = scipy.fft.next_fast_len(2 * side, real=True)
    grid = kgrid(preset, size, size)
    phase = np.exp(-1j * scale * ((x - cx + margin) * grid.kx[None, :] + (y - cy + margin) * grid.ky[:, None]))
    image = scipy.fft.irfft2(flux * grid.response * phase, s=(size, size))[:side, :side]
    add_stamp(out, image.astype(np.float32), cy - margin, cx - margin)
