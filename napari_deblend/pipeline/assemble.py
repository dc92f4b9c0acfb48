"""Last step of a field: merge its tiles into ``catalog.ecsv``, ``components.fits`` and ``residual.fits``.

Detections are numbered by position (row-major: ``y``, then ``x``) and blends
by total ``FLUX_AUTO`` (brightest first), the same whatever the tiling.  Each
output is written under a temporary name and renamed when complete; the
field's ``run.json``, written last, marks it done.
"""

from __future__ import annotations

import platform
import shutil
import sys
import time
from contextlib import ExitStack
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import MaskedColumn, Table, vstack
from astropy.wcs import WCS

from .. import __version__
from ..catalog_io import to_sextractor_table
from ..field import read_field, write_field
from ..header_text import header_text
from .layout import FieldJob
from .outputs import atomic_path, write_hdu, write_json
from .prepare import read_options
from .tiles import field_wcs

#: Columns of the neural-component rows of the catalogue: our name -> (catalogue name, description).
COMPONENT_COLUMNS: dict[str, tuple[str, str]] = {
    "flux": ("FLUX_MODEL", "Component flux: sum of its pixels"),
    "flux_err": ("FLUX_MODEL_ERR", "The model's own flux uncertainty (vae: its sigma image in quadrature)"),
    "mag": ("MAG_MODEL", "Component magnitude (AB)"),
    "mu20": ("MU20", "Isophotal second moment along x (3 sigma isophote)"),
    "mu02": ("MU02", "Isophotal second moment along y"),
    "mu11": ("MU11", "Isophotal cross moment"),
    "e1": ("E1", "(mu20 - mu02) / (mu20 + mu02)"),
    "e2": ("E2", "2 mu11 / (mu20 + mu02)"),
    "quality": ("QUALITY", "Deblender's verdict on the blend (High/Medium/Low for peeling)"),
}


def assemble_field(
    job: FieldJob, info: dict[str, Any], tile_summaries: list[dict[str, Any]]
) -> dict[str, Any]:
    """Merge a field's tiles into its final outputs and mark it done.

    Parameters
    ----------
    job : FieldJob
        The field and the run's settings.
    info : dict
        The field's description from :func:`~napari_deblend.pipeline.prepare.prepare_field`.
    tile_summaries : list of dict
        What :func:`~napari_deblend.pipeline.tiles.process_tile` returned for every tile.

    Returns
    -------
    dict
        The field's record, also written to ``<stem>/run.json``: counts,
        parameters, versions and timings (seconds) per stage.
    """
    paths = job.paths
    start = time.perf_counter()
    parts = [paths.part(s["tile"]) for s in sorted(tile_summaries, key=lambda s: s["tile"])]
    detections, components, blend_keys = _merge_tables(parts)
    wcs = field_wcs(info)
    model, version = _model_of(tile_summaries, job.settings.model)
    catalog = _catalog(detections, components, info, job, model, version)
    merge_seconds = time.perf_counter() - start

    start = time.perf_counter()
    field = read_field(job.path, **read_options(job))
    read_seconds = time.perf_counter() - start

    start = time.perf_counter()
    with atomic_path(paths.catalog) as tmp:
        catalog.write(tmp, format="ascii.ecsv")
    n_stamps = _write_components_and_subtract(
        parts, blend_keys, field, wcs, paths.components, info, model, version
    )
    with atomic_path(paths.residual) as tmp:
        write_field(field, tmp)
    write_seconds = time.perf_counter() - start

    timings = _sum_timings(info, tile_summaries)
    timings["read"] += read_seconds
    timings["measure"] += merge_seconds
    timings["write"] += write_seconds
    record = {
        "status": "done",
        "field": info["name"],
        "path": str(job.path),
        "shape": info["shape"],
        "bands": info["band_names"],
        "tiles": len(tile_summaries),
        "tiles_grown": sum(1 for s in tile_summaries if s["halo"] > job.settings.overlap),
        "detections": int(len(detections)),
        "blends": int(len(blend_keys)),
        "components": int(len(components)),
        "blends_with_components": n_stamps,
        "model": model,
        "model_version": version,
        "devices": sorted({s["device"] for s in tile_summaries}),
        "parameters": job.settings.identity(),
        "detection": info["detection"],
        "calibration": {k: info[k] for k in ("zero_point", "exposure", "gain", "pixel_scale")},
        "background_rms": info["rms"],
        "deblend_noise": info["deblend_noise"],
        "versions": versions(),
        "timings": timings,
        "outputs": {
            "catalog": paths.catalog.name,
            "components": paths.components.name,
            "residual": paths.residual.name,
        },  # fmt: skip
    }
    write_json(record, paths.run_json)  # last: the field is done
    if not job.settings.keep_work:
        shutil.rmtree(paths.work, ignore_errors=True)
    return record


