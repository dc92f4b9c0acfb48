"""Where the real galaxies come from: the source table and the readers of its images.

Each :class:`SourceSpec` says which files of a folder are images, how to find
their noise, weight, mask and PSF companions, their pixel scale and PSF, whether
their fluxes are linear and at which magnifications their galaxies are stored.
:data:`DEFAULT_SOURCES` describes ``real_galaxies/`` with its README's numbers;
the PSF actually used is the one measured on each image's stars
(:func:`~napari_deblend.realpool.detect.stellar_locus`, written to
``pool.json`` beside the table's value) or its PSF image.

``DEFAULT_SOURCES`` (PSF FWHM: the README's / measured, Moffat fits to the stars):

============== ========= ==================== =================================================
source         pixel     PSF FWHM             notes
============== ========= ==================== =================================================
kids_profound  0.339″    2.4 px / r 3.1 px    g, r, i of one KiDS/VIKING frame, no WCS (the
                         (1.05″, 70 stars),   VIKING grid's scale; README "probably 0.339″");
                         g 3.6, i 3.2 px      detected on r, the same footprint cut from every
                                              band (one galaxy id); ×0.5, ×1
kids_profit    0.2″      PSF images,          10 GAMA cut-outs with sigma maps and masks;
                         0.57–0.84″           ×0.5, ×1
vst_magicaxis  WCS 0.2″  0.58″ / 0.67″        one VST r frame; SATURATE from the header;
                         (7 stars)            ×0.5, ×1
ntt_sextractor 0.44″     2.1 px / 2.1 px      NTT/EMMI R (1992); no scale in the header: 0.44″
                         (18 stars)           is EMMI's red arm with CCD #18 (``ccd$18``,
                                              19 µm pixels); the weight map is a flag map
                                              (0 = bad); ×0.5, ×1
hst_petrofit   WCS 0.06″ PSF image, 0.16″     WFC3 F105W cut-outs of Abell 2744 (one RMS map);
                                              ×1, ×2, ×3
hst_hxdf       0.138″    0.2″ / 1.28 px       8-bit asinh-stretched JPEG: luminance, stretch
                         (0.18″, 67 stars)    undone approximately (:func:`jpeg_luminance`);
                                              shapes only (``linear=False``); ×1, ×2, ×3
============== ========= ==================== =================================================

Magnifications above 1 show a galaxy as if nearer (HST: knots and arms survive
the preset's PSF), below 1 as if farther (ground-based: large bright galaxies
fit the stamp, and their seeing shrinks below the preset's PSF, which can then be
matched).  The HXDF scale is an assumption: 1000 × 0.138″ = 138″ and
872 × 0.138″ = 120″, the 2.3′ × 2′ of the XDF, which the picture shows whole;
the stars' FWHM then comes out at 0.18″, HST's.
"""

from __future__ import annotations

import fnmatch
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DeblendInputError

JPEG_ASINH_STRENGTH = 5.0  # alpha of the assumed stretch L = asinh(sinh(alpha) f) / alpha, f in [0, 1]


