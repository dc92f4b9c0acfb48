"""Simulated survey fields: galaxies (and stars) at random positions, noise, a WCS and a truth catalogue."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DeblendInputError
from ..presets import SurveyPreset, get_preset
from ._pixels import add_stamp
from .blends import check_positive_int, check_seed
from .catalog import DRAWING_PARAMETERS, morphology_columns, truth_table
from .drawing import add_noise, draw_galaxies
from .morphologies import mix_name, parse_mix, sample_galaxies
from .parametric import light_radius
from .procedural import light_radius as procedural_radius
from .real_family import RealPool, RealPoolSource, resolve_pool

if TYPE_CHECKING:
    from astropy.table import Table
    from astropy.wcs import WCS

    from ..field import Field

DEFAULT_DENSITY = 40.0
"""Galaxies per square arcminute of ``simulate_field`` (LSST gold sample, i < 25.3)."""
_FIELD_PSF_RADIUS = 4.0  # arcsec of PSF wing on field postage stamps (0.4 % of the PSF light lies beyond)
_FIELD_STAMPS = (48, 64, 80, 96, 128, 160, 192, 256, 384)

def simulate_field(size: int = 1024, density: float | None = None, preset: str | SurveyPreset = "lsst-i",
                   seed: int = 0, ra: float = 150.0, dec: float = 2.0, noise: bool = True,
                   engine: str = "fft", morphology: str | Mapping[str, float] | None = None,
                   real_pool: str | RealPoolSource | RealPool | None = None,
                   real_split: str = "test") -> tuple[Field, Table]:
    """Simulate a square single-band survey field with galaxies at uniform random positions.

    Parameters
    ----------
    size : int
        Side of the image, pixels.
    density : float, optional
        Mean galaxies per square arcminute (the number drawn is Poisson);
        default ``DEFAULT_DENSITY``.
    preset : str or SurveyPreset
        Survey preset.
    seed : int
        Random seed.
    ra, dec : float
        Sky position of the image centre, degrees.
    noise : bool
        Add noise (False gives the noiseless sum of the galaxies).
    engine : {"fft", "galsim"}
        Rendering engine of the bulge + disk galaxies (see :func:`draw_galaxies`).
    morphology : str or mapping, optional
        Morphology mix (:func:`~.morphologies.parse_mix`); default ``"realistic"``.
    real_pool : str or Path, optional
        Real-galaxy pool directory, for a mix with ``real`` galaxies.
    real_split : {"train", "validation", "test"}
        Which split of the pool the ``real`` galaxies come from.

    Returns
    -------
    field : Field
        ``(1, size, size)`` float32 image in electrons with a TAN WCS (north
        up, east left, reference pixel at the centre) and ``noise`` set to
        ``preset.background_sigma``.
    truth : astropy.table.Table
        One row per galaxy: ``id``, ``x``, ``y`` (0-based pixels), ``ra``,
        ``dec`` (deg), ``flux`` (analytic total, e-), ``flux_drawn`` (the
        part drawn into the image: less the far PSF wings and what falls off
        the edges), ``mag``, ``hlr`` (arcsec), ``bulge_fraction``, ``e1``, ``e2``,
        and the drawing parameters ``disk_hlr``, ``bulge_hlr`` (arcsec),
        ``disk_g1``, ``disk_g2``, ``bulge_g1``, ``bulge_g2`` and the
        morphology columns ``family``, ``q``, ``beta``, ``sersic_n``,
        ``morph_seed``, ``real_index`` with which :func:`draw_galaxies`
        redraws any galaxy noiseless.

    Raises
    ------
    DeblendInputError
        If a parameter is out of range.
    """
    check_positive_int(size, "size")
    p = get_preset(preset)
    seed = check_seed(seed)
    density = DEFAULT_DENSITY if density is None else density
    if not (isinstance(density, (int, float, np.number)) and math.isfinite(density) and density >= 0):
        raise DeblendInputError(f"density must be a non-negative number of galaxies per arcmin^2, got {density!r}")
    if engine not in ("fft", "galsim"):
        raise DeblendInputError(f"engine must be 'fft' or 'galsim', got {engine!r}")
    if not (math.isfinite(ra) and math.isfinite(dec) and -90.0 <= dec <= 90.0):
        raise DeblendInputError(f"ra, dec must be finite degrees with -90 <= dec <= 90, got {ra!r}, {dec!r}")
    mix = parse_mix(morphology)
    pool = resolve_pool(real_pool, p, real_split) if "real" in mix else None
    rng = np.random.default_rng(seed)
    area = (size * p.pixel_scale / 60.0) ** 2
    n = int(rng.poisson(density * area))
    x = rng.uniform(-0.5, size - 0.5, n)
    y = rng.uniform(-0.5, size - 0.5, n)
    gal = sample_galaxies(n, p, rng, morphology=mix, real_pool=pool)
    image = np.zeros((size, size), dtype=np.float32)
    drawn = _paint_galaxies(image, gal, x, y, p, engine, pool)
    if noise:
        image = _add_noise_rows(image, p, rng)
    from ..field import Field

    wcs = field_wcs(size, p, ra, dec)
    ra_deg, dec_deg = wcs.pixel_to_world_values(x, y)
    field = Field(data=image[None], band_names=[p.band], wcs=wcs, header=wcs.to_header(), preset=p,
                  noise=np.array([p.background_sigma if noise else 0.0]),
                  meta={"simulated": True, "seed": seed, "density": float(density)})
    columns = {"id": np.arange(n), "x": x, "y": y, "ra": ra_deg, "dec": dec_deg, "flux": gal["flux"],
               "flux_drawn": drawn, "mag": gal["mag"], "hlr": gal["hlr"], "bulge_fraction": gal["bulge_fraction"],
               "e1": gal["e1"], "e2": gal["e2"], **{key: gal[key] for key in DRAWING_PARAMETERS},
               **morphology_columns(gal)}
    meta = {"preset": p.name, "seed": seed, "density": float(density), "size": size, "engine": engine,
            "morphology": mix_name(mix)}
    if pool is not None:
        meta.update(real_pool=pool.source.path, real_split=pool.source.split)
    return field, truth_table(columns, meta)


def field_wcs(size: int, preset: str | SurveyPreset, ra: float, dec: float) -> WCS:
    """Celestial TAN WCS of a square image: north up, east left, reference pixel at the centre.

    Parameters
    ----------
    size : int
        Side of the image, pixels.
    preset : str or SurveyPreset
        Survey preset (pixel scale).
    ra, dec : float
        Sky position of the image centre, degrees.

    Returns
    -------
    astropy.wcs.WCS
    """
    from astropy.wcs import WCS

    scale = get_preset(preset).pixel_scale / 3600.0
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [float(ra), float(dec)]
    wcs.wcs.crpix = [(size + 1) / 2.0, (size + 1) / 2.0]
    wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.set()
    return wcs


def _stamp_size(gal: dict[str, np.ndarray], preset: SurveyPreset, pool: RealPool | None) -> np.ndarray:
    """Postage stamp side holding ~99.5 % of each galaxy's light, from ``_FIELD_STAMPS``."""
    radius = light_radius(gal, preset, 4.5, _FIELD_PSF_RADIUS)
    if "family" in gal:
        psf = _FIELD_PSF_RADIUS / preset.pixel_scale
        for i in np.flatnonzero(gal["family"] != "bulge_disk"):
            family = str(gal["family"][i])
            radius[i] = (pool.images.shape[-1] / 2.0 if family == "real" else
                         procedural_radius(family, float(gal["hlr"][i]), float(gal["q"][i]), preset) + psf)
    sizes = np.asarray(_FIELD_STAMPS)
    index = np.minimum(np.searchsorted(sizes, 2.0 * radius + 2.0), len(sizes) - 1)
    return sizes[index]


