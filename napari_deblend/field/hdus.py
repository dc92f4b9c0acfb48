"""Which HDUs of a FITS file are bands, which are noise or mask planes, and what the bands are called.

A file's science image is one band (a cube ``(C, H, W)`` gives C). Several
same-size image HDUs are read as bands only when each one says which band it
is (a band EXTNAME such as ``g``, or distinct ``FILTER`` / ``BAND``
keywords); otherwise the first is the science image and the others (a model
beside the science image, say) are left out with a warning. Noise, mask,
context and exposure planes are recognised by their conventional EXTNAMEs
(:data:`PLANE_KINDS`, :data:`NOT_BANDS`) and are never bands.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from ..errors import FieldReadError
from ..presets import SurveyPreset
from .files import as_list, hdu_kind, hdu_listing, short, stem, warn, where

# EXTNAMEs that say nothing about the band.
GENERIC_EXTNAMES = {"", "PRIMARY", "SCI", "IMAGE", "IMG", "DATA", "COMPRESSED_IMAGE", "FLUX"}
#: EXTNAME -> kind of a noise or mask plane (HSC/LSST, DES, HST, JWST and common names).
PLANE_KINDS = {
    "VARIANCE": "variance", "VAR": "variance",
    "IVAR": "ivar", "INVVAR": "ivar",
    "ERR": "rms", "ERROR": "rms", "SIGMA": "rms", "RMS": "rms", "NOISE": "rms",
    "WEIGHT": "weight", "WGT": "weight", "WHT": "weight",
    "VAR_POISSON": "variance_part", "VAR_RNOISE": "variance_part", "VAR_FLAT": "variance_part",
    "MASK": "mask", "MSK": "mask", "DQ": "mask", "BPM": "mask", "FLAGS": "mask", "BADPIX": "mask",
}  # fmt: skip
#: EXTNAMEs of other same-size planes that are not bands: context, exposure, models, PSF, ...
NOT_BANDS = {
    "CTX", "CON", "CONTEXT", "EXP", "EXPMAP", "NEXP", "COVERAGE", "SAMP", "TIME", "PSF",
    "MODEL", "RESID", "RESIDUAL", "BKG", "BACKGROUND", "SKY", "SEG", "SEGM", "SEGMENTATION", "CHI",
}  # fmt: skip


@dataclass
class BandSource:
    """Where one band of a field comes from, before its pixels are read."""

    path: str
    hdu_index: int
    hdu_label: str
    lead: tuple[int, ...]
    shape: tuple[int, int]
    image_hdu: Any
    header: fits.Header
    primary: fits.Header
    wcs: WCS | None
    candidate: str | None
    plane: int | None = None
    name: str = ""

    @property
    def where(self) -> str:
        """File and HDU, for messages."""
        return where(self.path, self.hdu_index, self.image_hdu)

    @property
    def headers(self) -> list[fits.Header]:
        """The band's HDU header, then the primary header (calibration keywords may sit in either)."""
        return [self.header, self.primary]


def extname(hdu: Any) -> str:
    """Upper-case EXTNAME of an HDU ("" for none)."""
    return str(getattr(hdu, "name", "") or "").upper()


def is_plane(hdu: Any) -> bool:
    """Whether an HDU is a noise, mask, context or other plane that is never a band."""
    name = extname(hdu)
    return name in PLANE_KINDS or name in NOT_BANDS


def file_bands(path: str, hdul: fits.HDUList, hdu: Any) -> list[BandSource]:
    """The bands a file contributes, for ``hdu=None`` or the given HDU(s)."""
    if hdu is None:
        indices = _auto_hdus(path, hdul)
    else:
        indices = [resolve_hdu(path, hdul, h) for h in as_list(hdu)]
    per_hdu = [_hdu_bands(path, hdul, i) for i in indices]
    if hdu is None and len(per_hdu) > 1:
        reference = per_hdu[0][0]
        for other in per_hdu[1:]:
            difference = wcs_difference(reference, other[0])
            if difference:
                warn(
                    f"{where(path)}: image extensions have different WCS ({difference}): "
                    f"a mosaic, not bands; reading {reference.where} only; pass hdu= to choose"
                )
                return per_hdu[0]
    return [band for group in per_hdu for band in group]


