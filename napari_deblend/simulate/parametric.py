"""Parametric bulge + disk galaxies drawn through the preset's PSF: the FFT and GalSim engines.

Galaxies are a de Vaucouleurs bulge (truncated at ``BULGE_TRUNCATION``
half-light radii) plus an exponential disk, convolved with the preset's
Kolmogorov PSF and the pixel response.

``"fft"`` (default)
    The profiles' Fourier transforms (de Vaucouleurs and Kolmogorov tabulated
    once from GalSim's own ``kValue``, the exponential analytic), sheared,
    multiplied by the PSF, the pixel ``sinc`` and a phase for the position, are
    inverse-FFT'd in batches with numpy/scipy, on a periodic grid chosen per
    galaxy so that only ~0.1 % of its light (the far PSF wings) can wrap onto
    the stamp.  This is GalSim's own ``method="auto"`` FFT drawing without the
    per-object Python overhead: 4-8 times faster.  Against a high-accuracy
    GalSim rendering (folding threshold 1e-4) on two-galaxy 48 x 48 blends it
    is off by at most 2e-5 of the peak pixel and 0.06 % in flux (median
    0.02 %); GalSim's default ``drawImage`` by 4e-6 and 0.007 %.  The tests
    hold it to GalSim within 1e-4 of the peak and 0.2 % in flux.
``"galsim"``
    ``galsim.Convolve(galaxy, Kolmogorov).drawImage`` galaxy by galaxy: the
    reference.

The tabulated profiles (``TABLES``) are made once per process and handed to
worker processes, which then need no GalSim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft

from ..presets import SurveyPreset
from .population import BULGE_TRUNCATION, EXP_B

_DEVAUC_U_MAX = 100.0  # table of the bulge's Fourier profile, in units of 1 / hlr
_DEVAUC_U_STEP = 0.004
_FFT_LADDER = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)  # FFT grid sizes, in units of the stamp size
_WRAP_DISK = 5.5  # disk half-light radii holding 99.9 % of the light (the rest may wrap)
_WRAP_PSF = 7.0  # arcsec, for the Kolmogorov wings (~0.1 % of the PSF light lies beyond 7")
_RENDER_BATCH = 32  # galaxies per FFT batch (keeps the arrays in cache)
_PARAMETRIC_KEYS = ("flux", "bulge_fraction", "disk_hlr", "bulge_hlr", "disk_g1", "disk_g2", "bulge_g1",
                    "bulge_g2")


TABLES: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
"""Profiles tabulated from GalSim in this process; handed to worker processes, which then need no GalSim."""


def devauc_table() -> tuple[np.ndarray, np.ndarray]:
    """Fourier profile of the unit-flux, unit-hlr truncated bulge from GalSim, and its steps.

    Tabulated at ``u = i * _DEVAUC_U_STEP`` (u in units of 1 / hlr); the last entry, 0 with a
    step of 0, stands for everything beyond ``_DEVAUC_U_MAX``.
    """
    key = ("devauc", BULGE_TRUNCATION)
    if key not in TABLES:
        import galsim

        profile = galsim.DeVaucouleurs(half_light_radius=1.0, trunc=BULGE_TRUNCATION)
        u_grid = np.arange(0.0, _DEVAUC_U_MAX + _DEVAUC_U_STEP / 2, _DEVAUC_U_STEP)
        values = np.array([profile.kValue(k, 0.0).real for k in u_grid] + [0.0, 0.0])
        TABLES[key] = (values[:-1].astype(np.float32), np.diff(values).astype(np.float32))
    return TABLES[key]


def psf_mtf(preset: SurveyPreset) -> tuple[np.ndarray, np.ndarray]:
    """The preset's Kolmogorov PSF in Fourier space, tabulated from GalSim up to the grid's corner."""
    key = ("kolmogorov", preset.psf_fwhm, preset.pixel_scale)
    if key not in TABLES:
        import galsim

        psf = galsim.Kolmogorov(fwhm=preset.psf_fwhm)
        k_table = np.linspace(0.0, 1.001 * math.sqrt(2.0) * np.pi / preset.pixel_scale, 4096)
        TABLES[key] = (k_table, np.array([psf.kValue(k, 0.0).real for k in k_table]))
    return TABLES[key]


def install_tables(tables: dict[tuple, tuple[np.ndarray, np.ndarray]]) -> None:
    """Worker-process initializer: take the parent's tabulated profiles."""
    TABLES.update(tables)


@dataclass(frozen=True)
class KGrid:
    """An ``(my, mx)`` rfft grid: wave numbers (rad/arcsec), their products, and PSF x pixel response."""

    kx: np.ndarray
    ky: np.ndarray
    kxx: np.ndarray
    kxy: np.ndarray
    kyy: np.ndarray
    response: np.ndarray


