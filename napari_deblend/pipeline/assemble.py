"""Last step of a field: merge its tiles into ``catalog.ecsv``, ``components.fits`` and ``residual.fits``.

Detections are numbered by position (row-major: ``y``, then ``x``); the stamps
deblended, sep's blends first by total ``FLUX_AUTO`` (brightest first), then
the single detections offered to the deblender by theirs, the same whatever
the tiling. The catalogue's columns: :mod:`.catalog`.  Each
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
from astropy.table import Table, vstack
from astropy.wcs import WCS

from .. import __version__
from ..field import read_field, write_field
from ..header_text import header_text
from ..parents import position_numbers
from .catalog import build_catalog
from .layout import FieldJob
from .outputs import atomic_path, fits_card, write_image_extension, write_json
from .prepare import read_options
from .tiles import field_wcs


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
    n_sep_blends = len({int(b) for b, n in zip(detections["blend_id"], detections["blend_ndet"]) if n >= 2}) \
        if len(detections) else 0

    start = time.perf_counter()
    field = read_field(job.path, **read_options(job))
    read_seconds = time.perf_counter() - start

    start = time.perf_counter()
    with atomic_path(paths.catalog) as tmp:
        catalog.write(tmp, format="ascii.ecsv")
    n_stamps = _write_components_and_subtract(
        parts, blend_keys, field, wcs, paths.components, info, model, version, _children_of_stamps(catalog)
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
        "blends": n_sep_blends,  # sep's blends deblended
        "singles": int(len(blend_keys)) - n_sep_blends,  # single detections deblended
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
    """Detections and components of all tiles with final numbers, and the tile key of each stamp.

    Returns
    -------
    detections : Table
        Sorted by ``(y, x)``; ``id`` = 1..N, ``blend_id`` = final stamp number (0: not
        offered), ``blend_ndet`` = sep detections in the stamp.
    components : Table
        Sorted by final ``blend_id`` and ``component``; ``parent_id`` = its detection's final id.
    blend_keys : list of (int, int)
        ``(tile, tile-local group id)`` of final stamp ``i + 1``: sep's blends
        (brightest total ``FLUX_AUTO`` first), then the single detections (brightest first).
    """
    det_tables, comp_tables = [], []
    for part in parts:
        with fits.open(part) as hdul:
            det = Table.read(hdul["DETECTIONS"])
            comp = Table.read(hdul["COMPONENTS"])
            tile_number = int(hdul[0].header["TILE"])
        for table in (det, comp):
            _restore_units(table)
        det["tile"] = np.full(len(det), tile_number, dtype=np.int32)
        comp["tile"] = np.full(len(comp), tile_number, dtype=np.int32)
        det_tables.append(det)
        comp_tables.append(comp)
    detections = vstack(det_tables, metadata_conflicts="silent") if det_tables else Table()
    components = vstack(comp_tables, metadata_conflicts="silent") if comp_tables else Table()
    if not len(detections):
        return detections, components, []
    detections = detections[np.argsort(position_numbers(detections["y"], detections["x"]))]
    tiles = np.asarray(detections["tile"], int)
    number_of = {(int(t), int(i)): n for n, (t, i) in enumerate(zip(tiles, detections["id"]), start=1)}
    flux = np.asarray(detections["flux_auto"], float)
    groups = np.asarray(detections["group_id"], int)
    sep_blend = np.asarray(detections["blend_id"], int)
    members: dict[tuple[int, int], list[int]] = {}
    for row, (tile, group) in enumerate(zip(tiles, groups)):
        if group:
            members.setdefault((int(tile), int(group)), []).append(row)
    # sep's blends by total FLUX_AUTO, then the single detections by theirs; ties by their first detection
    blends = sorted((k for k, rows in members.items() if sep_blend[rows[0]]),
                    key=lambda k: (-np.nansum(flux[members[k]]), min(members[k])))  # fmt: skip
    singles = sorted((k for k, rows in members.items() if not sep_blend[rows[0]]),
                     key=lambda k: (-np.nan_to_num(flux[members[k][0]], nan=-np.inf), members[k][0]))  # fmt: skip
    blend_keys = blends + singles
    final = {key: n for n, key in enumerate(blend_keys, start=1)}
    ndet = np.zeros(len(detections), np.int32)
    for rows in members.values():
        ndet[rows] = len(rows)
    detections["blend_id"] = np.array([final.get((int(t), int(g)), 0) for t, g in zip(tiles, groups)], np.int32)
    detections["blend_ndet"] = ndet
    detections["id"] = np.arange(1, len(detections) + 1, dtype=np.int32)
    if len(components):
        components["blend_id"] = [
            final[(int(t), int(b))] for t, b in zip(components["tile"], components["blend_id"])
        ]
        components["parent_id"] = [
            number_of[(int(t), int(m))] for t, m in zip(components["tile"], components["parent_id"])
        ]
        components = components[
            np.lexsort((np.asarray(components["component"]), np.asarray(components["blend_id"])))
        ]
    return detections, components, blend_keys


def _restore_units(table: Table) -> None:
    """Put back the ``electron`` unit of flux columns, which FITS tables cannot store."""
    for name in table.colnames:
        if name in ("peak", "flux_iso", "flux", "flux_auto", "fluxerr_auto", "flux_err") or name.startswith(
            ("flux_auto_", "fluxerr_auto_")
        ):
            table[name].unit = u.electron


def _catalog(
    detections: Table, components: Table, info: dict[str, Any], job: FieldJob, model: str, version: str
) -> Table:
    """The field's parent/child catalogue (:mod:`.catalog`)."""
    meta = {
        "field": info["name"],
        "path": str(job.path),
        "candidates": job.settings.candidates,
        "detection_preset": info["detection"],
        "zero_point": info["zero_point"],
        "exposure": info["exposure"],
    }
    return build_catalog(detections, components, meta, model, version)