def versions() -> dict[str, str]:
    """Versions of napari-deblend, Python and the libraries that shape the results."""
    import astropy
    import sep

    out = {"napari_deblend": __version__, "python": platform.python_version(), "numpy": np.__version__,
           "astropy": astropy.__version__, "sep": sep.__version__}  # fmt: skip
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.__version__
    return out


def _model_of(tile_summaries: list[dict[str, Any]], default: str) -> tuple[str, str]:
    for summary in tile_summaries:
        return str(summary["model"]), str(summary["model_version"])
    return default, ""


def _sum_timings(info: dict[str, Any], tile_summaries: list[dict[str, Any]]) -> dict[str, float]:
    timings = {"read": 0.0, "background": 0.0, "detect": 0.0, "deblend": 0.0, "measure": 0.0, "write": 0.0}
    for name, seconds in info.get("timings", {}).items():
        timings[name] = timings.get(name, 0.0) + float(seconds)
    for summary in tile_summaries:
        for name, seconds in summary["timings"].items():
            timings[name] = timings.get(name, 0.0) + float(seconds)
    return timings


def _merge_tables(parts: list) -> tuple[Table, Table, list[tuple[int, int]]]:
    """Detections and components of all tiles with final ``id`` / ``blend_id``, and the tile key of each blend.

    Returns
    -------
    detections : Table
        Sorted by ``(y, x)``; ``id`` = 1..N, ``blend_id`` = final blend number (0: isolated).
    components : Table
        Sorted by final ``blend_id`` and ``component``; ``member_id`` = the matched detection's final id (0: none).
    blend_keys : list of (int, int)
        ``(tile, tile-local blend id)`` of final blend ``i + 1``.
    """
    det_tables, comp_tables = [], []
    for part in parts:
        with fits.open(part) as hdul:
            det = Table.read(hdul["DETECTIONS"])
            comp = Table.read(hdul["COMPONENTS"])
        for table in (det, comp):
            _restore_units(table)
            tile_number = int(hdul[0].header["TILE"])
        det["tile"] = np.full(len(det), tile_number, dtype=np.int32)
        comp["tile"] = np.full(len(comp), tile_number, dtype=np.int32)
        det_tables.append(det)
        comp_tables.append(comp)
    detections = vstack(det_tables, metadata_conflicts="silent") if det_tables else Table()
    components = vstack(comp_tables, metadata_conflicts="silent") if comp_tables else Table()
    if not len(detections):
        return detections, components, []
    detections = detections[np.lexsort((np.asarray(detections["x"]), np.asarray(detections["y"])))]
    number_of = {
        (int(t), int(i)): n for n, (t, i) in enumerate(zip(detections["tile"], detections["id"]), start=1)
    }
    # blends: brightest total FLUX_AUTO first; ties by their first detection's number
    flux = np.asarray(detections["flux_auto"], float)
    keys: dict[tuple[int, int], list[int]] = {}
    for row, (tile, blend) in enumerate(zip(detections["tile"], detections["blend_id"])):
        if blend:
            keys.setdefault((int(tile), int(blend)), []).append(row)
    blend_keys = sorted(keys, key=lambda k: (-np.nansum(flux[keys[k]]), min(keys[k])))
    final_blend = {key: n for n, key in enumerate(blend_keys, start=1)}
    detections["blend_id"] = [
        final_blend.get((int(t), int(b)), 0) for t, b in zip(detections["tile"], detections["blend_id"])
    ]
    detections["id"] = np.arange(1, len(detections) + 1, dtype=np.int32)
    if len(components):
        components["blend_id"] = [
            final_blend[(int(t), int(b))] for t, b in zip(components["tile"], components["blend_id"])
        ]
        components["member_id"] = [
            number_of.get((int(t), int(m)), 0) for t, m in zip(components["tile"], components["member_id"])
        ]
        components = components[
            np.lexsort((np.asarray(components["component"]), np.asarray(components["blend_id"])))
        ]
    return detections, components, blend_keys


