"""Photometric calibration: the one magnitude function and the zero point of an image from its header.

**One image unit.** Every zero point here is the AB magnitude of one unit of
the image it belongs to (SExtractor's ``MAG_ZEROPOINT``): a flux ``F`` summed
in image units has magnitude ``m = ZP - 2.5 log10(F)``, with no division by
the exposure time. A header gives it in one of these conventions, tried in
this order:

1. ``ZEROPT``, ``MAGZERO``, ``MAGZPT``, ``MAGZP``, ``PHOTZP``: the zero point itself;
2. ``FLUXMAG0`` (HSC / LSST pipelines): the flux of magnitude 0, ``ZP = 2.5 log10(FLUXMAG0)``;
3. a flux-density ``BUNIT`` (``nJy``, ``uJy``, ``mJy``, ``Jy``; ``MJy/sr`` with
   ``PIXAR_SR`` or the pixel scale): ``ZP = 8.90 - 2.5 log10(Jy per unit)``;
4. ``PHOTFLAM`` and ``PHOTPLAM`` (HST): the AB zero point of a count *rate*,
   ``-2.5 log10(PHOTFLAM) - 5 log10(PHOTPLAM) - 2.408``; ``PHOTFNU``:
   ``8.90 - 2.5 log10(PHOTFNU)``; used as they are where ``BUNIT`` is per
   second (``ELECTRONS/S``), plus ``2.5 log10(EXPTIME)`` for an image in counts;
5. else the survey preset's zero point (AB magnitude of 1 e-/s), plus
   ``2.5 log10(exposure)`` unless ``BUNIT`` is per second (and minus
   ``2.5 log10(GAIN)`` for an image in ADU).

:func:`magnitude` is the only place a magnitude is made: the catalogue, blends,
the comparison table and figures, and the headless outputs all call it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy.io import fits

from ..presets import SurveyPreset
from .files import warn

ZERO_POINT_KEYS = ("ZEROPT", "MAGZERO", "MAGZPT", "MAGZP", "PHOTZP")
EXPOSURE_KEYS = ("EXPTIME",)
GAIN_KEYS = ("GAIN",)
PIXEL_SCALE_KEYS = ("PIXSCALE", "PIXSCAL1", "SECPIX")
#: Header keywords of the PSF FWHM, in arcsec (or pixels when the card's comment says so).
PSF_FWHM_KEYS = ("PSF_FWHM", "PSFFWHM", "SEEING", "FWHM")
#: All calibration keywords (not carried over when a field is written: it writes its own).
CALIBRATION_KEYS = (*ZERO_POINT_KEYS, "FLUXMAG0", "FLUXMAG0ERR", "PHOTFLAM", "PHOTPLAM", "PHOTFNU", "PHOTMJSR",
                    "PIXAR_SR", *PIXEL_SCALE_KEYS, *PSF_FWHM_KEYS)  # fmt: skip

#: AB magnitude of 1 Jy: 2.5 log10(3631).
AB_MAG_OF_ONE_JY = 2.5 * math.log10(3631.0)
_PREFIXES = {"": 1.0, "n": 1e-9, "nano": 1e-9, "u": 1e-6, "µ": 1e-6, "micro": 1e-6, "m": 1e-3, "milli": 1e-3,
             "M": 1e6, "mega": 1e6}
_FLUX_DENSITY = re.compile(r"^(?P<prefix>nano|micro|milli|mega|n|u|µ|m|M)?[Jj][Yy]"
                           r"(?P<per_sr>/sr|sr-1|\.sr-1|sr\^-1|/steradian)?$")
_PER_SECOND = re.compile(r"(/\s*s(ec(ond)?)?\b|\bs\s*\*\*\s*-1|\bs\^?-1\b|\bcps\b|per\s*sec)", re.IGNORECASE)
_ADU = re.compile(r"\b(adu|dn|counts?|cts?)\b", re.IGNORECASE)
_ARCSEC_PER_RADIAN = 180.0 / math.pi * 3600.0


def magnitude(flux, zero_point: float, exposure: float | None = None):
    """AB magnitude of a flux: ``zero_point - 2.5 log10(flux)``; NaN for a flux that is not positive.

    This is the one function that makes magnitudes.

    Parameters
    ----------
    flux : float or array-like
        Flux summed in image units.
    zero_point : float
        AB magnitude of one image unit (:attr:`Field.zero_point`); with
        ``exposure``, the AB magnitude of one unit *per second* (a survey
        preset's convention), the flux being divided by ``exposure`` first.
    exposure : float, optional
        Exposure time in seconds, for a per-second zero point only.

    Returns
    -------
    float or numpy.ndarray
        Same shape as ``flux``.
    """
    flux = np.asarray(flux, dtype=float)
    if exposure is not None:
        flux = flux / float(exposure)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, float(zero_point) - 2.5 * np.log10(flux), np.nan)
    return float(mag) if mag.ndim == 0 else mag


def magnitude_error(flux, flux_error):
    """Magnitude error ``2.5 / ln(10) * flux_error / flux`` (NaN for a flux that is not positive)."""
    flux, flux_error = np.asarray(flux, dtype=float), np.asarray(flux_error, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, 2.5 / np.log(10) * flux_error / flux, np.nan)


def preset_zero_point(preset: SurveyPreset, exposure: float, per_second: bool = False,
                      gain: float | None = None) -> tuple[float, str]:
    """The image zero point a survey preset gives, and how it was made.

    Parameters
    ----------
    preset : SurveyPreset
        Its ``zero_point`` is the AB magnitude of 1 e-/s.
    exposure : float
        Exposure time of the image, seconds.
    per_second : bool
        The image is a count rate (``BUNIT`` per second): no exposure term.
    gain : float, optional
        Electrons per ADU, for an image in ADU.
    """
    zp, parts = float(preset.zero_point), [f"preset {preset.name}: {preset.zero_point:g} (AB mag of 1 e-/s)"]
    if not per_second:
        zp += 2.5 * math.log10(exposure)
        parts.append(f"+ 2.5 log10({exposure:g} s)")
    if gain is not None and gain != 1.0:
        zp -= 2.5 * math.log10(gain)
        parts.append(f"- 2.5 log10(GAIN {gain:g} e-/ADU)")
    return zp, " ".join(parts)


def is_per_second(unit: str | None) -> bool:
    """Whether a ``BUNIT`` is a rate (``ELECTRONS/S``, ``counts s-1``, ``DN/s``, ...)."""
    return bool(unit) and bool(_PER_SECOND.search(str(unit)))


def header_number(headers: Sequence[fits.Header], keys: Sequence[str], where: str, positive: bool) -> float | None:
    """First usable numeric value of ``keys`` in ``headers`` (warns about unusable ones)."""
    for header in headers:
        for key in keys:
            if key not in header:
                continue
            value = header[key]
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if math.isfinite(number) and (number > 0 or not positive):
                return number
            warn(f"{where}: ignoring {key} = {value!r} (expected a finite{' positive' if positive else ''} number)")
    return None


def _header_text(headers: Sequence[fits.Header], key: str) -> str | None:
    for header in headers:
        value = header.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _flux_density_zero_point(unit: str, headers: Sequence[fits.Header], pixel_scale: float | None,
                             where: str) -> tuple[float, str] | None:
    """Zero point of an image in a flux density unit (``nJy``, ``MJy/sr``, ...), or None for other units."""
    match = _FLUX_DENSITY.match(unit.replace(" ", ""))
    if match is None:
        return None
    janskys = _PREFIXES[match["prefix"] or ""]
    if not match["per_sr"]:
        return AB_MAG_OF_ONE_JY - 2.5 * math.log10(janskys), f"BUNIT {unit!r}: 1 unit = {janskys:g} Jy"
    area = header_number(headers, ("PIXAR_SR",), where, positive=True)
    origin = "PIXAR_SR"
    if area is None and pixel_scale:
        area, origin = (pixel_scale / _ARCSEC_PER_RADIAN) ** 2, f"a {pixel_scale:g} arcsec pixel"
    if area is None:
        warn(f"{where}: BUNIT {unit!r} without PIXAR_SR or a pixel scale: cannot make a zero point of it")
        return None
    zp = AB_MAG_OF_ONE_JY - 2.5 * math.log10(janskys * area)
    return zp, f"BUNIT {unit!r} over {origin} = {area:.4g} sr"


def _rate_zero_point(zp: float, what: str, per_second: bool, exposure: float | None) -> tuple[float, str]:
    """A per-second zero point as the zero point of this image (its units decide)."""
    if per_second:
        return zp, f"{what} (BUNIT per second)"
    if exposure is not None:
        return zp + 2.5 * math.log10(exposure), f"{what} + 2.5 log10(EXPTIME {exposure:g} s) (BUNIT not per second)"
    return zp, f"{what} (no EXPTIME: taken as per second)"


def header_zero_point(headers: Sequence[fits.Header], where: str, pixel_scale: float | None = None,
                      exposure: float | None = None) -> tuple[float, str] | None:
    """The header's zero point for one image unit and its convention, or None when the header has none.

    See the module notes for the conventions and their order.
    """
    for header in headers:
        for key in ZERO_POINT_KEYS:
            if key in header:
                value = header_number([header], [key], where, positive=False)
                if value is not None:
                    return value, f"header {key}"
    fluxmag0 = header_number(headers, ("FLUXMAG0",), where, positive=True)
    if fluxmag0 is not None:
        return 2.5 * math.log10(fluxmag0), f"header FLUXMAG0 = {fluxmag0:.6g}"
    unit = _header_text(headers, "BUNIT")
    if unit:
        density = _flux_density_zero_point(unit, headers, pixel_scale, where)
        if density is not None:
            return density
    per_second = is_per_second(unit)
    photflam = header_number(headers, ("PHOTFLAM",), where, positive=True)
    photplam = header_number(headers, ("PHOTPLAM",), where, positive=True)
    if photflam is not None and photplam is not None:
        zp = -2.5 * math.log10(photflam) - 5.0 * math.log10(photplam) - 2.408
        return _rate_zero_point(zp, "header PHOTFLAM/PHOTPLAM (AB)", per_second, exposure)
    photfnu = header_number(headers, ("PHOTFNU",), where, positive=True)
    if photfnu is not None:
        zp = AB_MAG_OF_ONE_JY - 2.5 * math.log10(photfnu)
        return _rate_zero_point(zp, "header PHOTFNU (AB)", per_second, exposure)
    return None


def psf_fwhm_from_header(headers: Sequence[fits.Header], where: str, pixel_scale: float | None) -> float | None:
    """PSF FWHM in arcsec from ``PSF_FWHM``, ``PSFFWHM``, ``SEEING`` or ``FWHM`` (None if absent).

    A card whose comment mentions pixels is converted with the pixel scale;
    ``FWHM`` is used only when its comment says pixels or arcsec.
    """
    for header in headers:
        for key in PSF_FWHM_KEYS:
            if key not in header:
                continue
            comment = str(header.comments[key]).lower()
            in_pixels = "pix" in comment
            if key == "FWHM" and not (in_pixels or "arcsec" in comment):
                continue
            value = header_number([header], [key], where, positive=True)
            if value is None:
                continue
            if in_pixels:
                if not pixel_scale:
                    continue
                value *= pixel_scale
            if 0.01 <= value <= 20.0:
                return float(value)
            warn(f"{where}: ignoring {key} = {header[key]!r}: a PSF FWHM of {value:.3g} arcsec is not plausible")
    return None


def band_calibration(headers: Sequence[fits.Header], preset: SurveyPreset, where: str,
                     pixel_scale: float | None) -> dict[str, Any]:
    """Calibration of one band from its headers (HDU header first, then the primary header).

    Returns
    -------
    dict
        ``zero_point`` (one image unit), ``zero_point_source``, ``exposure``,
        ``gain`` (None where the header says nothing: the preset's apply),
        ``psf_fwhm`` (arcsec or None) and ``unit`` (``BUNIT`` or "").
    """
    exposure = header_number(headers, EXPOSURE_KEYS, where, positive=True)
    gain = header_number(headers, GAIN_KEYS, where, positive=True)
    unit = _header_text(headers, "BUNIT") or ""
    found = header_zero_point(headers, where, pixel_scale, exposure)
    if found is None:
        in_adu = bool(_ADU.search(unit)) and gain is not None
        found = preset_zero_point(preset, exposure if exposure is not None else preset.exposure,
                                  per_second=is_per_second(unit), gain=gain if in_adu else None)
    return {
        "zero_point": float(found[0]),
        "zero_point_source": found[1],
        "exposure": exposure,
        "gain": gain,
        "psf_fwhm": psf_fwhm_from_header(headers, where, pixel_scale),
        "unit": unit,
    }