def _paint_galaxies(image: np.ndarray, gal: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                    preset: SurveyPreset, engine: str, pool: RealPool | None) -> np.ndarray:
    """Draw each galaxy on a postage stamp and add it into ``image`` (clipped at the edges).

    Returns the flux each galaxy added to the image, electrons.
    """
    drawn = np.zeros(len(x))
    stamp_sizes = _stamp_size(gal, preset, pool)
    for size in np.unique(stamp_sizes):
        chosen = np.flatnonzero(stamp_sizes == size)
        origin_x = np.round(x[chosen]).astype(int) - size // 2
        origin_y = np.round(y[chosen]).astype(int) - size // 2
        for start in range(0, len(chosen), 256):
            batch = chosen[start:start + 256]
            ox, oy = origin_x[start:start + 256], origin_y[start:start + 256]
            sub = {k: v[batch] for k, v in gal.items()}
            stamps = draw_galaxies(sub, x[batch] - ox, y[batch] - oy, int(size), preset, engine, pool)
            for i, stamp, sx, sy in zip(batch, stamps, ox, oy):
                drawn[i] = add_stamp(image, stamp, int(sy), int(sx))
    return drawn


def _add_noise_rows(image: np.ndarray, preset: SurveyPreset, rng: np.random.Generator,
                    rows: int = 512) -> np.ndarray:
    """:func:`add_noise` in blocks of rows, to bound the memory of large fields."""
    for start in range(0, image.shape[0], rows):
        image[start:start + rows] = add_noise(image[start:start + rows], preset, rng)
    return image


