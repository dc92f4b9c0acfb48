"""Morphology families and their mix: which kind of galaxy each simulated galaxy is.

A *mix* weights the families (:data:`FAMILIES`).  Named mixes:

``"parametric"``
    bulge + disk only: the population every network learned from at first.
``"realistic"`` (the default of the simulator)
    bulge + disk, single Sérsic (n = 0.5-6), knotty, spiral, barred, clumpy
    irregular, lopsided, edge-on dusty, tidally disturbed and compact galaxies,
    and stars (:data:`REALISTIC_MIX`).

A mix is also a ``{"family": weight}`` mapping or a string
``"knots=0.3,spiral=0.2,..."``; weights are normalised.  The family ``real``
draws galaxies from a real-galaxy pool (``napari-deblend real-pool build``),
which must then be given (``real_pool``).

Every galaxy starts from the parametric population (:mod:`.population`: its
magnitude, size, inclination, position angle); its family then decides how its
light is arranged (:mod:`.procedural`, :mod:`.real_family`).  A galaxy's row
holds ``family``, ``q`` (axis ratio), ``beta``, ``sersic_n`` and
``morph_seed``, from which the same galaxy is drawn again.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import DeblendInputError
from ..presets import SurveyPreset, get_preset
from .population import N_UNIFORMS, check_mag_range, derive_parameters, galaxies_from_uniforms

FAMILIES = ("bulge_disk", "sersic", "knots", "spiral", "bar", "irregular", "lopsided", "edge_on", "tidal",
            "compact", "star", "real")
"""Every morphology family the simulator draws."""

REALISTIC_MIX = {
    "bulge_disk": 0.22, "sersic": 0.14, "knots": 0.12, "spiral": 0.10, "bar": 0.06, "irregular": 0.10,
    "lopsided": 0.07, "edge_on": 0.05, "tidal": 0.04, "compact": 0.06, "star": 0.04,
}
"""Default weights of the ``realistic`` mix."""

MIXES = {"parametric": {"bulge_disk": 1.0}, "realistic": REALISTIC_MIX}
"""The named mixes."""

N_MORPH_UNIFORMS = 3  # family, shape parameter, size parameter
COMPACT_HLR = (0.03, 0.12)  # arcsec


def parse_mix(morphology: str | Mapping[str, float] | None) -> dict[str, float]:
    """A normalised ``{family: weight}`` from a mix name, mapping or ``"a=w,b=w"`` string.

    Parameters
    ----------
    morphology : str or mapping or None
        ``"parametric"``, ``"realistic"`` (also for None), a mapping of family
        to weight, or ``"family=weight,..."``.

    Returns
    -------
    dict of str to float
        Weights of the families with a positive weight, summing to 1, in
        :data:`FAMILIES` order.

    Raises
    ------
    DeblendInputError
        If a family is unknown or a weight is not a non-negative number.
    """
    if morphology is None:
        morphology = "realistic"
    if isinstance(morphology, str):
        text = morphology.strip()
        if text in MIXES:
            weights: Mapping[str, float] = MIXES[text]
        elif "=" in text or text in FAMILIES:
            weights = {}
            for part in text.split(","):
                name, _, value = part.partition("=")
                try:
                    weights[name.strip()] = float(value) if value.strip() else 1.0
                except ValueError:
                    raise DeblendInputError(f"morphology {morphology!r}: the weight of {name.strip()!r} "
                                            "must be a number, as in 'knots=0.3,spiral=0.2'") from None
        else:
            raise DeblendInputError(f"morphology {morphology!r} is unknown: expected one of "
                                    f"{', '.join(MIXES)}, a family of {', '.join(FAMILIES)} or 'family=weight,...'")
    elif isinstance(morphology, Mapping):
        weights = morphology
    else:
        raise DeblendInputError(f"morphology must be a mix name or a {{family: weight}} mapping, got {morphology!r}")
    unknown = [name for name in weights if name not in FAMILIES]
    if unknown:
        raise DeblendInputError(f"morphology family {unknown[0]!r} is unknown: expected one of {', '.join(FAMILIES)}")
    values = {}
    for name, value in weights.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value) or value < 0:
            raise DeblendInputError(f"morphology weight of {name!r} must be a non-negative number, got {weights[name]!r}")
        values[name] = value
    total = sum(values.values())
    if total <= 0:
        raise DeblendInputError(f"morphology {morphology!r} gives every family a weight of 0")
    return {name: values[name] / total for name in FAMILIES if values.get(name, 0.0) > 0}


def mix_name(mix: Mapping[str, float]) -> str:
    """A mix as text: its name when it is a named one, else ``"family=weight,..."``."""
    for name, weights in MIXES.items():
        if parse_mix(weights) == dict(mix):
            return name
    return ",".join(f"{name}={weight:.4g}" for name, weight in mix.items())


def is_parametric(mix: Mapping[str, float]) -> bool:
    """True when the mix draws bulge + disk galaxies only (the simulator's original stream)."""
    return set(mix) == {"bulge_disk"}


def assign_families(gal: dict[str, np.ndarray], uniforms: np.ndarray, seeds: np.ndarray, mix: Mapping[str, float],
                    preset: SurveyPreset, real_pool=None) -> dict[str, np.ndarray]:
    """Give each parametric galaxy a family and that family's parameters.

    Parameters
    ----------
    gal : dict of str to numpy.ndarray
        Parametric galaxies (:func:`~.population.derive_parameters`), changed in place.
    uniforms : numpy.ndarray
        ``(n, N_MORPH_UNIFORMS)`` uniform deviates.
    seeds : numpy.ndarray
        ``(n,)`` integer seeds of each galaxy's details.
    mix : mapping
        Normalised family weights (:func:`parse_mix`).
    preset : SurveyPreset
        Survey preset (fluxes, noise of real galaxies).
    real_pool : RealPool, optional
        Required when the mix has ``real``.

    Returns
    -------
    dict of str to numpy.ndarray
        ``gal`` with ``family``, ``q``, ``beta``, ``sersic_n``, ``morph_seed``, ``real_index`` added and
        ``hlr``, ``flux``, ``mag`` adjusted where the family asks.
    """
    n = len(gal["mag"])
    names = list(mix)
    cumulative = np.cumsum([mix[name] for name in names])
    index = np.minimum(np.searchsorted(cumulative, uniforms[:, 0] * cumulative[-1], side="right"), len(names) - 1)
    family = np.array(names, dtype="<U10")[index]
    u_shape, u_size = uniforms[:, 1], uniforms[:, 2]
    q = np.sqrt(np.clip((1.0 - np.hypot(gal["e1"], gal["e2"])) / (1.0 + np.hypot(gal["e1"], gal["e2"])), 0.05, 1.0))
    q = q**2  # axis ratio from the reduced shear |g| = (1 - q) / (1 + q)
    hlr = gal["hlr"].copy()
    sersic_n = np.ones(n)
    sersic = family == "sersic"
    sersic_n[sersic] = 0.5 * 12.0 ** u_shape[sersic]  # 0.5-6, log-uniform
    rounder = sersic & (sersic_n > 2.5)
    q[rounder] = np.maximum(q[rounder], 0.5 + 0.4 * u_size[rounder])
    hlr[rounder] *= 0.75
    for name, lo, hi in (("compact", 1.0, 4.0), ("tidal", 1.0, 4.0), ("irregular", 0.6, 1.2), ("lopsided", 0.8, 1.5)):
        chosen = family == name
        sersic_n[chosen] = lo + (hi - lo) * u_shape[chosen]
    compact = family == "compact"
    hlr[compact] = COMPACT_HLR[0] + (COMPACT_HLR[1] - COMPACT_HLR[0]) * u_size[compact]
    q[compact] = 0.6 + 0.4 * u_shape[compact]
    edge_on = family == "edge_on"
    q[edge_on] = 0.08 + 0.14 * u_size[edge_on]  # thickness / length of a disk seen edge-on
    star = family == "star"
    hlr[star] = 0.0
    q[star] = 1.0
    real_index = np.full(n, -1, dtype=np.int64)
    real = family == "real"
    if real.any():
        if real_pool is None:
            raise DeblendInputError("the morphology mix has 'real' galaxies: give a real-galaxy pool "
                                    "(real_pool=..., --real-pool DIR; made by `napari-deblend real-pool build`)")
        real_index[real] = real_pool.pick_by_size(gal["hlr"][real], preset, u_shape[real])
        cap = real_pool.flux_cap(real_index[real], preset)
        flux = np.minimum(gal["flux"][real], cap)
        gal["flux"][real] = flux
        gal["mag"][real] = preset.magnitude(flux)
        hlr[real] = real_pool.hlr[real_index[real]]
    gal.update({"family": family, "q": q, "sersic_n": sersic_n, "hlr": hlr,
                "morph_seed": np.asarray(seeds, dtype=np.int64), "real_index": real_index})
    return gal


def sample_galaxies(n: int, preset: str | SurveyPreset = "lsst-i", rng: np.random.Generator | int | None = None,
                    mag_range: tuple[float, float] | None = None, morphology: str | Mapping[str, float] | None = None,
                    real_pool=None) -> dict[str, np.ndarray]:
    """Draw galaxy parameters for a survey preset: the parametric population, then their families.

    The parametric population (:func:`~.population.galaxies_from_uniforms`): about 35 % pure
    disks, 50 % disks with a small bulge, 10 % bulge-dominated and 5 % pure de Vaucouleurs; the
    half-light radius has a median of ``HLR_AT_MAG20`` arcsec at i = 20 shrinking with magnitude,
    with log-normal scatter.  With a mix other than ``"parametric"`` each galaxy is then given a
    family (:func:`assign_families`).

    Parameters
    ----------
    n : int
        Number of galaxies.
    preset : str or SurveyPreset
        Survey preset (magnitude limit and zero point).
    rng : numpy.random.Generator or int or None
        Random generator or seed.
    mag_range : tuple of float, optional
        Magnitude range; default ``(MAG_BRIGHT, preset.mag_limit)``.
    morphology : str or mapping, optional
        The mix (:func:`parse_mix`); default ``"realistic"``.
    real_pool : RealPool, optional
        Real galaxies, for a mix with ``real``.

    Returns
    -------
    dict of str to numpy.ndarray
        ``(n,)`` arrays: ``mag``, ``flux`` (analytic total, e-), ``hlr``
        (arcsec), ``bulge_fraction``, ``disk_hlr``, ``bulge_hlr`` (arcsec),
        ``disk_g1``, ``disk_g2``, ``bulge_g1``, ``bulge_g2`` (reduced shear of
        each component), ``e1``, ``e2``, ``beta`` (position angle, radians from
        +x towards +y) and, for a non-parametric mix, ``family``, ``q``,
        ``sersic_n``, ``morph_seed`` and ``real_index``.
    """
    p = get_preset(preset)
    rng = np.random.default_rng(rng)
    mix = parse_mix(morphology)
    gal = derive_parameters(galaxies_from_uniforms(rng.random((n, N_UNIFORMS)), check_mag_range(mag_range, p)), p)
    if is_parametric(mix):
        return gal
    uniforms = rng.random((n, N_MORPH_UNIFORMS))
    seeds = rng.integers(1, 2**62, size=n)
    return assign_families(gal, uniforms, seeds, mix, p, real_pool)
