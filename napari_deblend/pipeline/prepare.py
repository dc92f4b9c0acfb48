"""First step of a field: read it, subtract the background once for the whole field, and keep the result on disk.

Tiles then detect on memory-mapped slices of the same background-subtracted
pixels and against the same global background rms (or, with a noise plane,
the same per-pixel variance), so that a tile finds exactly what a detection
on the whole field finds there, whatever the tiling. The memory needed is
that of the field itself (``4 C H W`` bytes plus the mask, and as much again
for a variance): the background is subtracted in place, never held as a
second image.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..catalog_photometry import calibration_meta
from ..deblending import field_noise
from ..detection import _background, _check_field, get_detection_preset
from ..field import read_field
from ..psf import field_psf_fwhm
from .layout import FieldJob, FieldPaths
from .outputs import atomic_path, read_json, write_json


def read_options(job: FieldJob) -> dict[str, Any]:
    """Keyword arguments of :func:`~napari_deblend.read_field` for a job's field (its preset, HDU, planes)."""
    read = dict(job.settings.read or {})
    options: dict[str, Any] = {"preset": job.settings.survey}
    for key in ("hdu", "bands", "weight_type"):
        if read.get(key) is not None:
            options[key] = read[key]
    for key in ("weight", "mask"):
        per_field = read.get(key) or {}
        if job.path in per_field:
            options[key] = per_field[job.path]
    return options


def variance_path(paths: FieldPaths) -> Path:
    """The per-pixel variance ``(C, H, W)`` float32 ``.npy`` of a field with a noise plane."""
    return paths.work / "variance.npy"


def prepare_field(job: FieldJob) -> dict[str, Any]:
    """Read a field, subtract its background in place and write the scratch arrays (skipped if done before).

    Parameters
    ----------
    job : FieldJob
        The field and the run's settings.

    Returns
    -------
    dict
        The field's description (``shape``, ``band_names``, calibration:
        ``mag_zero_point`` (one image unit) and the per-second ``zero_point``
        with ``exposure``; background ``rms`` per band, ``deblend_noise``,
        ``has_variance``, ``wcs`` header text, ``timings``), also written to
        ``work/field.json``.

    Raises
    ------
    DeblendInputError
        A missing or unreadable file, bad detection parameters, an image
        smaller than the background mesh, or nothing valid in it.
    """
    paths = job.paths
    done = read_json(paths.field_json)
    if done is not None and paths.subtracted.exists() and paths.mask.exists():
        return done
    settings = job.settings
    params = get_detection_preset(settings.detection_preset, **settings.detection_overrides)
    start = time.perf_counter()
    field = read_field(job.path, **read_options(job))
    _check_field(field)
    psf_fwhm, psf_source = field_psf_fwhm(field)  # before the background is subtracted in place
    read_seconds = time.perf_counter() - start

    start = time.perf_counter()
    mask = field.mask.any(axis=0)
    rms = []
    for band, image in zip(field.band_names, field.data):
        background = _background(image, mask, params, f"{field.name} band {band}")
        background.subfrom(image)  # in place: no second full-size image
        image[mask] = 0.0
        rms.append(float(background.globalrms))
    background_seconds = time.perf_counter() - start

    start = time.perf_counter()
    paths.parts.mkdir(parents=True, exist_ok=True)
    arrays = [(paths.subtracted, field.data), (paths.mask, mask)]
    if field.variance is not None:
        arrays.append((variance_path(paths), field.variance))
    for path, array in arrays:
        with atomic_path(path) as tmp, open(tmp, "wb") as stream:
            np.save(stream, array)
    wcs_header = None
    if field.wcs is not None:
        wcs_header = field.wcs.to_header(relax=True).tostring()
    info = {
        "name": field.name,
        "path": str(job.path),
        "shape": list(field.shape),
        "band_names": list(field.band_names),
        "survey": field.preset.name,
        **calibration_meta(field.zero_point, field.exposure, field.zero_point_source),
        "gain": float(field.gain),
        "pixel_scale": float(field.pixel_scale),
        "psf_fwhm": psf_fwhm,
        "psf_source": psf_source,
        "noise": [float(v) for v in field.noise],
        "rms": rms,
        "deblend_noise": field_noise(field, field.preset.background_sigma),
        "has_variance": field.variance is not None,
        "masked_pixels": int(mask.sum()),
        "wcs": wcs_header,
        "detection": params.describe(),
        "timings": {"read": read_seconds, "background": background_seconds},
    }
    info["timings"]["write"] = time.perf_counter() - start
    write_json(info, paths.field_json)  # last: its presence means the scratch arrays are complete
    return info
