"""One tile of a field: detect, group into blends, pick the candidates, keep what the tile owns, deblend, measure.

The finished tile is written as one FITS file (``work/parts/tile_XXXX.fits``)
under a temporary name and renamed when complete: a rerun skips it, a tile
interrupted half-way is simply redone.  Extensions:

- ``DETECTIONS``: the detections the tile owns, field pixels (0-based),
  tile-local ``id``, ``blend_id`` (sep's blend) and ``group_id`` (the
  tile-local number of the stamp it was deblended in: sep's blends first, then
  the single detections offered to the deblender, see
  :mod:`napari_deblend.candidates`; 0: not offered);
- ``COMPONENTS``: one row per component of the tile's groups (``measure``
  columns, field positions, ``blend_id`` = the group, and the tile-local id of
  the detection it belongs to, ``parent_id``, see :mod:`napari_deblend.parents`;
  components of neighbours that fell on a stamp are left out);
- ``STAMPS``: one row per group with components: its tile-local ``blend_id``,
  where its ``(K, C, h, w)`` components are (``extver``, ``first``, ``ncomp``),
  ``origin_y`` / ``origin_x`` of the stamp in the field, ``quality``;
- ``STAMP`` (``EXTVER`` = 1, 2, ...: one per stamp shape): the components of
  every group of that shape, concatenated along the first axis (a few large
  extensions rather than thousands of small ones, which astropy writes and
  reads slowly);
- ``SIGMA`` (same ``EXTVER``), when the model gives one (``vae``): the
  per-pixel standard deviation of each component, same layout.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, FITSFixedWarning

from ..blends import Blend, Stamp, cut_stamp, find_blends, kron_axes, stamp_noise, stamp_variances
from ..candidates import find_candidates, psf_fwhm_pixels
from ..deblenders.base import Deblender, DeblendResult, get_deblender, resolve_device
from ..deblenders.checkpoints import deblender_version
from ..deblending import DEFAULT_STAMP, stamp_side
from ..detection import (
    KRON_INTEGRATION_RADIUS,
    DetectionPreset,
    _build_catalog,
    calibration_meta,
    detection_image,
    extract_with_preset,
    get_detection_preset,
)
from ..errors import DetectionError
from ..field import Field
from ..measurements import measure
from ..parents import group_children, min_child_separation
from ..presets import get_preset
from ..regrid import GridMatch, deblend_on_grid, grid_match, trained_preset, warn_if_broader
from .layout import FieldJob
from .outputs import atomic_path
from .prepare import variance_path
from .tiling import Tile, reaches_outer_edge

#: Stages whose seconds a tile records.
TIMED_STAGES = ("detect", "deblend", "measure")
#: Halo added when a tile owns something wider than its halo (then doubled until it fits).
MIN_GROWTH = 64


@dataclass
class TileDetection:
    """Detections of a tile's outer box and what the tile owns of them."""

    tile: Tile
    catalog: Table  # all detections of the outer box, tile pixels; group_id: the stamp each is deblended in
    segmentation: np.ndarray  # of the outer box, labels = catalogue ids
    rows: np.ndarray  # catalogue rows the tile owns
    blends: list[Blend]  # groups the tile owns, field pixels: sep's blends, then single detections
    stamps: list[Stamp]  # one per owned group, cut from the field (origins in field pixels)
    boxes: np.ndarray  # (N, 4) field boxes of everything owned (sources, apertures, stamps)


def field_wcs(info: dict[str, Any]) -> WCS | None:
    """The field's celestial WCS from ``info["wcs"]`` (header text), or None."""
    if not info.get("wcs"):
        return None
    with warnings.catch_warnings():  # our own header text has no NAXIS keywords: astropy's note on that is noise
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(fits.Header.fromstring(info["wcs"]))


def run_deblender(settings: Any, survey: str) -> Deblender:
    """The deblender of a run: the shared instance, or one of its own with ``give_back_pieces`` set."""
    if settings.give_back_pieces is None:
        return get_deblender(settings.model, device=settings.device, preset=survey)
    return _deblender_giving_back(settings.model, resolve_device(settings.device), survey,
                                  float(settings.give_back_pieces))


@functools.lru_cache(maxsize=4)
def _deblender_giving_back(model: str, device: str, survey: str, threshold: float) -> Deblender:
    """A deblender of its own (the shared one stays as it is) that gives pieces back; loaded once per process."""
    from ..deblenders.base import _load_class

    deblender = _load_class(model)(device=device, preset=survey)
    deblender.give_back_pieces, deblender.split_threshold = True, threshold
    return deblender