def _restore_units(table: Table) -> None:
    """Put back the ``electron`` unit of flux columns, which FITS tables cannot store."""
    for name in table.colnames:
        if name in ("peak", "flux_iso", "flux", "flux_auto", "fluxerr_auto") or name.startswith(
            ("flux_auto_", "fluxerr_auto_")
        ):
            table[name].unit = u.electron


def _catalog(
    detections: Table, components: Table, info: dict[str, Any], job: FieldJob, model: str, version: str
) -> Table:
    """One table: a ``detection`` row per detection (SExtractor columns), a ``component`` row per component."""
    det = to_sextractor_table(detections) if len(detections) else Table()
    det.add_column(["detection"] * len(det), name="KIND", index=0)
    det.add_column(np.zeros(len(det), dtype=np.int32), name="COMPONENT", index=3)
    comp = Table()
    comp["KIND"] = ["component"] * len(components)
    if len(components):
        comp["NUMBER"] = np.asarray(components["member_id"], np.int32)
        comp["BLEND_ID"] = np.asarray(components["blend_id"], np.int32)
        comp["COMPONENT"] = np.asarray(components["component"], np.int32)
        comp["X_IMAGE"] = (np.asarray(components["x"], float) + 1.0) * u.pix
        comp["Y_IMAGE"] = (np.asarray(components["y"], float) + 1.0) * u.pix
        comp["ALPHA_J2000"] = np.asarray(components["ra"], float) * u.deg
        comp["DELTA_J2000"] = np.asarray(components["dec"], float) * u.deg
        for name, (column, description) in COMPONENT_COLUMNS.items():
            if name in components.colnames:  # FLUX_MODEL_ERR only for models with an uncertainty (vae)
                comp[column] = components[name]
                comp[column].description = description
        comp["MODEL"] = [model] * len(comp)
        comp["MODEL_VERSION"] = [version] * len(comp)
    catalog = vstack([det, comp], join_type="outer", metadata_conflicts="silent") if len(comp) else det
    if "MODEL" not in catalog.colnames:
        catalog["MODEL"] = MaskedColumn([""] * len(catalog), mask=True)
        catalog["MODEL_VERSION"] = MaskedColumn([""] * len(catalog), mask=True)
    catalog["KIND"].description = "detection (sep, SExtractor columns) or component (neural deblender)"
    catalog["COMPONENT"].description = "Component number within its blend, brightest first (0: a detection)"
    if "NUMBER" in catalog.colnames:
        catalog[
            "NUMBER"
        ].description = "Detection number; for a component, the detection it matches (0: none)"
    catalog.meta = {
        "field": info["name"],
        "path": str(job.path),
        "model": model,
        "model_version": version,
        "detection_preset": info["detection"],
        "zero_point": info["zero_point"],
        "exposure": info["exposure"],
        "napari_deblend": __version__,
        "coordinates": "X_IMAGE, Y_IMAGE are 1-based (FITS); RA/Dec from the field's WCS",
    }
    return catalog


