"""``write_field``: a :class:`~napari_deblend.field.Field` to FITS, so that it reads back the same."""

from __future__ import annotations

import gzip
import re
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import FITSFixedWarning

from .calibration import CALIBRATION_KEYS
from .model import Field

# Header cards write_field does not carry over from Field.header: structure,
# scaling, WCS (rewritten from Field.wcs) and calibration (rewritten from the Field).
_NOT_CARRIED = re.compile(
    r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|XTENSION|PCOUNT|GCOUNT|BSCALE|BZERO|BLANK|EXTNAME|EXTVER"
    r"|CHECKSUM|DATASUM|INHERIT|WCSAXES\w?|CTYPE\d+\w?|CRVAL\d+\w?|CRPIX\d+\w?|CDELT\d+\w?"
    r"|CUNIT\d+\w?|CROTA\d+|CD\d+_\d+\w?|PC\d+_\d+\w?|PV\d+_\d+\w?|PS\d+_\d+\w?|CNAME\d+\w?"
    r"|LONPOLE\w?|LATPOLE\w?|RADESYS\w?|RADECSYS|EQUINOX\w?|EPOCH|WCSNAME\w?"
    r"|(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+)|BUNIT|MP_\w+|" + "|".join(CALIBRATION_KEYS) + r")$"
)


def _output_header(field: Field) -> fits.Header:
    """Header cards shared by every band HDU: carried-over cards, WCS and calibration."""
    header = fits.Header()
    for card in field.header.cards:
        if not _NOT_CARRIED.match(card.keyword):
            header.append(card)
    if field.wcs is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            header.update(field.wcs.to_header(relax=True))
    header["PIXSCALE"] = (float(field.pixel_scale), "arcsec / pixel")
    header["ZEROPT"] = (float(field.zero_point), "AB mag of one image unit")
    header["EXPTIME"] = (float(field.exposure), "s")
    header["GAIN"] = (float(field.gain), "e- / ADU")
    header["BUNIT"] = str(field.meta.get("unit") or "electron")
    if field.psf_fwhm is not None:
        header["PSF_FWHM"] = (float(field.psf_fwhm), "arcsec")
    header["PRESET"] = field.preset.name
    return header


def write_field(field: Field, path: str | Path, overwrite: bool = False) -> Path:
    """Write a Field to FITS: one image HDU per band named by its band, WCS and calibration in headers.

    Masked pixels are written as NaN, and a field with a per-pixel variance
    gets a ``VARIANCE`` extension per band (its ``EXTVER`` that of the band),
    so that :func:`read_field` gives back the same data, mask, variance, band
    names, WCS and calibration.

    Parameters
    ----------
    field : Field
        The field to write.
    path : str or Path
        Output file name (``.fits``, ``.fits.gz`` for gzip or ``.fits.fz``
        for lossless tile compression; any case).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    header = _output_header(field)
    compressed = path.name.lower().endswith(".fz")
    hdus: list[fits.hdu.base._BaseHDU] = [fits.PrimaryHDU()]

    def image_hdu(values: np.ndarray, hdr: fits.Header):
        if compressed:
            return fits.CompImageHDU(values, header=hdr, compression_type="GZIP_2", quantize_level=0)
        return fits.ImageHDU(values, header=hdr)

    for number, (band, image, mask) in enumerate(zip(field.band_names, field.data, field.mask), start=1):
        out = np.where(mask, np.float32(np.nan), image).astype(np.float32, copy=False)
        hdr = header.copy()
        hdr["EXTNAME"] = band
        hdr["EXTVER"] = number
        hdr["FILTER"] = band
        hdus.append(image_hdu(out, hdr))
        if field.variance is not None:
            var_header = fits.Header({"EXTNAME": "VARIANCE", "EXTVER": number, "BUNIT": "image unit**2"})
            hdus.append(image_hdu(np.where(mask, 0.0, field.variance[number - 1]).astype(np.float32), var_header))
    hdul = fits.HDUList(hdus)
    if path.name.lower().endswith(".gz"):
        # astropy gzips only names ending in lower-case ".gz"; do it for any case.
        if path.exists() and not overwrite:
            raise OSError(f"File {str(path)!r} already exists (pass overwrite=True to replace it)")
        with gzip.open(path, "wb") as stream:
            hdul.writeto(stream)
    else:
        hdul.writeto(path, overwrite=overwrite)
    return path