def process_tile(job: FieldJob, info: dict[str, Any], tile: Tile) -> dict[str, Any]:
    """Detect, deblend and measure one tile and write its record (skipped if already written).

    Parameters
    ----------
    job : FieldJob
        The field and the run's settings.
    info : dict
        The field's description from :func:`~napari_deblend.pipeline.prepare.prepare_field`.
    tile : Tile
        The tile.

    Returns
    -------
    dict
        ``tile``, ``detections``, ``blends``, ``components``, ``halo`` (after
        any growth) and ``timings`` (``detect``, ``deblend``, ``measure``, ``write``).
    """
    part = job.paths.part(tile.index)
    if part.exists():
        return read_tile_summary(part)
    settings = job.settings
    deblender = run_deblender(settings, info["survey"])
    subtracted = np.load(job.paths.subtracted, mmap_mode="r")
    mask = np.load(job.paths.mask, mmap_mode="r")
    variance = np.load(variance_path(job.paths), mmap_mode="r") if info.get("has_variance") else None
    timings = {"detect": 0.0, "deblend": 0.0, "measure": 0.0, "write": 0.0}

    params = get_detection_preset(settings.detection_preset, **settings.detection_overrides)
    start = time.perf_counter()
    found = detect_tile(subtracted, mask, tile, info, params, deblender, variance=variance,
                        candidates=settings.candidates)
    while reaches_outer_edge(found.tile, found.boxes) and not found.tile.covers_field:
        # something the tile owns is wider than the halo: detect again on a larger box
        wider = found.tile.grown(max(2 * found.tile.halo, MIN_GROWTH))
        found = detect_tile(subtracted, mask, wider, info, params, deblender, variance=variance,
                            candidates=settings.candidates)
    timings["detect"] = time.perf_counter() - start

    start = time.perf_counter()
    results = deblend_stamps(deblender, found.stamps, info["deblend_noise"], tile_grid_match(deblender, info))
    timings["deblend"] = time.perf_counter() - start

    start = time.perf_counter()
    # each group keeps its own galaxies: a neighbour that fell on the stamp is that neighbour's answer
    separation = min_child_separation(psf_fwhm_pixels(get_preset(info["survey"]), info.get("pixel_scale")))
    results = [group_children(r, g, found.segmentation, found.tile.origin, separation)
               for r, g in zip(results, found.blends)]
    detections = owned_detections(found, field_wcs(info))
    components = measure_components(found, results, info)
    timings["measure"] = time.perf_counter() - start

    start = time.perf_counter()
    summary = {
        "tile": tile.index,
        "detections": len(detections),
        "blends": len(found.blends),
        "components": len(components),
        "halo": found.tile.halo,
        "model": deblender.name,
        "model_version": deblender_version(deblender),
        "device": deblender.device,
    }
    write_tile(part, detections, components, found, results, summary, timings)
    timings["write"] = time.perf_counter() - start
    summary["timings"] = timings
    return summary


