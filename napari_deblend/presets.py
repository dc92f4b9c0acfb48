"""Survey presets: pixel scale, PSF, photometric zero point, sky and noise.

Images are sky-subtracted and in electrons (ADU with gain 1).  The numbers
of ``lsst-i`` are the LSST i-band 10-year coadd of ``ARCHITECTURE.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import DeblendInputError


@dataclass(frozen=True)
class SurveyPreset:
    """Observing conditions of one survey band.

    Parameters
    ----------
    name : str
        Preset name, e.g. ``"lsst-i"``.
    band : str
        Band name, e.g. ``"i"``.
    pixel_scale : float
        Arcseconds per pixel.
    psf_fwhm : float
        PSF full width at half maximum, arcseconds (Kolmogorov profile).
    zero_point : float
        AB magnitude of a source giving 1 electron per second.
    sky_brightness : float
        Sky surface brightness, AB mag per square arcsecond.
    exposure : float
        Total exposure time, seconds.
    n_visits : int
        Number of visits in the coadd (read noise adds per visit).
    read_noise_per_visit : float
        Read noise of one visit, electrons.
    mag_limit : float
        Faintest galaxy magnitude simulated for this preset.
    """

    name: str
    band: str
    pixel_scale: float
    psf_fwhm: float
    zero_point: float
    sky_brightness: float
    exposure: float
    n_visits: int
    read_noise_per_visit: float
    mag_limit: float
    gain: float = 1.0

    @property
    def sky_per_pixel(self) -> float:
        """Sky level per pixel in electrons (subtracted from the images)."""
        return self.exposure * 10 ** (-0.4 * (self.sky_brightness - self.zero_point)) * self.pixel_scale**2

    @property
    def read_noise(self) -> float:
        """Read noise of the coadd in electrons per pixel."""
        return self.read_noise_per_visit * math.sqrt(self.n_visits)

    @property
    def background_sigma(self) -> float:
        """Background noise (sky Poisson + read noise) per pixel, electrons."""
        return math.sqrt(self.sky_per_pixel + self.read_noise**2)

    def flux(self, mag):
        """Total flux in electrons of a source of AB magnitude ``mag``."""
        return self.exposure * 10 ** (-0.4 * (mag - self.zero_point))

    def magnitude(self, flux):
        """AB magnitude of a source of total flux ``flux`` electrons (NaN for flux <= 0)."""
        import numpy as np

        flux = np.asarray(flux, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = self.zero_point - 2.5 * np.log10(flux / self.exposure)
        mag = np.where(flux > 0, mag, np.nan)
        return mag if mag.ndim else float(mag)


PRESETS: dict[str, SurveyPreset] = {
    "lsst-i": SurveyPreset(
        name="lsst-i",
        band="i",
        pixel_scale=0.2,
        psf_fwhm=0.7,
        zero_point=27.78,
        sky_brightness=20.48,
        exposure=5520.0,
        n_visits=184,
        read_noise_per_visit=9.0,
        mag_limit=25.3,
    ),
}

DEFAULT_PRESET = "lsst-i"


def get_preset(preset: str | SurveyPreset | None = None) -> SurveyPreset:
    """Return a :class:`SurveyPreset` by name (``None`` gives ``lsst-i``).

    Raises
    ------
    DeblendInputError
        If the name is unknown; the message lists the known presets.
    """
    if isinstance(preset, SurveyPreset):
        return preset
    name = DEFAULT_PRESET if preset is None else str(preset).lower()
    try:
        return PRESETS[name]
    except KeyError:
        raise DeblendInputError(
            f"unknown survey preset {preset!r}: expected one of {', '.join(sorted(PRESETS))}"
        ) from None