@lru_cache(maxsize=64)
def kgrid(preset: SurveyPreset, my: int, mx: int) -> KGrid:
    """The k grid of an ``(my, mx)`` image and the preset's Kolmogorov PSF x pixel on it."""
    scale = preset.pixel_scale
    ky = 2.0 * np.pi * np.fft.fftfreq(my, d=scale)
    kx = 2.0 * np.pi * np.fft.rfftfreq(mx, d=scale)
    kr = np.hypot(kx[None, :], ky[:, None])
    response = np.interp(kr, *psf_mtf(preset))
    response *= np.sinc(kx * scale / (2 * np.pi))[None, :] * np.sinc(ky * scale / (2 * np.pi))[:, None]
    f32 = np.float32
    return KGrid(kx=kx.astype(f32), ky=ky.astype(f32), kxx=np.broadcast_to(kx**2, kr.shape).astype(f32),
                  kxy=np.outer(ky, kx).astype(f32), kyy=np.broadcast_to(ky[:, None] ** 2, kr.shape).astype(f32),
                  response=response.astype(f32))


def _radius2(hlr: np.ndarray, g1: np.ndarray, g2: np.ndarray, grid: KGrid, factor: float = 1.0) -> np.ndarray:
    """``factor |A k|^2 hlr^2`` for profiles sheared by reduced shear (g1, g2): ``(n, my, mx)`` float32.

    ``A = [[1 + g1, g2], [g2, 1 - g1]] / sqrt(1 - g^2)`` is GalSim's shear matrix, so
    ``|A k|^2 = ((1 + g1)^2 + g2^2) kx^2 + 4 g2 kx ky + ((1 - g1)^2 + g2^2) ky^2) / (1 - g^2)``.
    """
    norm = factor * hlr**2 / (1.0 - g1**2 - g2**2)
    c11 = ((((1.0 + g1) ** 2 + g2**2) * norm).astype(np.float32))[:, None, None]
    c12 = ((4.0 * g2 * norm).astype(np.float32))[:, None, None]
    c22 = ((((1.0 - g1) ** 2 + g2**2) * norm).astype(np.float32))[:, None, None]
    u2 = c11 * grid.kxx
    term = np.multiply(c12, grid.kxy)
    u2 += term
    np.multiply(c22, grid.kyy, out=term)
    u2 += term
    return u2


def _galaxy_kprofile(params: dict[str, np.ndarray], grid: KGrid) -> np.ndarray:
    """Fourier transform of the galaxies at the origin: ``(n, my, mx)`` float32."""
    bulge_fraction = params["bulge_fraction"]
    # exponential disk: (1 + (k r_s)^2)^(-3/2), r_s = hlr / EXP_B
    u2 = _radius2(params["disk_hlr"], params["disk_g1"], params["disk_g2"], grid, 1.0 / EXP_B**2)
    u2 += np.float32(1.0)
    profile = np.sqrt(u2)
    profile *= u2
    np.divide(((1.0 - bulge_fraction) * params["flux"]).astype(np.float32)[:, None, None], profile, out=profile)
    has_bulge = np.flatnonzero(bulge_fraction > 0)
    if has_bulge.size:
        sub = {k: params[k][has_bulge] for k in ("bulge_hlr", "bulge_g1", "bulge_g2", "bulge_fraction", "flux")}
        bulge = _bulge_lookup(_radius2(sub["bulge_hlr"], sub["bulge_g1"], sub["bulge_g2"], grid))
        bulge *= (sub["bulge_fraction"] * sub["flux"]).astype(np.float32)[:, None, None]
        profile[has_bulge] += bulge
    return profile


def _bulge_lookup(u2: np.ndarray) -> np.ndarray:
    """Linear interpolation of the bulge's Fourier profile at ``sqrt(u2)`` (overwrites ``u2``)."""
    values, steps = devauc_table()
    np.sqrt(u2, out=u2)
    u2 *= np.float32(1.0 / _DEVAUC_U_STEP)
    np.minimum(u2, np.float32(len(values) - 1), out=u2)
    index = u2.astype(np.int32)
    u2 -= index
    u2 *= steps[index]
    u2 += values[index]
    return u2


def _render_fft(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                shape: tuple[int, int], preset: SurveyPreset, size: int) -> np.ndarray:
    """Draw one batch of galaxies by FFT on a periodic ``size x size`` grid (see the module docstring)."""
    ny, nx = shape
    grid = kgrid(preset, size, size)
    kimage = _galaxy_kprofile(params, grid)
    kimage *= grid.response
    scale = preset.pixel_scale
    phase_x = np.exp(-1j * scale * np.outer(x, grid.kx)).astype(np.complex64)
    phase_y = np.exp(-1j * scale * np.outer(y, grid.ky)).astype(np.complex64)
    shifted = phase_y[:, :, None] * phase_x[:, None, :]
    shifted *= kimage
    images = scipy.fft.irfft2(shifted, s=(size, size), axes=(-2, -1), overwrite_x=True)
    return np.ascontiguousarray(images[:, :ny, :nx], dtype=np.float32)