def detect_tile(
    subtracted: np.ndarray,
    mask: np.ndarray,
    tile: Tile,
    info: dict[str, Any],
    params: DetectionPreset,
    deblender: Deblender,
    variance: np.ndarray | None = None,
    candidates: str = "extended",
) -> TileDetection:
    """Detect on a tile's outer box against the field's background rms and find what it owns.

    Parameters
    ----------
    subtracted : numpy.ndarray
        ``(C, H, W)`` background-subtracted field (memory-mapped).
    mask : numpy.ndarray
        ``(H, W)`` bad-pixel mask.
    tile : Tile
        The tile.
    info : dict
        The field's description.
    params : DetectionPreset
        Detection parameters.
    deblender : Deblender
        The deblender (its ``stamp_size`` sets the stamps cut).
    variance : numpy.ndarray, optional
        ``(C, H, W)`` per-pixel variance of the field (memory-mapped), when it has a noise plane.
    candidates : str
        Which single detections are offered besides sep's blends (see :mod:`napari_deblend.candidates`).

    Returns
    -------
    TileDetection
    """
    ymin, ymax, xmin, xmax = tile.outer
    # copies: sep needs writable, C-contiguous arrays, and the scratch arrays are read-only maps
    pixels = np.array(subtracted[:, ymin:ymax, xmin:xmax], dtype=np.float32, order="C", copy=True)
    bad = np.array(mask[ymin:ymax, xmin:xmax], dtype=bool, order="C", copy=True)
    rms = np.asarray(info["rms"], float)
    var = None if variance is None else np.array(variance[:, ymin:ymax, xmin:xmax], dtype=np.float32, order="C")
    detected, detection_rms, detection_error = detection_image(pixels, rms, var, bad)
    try:
        err = detection_rms if detection_error is None else detection_error
        objects, segmentation = extract_with_preset(detected, err, params, mask=bad)
    except Exception as exc:  # sep raises bare Exceptions with C-level messages
        raise DetectionError(f"{info['name']} tile {tile.index}: source extraction failed ({exc})") from None
    tile_field = Field(
        data=pixels,
        mask=bad,
        band_names=list(info["band_names"]),
        preset=get_preset(info["survey"]),
        zero_point=info["mag_zero_point"],
        exposure=info["exposure"],
        gain=info["gain"],
        noise=np.asarray(info["noise"]),
    )
    catalog = _build_catalog(objects, segmentation, tile_field, pixels, detected, bad, rms,
                             detection_error=detection_error, variance=var)
    catalog.meta.update(calibration_meta(info["mag_zero_point"], info["exposure"]))
    blends = find_blends(catalog, segmentation)
    singles = find_candidates(
        catalog, blends, candidates, detection_rms=detection_rms, detection=params, shape=segmentation.shape,
        fwhm_pixels=psf_fwhm_pixels(tile_field.preset, info.get("pixel_scale")),
    )  # fmt: skip
    return _owned(tile, catalog, segmentation, blends, singles, subtracted, mask, deblender, variance)


def _owned(
    tile: Tile,
    catalog: Table,
    segmentation: np.ndarray,
    blends: list[Blend],
    singles: list[Blend],
    subtracted: np.ndarray,
    mask: np.ndarray,
    deblender: Deblender,
    variance: np.ndarray | None = None,
) -> TileDetection:
    oy, ox = tile.origin
    y = np.asarray(catalog["y"], float)
    x = np.asarray(catalog["x"], float)
    blend_of_row = np.asarray(catalog["blend_id"])
    owned = (blend_of_row == 0) & tile.owns(y + oy, x + ox)
    owned_blends = [b for b in blends if bool(tile.owns(b.center[0] + oy, b.center[1] + ox))]
    owned_blend_ids = np.array([b.id for b in owned_blends], dtype=int)
    owned |= np.isin(blend_of_row, owned_blend_ids)
    # a single detection is deblended by the tile that owns it
    owned_blends += [b for b in singles if bool(tile.owns(b.positions[0, 0] + oy, b.positions[0, 1] + ox))]
    row_of_id = {int(i): r for r, i in enumerate(catalog["id"])}
    group = np.zeros(len(catalog), np.int32)
    for blend in blends + singles:
        group[[row_of_id[int(m)] for m in blend.members]] = blend.id
    catalog["group_id"] = group
    rows = np.flatnonzero(owned)
    # how far each owned source reaches: its footprint, Kron aperture and Kron-radius integration
    kron_a, _ = kron_axes(catalog[rows])
    reach = np.maximum(kron_a, KRON_INTEGRATION_RADIUS * np.asarray(catalog["a"], float)[rows]) + 1.0
    boxes = [
        np.stack(
            [
                np.minimum(np.asarray(catalog["ymin"])[rows], y[rows] - reach) + oy,
                np.maximum(np.asarray(catalog["ymax"])[rows] + 1, y[rows] + reach + 1) + oy,
                np.minimum(np.asarray(catalog["xmin"])[rows], x[rows] - reach) + ox,
                np.maximum(np.asarray(catalog["xmax"])[rows] + 1, x[rows] + reach + 1) + ox,
            ],
            axis=1,
        )
    ]
    stamps, groups = [], []
    minimum = deblender.stamp_size or DEFAULT_STAMP
    for blend in owned_blends:
        side = stamp_side(blend, minimum)
        # cut in field pixels, from the field: the same stamp (rounding included) whatever the tiling
        in_field = replace(
            blend,
            bbox=(blend.bbox[0] + oy, blend.bbox[1] + oy, blend.bbox[2] + ox, blend.bbox[3] + ox),
            positions=blend.positions + np.array([oy, ox], float),
        )
        stamp = cut_stamp(subtracted, in_field, size=side, mask=mask, variance=variance)
        stamps.append(stamp)
        groups.append(in_field)
        sy, sx = stamp.origin
        boxes.append(np.array([[sy, sy + side, sx, sx + side]], float))
        boxes.append(np.array([in_field.bbox], float))
    return TileDetection(tile, catalog, segmentation, rows, groups, stamps, np.concatenate(boxes).reshape(-1, 4))


