"""Turn the images of the source table into stamps (one source image after another).

For every image: read it (:mod:`.sources`), detect its sources and find its
stars (:mod:`.detect`), select the galaxies and render each at every
magnification the source allows at this preset (:mod:`.stamps`).  A magnified
(``m > 1``) variant is made only while the magnified source PSF stays narrower
than the preset's.  Multi-band sources are detected and selected on their first band
and cut with the same footprints from every band.  Galaxies seen in two
cut-outs with a WCS (within ``DUPLICATE_RADIUS``) are kept once.

:func:`build_stamps` returns the stamps (:class:`StampSet`) and a per-image
report for ``pool.json``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..presets import SurveyPreset
from .detect import Detections, StellarLocus, detect_sources, stellar_locus
from .sources import SourceImage, SourceSpec, read_source_image, sha256, source_files
from .stamps import (
    BuildSettings,
    dilation_pixels,
    galaxy_cut,
    half_light_radius,
    matching_kernel,
    noise_gain,
    path_psf_fwhm,
    render_stamp,
    select_galaxies,
    source_star,
)

DUPLICATE_RADIUS = 0.5  # arcsec
COLUMNS = ("images", "noise", "galaxy_id", "source", "hlr", "snr", "magnification", "psf_fwhm", "linear", "band",
           "origin", "x", "y")


@dataclass
class StampSet:
    """Stamps being collected, one list per output column (see :data:`COLUMNS`)."""

    columns: dict[str, list] = field(default_factory=lambda: {name: [] for name in COLUMNS})

    def add(self, **values) -> None:
        for name in COLUMNS:
            self.columns[name].append(values[name])

    def __len__(self) -> int:
        return len(self.columns["images"])


@dataclass
class _Path:
    """What one (image, magnification) shares: kernel, noise gain and resulting PSF FWHM."""

    kernel: object
    gain: float
    psf_fwhm: float


def build_stamps(root: str | Path, preset: SurveyPreset, settings: BuildSettings,
                 sources: Sequence[SourceSpec], log: Callable[[str], None] = print) -> tuple[StampSet, list[dict]]:
    """Stamps of every galaxy of every source, and one report per source image.

    Raises
    ------
    DeblendInputError
        If a file of the table is missing or unreadable.
    """
    stamps = StampSet()
    reports: list[dict] = []
    next_id = 1
    for spec in sources:
        files = source_files(spec, root)
        groups = [files] if spec.multiband else [[f] for f in files]
        seen_sky: list[tuple[float, float]] = []
        for group in groups:
            start = time.perf_counter()
            images = [read_source_image(spec, f) for f in group]
            report, next_id = _build_image(images, preset, settings, stamps, next_id, seen_sky)
            report["seconds"] = round(time.perf_counter() - start, 2)
            reports.append(report)
            log(f"{spec.name}/{'+'.join(f.name for f in group)}: {report['galaxies_kept']} galaxies, "
                f"{report['stamps']} stamps; galaxies rejected {report['rejected']}, variants skipped "
                f"{report['variants_skipped']} ({report['seconds']} s)")
    return stamps, reports


def _build_image(images: list[SourceImage], preset: SurveyPreset, settings: BuildSettings, stamps: StampSet,
                 next_id: int, seen_sky: list[tuple[float, float]]) -> tuple[dict, int]:
    reference = images[0]
    spec = reference.spec
    detections = [detect_sources(img) for img in images]
    loci = [stellar_locus(det, img) for det, img in zip(detections, images)]
    ref_det, ref_locus = detections[0], loci[0]
    size = settings.stamp_size
    scale_factor = reference.pixel_scale / preset.pixel_scale * min(spec.magnifications)
    reasons = select_galaxies(ref_det, ref_locus, reference, settings, scale_factor)
    rejected = Counter(r for r in reasons if r)
    kept = [i for i, r in enumerate(reasons) if r is None]
    paths = [_paths(img, locus, preset, size) for img, locus in zip(images, loci)]
    slices = ndimage.find_objects(ref_det.segmentation)
    dilation = dilation_pixels(ref_locus)
    stamps_per_m: Counter = Counter()
    skipped: Counter = Counter()  # variants (band, magnification) not made, by reason
    n_kept = 0
    for i in kept:
        if _duplicate(reference, ref_det, i, seen_sky):
            rejected["duplicate"] += 1
            continue
        added = 0
        for img, det, img_paths in zip(images, detections, paths):
            cut, footprint, sigma, _ = galaxy_cut(det.image, det.sigma, ref_det.segmentation, i + 1, slices[i],
                                                  dilation)
            snr = _footprint_snr(det, ref_det.segmentation, slices[i], i + 1)
            if img is not reference and snr < settings.min_snr:
                skipped["band_faint"] += 1
                continue
            for m, path in img_paths.items():
                if snr < settings.min_snr * max(m, 1.0):
                    skipped[f"faint_x{m:g}"] += 1
                    continue
                rendered = render_stamp(cut, footprint, img.pixel_scale, m, path.kernel, preset, size)
                if rendered is None:
                    skipped[f"too_large_x{m:g}"] += 1
                    continue
                image, total = rendered
                stamps.add(images=image, noise=sigma * path.gain / total, galaxy_id=next_id, source=img.path.name,
                           hlr=half_light_radius(image, preset.pixel_scale), snr=snr, magnification=m,
                           psf_fwhm=path.psf_fwhm, linear=spec.linear, band=_band(img), origin=spec.name,
                           x=ref_det.x[i], y=ref_det.y[i])
                stamps_per_m[f"x{m:g}"] += 1
                added += 1
        if added:
            n_kept += 1
            next_id += 1
            if reference.wcs is not None:
                seen_sky.append(_sky(reference, ref_det, i))
        else:
            rejected["too_large"] += 1
    report = {
        "source": spec.name,
        "files": {img.path.name: sha256(img.path) for img in images},
        "companions": {p.name: sha256(p) for img in images for p in img.companions},
        "pixel_scale": reference.pixel_scale,
        "linear": spec.linear,
        "psf_fwhm_table": spec.psf_fwhm,
        "stars": [{"file": img.path.name, "method": locus.method, "n_stars": locus.n_stars,
                   "r50_pixels": round(locus.r50, 3), "fwhm_pixels": round(locus.fwhm, 3),
                   "fwhm_arcsec": round(locus.fwhm * img.pixel_scale, 3)} for img, locus in zip(images, loci)],
        "stamp_psf_fwhm": {img.path.name: {f"x{m:g}": round(p.psf_fwhm, 3) for m, p in img_paths.items()}
                           for img, img_paths in zip(images, paths)},
        "detections": len(ref_det),
        "galaxies_kept": n_kept,
        "stamps": int(sum(stamps_per_m.values())),
        "stamps_per_magnification": dict(stamps_per_m),
        "rejected": dict(sorted(rejected.items())),
        "variants_skipped": dict(sorted(skipped.items())),
    }
    return report, next_id


def _paths(img: SourceImage, locus: StellarLocus, preset: SurveyPreset, size: int) -> dict[float, _Path]:
    """Kernel, noise gain and stamp PSF per allowed magnification of one image."""
    fwhm = locus.fwhm * img.pixel_scale
    star = source_star(img.psf, locus.fwhm)
    out: dict[float, _Path] = {}
    for m in sorted(img.spec.magnifications):
        if m > 1.0 and m * fwhm > preset.psf_fwhm:
            continue  # the magnified source PSF would be broader than the preset's
        kernel = matching_kernel(preset, fwhm, img.psf, img.pixel_scale, m)
        out[m] = _Path(kernel, noise_gain(img.pixel_scale, m, kernel, preset, size),
                       path_psf_fwhm(star, img.pixel_scale, m, kernel, preset, size))
    return out


def _footprint_snr(det: Detections, segmentation: np.ndarray, obj: tuple[slice, slice], label: int) -> float:
    """Isophotal S/N of a segment in one band's image."""
    inside = segmentation[obj] == label
    variance = float((det.sigma[obj][inside] ** 2).sum())
    return float(det.image[obj][inside].sum() / np.sqrt(variance)) if variance > 0 else 0.0


def _band(img: SourceImage) -> str:
    name = img.path.name.split(".")[0]
    return name if img.spec.multiband else ""


def _sky(img: SourceImage, det: Detections, i: int) -> tuple[float, float]:
    sky = img.wcs.pixel_to_world(det.x[i], det.y[i])
    return float(sky.ra.deg), float(sky.dec.deg)


def _duplicate(img: SourceImage, det: Detections, i: int, seen: list[tuple[float, float]]) -> bool:
    """Whether a galaxy was already kept from another cut-out of the same source (by sky position)."""
    if img.wcs is None or not seen:
        return False
    ra, dec = _sky(img, det, i)
    known = np.asarray(seen)
    dra = (known[:, 0] - ra) * np.cos(np.radians(dec))
    return bool((np.hypot(dra, known[:, 1] - dec) * 3600.0 < DUPLICATE_RADIUS).any())