def _children_of_stamps(catalog: Table) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Stamp number -> (``ID``, ``PARENT``) of its components, in component order."""
    if not len(catalog):
        return {}
    rows = np.flatnonzero(np.asarray(catalog["KIND"]) == "component")
    out: dict[int, tuple[list[int], list[int]]] = {}
    for row in rows:
        ids, parents = out.setdefault(int(catalog["BLEND_ID"][row]), ([], []))
        ids.append(int(catalog["ID"][row]))
        parents.append(int(catalog["PARENT"][row]))
    return {k: (np.asarray(i), np.asarray(p)) for k, (i, p) in out.items()}


def _write_components_and_subtract(
    parts: list, blend_keys: list[tuple[int, int]], field: Any, wcs: WCS | None, path, info: dict[str, Any],
    model: str, version: str, children: dict[int, tuple[np.ndarray, np.ndarray]],
) -> int:  # fmt: skip
    """Write ``components.fits`` (one ``BLEND`` extension per stamp, by number) and subtract the components from ``field``.

    Each extension's header names its components' catalogue ``ID`` and
    ``PARENT`` (``ID1``, ``PARENT1``, ... in the order of its first axis).
    Returns the number of stamps with at least one component.
    """
    primary = fits.PrimaryHDU()
    header = primary.header
    header["FIELD"] = header_text(info["name"])  # a file name may hold any character
    header["MODEL"] = header_text(model)
    header["MODELVER"] = header_text(version)
    header["NBLENDS"] = (len(blend_keys), "stamps deblended: extensions BLEND, EXTVER")
    if wcs is not None:
        header.update(wcs.to_header(relax=True))
    height, width = field.shape
    wcs_cards = _wcs_cards(wcs)
    written = 0
    with atomic_path(path) as tmp, ExitStack() as stack:
        stream = stack.enter_context(open(tmp, "wb"))
        primary.writeto(stream)
        stamps_of: dict[int, dict[int, tuple]] = {}  # tile -> local group -> (components, sigma, row of STAMPS)
        part_of_tile = {int(fits.getval(p, "TILE", 0)): p for p in parts}
        for number, (tile, local) in enumerate(blend_keys, start=1):
            if tile not in stamps_of:
                stamps_of[tile] = _tile_stamps(stack.enter_context(fits.open(part_of_tile[tile], memmap=True)))
            if local not in stamps_of[tile]:
                continue  # the deblender found no component in this blend
            stamps, sigma, row = stamps_of[tile][local]
            y0, x0 = int(row["origin_y"]), int(row["origin_x"])
            h, w = stamps.shape[-2:]
            ys, ye, xs, xe = max(y0, 0), min(y0 + h, height), max(x0, 0), min(x0 + w, width)
            if ys < ye and xs < xe:
                field.data[:, ys:ye, xs:xe] -= stamps.sum(axis=0)[:, ys - y0 : ye - y0, xs - x0 : xe - x0]
            common = [fits_card("BLEND_ID", number), fits_card("NCOMP", len(stamps), "components, brightest first"),
                      fits_card("ORIGIN_Y", y0, "field row of pixel (0, 0), 0-based"),
                      fits_card("ORIGIN_X", x0, "field column of pixel (0, 0), 0-based"),
                      fits_card("LTV1", -x0, "IRAF: field x = image x - LTV1"),
                      fits_card("LTV2", -y0, "IRAF: field y = image y - LTV2")]  # fmt: skip
            cards = [fits_card("EXTNAME", "BLEND"), fits_card("EXTVER", number), *common,
                     fits_card("QUALITY", str(row["quality"]))]  # fmt: skip
            ids, parents = children.get(number, (np.zeros(0, int), np.zeros(0, int)))
            for k, (child, parent) in enumerate(zip(ids, parents), start=1):
                cards.append(fits_card(f"ID{k}", int(child), f"catalogue ID of component {k}"))
                cards.append(fits_card(f"PARENT{k}", int(parent), f"NUMBER of the detection of component {k}"))
            write_image_extension(stream, stamps[:, 0] if stamps.shape[1] == 1 else stamps,
                                  cards + _shifted(wcs_cards, y0, x0))  # fmt: skip
            written += 1
            if sigma is not None:  # the model's per-pixel uncertainty of each component (vae)
                cards = [fits_card("EXTNAME", "SIGMA"), fits_card("EXTVER", number), *common,
                         fits_card("BUNIT", "electron", "per-pixel standard deviation of each component")]  # fmt: skip
                write_image_extension(stream, sigma[:, 0] if sigma.shape[1] == 1 else sigma, cards)
    return written


def _tile_stamps(hdul: fits.HDUList) -> dict[int, tuple[np.ndarray, np.ndarray | None, Any]]:
    """A tile record's components by tile-local group id: ``(components, sigma or None, STAMPS row)``."""
    index = Table.read(hdul["STAMPS"])
    images = {(hdu.name, hdu.ver): hdu.data for hdu in hdul[4:]}
    out = {}
    for row in index:
        extver, first, n = int(row["extver"]), int(row["first"]), int(row["ncomp"])
        sigma = images.get(("SIGMA", extver))
        out[int(row["blend_id"])] = (np.asarray(images[("STAMP", extver)][first:first + n], np.float32),
                                     None if sigma is None else np.asarray(sigma[first:first + n], np.float32),
                                     row)  # fmt: skip
    return out


def _wcs_cards(wcs: WCS | None) -> list[str]:
    """The field's WCS as header cards (empty without a WCS)."""
    return [] if wcs is None else [card.image for card in wcs.to_header(relax=True).cards]


def _shifted(cards: list[str], y0: int, x0: int) -> list[str]:
    """WCS cards of a stamp whose pixel (0, 0) is field pixel ``(y0, x0)``: the reference pixel moved."""
    out = []
    for card in cards:
        key = card[:8].strip()
        if key in ("CRPIX1", "CRPIX2"):
            value = float(card[10:].split("/")[0]) - (x0 if key == "CRPIX1" else y0)
            card = fits_card(key, value, "Pixel coordinate of reference point")
        out.append(card)
    return out