def tile_grid_match(deblender: Deblender, info: dict[str, Any]) -> GridMatch | None:
    """How the field's stamps are resampled for a learned deblender trained on another grid (None: not at all)."""
    trained = trained_preset(deblender)
    if trained is None or info.get("psf_fwhm") is None:
        return None
    match = grid_match(trained, info["pixel_scale"], info["psf_fwhm"], info["mag_zero_point"])
    if match.identity:
        return None
    warn_if_broader(match, deblender.name, info["name"])
    return match


def deblend_stamps(deblender: Deblender, stamps: list[Stamp], noise: float,
                   match: GridMatch | None = None) -> list[DeblendResult]:
    """Deblend stamps in batches of equal size (one ``deblend_batch`` call per stamp side).

    With ``match``, the stamps are deblended on the model's grid (:func:`~napari_deblend.regrid.deblend_on_grid`).

    Returns
    -------
    list of DeblendResult
        In the order of ``stamps``, with ``blend_id`` set (``origin`` stays in tile pixels).
    """
    results: list[DeblendResult | None] = [None] * len(stamps)
    sides = sorted({s.data.shape[-1] for s in stamps})
    for side in sides:
        chosen = [i for i, s in enumerate(stamps) if s.data.shape[-1] == side]
        batch = np.stack([np.where(stamps[i].mask, 0.0, stamps[i].data).astype(np.float32) for i in chosen])
        # as deblend() does: catalogue positions only for deblenders that need them or take them as hints (peeling);
        # the others find the sources
        positions = ([stamps[i].positions for i in chosen] if deblender.needs_positions or deblender.detection_hints
                     else None)
        sigmas = [stamp_noise(stamps[i], noise) for i in chosen]  # local noise where the field has a noise plane
        if match is not None:
            out = deblend_on_grid(deblender, batch, match, positions, np.asarray(sigmas))
        else:
            out = deblender.deblend_batch(batch, positions=positions, noise=np.asarray(sigmas),
                                          **stamp_variances(deblender, [stamps[i] for i in chosen]))
        for i, result in zip(chosen, out):
            result.origin = stamps[i].origin
            result.blend_id = stamps[i].blend_id
            result.info["stamp_mask"] = stamps[i].mask
            results[i] = result
    return [r for r in results if r is not None]


def owned_detections(found: TileDetection, wcs: WCS | None) -> Table:
    """The owned catalogue rows in field pixels (0-based), with RA/Dec from the field's WCS."""
    oy, ox = found.tile.origin
    table = found.catalog[found.rows]
    table.meta.clear()
    for name, shift in (("x", ox), ("xmin", ox), ("xmax", ox), ("y", oy), ("ymin", oy), ("ymax", oy)):
        table[name] += shift
    if wcs is not None and len(table):
        ra, dec = wcs.all_pix2world(np.asarray(table["x"], float), np.asarray(table["y"], float), 0)
        table["ra"][:] = ra
        table["dec"][:] = dec
    return table


def measure_components(found: TileDetection, results: list[DeblendResult], info: dict[str, Any]) -> Table:
    """One row per component: ``measure`` columns in field pixels, tile group id, tile-local ``parent_id``, RA/Dec."""
    wcs = field_wcs(info)
    tables = []
    for stamp, result in zip(found.stamps, results):
        table = measure(
            result,
            sextractor=False,
            preset=info["survey"],
            zero_point=info["zero_point"],
            exposure=info["exposure"],
        )
        table.meta.clear()
        table["x"] += stamp.origin[1]
        table["y"] += stamp.origin[0]
        table["blend_id"] = np.full(len(table), stamp.blend_id, dtype=np.int32)
        table["parent_id"] = np.asarray(result.info["parents"], np.int32).reshape(len(table))
        # components summed into one because the deblender was not sure of the split (parents.confirm_split)
        table["split_refused"] = np.full(len(table), int(result.info.get("split_refused", 0)), np.int16)
        if "p_galaxy" not in table.colnames:  # a split verifier gives it (measure); NaN: not asked or none
            table["p_galaxy"] = np.full(len(table), np.nan)
        # no galaxy of its own (parents.piece_children, set by group_children as in the viewer)
        table["piece"] = np.asarray(result.info.get("pieces", np.zeros(len(table), bool)), bool).reshape(len(table))
        tables.append(table)
    if not tables or not sum(len(t) for t in tables):
        return _empty_components()
    table = vstack([t for t in tables if len(t)])
    ra = dec = np.full(len(table), np.nan)
    if wcs is not None:
        ra, dec = wcs.all_pix2world(np.asarray(table["x"], float), np.asarray(table["y"], float), 0)
    table["ra"] = np.asarray(ra, float)
    table["dec"] = np.asarray(dec, float)
    return table


