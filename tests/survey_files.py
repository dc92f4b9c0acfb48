"""One simulated field written as survey pipelines write theirs: HSC/LSST, DES, HST drizzle and JWST styles.

Every file holds the same galaxies (``simulate_field`` at ``lsst-i``, with
its truth), a square of garbage pixels (1e6) flagged as bad in the file's own
way, and a right half ten times noisier than the left, as its noise plane says.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.io import fits

from napari_deblend.presets import get_preset
from napari_deblend.simulate import simulate_field

SIZE = 320
#: The bad square (rows, columns): y0, y1, x0, x1.
BAD = (40, 90, 60, 110)
NOISIER = 10.0
STYLES = ("hsc", "des", "drizzle", "jwst")
_PRESET = get_preset("lsst-i")
#: AB magnitude of one electron in the simulated image (5520 s of lsst-i).
ZP_ELECTRONS = _PRESET.zero_point + 2.5 * math.log10(_PRESET.exposure)


def simulated_sky(seed: int = 7):
    """Electrons image with the noisier right half and the garbage square, its variance, the bad mask, truth."""
    field, truth = simulate_field(SIZE, density=60.0, preset="lsst-i", seed=seed)
    return _degrade(field.data[0].astype(np.float64), seed) + (field.wcs.to_header(), truth)


def calibration_sky(seed: int = 3):
    """A field of known magnitudes: a grid of isolated compact galaxies (round, sigma 2.5 pixels), same degradations.

    Returns ``(image, variance, bad, wcs_header, truth)``; ``truth`` has ``x``, ``y`` and ``mag``.
    """
    from astropy.table import Table

    from napari_deblend.simulate import field_wcs

    rng = np.random.default_rng(seed)
    centres = np.arange(30, SIZE - 20, 52, dtype=float)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.zeros((SIZE, SIZE))
    rows = []
    y0, y1, x0, x1 = BAD
    for y in centres:
        for x in centres:
            if y0 - 15 < y < y1 + 15 and x0 - 15 < x < x1 + 15:
                continue
            y_c, x_c = y + rng.uniform(-0.5, 0.5), x + rng.uniform(-0.5, 0.5)
            mag = rng.uniform(19.5, 21.5)
            flux = _PRESET.flux(mag)
            image += flux / (2 * np.pi * 2.5**2) * np.exp(-((yy - y_c) ** 2 + (xx - x_c) ** 2) / (2 * 2.5**2))
            rows.append((x_c, y_c, mag))
    image += rng.normal(0.0, _PRESET.background_sigma, image.shape)
    truth = Table(rows=rows, names=("x", "y", "mag"))
    return _degrade(image, seed) + (field_wcs(SIZE, _PRESET, 150.0, 2.0).to_header(), truth)


def _degrade(image: np.ndarray, seed: int):
    """The noisier right half and the garbage square: ``(image, variance, bad)``."""
    sigma = _PRESET.background_sigma
    variance = np.full(image.shape, sigma**2)
    rng = np.random.default_rng(seed + 1)
    half = np.s_[:, SIZE // 2:]
    image[half] += rng.normal(0.0, sigma * math.sqrt(NOISIER**2 - 1), image[half].shape)
    variance[half] *= NOISIER**2
    bad = np.zeros(image.shape, bool)
    y0, y1, x0, x1 = BAD
    bad[y0:y1, x0:x1] = True
    image[bad] = 1e6
    return image, variance, bad


def write_style(style: str, path, sky=None):
    """Write a field (default :func:`simulated_sky`) in one of :data:`STYLES`; return ``(path, truth)``."""
    image, variance, bad, wcs, truth = simulated_sky() if sky is None else sky
    primary = fits.PrimaryHDU()
    if style == "hsc":  # calexp / deepCoadd: counts of zero point 27, FLUXMAG0, MASK bits named by MP_*
        k = 10 ** (-0.4 * (ZP_ELECTRONS - 27.0))
        primary.header["FLUXMAG0"] = 10 ** (0.4 * 27.0)
        mask = np.zeros(image.shape, np.int32)
        mask[bad] |= 1 << 0  # BAD
        mask[150:160, 10:20] |= 1 << 5  # DETECTED: a footprint, not a bad pixel
        mask_header = fits.Header({"MP_BAD": 0, "MP_SAT": 1, "MP_INTRP": 2, "MP_CR": 3, "MP_EDGE": 4})
        mask_header["HIERARCH MP_DETECTED"] = 5
        hdus = [primary, fits.ImageHDU((image * k).astype(np.float32), wcs, name="IMAGE"),
                fits.ImageHDU(mask, mask_header, name="MASK"),
                fits.ImageHDU((variance * k * k).astype(np.float32), name="VARIANCE")]
    elif style == "des":  # coadd: MAGZERO 30, MSK non-zero = bad, WGT inverse variance
        k = 10 ** (-0.4 * (ZP_ELECTRONS - 30.0))
        sci = fits.Header(wcs)
        sci["MAGZERO"] = 30.0
        msk = bad.astype(np.int16) * 3
        hdus = [primary, fits.ImageHDU((image * k).astype(np.float32), sci, name="SCI"),
                fits.ImageHDU(msk, name="MSK"), fits.ImageHDU((1.0 / (variance * k * k)).astype(np.float32), name="WGT")]
    elif style == "drizzle":  # HST drz: electrons/s, PHOTFLAM/PHOTPLAM, WHT relative weight (0 = no data), CTX
        exptime = _PRESET.exposure
        plam = 7693.0
        flam = 10 ** (-0.4 * (_PRESET.zero_point + 2.408 + 5 * math.log10(plam)))
        sci = fits.Header(wcs)
        sci.update({"BUNIT": "ELECTRONS/S", "PHOTFLAM": flam, "PHOTPLAM": plam, "EXPTIME": exptime})
        weight = 1234.5 / variance  # relative: any scale
        weight[bad] = 0.0
        ctx = np.where(bad, 0, 1).astype(np.int32)
        hdus = [primary, fits.ImageHDU((image / exptime).astype(np.float32), sci, name="SCI"),
                fits.ImageHDU(weight.astype(np.float32), name="WHT"), fits.ImageHDU(ctx, name="CTX")]
    elif style == "jwst":  # i2d: MJy/sr with PIXAR_SR, ERR, DQ (DO_NOT_USE), CON, WHT, VAR_*
        primary.header["TELESCOP"] = "JWST"
        area = (_PRESET.pixel_scale / 206264.80624709636) ** 2
        k = 10 ** (-0.4 * ZP_ELECTRONS) * 3631.0 / 1e6 / area
        sci = fits.Header(wcs)
        sci.update({"BUNIT": "MJy/sr", "PIXAR_SR": area})
        dq = np.zeros(image.shape, np.uint32)
        dq[bad] = 1 | 4  # DO_NOT_USE + JUMP_DET
        dq[200:210, 30:40] = 4  # informational only
        var = variance * k * k
        hdus = [primary, fits.ImageHDU((image * k).astype(np.float32), sci, name="SCI"),
                fits.ImageHDU(np.sqrt(var).astype(np.float32), name="ERR"), fits.ImageHDU(dq, name="DQ"),
                fits.ImageHDU(np.ones(image.shape, np.int32), name="CON"),
                fits.ImageHDU((1.0 / var).astype(np.float32), name="WHT"),
                fits.ImageHDU((0.8 * var).astype(np.float32), name="VAR_POISSON"),
                fits.ImageHDU((0.2 * var).astype(np.float32), name="VAR_RNOISE"),
                fits.ImageHDU(np.zeros(image.shape, np.float32), name="VAR_FLAT")]
    else:
        raise ValueError(style)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path, truth