def _auto_hdus(path: str, hdul: fits.HDUList) -> list[int]:
    """Image HDUs to read when no ``hdu`` is given: the science image, or several that name their bands."""
    images = [i for i, h in enumerate(hdul) if hdu_kind(h) == "image"]
    if not images:
        if any(hdu_kind(h) == "table" for h in hdul):
            raise FieldReadError(
                f"cannot read {where(path)}: it holds only tables, expected an image HDU "
                f"(HDUs: {hdu_listing(hdul)})"
            )
        raise FieldReadError(
            f"cannot read {where(path)}: empty primary HDU and no image extension, expected an image "
            f"(HDUs: {hdu_listing(hdul)})"
        )
    science = [i for i in images if not is_plane(hdul[i])] or images[:1]
    if len(science) == 1:
        return science
    shapes = {tuple(hdul[i].shape) for i in science}
    if len(shapes) > 1:
        warn(
            f"{where(path)}: image HDUs have different shapes ({hdu_listing(hdul)}); "
            f"reading HDU {science[0]} only; pass hdu= to choose"
        )
        return science[:1]
    names = [band_name(hdul[i].header, hdul[i].name) for i in science]
    if all(names) and len(set(names)) == len(names):
        return science
    others = ", ".join(where(path, i, hdul[i]).split(" ", 1)[1] for i in science[1:])
    warn(
        f"{where(path, science[0], hdul[science[0]])} is the science image, read as one band; {others} "
        f"do not name distinct bands (no band EXTNAME, FILTER or BAND) and are left out: pass hdu= to choose, "
        f"or give the bands as several files or a cube"
    )
    return science[:1]


def resolve_hdu(path: str, hdul: fits.HDUList, key: Any) -> int:
    """Index of the HDU given by index or EXTNAME, or a FieldReadError listing them."""
    index: int | None = None
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if -len(hdul) <= key < len(hdul):
            index = int(key) % len(hdul)
    elif isinstance(key, str):
        names = [h.name.upper() for h in hdul]
        if key.upper() in names:
            index = names.index(key.upper())
    else:
        raise FieldReadError(f"cannot read {where(path)}: hdu={key!r}: expected an HDU index or EXTNAME")
    if index is None:
        raise FieldReadError(f"cannot read {where(path)}: no HDU {key!r}; available: {hdu_listing(hdul)}")
    kind = hdu_kind(hdul[index])
    if kind == "table":
        raise FieldReadError(
            f"cannot read {where(path, index, hdul[index])}: it is a table, expected an image "
            f"(HDUs: {hdu_listing(hdul)})"
        )
    if kind != "image":
        raise FieldReadError(
            f"cannot read {where(path, index, hdul[index])}: it holds no image data "
            f"(HDUs: {hdu_listing(hdul)})"
        )
    return index


def _hdu_bands(path: str, hdul: fits.HDUList, index: int) -> list[BandSource]:
    """One band per plane of an image HDU (2-D: one; cube ``(C, H, W)``: C)."""
    hdu = hdul[index]
    here = where(path, index, hdu)
    shape = drop_degenerate_axes(tuple(int(n) for n in hdu.shape), here)
    lead_ones = (0,) * (len(hdu.shape) - len(shape))
    header = hdu.header
    primary = hdul[0].header if index != 0 else fits.Header()
    label = hdu.name if hdu.name and not (index == 0 and hdu.name == "PRIMARY") else str(index)
    common = dict(path=path, hdu_index=index, hdu_label=label, shape=shape[-2:], image_hdu=hdu, header=header,
                  primary=primary, wcs=celestial_wcs(header, hdul, here))
    if len(shape) == 2:
        return [BandSource(lead=lead_ones, candidate=band_name(header, hdu.name), **common)]
    return [
        BandSource(lead=(*lead_ones, c), candidate=_plane_band_name(header, c), plane=c, **common)
        for c in range(shape[0])
    ]


def drop_degenerate_axes(shape: tuple[int, ...], here: str) -> tuple[int, ...]:
    """Check the axis count; leading length-1 axes beyond three are dropped."""
    if len(shape) == 1:
        raise FieldReadError(
            f"cannot read {here}: 1-D data ({shape[0]} values), expected a 2-D image (H, W) "
            f"or a 3-D cube (C, H, W)"
        )
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) > 3:
        raise FieldReadError(
            f"cannot read {here}: a cube with the wrong axis count: shape {shape} has {len(shape)} axes, "
            f"expected a 2-D image (H, W) or a 3-D cube (C, H, W)"
        )
    return shape