def _empty_components() -> Table:
    names = ("model", "component", "x", "y", "flux", "mag", "mu20", "mu02", "mu11", "e1", "e2", "quality",
             "masked_frac", "blend_id", "parent_id", "split_refused", "p_galaxy", "piece", "ra", "dec")  # fmt: skip
    dtypes = ("U40", int, float, float, float, float, float, float, float, float, float, "U8", float, np.int32,
              np.int32, np.int16, float, bool, float, float)  # fmt: skip
    return Table(names=names, dtype=dtypes)


def write_tile(
    path, detections: Table, components: Table, found: TileDetection, results: list[DeblendResult],
    summary: dict[str, Any], timings: dict[str, float],
) -> None:  # fmt: skip
    """Write a tile's record atomically (see the module docstring for its extensions)."""
    primary = fits.PrimaryHDU()
    for key, value in (("TILE", summary["tile"]), ("HALO", summary["halo"]), ("NDET", summary["detections"]),
                       ("NBLEND", summary["blends"]), ("NCOMP", summary["components"]),
                       ("MODEL", summary["model"]), ("MODELVER", summary["model_version"]),
                       ("DEVICE", summary["device"])):  # fmt: skip
        primary.header[key] = value
    for name in TIMED_STAGES:
        primary.header[f"T{name.upper()}"] = (timings[name], f"seconds spent in {name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)  # 'electron' is not a FITS unit: restored on reading
        hdus = [primary, fits.table_to_hdu(detections), fits.table_to_hdu(components)]
    hdus[1].name, hdus[2].name = "DETECTIONS", "COMPONENTS"
    hdus += stamp_hdus(results)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


def stamp_hdus(results: list[DeblendResult]) -> list[fits.hdu.base.ExtensionHDU]:
    """``STAMPS`` (the index), then ``STAMP`` and ``SIGMA`` extensions, one per stamp shape (see the module docstring)."""
    shapes: dict[tuple[int, ...], list[DeblendResult]] = {}
    for result in results:
        if result.n_components:
            shapes.setdefault(tuple(result.components.shape[1:]), []).append(result)
    rows: list[tuple] = []
    images = []
    for extver, group in enumerate(shapes.values(), start=1):
        first = 0
        for result in group:
            rows.append((int(result.blend_id), extver, first, result.n_components, int(result.origin[0]),
                         int(result.origin[1]), str(result.quality)))  # fmt: skip
            first += result.n_components
        components = np.concatenate([np.asarray(r.components, np.float32) for r in group])
        images.append(fits.ImageHDU(components, name="STAMP", ver=extver))
        sigmas = [r.info.get("component_sigma") for r in group]
        if all(sigma is not None for sigma in sigmas):  # the model's per-pixel uncertainty of each component (vae)
            images.append(fits.ImageHDU(np.concatenate([np.asarray(x, np.float32) for x in sigmas]), name="SIGMA",
                                        ver=extver))  # fmt: skip
    names = ("blend_id", "extver", "first", "ncomp", "origin_y", "origin_x", "quality")
    columns = list(zip(*rows)) if rows else [[] for _ in names]
    index = Table([np.asarray(c, np.int32) for c in columns[:6]] + [np.asarray(columns[6], "U16")], names=names)
    table = fits.table_to_hdu(index)
    table.name = "STAMPS"
    return [table, *images]


def read_tile_summary(path) -> dict[str, Any]:
    """The summary of a tile written by an earlier (interrupted) run."""
    header = fits.getheader(path, 0)
    return {
        "tile": int(header["TILE"]),
        "detections": int(header["NDET"]),
        "blends": int(header["NBLEND"]),
        "components": int(header["NCOMP"]),
        "halo": int(header["HALO"]),
        "model": str(header["MODEL"]),
        "model_version": str(header["MODELVER"]),
        "device": str(header["DEVICE"]),
        "timings": {
            name: float(header.get(f"T{name.upper()}", 0.0)) for name in TIMED_STAGES  # as write_tile names them
        }
        | {"write": 0.0},
        "resumed": True,
    }
