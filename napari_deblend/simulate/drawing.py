"""Drawing any simulated galaxy through the preset's PSF, and adding the survey's noise.

:func:`draw_galaxies` sends each galaxy to its family's renderer: bulge + disk
galaxies to the batched FFT engine (:mod:`.parametric`), the procedural
families and stars to :mod:`.procedural`, pool galaxies to :mod:`.real_family`.

Noise
-----
``add_noise`` adds the sky, Poisson noise on source plus sky and Gaussian
read noise, then subtracts the sky.  Where the expected count exceeds
``GAUSSIAN_POISSON_LIMIT`` (every pixel for ``lsst-i``, whose sky is
~184,000 e-), the Poisson deviate is drawn from its Gaussian limit
``N(λ, λ)``: the two differ by a skewness ``1/sqrt(λ) < 1 %`` and the normal
draw is ~8 times faster.  Below it, exact Poisson deviates are used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DeblendInputError
from ..presets import SurveyPreset, get_preset
from .parametric import draw_parametric
from .procedural import draw_procedural
from .real_family import RealPool, draw_real

GAUSSIAN_POISSON_LIMIT = 1.0e4
"""Expected counts above which Poisson noise is drawn from its Gaussian limit."""


def draw_galaxies(params: dict[str, np.ndarray], x: Sequence[float] | np.ndarray,
                  y: Sequence[float] | np.ndarray, shape: int | tuple[int, int],
                  preset: str | SurveyPreset = "lsst-i", engine: str = "fft",
                  real_pool: RealPool | None = None) -> np.ndarray:
    """Draw noiseless PSF-convolved galaxies, each on its own image.

    Parameters
    ----------
    params : dict of str to numpy.ndarray
        Galaxy parameters as returned by :func:`~.morphologies.sample_galaxies`
        (without ``family``: all bulge + disk).
    x, y : array_like
        0-based pixel position of each galaxy's centre on its image.
    shape : int or tuple of int
        Image shape ``(H, W)`` (an int gives a square).
    preset : str or SurveyPreset
        Survey preset (pixel scale and PSF).
    engine : {"fft", "galsim"}
        Engine of the bulge + disk galaxies: batched FFT or GalSim's
        ``drawImage`` (:mod:`.parametric`); the other families have one renderer.
    real_pool : RealPool, optional
        The pool of the ``real`` galaxies (their ``real_index``).

    Returns
    -------
    numpy.ndarray
        ``(n, H, W)`` float32 images in electrons; each sums to the galaxy's
        flux less the light falling outside the image.

    Raises
    ------
    DeblendInputError
        If the shape or engine is invalid, or real galaxies come without their pool.
    """
    p = get_preset(preset)
    shape = (int(shape), int(shape)) if np.isscalar(shape) else (int(shape[0]), int(shape[1]))
    if min(shape) <= 0:
        raise DeblendInputError(f"image shape must be positive, got {shape}")
    if engine not in ("fft", "galsim"):
        raise DeblendInputError(f"engine must be 'fft' or 'galsim', got {engine!r}")
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if "family" not in params:
        return draw_parametric(params, x, y, shape, p, engine)
    family = np.asarray(params["family"]).astype(str)
    out = np.zeros((len(x), *shape), dtype=np.float32)
    parametric = np.flatnonzero(family == "bulge_disk")
    if parametric.size:
        sub = {k: np.asarray(params[k])[parametric] for k in params if k != "family"}
        out[parametric] = draw_parametric(sub, x[parametric], y[parametric], shape, p, engine)
    real = np.flatnonzero(family == "real")
    if real.size and real_pool is None:
        raise DeblendInputError("these galaxies include 'real' ones: their real-galaxy pool is needed to draw them "
                                "(real_pool=..., --real-pool DIR)")
    for i in np.flatnonzero(family != "bulge_disk"):
        if family[i] == "real":
            draw_real(real_pool, int(params["real_index"][i]), float(params["flux"][i]), x[i], y[i],
                      int(params["morph_seed"][i]), out[i])
        else:
            draw_procedural(params, i, x[i], y[i], out[i], p)
    return out


def add_noise(image: np.ndarray, preset: str | SurveyPreset, rng: np.random.Generator) -> np.ndarray:
    """Return a noisy, sky-subtracted copy of a noiseless image in electrons.

    The sky ``preset.sky_per_pixel`` is added, Poisson noise drawn on source +
    sky (from its Gaussian limit above ``GAUSSIAN_POISSON_LIMIT`` counts),
    Gaussian read noise ``preset.read_noise`` added, and the sky subtracted.

    Parameters
    ----------
    image : numpy.ndarray
        Noiseless image (any shape), electrons.
    preset : str or SurveyPreset
        Survey preset (sky and read noise).
    rng : numpy.random.Generator
        Random generator.

    Returns
    -------
    numpy.ndarray
        float32 array of the image's shape.
    """
    p = get_preset(preset)
    model = np.asarray(image, dtype=np.float32)
    expected = np.maximum(model, np.float32(0.0))
    expected += np.float32(p.sky_per_pixel)
    sigma = np.sqrt(expected + np.float32(p.read_noise**2))
    noisy = rng.standard_normal(model.shape, dtype=np.float32)
    noisy *= sigma
    noisy += model
    low = expected < GAUSSIAN_POISSON_LIMIT
    if low.any():
        counts = rng.poisson(expected[low]) + p.read_noise * rng.standard_normal(int(low.sum()))
        noisy[low] = counts - p.sky_per_pixel
    return noisy