def _write_components_and_subtract(
    parts: list, blend_keys: list[tuple[int, int]], field: Any, wcs: WCS | None, path, info: dict[str, Any],
    model: str, version: str,
) -> int:  # fmt: skip
    """Write ``components.fits`` (one ``BLEND`` extension per blend, by number) and subtract the components from ``field``.

    Returns the number of blends with at least one component.
    """
    primary = fits.PrimaryHDU()
    header = primary.header
    header["FIELD"] = header_text(info["name"])  # a file name may hold any character
    header["MODEL"] = header_text(model)
    header["MODELVER"] = header_text(version)
    header["NBLENDS"] = (len(blend_keys), "extensions BLEND, EXTVER = BLEND_ID")
    if wcs is not None:
        header.update(wcs.to_header(relax=True))
    height, width = field.shape
    written = 0
    with atomic_path(path) as tmp, ExitStack() as stack:
        stream = stack.enter_context(open(tmp, "wb"))
        primary.writeto(stream)
        opened: dict[int, fits.HDUList] = {}
        part_of_tile = {int(fits.getval(p, "TILE", 0)): p for p in parts}
        for number, (tile, local) in enumerate(blend_keys, start=1):
            if tile not in opened:
                opened[tile] = stack.enter_context(fits.open(part_of_tile[tile], memmap=True))
            try:
                stamp_hdu = opened[tile]["STAMP", local]
            except KeyError:
                continue  # the deblender found no component in this blend
            stamps = np.asarray(stamp_hdu.data, np.float32)  # (K, C, h, w)
            y0, x0 = int(stamp_hdu.header["ORIGIN_Y"]), int(stamp_hdu.header["ORIGIN_X"])
            h, w = stamps.shape[-2:]
            ys, ye, xs, xe = max(y0, 0), min(y0 + h, height), max(x0, 0), min(x0 + w, width)
            if ys < ye and xs < xe:
                field.data[:, ys:ye, xs:xe] -= stamps.sum(axis=0)[:, ys - y0 : ye - y0, xs - x0 : xe - x0]
            data = stamps[:, 0] if stamps.shape[1] == 1 else stamps
            out = fits.ImageHDU(data, name="BLEND", ver=number)
            out.header["BLEND_ID"] = number
            out.header["NCOMP"] = (len(stamps), "components, brightest first (first axis)")
            out.header["ORIGIN_Y"] = (y0, "field row of pixel (0, 0), 0-based")
            out.header["ORIGIN_X"] = (x0, "field column of pixel (0, 0), 0-based")
            out.header["LTV1"] = (-x0, "IRAF: field x = image x - LTV1")
            out.header["LTV2"] = (-y0, "IRAF: field y = image y - LTV2")
            out.header["QUALITY"] = stamp_hdu.header.get("QUALITY", "")
            if wcs is not None:
                stamp_wcs = wcs.deepcopy()
                stamp_wcs.wcs.crpix = stamp_wcs.wcs.crpix - np.array([x0, y0], float)
                out.header.update(stamp_wcs.to_header(relax=True))
            write_hdu(stream, out)
            written += 1
            try:
                sigma_hdu = opened[tile]["SIGMA", local]
            except KeyError:
                continue  # the model gives no per-pixel uncertainty
            sigma = np.asarray(sigma_hdu.data, np.float32)
            sigma_out = fits.ImageHDU(sigma[:, 0] if sigma.shape[1] == 1 else sigma, name="SIGMA", ver=number)
            for key in ("BLEND_ID", "NCOMP", "ORIGIN_Y", "ORIGIN_X", "LTV1", "LTV2"):
                sigma_out.header[key] = (out.header[key], out.header.comments[key])
            sigma_out.header["BUNIT"] = ("electron", "per-pixel standard deviation of each component")
            write_hdu(stream, sigma_out)
    return written
