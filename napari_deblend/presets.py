"""Survey presets: pixel scale, PSF, photometric zero point, sky and noise.

Images are sky-subtracted and in electrons (ADU with gain 1); a preset's
zero point is the AB magnitude of 1 e-/s, so an image of ``exposure`` seconds
has the zero point ``zero_point + 2.5 log10(exposure)`` for one image unit.

Sources of the numbers (the filter zero points, sky brightnesses and most
PSFs are those of the surveycodex tables, LSSTDESC/surveycodex, which
computes the zero points from the filter curves with speclite):

- ``lsst-i``: LSST i band, 10-year coadd (Ivezić et al. 2019, arXiv:0805.2366:
  sky 20.48 mag/arcsec², 184 visits of 30 s); zero point 27.78 (surveycodex);
  PSF FWHM 0.7″; read noise 9 e- per visit; galaxies to the gold-sample i < 25.3.
- ``hsc-i``: HSC-SSP Wide i band (Aihara et al. 2022, PDR3, arXiv:2108.13045,
  Table 1: 6 × 200 s = 1200 s, median seeing 0.61″); pixel 0.168″ (HSC
  survey pages); zero point 28.61 (surveycodex); sky 19.7 (Suprime-Cam
  i-band value that surveycodex takes for HSC); read noise 4.5 e- (Miyazaki
  et al. 2018, PASJ 70, S1); galaxies to i < 24.5, the HSC weak-lensing
  sample limit (Mandelbaum et al. 2018, PASJ 70, S25).
- ``des-i``: DES Wide i band (DES DR1, Abbott et al. 2018, arXiv:1801.03181,
  Table 1 and section 2.2: 10 × 90 s, median PSF FWHM 0.88″, sky 19.89);
  pixel 0.263″ (DECam); zero point 26.86 (surveycodex); read noise 7 e-
  (DECam, Flaugher et al. 2015, AJ 150, 150); galaxies to i < 23.5, about
  the DR1 10-sigma depth (23.44).
- ``euclid-vis``: Euclid Wide VIS (I_E band; Cropper et al. 2016,
  arXiv:1608.08603: 565 s exposures, PSF FWHM 0.17″, read noise 4.5 e-;
  four dithered exposures per field, Euclid Collaboration: Scaramella et
  al. 2022, A&A 662, A112); pixel 0.1″ (Laureijs et al. 2011,
  arXiv:1110.3193); zero point 25.91 and sky 22.32 (surveycodex); galaxies
  to I_E < 24.5, the weak-lensing sample limit (Laureijs et al. 2011).
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
        from .field.calibration import magnitude

        return magnitude(flux, self.zero_point, self.exposure)


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
    "hsc-i": SurveyPreset(
        name="hsc-i",
        band="i",
        pixel_scale=0.168,
        psf_fwhm=0.61,
        zero_point=28.61,
        sky_brightness=19.7,
        exposure=1200.0,
        n_visits=6,
        read_noise_per_visit=4.5,
        mag_limit=24.5,
    ),
    "des-i": SurveyPreset(
        name="des-i",
        band="i",
        pixel_scale=0.263,
        psf_fwhm=0.88,
        zero_point=26.86,
        sky_brightness=19.89,
        exposure=900.0,
        n_visits=10,
        read_noise_per_visit=7.0,
        mag_limit=23.5,
    ),
    "euclid-vis": SurveyPreset(
        name="euclid-vis",
        band="VIS",
        pixel_scale=0.1,
        psf_fwhm=0.17,
        zero_point=25.91,
        sky_brightness=22.32,
        exposure=2260.0,
        n_visits=4,
        read_noise_per_visit=4.5,
        mag_limit=24.5,
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