@dataclass(frozen=True)
class SourceSpec:
    """How to read the images of one folder of real galaxies.

    Parameters
    ----------
    name : str
        Folder name under the source root (also the source's name in the pool).
    images : tuple of str
        File names or glob patterns of the images, inside the folder.
    multiband : bool
        The images are bands of one frame on one pixel grid: galaxies are
        detected on the first and cut with the same footprint from every band
        (one galaxy id, one stamp per band).
    pixel_scale : float or None
        Arcseconds per pixel; None reads it from the WCS.
    psf_fwhm : float or None
        PSF FWHM in arcseconds when no PSF image is given (the README's
        value); None measures it on the image's stars.
    psf : str or None
        PSF image, a file name or a ``{stem}`` template (``stem`` is the image
        name without ``suffix``).
    noise, weight, mask : str or None
        ``{stem}`` templates of a noise-sigma map, a weight map (0 = bad
        pixel) and a mask (non-zero = bad pixel); missing files are skipped.
    suffix : str
        Ending removed from an image's name to make ``{stem}``.
    hdu : int or None
        HDU holding the pixels (None: the first with data).
    linear : bool
        Pixel values proportional to flux (False for stretched pictures).
    jpeg : bool
        An 8-bit picture: luminance with the asinh stretch undone.
    magnifications : tuple of float
        Angular-size factors stored per galaxy, applied before the PSF
        matching: above 1 the galaxy is seen as if nearer (HST images: knots
        and arms survive the preset's PSF), below 1 as if farther (ground-based
        images: large, bright galaxies fit the stamp, and the shrunken seeing
        becomes narrower than the preset's PSF, which can then be matched).
    back_size : int or None
        sep background mesh (pixels); None subtracts one clipped median.
    deblend_cont : float
        sep's deblending contrast (high for HST, whose knots must stay in one galaxy).
    detect_fwhm : float
        FWHM (arcsec) of the Gaussian the image is smoothed with for detection.
    detect_thresh : float
        Detection threshold in noise sigmas (the footprints' isophote).
    """

    name: str
    images: tuple[str, ...]
    multiband: bool = False
    pixel_scale: float | None = None
    psf_fwhm: float | None = None
    psf: str | None = None
    noise: str | None = None
    weight: str | None = None
    mask: str | None = None
    suffix: str = ".fits"
    hdu: int | None = None
    linear: bool = True
    jpeg: bool = False
    magnifications: tuple[float, ...] = (1.0,)
    back_size: int | None = 64
    deblend_cont: float = 0.005
    detect_fwhm: float = 0.0
    detect_thresh: float = 1.5


DEFAULT_SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("kids_profound", ("r.fits", "g.fits", "i.fits"), multiband=True, pixel_scale=0.339,
               psf_fwhm=2.4 * 0.339, magnifications=(0.5, 1.0), back_size=128),
    SourceSpec("kids_profit", ("G*fitim.fits",), pixel_scale=0.2, psf="{stem}psfim.fits",
               noise="{stem}sigma.fits", mask="{stem}mskim.fits", suffix="fitim.fits", magnifications=(0.5, 1.0),
               back_size=None),
    SourceSpec("vst_magicaxis", ("VST_r.fits",), psf_fwhm=0.58, magnifications=(0.5, 1.0), back_size=64),
    SourceSpec("ntt_sextractor", ("galaxies.fits",), pixel_scale=0.44, psf_fwhm=2.1 * 0.44,
               weight="{stem}.weight.fits", magnifications=(0.5, 1.0), back_size=64),
    SourceSpec("hst_petrofit", ("abell_2744_*_f105w.fits.gz",), psf="f105w_psf.fits.gz",
               noise="{stem}_rms.fits.gz", suffix=".fits.gz", magnifications=(1.0, 2.0, 3.0),
               back_size=48, deblend_cont=0.05, detect_fwhm=0.2, detect_thresh=4.0),
    SourceSpec("hst_hxdf", ("hubble_deep_field.jpg",), pixel_scale=0.138, psf_fwhm=0.2, suffix=".jpg",
               linear=False, jpeg=True, magnifications=(1.0, 2.0, 3.0), back_size=64,
               deblend_cont=0.05, detect_fwhm=0.3, detect_thresh=3.0),
)


