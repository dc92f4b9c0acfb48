"""The run's catalogue (``catalog.ecsv``): sep's detections as parents, the deblender's components as children.

One answer per galaxy: every galaxy has exactly one row with ``IS_PRIMARY``
true, whose ``FLUX_BEST`` / ``MAG_BEST`` is the measurement to use (see
:mod:`napari_deblend.parents` for the rules, after the survey pipelines'
``parent`` / ``deblend_nChild`` / ``detect_isPrimary``). Select
``IS_PRIMARY`` to count or measure galaxies; the other rows are sep's view of
what the deblender split.

Columns (one row per detection, then one per component; ``--`` = masked):

==================  ======================================================================
``KIND``            ``detection`` (a sep detection, a *parent*) or ``component`` (a *child*)
``ID``              unique row id: a detection's ``NUMBER``; a component's ``j * S + PARENT``
                    for the ``j``-th child (brightest first) of its parent, ``S`` = the power
                    of ten above the number of detections (``meta["id_stride"]``)
``PARENT``          0 for a detection; for a component, the ``NUMBER`` of its detection
``NUMBER``          sep's detection number, by position (``Y_IMAGE``, then ``X_IMAGE``);
                    ``--`` on components (their detection is ``PARENT``)
``BLEND_ID``        the stamp the row was deblended in: sep's blends first (two or more
                    detections; brightest total ``FLUX_AUTO`` first), then the single
                    detections offered to the deblender (brightest first); 0: a detection
                    not offered. The ``BLEND`` extension ``EXTVER`` of ``components.fits``
``BLEND_NDET``      sep detections in that stamp (1: a single detection; 0: not offered)
``COMPONENT``       a component's number within its stamp, brightest first (0: a detection)
``DEBLEND_NCHILD``  a detection's number of components (0 for components)
``IS_PRIMARY``      the row that answers for its galaxy: a detection without children, a
                    detection deblended alone whose one child confirms it is one galaxy
                    (sep's measurement stands; the child is listed, not primary), a
                    detection of a sep blend no child lies on, or a component that is
                    no piece
``DEBLEND_FLAGS``   bits: 1 unrecognised blend (a detection split into two or more
                    galaxies, set on it and on its children), 2 not offered to the
                    deblender (point-like, or only sep's blends were), 4 offered but no
                    galaxy of it found (sep's measurement is used), 8 split refused (a
                    detection deblended alone that the deblender split without enough
                    confidence: its components were summed into one; on it and its child),
                    16 not answered (in a sep blend, no child lies on it: sep's
                    measurement answers), 32 piece (a component that is no galaxy of its
                    own: within a PSF FWHM (at least 3 px) of a brighter component of its
                    stamp; in a sep blend,
                    on none of its detections; of a detection deblended alone, off it
                    with ``P_GALAXY`` < 0.8; never primary)
``FLUX_BEST``       the flux to use (electrons): ``FLUX_MODEL`` on a component,
                    ``FLUX_AUTO`` on a detection; ``MAG_BEST`` its AB magnitude
``X_IMAGE`` ...     position, 1-based (FITS); ``ALPHA_J2000``, ``DELTA_J2000`` from the WCS
``FLUX_AUTO`` ...   sep's SExtractor columns (:data:`napari_deblend.catalog_io.SEXTRACTOR_COLUMNS`)
                    on detections; ``FLUX_AUTO``, ``FLUXERR_AUTO``, ``MAG_AUTO`` also on a
                    component whose detection has no other child (sep's measurement of the
                    same galaxy, beside the deblender's), ``--`` otherwise
``FLUX_MODEL`` ...  the deblender's measurements of a component (:data:`COMPONENT_COLUMNS`)
``MODEL``           deblender name (components)
``MODEL_VERSION``   ``sha256:`` and 12 hex digits of the deblender's weights file (with its
                    source finder's for ``vae`` and ``unet``; the version string of a
                    classical method)
==================  ======================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import MaskedColumn, Table, vstack

from .. import __version__
from ..catalog_io import to_sextractor_table
from ..parents import (
    FLAG_NAMES,
    answered_detections,
    child_ids,
    child_index,
    id_stride,
    parent_summary,
)

#: Columns of the neural-component rows of the catalogue: our name -> (catalogue name, description).
COMPONENT_COLUMNS: dict[str, tuple[str, str]] = {
    "flux": ("FLUX_MODEL", "Component flux: sum of its pixels"),
    "flux_err": ("FLUX_MODEL_ERR", "The model's own flux uncertainty (vae: the pixel noise shared out as its flux is)"),
    "mag": ("MAG_MODEL", "Component magnitude (AB)"),
    "mu20": ("MU20", "Isophotal second moment along x (3 sigma isophote)"),
    "mu02": ("MU02", "Isophotal second moment along y"),
    "mu11": ("MU11", "Isophotal cross moment"),
    "e1": ("E1", "(mu20 - mu02) / (mu20 + mu02)"),
    "e2": ("E2", "2 mu11 / (mu20 + mu02)"),
    "quality": ("QUALITY", "Deblender's verdict on the blend (High/Medium/Low for peeling)"),
    "p_galaxy": ("P_GALAXY", "Probability that the component is a galaxy of its own, not a piece of its host "
                             "(the model's split verifier; blank where its stamp had one component or the model has none)"),
}
#: The catalogue's first columns, in this order.
LEADING = ("KIND", "ID", "PARENT", "NUMBER", "BLEND_ID", "BLEND_NDET", "COMPONENT", "DEBLEND_NCHILD", "IS_PRIMARY",
           "DEBLEND_FLAGS", "FLUX_BEST", "MAG_BEST")  # fmt: skip
#: sep's measurements copied beside a component's own when its detection has no other child.
SEP_BESIDE = ("FLUX_AUTO", "FLUXERR_AUTO", "MAG_AUTO")

DESCRIPTIONS = {
    "KIND": "detection (sep, SExtractor columns; a parent) or component (neural deblender; a child)",
    "ID": "Unique row id: a detection's NUMBER; a component's j * ID_STRIDE + PARENT (j-th child)",
    "PARENT": "0 for a detection; for a component, the NUMBER of its detection",
    "NUMBER": "sep detection number (by position); masked on components",
    "BLEND_ID": "Stamp deblended: sep blends first, then single detections (0: not offered)",
    "BLEND_NDET": "sep detections in that stamp (1: a single detection; 0: not offered)",
    "COMPONENT": "Component number within its stamp, brightest first (0: a detection)",
    "DEBLEND_NCHILD": "Number of components of a detection",
    "IS_PRIMARY": "The row that answers for its galaxy (a detection without children, confirmed isolated or "
                  "not answered by its children, or a component)",
    "DEBLEND_FLAGS": "1 unrecognised blend, 2 not offered to the deblender, 4 no galaxy found in it, "
                     "8 split refused (components summed into one), 16 not answered (in a sep blend, no "
                     "component on it: sep's measurement is used), 32 piece (a component that is no galaxy "
                     "of its own: within a PSF FWHM (at least 3 px) of a brighter component, off its sep blend's "
                     "detections, or off its "
                     "detection with P_GALAXY < 0.8)",
    "FLUX_BEST": "Flux to use: FLUX_MODEL on a component, FLUX_AUTO on a detection",
    "MAG_BEST": "AB magnitude of FLUX_BEST",
}


def build_catalog(detections: Table, components: Table, meta: dict[str, Any], model: str, version: str) -> Table:
    """The parent/child catalogue of a field (see the module docstring).

    Parameters
    ----------
    detections : Table
        Every detection (our column names), ``id`` = final number, ``blend_id``
        = final stamp number (0: not offered), ``blend_ndet``.
    components : Table
        Every component (``measure`` columns, field pixels), ``blend_id`` = final
        stamp number, ``parent_id`` = its detection's number, brightest first within a stamp.
    meta : dict
        Field metadata for ``catalog.meta`` (``zero_point`` and ``exposure`` are used for ``MAG_BEST``).
    model, version : str
        Deblender name and ``MODEL_VERSION``.

    Returns
    -------
    astropy.table.Table
    """
    n_det = len(detections)
    stride = id_stride(n_det)
    numbers = np.asarray(detections["id"], np.int64) if n_det else np.zeros(0, np.int64)
    parents = np.asarray(components["parent_id"], np.int64) if len(components) else np.zeros(0, np.int64)
    offered = np.asarray(detections["blend_id"]) > 0 if n_det else np.zeros(0, bool)
    alone = np.asarray(detections["blend_ndet"]) == 1 if n_det else np.zeros(0, bool)
    refused = (np.asarray(components["split_refused"]) > 0 if len(components) and "split_refused" in components.colnames
               else None)  # fmt: skip
    # pieces: decided per stamp with the deblender's result (parents.group_children), as in the viewer
    pieces = np.asarray(components["piece"], bool) if len(components) and "piece" in components.colnames else None
    answered = None
    if n_det and len(components):
        answered = answered_detections(numbers, np.column_stack([detections["y"], detections["x"]]), parents,
                                       np.column_stack([components["y"], components["x"]]))
    summary = parent_summary(numbers, parents, offered, alone, refused, answered, pieces)

    det = to_sextractor_table(detections) if n_det else Table()
    det.meta = {}
    det["KIND"] = ["detection"] * n_det
    det["ID"] = numbers
    det["PARENT"] = np.zeros(n_det, np.int64)
    det["BLEND_NDET"] = np.asarray(detections["blend_ndet"], np.int32) if n_det else np.zeros(0, np.int32)
    det["COMPONENT"] = np.zeros(n_det, dtype=np.int32)
    det["DEBLEND_NCHILD"] = summary["n_child"]
    det["IS_PRIMARY"] = summary["primary"]
    det["DEBLEND_FLAGS"] = summary["flags"]
    if n_det:
        det["FLUX_BEST"] = det["FLUX_AUTO"].copy()
        det["MAG_BEST"] = det["MAG_AUTO"].copy()
    leading = [c for c in LEADING if c in det.colnames]
    det = det[leading + [c for c in det.colnames if c not in leading]]

    comp = Table()
    k = len(components)
    comp["KIND"] = ["component"] * k
    if k:
        order = child_index(parents)
        comp["ID"] = child_ids(parents, order, stride)
        comp["PARENT"] = parents
        comp["BLEND_ID"] = np.asarray(components["blend_id"], np.int32)
        row_of = {int(n): i for i, n in enumerate(numbers)}
        parent_rows = np.array([row_of[int(p)] for p in parents], int)
        stamp_ndet = {int(b): int(n) for b, n in zip(np.asarray(detections["blend_id"]), np.asarray(detections["blend_ndet"]))
                      if b}  # fmt: skip
        comp["BLEND_NDET"] = np.array([stamp_ndet.get(int(b), 0) for b in comp["BLEND_ID"]], np.int32)
        comp["COMPONENT"] = np.asarray(components["component"], np.int32)
        comp["DEBLEND_NCHILD"] = np.zeros(k, np.int32)
        comp["IS_PRIMARY"] = summary["child_primary"]
        comp["DEBLEND_FLAGS"] = summary["child_flags"]
        comp["FLUX_BEST"] = components["flux"]
        comp["MAG_BEST"] = components["mag"]
        comp["X_IMAGE"] = (np.asarray(components["x"], float) + 1.0) * u.pix
        comp["Y_IMAGE"] = (np.asarray(components["y"], float) + 1.0) * u.pix
        comp["ALPHA_J2000"] = np.asarray(components["ra"], float) * u.deg
        comp["DELTA_J2000"] = np.asarray(components["dec"], float) * u.deg
        alone = summary["n_child"][parent_rows] == 1
        for name in SEP_BESIDE:  # sep saw this galaxy alone: its measurement beside the deblender's
            if name in det.colnames:
                values = np.asarray(det[name], float)[parent_rows]
                comp[name] = MaskedColumn(np.where(alone, values, np.nan), mask=~alone, unit=det[name].unit)
        for name, (column, description) in COMPONENT_COLUMNS.items():
            if name in components.colnames:  # FLUX_MODEL_ERR only for models with an uncertainty (vae)
                values = components[name]
                if name == "p_galaxy":  # only for a model that gives it; blank where not asked
                    finite = np.isfinite(np.asarray(values, float))
                    if not finite.any():
                        continue
                    values = MaskedColumn(np.asarray(values, float), mask=~finite)
                comp[column] = values
                comp[column].description = description
        comp["MODEL"] = [model] * k
        comp["MODEL_VERSION"] = [version] * k
    catalog = vstack([det, comp], join_type="outer", metadata_conflicts="silent") if k else det
    if "MODEL" not in catalog.colnames:
        catalog["MODEL"] = MaskedColumn([""] * len(catalog), mask=True)
        catalog["MODEL_VERSION"] = MaskedColumn([""] * len(catalog), mask=True)
    if k and "NUMBER" in catalog.colnames:  # a component's detection is its PARENT
        catalog["NUMBER"] = MaskedColumn(catalog["NUMBER"], mask=np.r_[np.zeros(n_det, bool), np.ones(k, bool)])
    for name, description in DESCRIPTIONS.items():
        if name in catalog.colnames:
            catalog[name].description = description
    catalog.meta = {
        **meta,
        "model": model,
        "model_version": version,
        "id_stride": stride,
        "deblend_flags": {bit: name for bit, name in FLAG_NAMES.items()},
        "napari_deblend": __version__,
        "coordinates": "X_IMAGE, Y_IMAGE are 1-based (FITS); RA/Dec from the field's WCS",
        "primary": "select IS_PRIMARY for one row per galaxy; FLUX_BEST, MAG_BEST are its measurement",
    }
    return catalog