def band_name(header: fits.Header, name: str) -> str | None:
    """Band name of a 2-D HDU: a telling EXTNAME, else FILTER / BAND."""
    if name and name.upper() not in GENERIC_EXTNAMES and name.upper() not in PLANE_KINDS \
            and name.upper() not in NOT_BANDS:
        return name
    for key in ("FILTER", "BAND"):
        value = header.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _plane_band_name(header: fits.Header, plane: int) -> str | None:
    """Band name of a cube plane from ``BANDn`` / ``FILTERn`` (1-based) keywords."""
    for key in (f"BAND{plane + 1}", f"FILTER{plane + 1}"):
        value = header.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def celestial_wcs(header: fits.Header, hdul: fits.HDUList, here: str) -> WCS | None:
    """The header's celestial WCS, or None (with a warning when its keywords are broken)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, fobj=hdul)
            if not wcs.has_celestial:
                if _mentions_sky(header):
                    warn(f"{here}: CTYPE keywords mention RA/Dec but no celestial WCS could be built; wcs=None")
                return None
            celestial = wcs.celestial
            scales = proj_plane_pixel_scales(celestial)
            world = celestial.all_pix2world([[0.0, 0.0]], 0)
    except Exception as exc:
        warn(f"{here}: broken WCS keywords ({short(exc)}); reading without WCS")
        return None
    if not (np.all(np.isfinite(scales)) and np.all(scales > 0) and np.all(np.isfinite(world))):
        warn(f"{here}: WCS gives no finite pixel scale or sky position; reading without WCS")
        return None
    return celestial


def _mentions_sky(header: fits.Header) -> bool:
    ctypes = [str(header.get(f"CTYPE{i}", "")).upper() for i in (1, 2)]
    return any(c.startswith(("RA", "DEC", "GLON", "GLAT", "ELON", "ELAT")) for c in ctypes)


def wcs_difference(a: BandSource, b: BandSource) -> str | None:
    """How the WCS of two bands (same shape) differ, or None if they agree within 0.1 pixel."""
    if a.wcs is None or b.wcs is None:
        return None
    h, w = a.shape
    pixels = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [(w - 1) / 2, (h - 1) / 2]], float)
    try:
        ra1, dec1 = a.wcs.all_pix2world(pixels, 0).T
        ra2, dec2 = b.wcs.all_pix2world(pixels, 0).T
    except Exception as exc:
        return f"cannot compare them: {short(exc)}"
    separation = _angular_separation_arcsec(ra1, dec1, ra2, dec2).max()
    scale = float(np.mean(proj_plane_pixel_scales(a.wcs))) * 3600.0
    if separation <= 0.1 * scale:
        return None
    return f"their sky positions differ by up to {separation:.3g} arcsec = {separation / scale:.3g} pixels"


def _angular_separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance (Vincenty formula) between positions in degrees, in arcseconds."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, float)) for v in (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    num = np.hypot(
        np.cos(dec2) * np.sin(dra),
        np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra),
    )
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.degrees(np.arctan2(num, den)) * 3600.0


def check_same_grid(sources: list[BandSource], strict: bool) -> None:
    """All bands on one pixel grid: same shape, and the same WCS where they have one."""
    first = sources[0]
    for other in sources[1:]:
        if other.shape != first.shape:
            raise FieldReadError(
                f"cannot stack {first.where} and {other.where} as bands: different shapes "
                f"{first.shape} and {other.shape}; bands must share one pixel grid"
            )
        difference = wcs_difference(first, other)
        if difference and strict:
            raise FieldReadError(
                f"cannot stack {first.where} and {other.where} as bands: different WCS ({difference}); "
                f"bands must share one pixel grid"
            )
    with_wcs = [s for s in sources if s.wcs is not None]
    if with_wcs and len(with_wcs) < len(sources):
        missing = next(s for s in sources if s.wcs is None)
        warn(f"{missing.where} has no celestial WCS; using the WCS of {with_wcs[0].where} for all bands")


def name_bands(sources: list[BandSource], preset: SurveyPreset, n_files: int) -> None:
    """Give every band a unique name (header names first, then fallbacks)."""
    hdus_per_file: dict[str, set[int]] = {}
    for s in sources:
        hdus_per_file.setdefault(s.path, set()).add(s.hdu_index)
    for s in sources:
        if s.candidate:
            s.name = s.candidate
        elif len(sources) == 1:
            s.name = preset.band
        elif s.plane is not None:
            single_hdu = n_files == 1 and len(hdus_per_file[s.path]) == 1
            s.name = f"band{s.plane}" if single_hdu else f"{stem(s.path)}[{s.plane}]"
        elif n_files > 1 and len(hdus_per_file[s.path]) == 1:
            s.name = stem(s.path)
        else:
            s.name = str(s.hdu_index)
    seen: dict[str, int] = {}
    for s in sources:
        count = seen.get(s.name, 0) + 1
        seen[s.name] = count
        if count > 1:
            s.name = f"{s.name}_{count}"


def select_bands(names: list[str], bands: Any, here: str) -> tuple[list[int], list[str] | None]:
    """Indices of the bands to keep and, when ``bands`` renames them, their new names."""
    n = len(names)
    if bands is None:
        return list(range(n)), None
    wanted = as_list(bands)
    if not wanted:
        raise FieldReadError(f"cannot read {here}: bands=[] selects nothing; available bands: {names}")
    if all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in wanted):
        bad = [b for b in wanted if not -n <= b < n]
        if bad:
            raise FieldReadError(f"cannot read {here}: bands={wanted}: {bad} out of range for {n} band(s) {names}")
        return [int(b) % n for b in wanted], None
    if all(isinstance(b, str) for b in wanted):
        known = [b for b in wanted if b in names]
        if len(known) == len(wanted):
            return [names.index(b) for b in wanted], None
        if not known and len(wanted) == n:
            return list(range(n)), list(wanted)
        unknown = [b for b in wanted if b not in names]
        raise FieldReadError(
            f"cannot read {here}: unknown band(s) {unknown}; available bands: {names} "
            f"(or give exactly {n} new names to rename them)"
        )
    raise FieldReadError(f"cannot read {here}: bands={wanted!r}: expected a list of band indices or names")