@dataclass
class SourceImage:
    """One image of a source, read and checked.

    Attributes
    ----------
    spec : SourceSpec
        Its source.
    path : Path
        Image file.
    data : numpy.ndarray
        ``(H, W)`` float64 pixels (bad pixels set to 0).
    bad : numpy.ndarray
        ``(H, W)`` bool, True where pixels are unusable (NaN, masked, weight 0, padding).
    pixel_scale : float
        Arcseconds per pixel.
    noise : numpy.ndarray or None
        ``(H, W)`` noise sigma per pixel, when a noise map is given.
    psf : numpy.ndarray or None
        PSF image (background-subtracted, sum 1), at ``pixel_scale``.
    saturation : float or None
        Saturation level (header ``SATURATE``; 250/255 of the range for a picture).
    wcs : astropy.wcs.WCS or None
        Celestial WCS when the header has one (used to find one galaxy in two cut-outs).
    """

    spec: SourceSpec
    path: Path
    data: np.ndarray
    bad: np.ndarray
    pixel_scale: float
    noise: np.ndarray | None = None
    psf: np.ndarray | None = None
    saturation: float | None = None
    wcs: object | None = None
    companions: list[Path] = field(default_factory=list)


def source_files(spec: SourceSpec, root: str | Path) -> list[Path]:
    """The image files of a source under ``root``, sorted (multi-band: in the listed order).

    Raises
    ------
    DeblendInputError
        If the folder or a listed file is missing.
    """
    folder = Path(root) / spec.name
    if not folder.is_dir():
        raise DeblendInputError(f"{folder}: no such folder (source {spec.name!r} of the source table)")
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    files: list[Path] = []
    for pattern in spec.images:
        matches = [folder / n for n in names if fnmatch.fnmatch(n, pattern)]
        if not matches:
            raise DeblendInputError(f"{folder}: no file matches {pattern!r} (source {spec.name!r})")
        files.extend(m for m in matches if m not in files)
    return files


def read_source_image(spec: SourceSpec, path: str | Path) -> SourceImage:
    """Read one image of a source with its companions (noise, weight, mask, PSF).

    Raises
    ------
    DeblendInputError
        If a file cannot be read, holds no 2-D image, or its pixel scale is unknown.
    """
    path = Path(path)
    stem = path.name[: -len(spec.suffix)] if path.name.endswith(spec.suffix) else path.stem
    companions: list[Path] = []
    saturation = wcs = None
    if spec.jpeg:
        data, saturation = jpeg_luminance(path)
        header = None
    else:
        data, header = _read_fits_image(path, spec.hdu)
        saturation = header.get("SATURATE")
    bad = ~np.isfinite(data)
    pixel_scale = spec.pixel_scale
    if header is not None:
        wcs = _celestial_wcs(header)
        if pixel_scale is None and wcs is not None:
            from astropy.wcs.utils import proj_plane_pixel_scales

            pixel_scale = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)
    if not pixel_scale or pixel_scale <= 0:
        raise DeblendInputError(
            f"{path}: no pixel scale (no celestial WCS in the header): give pixel_scale in its source entry"
        )
    noise = None
    for kind in ("noise", "weight", "mask"):
        template = getattr(spec, kind)
        companion = path.parent / template.format(stem=stem) if template else None
        if companion is None or not companion.exists():
            continue
        companions.append(companion)
        extra, _ = _read_fits_image(companion, None)
        if extra.shape != data.shape:
            raise DeblendInputError(
                f"{companion}: {kind} map of shape {extra.shape}: expected the image's {data.shape}"
            )
        if kind == "noise":
            bad |= ~(np.isfinite(extra) & (extra > 0))
            noise = np.where(bad, 0.0, extra)
        elif kind == "weight":
            bad |= ~(np.isfinite(extra) & (extra > 0))
        else:
            bad |= extra != 0
    psf = None
    if spec.psf:
        psf_path = path.parent / spec.psf.format(stem=stem)
        if not psf_path.exists():
            raise DeblendInputError(f"{psf_path}: PSF image of {path.name} not found")
        companions.append(psf_path)
        psf = normalised_psf(_read_fits_image(psf_path, None)[0], psf_path)
    bad |= flat_regions(np.where(bad, 0.0, data))
    data = np.where(bad, 0.0, data)
    return SourceImage(spec, path, data, bad, float(pixel_scale), noise, psf,
                       None if saturation is None else float(saturation), wcs, companions)