def galsim_galaxy(params: dict[str, np.ndarray], i: int):
    """The GalSim profile (no PSF) of galaxy ``i``."""
    import galsim

    parts = []
    bulge_fraction = float(params["bulge_fraction"][i])
    if bulge_fraction < 1.0:
        disk = galsim.Exponential(half_light_radius=float(params["disk_hlr"][i]), flux=1.0 - bulge_fraction)
        parts.append(disk.shear(g1=float(params["disk_g1"][i]), g2=float(params["disk_g2"][i])))
    if bulge_fraction > 0.0:
        hlr = float(params["bulge_hlr"][i])
        bulge = galsim.DeVaucouleurs(half_light_radius=hlr, flux=bulge_fraction, trunc=BULGE_TRUNCATION * hlr)
        parts.append(bulge.shear(g1=float(params["bulge_g1"][i]), g2=float(params["bulge_g2"][i])))
    return galsim.Add(parts) * float(params["flux"][i])


def _render_galsim(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                   shape: tuple[int, int], preset: SurveyPreset) -> np.ndarray:
    """Draw galaxies one by one with GalSim's ``drawImage`` (the reference engine)."""
    import galsim

    ny, nx = shape
    psf = galsim.Kolmogorov(fwhm=preset.psf_fwhm)
    out = np.empty((len(x), ny, nx), dtype=np.float32)
    for i in range(len(x)):
        image = galsim.ImageF(nx, ny, scale=preset.pixel_scale)
        image.setCenter(0, 0)  # keeps GalSim's FFT no larger than the stamp needs
        # GalSim places the profile at image.true_center + offset; true_center is the
        # 0-based ((nx - 1) / 2, (ny - 1) / 2) of numpy.
        offset = (float(x[i]) - (nx - 1) / 2.0, float(y[i]) - (ny - 1) / 2.0)
        galsim.Convolve(galsim_galaxy(params, i), psf).drawImage(image, offset=offset)
        out[i] = image.array
    return out


def draw_parametric(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, shape: tuple[int, int],
                    preset: SurveyPreset, engine: str = "fft") -> np.ndarray:
    """Draw noiseless PSF-convolved bulge + disk galaxies, each on its own ``shape`` image.

    Parameters
    ----------
    params : dict of str to numpy.ndarray
        Bulge + disk parameters (see :func:`~.morphologies.sample_galaxies`).
    x, y : numpy.ndarray
        0-based pixel position of each galaxy's centre on its image.
    shape : tuple of int
        Image shape ``(H, W)``.
    preset : SurveyPreset
        Pixel scale and PSF.
    engine : {"fft", "galsim"}
        Batched FFT rendering or GalSim's ``drawImage`` (see the module docstring).

    Returns
    -------
    numpy.ndarray
        ``(n, H, W)`` float32 images in electrons.
    """
    params = {k: np.asarray(v, dtype=float) for k, v in params.items() if k in _PARAMETRIC_KEYS}
    if engine == "galsim":
        return _render_galsim(params, x, y, shape, preset)
    out = np.empty((len(x), *shape), dtype=np.float32)
    grids = _fft_grid(params, x, y, shape, preset)
    for grid in np.unique(grids):
        chosen = np.flatnonzero(grids == grid)
        for start in range(0, len(chosen), _RENDER_BATCH):
            batch = chosen[start:start + _RENDER_BATCH]
            sub = {k: v[batch] for k, v in params.items()}
            out[batch] = _render_fft(sub, x[batch], y[batch], shape, preset, int(grid))
    return out


def light_radius(params: dict[str, np.ndarray], preset: SurveyPreset, disk_radii: float,
                  psf_radius: float) -> np.ndarray:
    """Radius (pixels) along the major axis holding a galaxy's light: ``disk_radii`` disk
    half-light radii or the bulge's truncation, plus ``psf_radius`` arcsec for the PSF."""
    def major(hlr: np.ndarray, g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
        g = np.hypot(g1, g2)
        return hlr * np.sqrt((1.0 + g) / (1.0 - g))

    fraction = params["bulge_fraction"]
    disk = np.where(fraction < 1.0, disk_radii * major(params["disk_hlr"], params["disk_g1"], params["disk_g2"]), 0)
    bulge = np.where(fraction > 0.0,
                     BULGE_TRUNCATION * major(params["bulge_hlr"], params["bulge_g1"], params["bulge_g2"]), 0)
    return (np.maximum(disk, bulge) + psf_radius) / preset.pixel_scale


def _fft_grid(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, shape: tuple[int, int],
              preset: SurveyPreset) -> np.ndarray:
    """Side of each galaxy's periodic FFT grid.

    Light at a distance ``d`` from a galaxy reappears ``grid - d`` away; the grid
    is large enough that only light beyond the galaxy's 99.9 % radius, counted
    from the stamp pixel farthest from it, wraps onto the stamp.
    """
    ny, nx = shape
    far = np.maximum.reduce([x, nx - 1 - x, y, ny - 1 - y])
    need = np.ceil(far + light_radius(params, preset, _WRAP_DISK, _WRAP_PSF)).astype(int)
    side = max(ny, nx)
    ladder = np.array(sorted({scipy.fft.next_fast_len(math.ceil(f * side), real=True) for f in _FFT_LADDER}))
    index = np.searchsorted(ladder, need)
    beyond = [scipy.fft.next_fast_len(int(v), real=True) for v in need[index == len(ladder)]]
    grids = ladder[np.minimum(index, len(ladder) - 1)]
    grids[index == len(ladder)] = beyond
    return grids