def flat_regions(data: np.ndarray, size: int = 5, fraction: float = 0.25) -> np.ndarray:
    """Pixels in patches with (almost) no noise: cosmetically "cleaned" columns, filled gaps.

    A pixel is flagged when the standard deviation of its ``size`` x ``size``
    neighbourhood is below ``fraction`` of the image's median local standard
    deviation (then dilated by 2 pixels).
    """
    from scipy import ndimage

    mean = ndimage.uniform_filter(data, size)
    local = np.sqrt(np.clip(ndimage.uniform_filter(data * data, size) - mean * mean, 0.0, None))
    typical = float(np.median(local))
    if not typical > 0:
        return np.zeros(data.shape, bool)
    return ndimage.binary_dilation(local < fraction * typical, iterations=2)


def _read_fits_image(path: Path, hdu: int | None) -> tuple[np.ndarray, object]:
    from astropy.io import fits
    from astropy.io.fits.verify import VerifyWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            with fits.open(path) as hdul:
                hdus = [hdul[hdu]] if hdu is not None else [h for h in hdul if h.data is not None]
                if not hdus or hdus[0].data is None:
                    raise DeblendInputError(f"{path}: no image data (HDU {hdu if hdu is not None else 'any'})")
                data = np.asarray(hdus[0].data, dtype=np.float64)
                header = hdus[0].header.copy()
    except DeblendInputError:
        raise
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise DeblendInputError(f"{path}: not a readable FITS image ({exc})") from None
    if data.ndim != 2:
        raise DeblendInputError(f"{path}: image of {data.ndim} dimensions: expected a 2-D image")
    return data, header


def _celestial_wcs(header) -> object | None:
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except Exception:  # astropy raises many kinds for broken headers; no WCS then
            return None
    return wcs if wcs.has_celestial and wcs.wcs.ctype[0].strip() else None


def normalised_psf(psf: np.ndarray, where: str | Path) -> np.ndarray:
    """A PSF image with its border median subtracted, clipped at 0 and normalised to sum 1."""
    psf = np.nan_to_num(np.asarray(psf, np.float64))
    border = np.concatenate([psf[0], psf[-1], psf[1:-1, 0], psf[1:-1, -1]])
    psf = np.clip(psf - np.median(border), 0.0, None)
    if psf.ndim != 2 or not psf.sum() > 0:
        raise DeblendInputError(f"{where}: the PSF image has no positive pixel above its border")
    return psf / psf.sum()


def jpeg_luminance(path: str | Path, strength: float = JPEG_ASINH_STRENGTH) -> tuple[np.ndarray, float]:
    """Linear-ish brightness of an 8-bit asinh-stretched picture.

    The luminance ``L = 0.2126 R + 0.7152 G + 0.0722 B`` (in 0..1) is taken as
    an asinh stretch ``L = asinh(sinh(a) f) / a`` of a brightness ``f`` in 0..1
    and inverted: ``f = sinh(a L) / sinh(a)``.  The strength ``a`` of the
    stretch is not known; ``a = 5`` keeps the noise-dominated sky nearly linear
    and gives bright cores ~70 times the contrast they have in the picture.
    Fluxes stay only approximately linear: stamps from pictures are marked
    ``linear=False``.

    Returns
    -------
    tuple
        ``(H, W)`` float64 brightness, and the brightness of luminance 250/255
        (above it pixels are treated as saturated).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            rgb = np.asarray(picture.convert("RGB"), dtype=np.float64) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise DeblendInputError(f"{path}: not a readable picture ({exc})") from None
    luminance = rgb @ np.array([0.2126, 0.7152, 0.0722])
    unstretch = lambda v: np.sinh(strength * v) / np.sinh(strength)  # noqa: E731
    return unstretch(luminance), float(unstretch(250.0 / 255.0))


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
