"""Export the clean labels as a training set: FITS cut-outs with WCS and an ECSV index.

For every field given, the labels made on its content (same pixel hash) are
grouped by target (blend or isolated galaxy; see
:func:`~napari_deblend.labels.store.members_match`); the *current* (latest)
label of each target and component decides:

- an isolated galaxy whose current label is ``clean`` becomes
  ``isolated/<field>_g<n>.fits``;
- a blend whose current whole-blend label is ``clean`` becomes
  ``blends/<field>_b<n>.fits``; its components whose current label is
  ``clean`` are its *accepted* components (positions in the index, and
  their images, drawn again by the judged model, in a ``COMPONENTS``
  extension: see :func:`accepted_component_images`), the others are listed
  as rejected with their verdict.

Each FITS file is a ``(C, H, W)`` float32 cube of the field's pixels as they
are in the file (every band, no background subtraction) with the WCS of the
cut-out (celestial axes 1-2, a ``BAND`` index axis 3) and the field's
calibration; an ``MASK`` extension flags padded or invalid pixels. The index
``index.ecsv`` has one row per file.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeblendInputError
from ..header_text import header_text
from .store import Label, LabelStore, field_key, members_match

INDEX_NAME = "index.ecsv"
DEFAULT_MARGIN = 8


class LabelExportWarning(UserWarning):
    """A field was skipped or its labels were not attached during an export."""


@dataclass
class LabelledTarget:
    """One blend or isolated galaxy and its current labels (component 0 = the whole target)."""

    kind: str
    members: np.ndarray
    bbox: tuple[int, int, int, int]
    center: tuple[float, float]
    current: dict[int, Label] = field(default_factory=dict)

    @property
    def verdict(self) -> str | None:
        """Current verdict on the whole target."""
        label = self.current.get(0)
        return label.verdict if label else None


def group_by_target(labels: list[Label]) -> list[LabelledTarget]:
    """Group labels (oldest first) by the target they are about; the latest per component is current."""
    targets: list[LabelledTarget] = []
    for label in sorted(labels, key=lambda lab: (lab.created, lab.id)):
        for target in targets:
            if target.kind == label.kind and members_match(target.members, label.members):
                break
        else:
            target = LabelledTarget(label.kind, label.members, label.bbox, label.center)
            targets.append(target)
        target.current[label.component] = label
        if label.component == 0:
            target.bbox, target.members, target.center = label.bbox, label.members, label.center
    return targets


@dataclass
class TrainingExport:
    """What :func:`export_training` wrote.

    Attributes
    ----------
    index : astropy.table.Table
        One row per FITS file.
    out_dir : Path
        Output folder.
    n_isolated, n_blends : int
        Files of each kind.
    skipped : list of str
        Why fields were skipped.
    """

    index: Any
    out_dir: Path
    n_isolated: int
    n_blends: int
    skipped: list[str]


def accepted_model(target: LabelledTarget, label: Any) -> str:
    """The model whose components were accepted: the components' labels', else the blend label's."""
    models = [c.model for k, c in sorted(target.current.items()) if k and c.verdict == "clean" and c.model]
    return models[0] if models else label.model


def _safe_stem(name: str) -> str:
    stem = re.sub(r"\.(fits|fit|fts)(\.gz|\.fz)?$", "", name, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "field"


def cutout_header(field_obj: Any, origin: tuple[int, int], band_names: list[str]):
    """FITS header of a ``(C, H, W)`` cut-out at ``origin`` ``(y0, x0)``: shifted celestial WCS + a BAND axis."""
    from astropy.io import fits
    from astropy.wcs import FITSFixedWarning

    header = fits.Header()
    if field_obj.wcs is not None:
        wcs = field_obj.wcs.deepcopy()
        wcs.wcs.crpix = np.asarray(wcs.wcs.crpix, float) - np.array([origin[1], origin[0]], float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            header.update(wcs.to_header(relax=True))
        header["WCSAXES"] = 3
        header["CTYPE3"] = ("BAND", "band index (BANDn keywords name them)")
        header["CRPIX3"], header["CRVAL3"], header["CDELT3"] = 1.0, 1.0, 1.0
    for i, name in enumerate(band_names, start=1):
        header[f"BAND{i}"] = (header_text(name), f"name of plane {i}")
    header["PIXSCALE"] = (float(field_obj.pixel_scale), "arcsec / pixel")
    header["ZEROPT"] = (float(field_obj.zero_point), "AB mag of 1 e-/s")
    header["EXPTIME"] = (float(field_obj.exposure), "s")
    header["GAIN"] = (float(field_obj.gain), "e- / ADU")
    header["PRESET"] = header_text(field_obj.preset.name)
    header["ORIGIN_Y"] = (int(origin[0]), "row of pixel (0,0) in the field, 0-based")
    header["ORIGIN_X"] = (int(origin[1]), "column of pixel (0,0) in the field, 0-based")
    return header


def _cut(field_obj: Any, target: LabelledTarget, margin: int):
    from ..blends import Blend, cut_stamp

    blend = Blend(
        id=0,
        members=np.arange(len(target.members)),
        bbox=target.bbox,
        positions=np.asarray(target.members, float),
        fluxes=np.zeros(len(target.members)),
        blendedness=0.0,
    )
    return cut_stamp(field_obj.data, blend, margin=margin, mask=field_obj.mask)


def _write_stamp(path: Path, stamp: Any, header: Any, meta: dict[str, Any],
                 components: Any = None) -> None:
    from astropy.io import fits

    for key, value in meta.items():
        header[key] = header_text(value) if isinstance(value, str) else value  # names, logins: any character
    primary = fits.PrimaryHDU(np.asarray(stamp.data, np.float32), header=header)
    mask = fits.ImageHDU(np.asarray(stamp.mask, np.uint8), name="MASK")
    hdus = [primary, mask]
    if components is not None:
        images, model, version = components
        hdu = fits.ImageHDU(np.asarray(images, np.float32), name="COMPONENTS")
        hdu.header["MODEL"] = (header_text(model), "deblender that drew the accepted components")
        hdu.header["MODELVER"] = (header_text(version)[:60], "its version now (weights SHA-1)")
        hdu.header["COMMENT"] = "accepted components, (K, bands, y, x) in electrons, on the cut-out's grid"
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)


def accepted_component_images(field_obj: Any, target: LabelledTarget, accepted: list[dict[str, Any]],
                              model: str, stamp: Any, background: Any, version: str) -> Any:
    """The accepted components of a clean blend, drawn again by the judged model on the cut-out's grid.

    The labels keep positions and verdicts, not pixels: the model named in the
    label deblends the blend again (deterministic for the shipped models) and each
    accepted component is the drawn component nearest its labelled position
    (within 2 px). Returns ``(images (K, C, H, W), model, version)`` or None when
    the model is unknown here, with a :class:`LabelExportWarning`.
    """
    from ..blends import Blend
    from ..deblenders.base import BUILTIN_DEBLENDERS, DeblendError
    from ..deblending import deblend
    from .store import model_version

    name = (model or "").split(" ")[0]
    try:
        if name not in BUILTIN_DEBLENDERS:
            raise DeblendError(f"unknown deblender {name!r}")
        blend = Blend(id=0, members=np.arange(len(target.members)), bbox=target.bbox,
                      positions=np.asarray(target.members, float), fluxes=np.zeros(len(target.members)),
                      blendedness=0.0)
        result = deblend(field_obj, blend, model=name, device="cpu", background=background)
    except DeblendError as exc:
        warnings.warn(f"{field_obj.name}: accepted components of the blend at {target.center} not drawn ({exc}); "
                      "their positions are in the index", LabelExportWarning, stacklevel=3)
        return None
    now = model_version(name, str(result.model))
    if version and now != version:
        warnings.warn(f"{field_obj.name}: the blend at {target.center} was judged with {version}, its components "
                      f"are drawn with {now}", LabelExportWarning, stacklevel=3)
    drawn = result.positions + np.asarray(result.origin, float)
    shift = np.asarray(result.origin) - np.asarray(stamp.origin)
    h, w = stamp.data.shape[-2:]
    images = np.zeros((len(accepted), *stamp.data.shape), np.float32)
    for k, entry in enumerate(accepted):
        where = np.array([entry["y"], entry["x"]]) + np.asarray(stamp.origin, float)
        distance = np.hypot(*(drawn - where).T) if len(drawn) else np.zeros(0)
        if not len(distance) or distance.min() > 2.0:
            continue
        component = result.components[int(np.argmin(distance))]
        ch, cw = component.shape[-2:]
        y0, x0 = int(shift[0]), int(shift[1])
        ys, ye, xs, xe = max(y0, 0), min(y0 + ch, h), max(x0, 0), min(x0 + cw, w)
        if ys < ye and xs < xe:
            images[k, :, ys:ye, xs:xe] = component[:, ys - y0:ye - y0, xs - x0:xe - x0]
    return images, name, now


def export_training(
    database: str | Path | LabelStore,
    fields: list[str | Path] | None,
    out_dir: str | Path,
    *,
    margin: int = DEFAULT_MARGIN,
    preset: str = "lsst-i",
    kinds: tuple[str, ...] = ("isolated", "blend"),
    log: Any = None,
) -> TrainingExport:
    """Write FITS cut-outs of the clean isolated galaxies and clean blends, and ``index.ecsv``.

    Parameters
    ----------
    database : str, Path or LabelStore
        The label database.
    fields : list of str or Path, optional
        FITS files of the labelled fields; default: every file path recorded in the
        database that still exists.
    out_dir : str or Path
        Output folder (``isolated/``, ``blends/`` and ``index.ecsv`` are written into it).
    margin : int
        Pixels added around each target's bounding box (cut-outs are square).
    preset : str
        Survey preset for reading the fields (calibration defaults).
    kinds : tuple of str
        What to export: ``"isolated"``, ``"blend"`` or both.
    log : callable, optional
        Called with one line per field.

    Returns
    -------
    TrainingExport

    Raises
    ------
    DeblendInputError
        If the database holds no label, no given field has labels, or nothing is labelled clean.
    """
    from ..checks import check_output_folder

    out = check_output_folder(out_dir, "--out")
    own_store = not isinstance(database, LabelStore)
    if own_store and not Path(database).exists():
        raise DeblendInputError(f"label database {database} does not exist, so it holds no label: "
                                "label blends in the Label panel first")
    store = LabelStore(database, read_only=True) if own_store else database
    made = [folder for folder in (out, out / "isolated", out / "blends") if not folder.exists()]
    written: list[Path] = []
    try:
        return _export_training(store, fields, out, margin, preset, kinds, log or (lambda line: None), written)
    except BaseException:  # nothing half-written: this call's files and folders go
        for path in [*written, out / (INDEX_NAME + ".part")]:
            path.unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        raise
    finally:
        if own_store:
            store.close()


def _export_training(store: LabelStore, fields: list[str | Path] | None, out: Path, margin: int, preset: str,
                     kinds: tuple[str, ...], log: Any, written: list[Path]) -> TrainingExport:
    """:func:`export_training`'s work; every file it writes is appended to ``written``."""
    from astropy.table import Table

    from ..field import read_field
    from ..pipeline.outputs import atomic_path

    if len(store) == 0:
        raise DeblendInputError(
            f"label database {store.path} holds no label: label blends in the Label panel first"
        )
    if not fields:
        recorded = {path for label in store.labels() for path in label.field_path.split("|") if path}
        fields = sorted(p for p in recorded if Path(p).exists())
        if not fields:
            raise DeblendInputError(
                f"none of the field files recorded in {store.path} exists any more: give them with --fields"
            )
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    counts = {"isolated": 0, "blend": 0}
    for path in fields:
        field_obj = read_field(path, preset=preset)
        key = field_key(field_obj)
        check = store.check_field(key)
        if check.n_labels == 0:
            reason = (
                check.warning or f"{field_obj.name}: no label in {store.path.name} for this field's content"
            )
            skipped.append(reason)
            warnings.warn(reason, LabelExportWarning, stacklevel=2)
            log(f"skipped {reason}")
            continue
        if check.warning:
            warnings.warn(check.warning, LabelExportWarning, stacklevel=2)
        stem = _safe_stem(field_obj.name)
        targets = group_by_target(store.labels(key.content_hash))
        background = None
        n_field = 0
        for target in targets:
            if target.verdict != "clean" or target.kind not in kinds:
                continue
            folder = "isolated" if target.kind == "isolated" else "blends"
            counts[target.kind] += 1
            n_field += 1
            stamp = _cut(field_obj, target, margin)
            number = counts[target.kind]
            relative = f"{folder}/{stem}_{'g' if target.kind == 'isolated' else 'b'}{number:05d}.fits"
            (out / folder).mkdir(parents=True, exist_ok=True)
            label = target.current[0]
            origin = np.asarray(stamp.origin, float)
            members = np.asarray(target.members, float) - origin
            accepted, rejected = [], []
            for component, comp_label in sorted(target.current.items()):
                if component == 0 or comp_label.component_position is None:
                    continue
                entry = {
                    "component": component,
                    "y": round(comp_label.component_position[0] - origin[0], 3),
                    "x": round(comp_label.component_position[1] - origin[1], 3),
                    "verdict": comp_label.verdict,
                    "failure": comp_label.failure,
                    "model": comp_label.model,
                }
                (accepted if comp_label.verdict == "clean" else rejected).append(entry)
            meta = {
                "KIND": target.kind,
                "VERDICT": "clean",
                "LABELUID": label.uid,
                "FIELDSHA": key.content_hash,
                "FIELD": field_obj.name,
                "MODEL": label.model,
                "MODELVER": label.model_version[:60],
                "LABELER": label.user,
                "NMEMBERS": len(members),
            }
            header = cutout_header(field_obj, stamp.origin, list(field_obj.band_names))
            drawn = None
            if target.kind == "blend" and accepted:
                if background is None:  # once per field, with the default detection settings
                    from ..detection import run_detection

                    background = run_detection(field_obj).background
                drawn = accepted_component_images(field_obj, target, accepted, accepted_model(target, label),
                                                  stamp, background, label.model_version)
            written.append(out / relative)
            _write_stamp(out / relative, stamp, header, meta, drawn)
            ra = dec = np.nan
            if field_obj.wcs is not None:
                ra, dec = (
                    float(v)
                    for v in field_obj.wcs.all_pix2world([[target.center[1], target.center[0]]], 0)[0]
                )
            rows.append(
                {
                    "file": relative,
                    "kind": target.kind,
                    "field": str(path),
                    "field_hash": key.content_hash,
                    "center_y": target.center[0],
                    "center_x": target.center[1],
                    "ra": ra,
                    "dec": dec,
                    "origin_y": int(stamp.origin[0]),
                    "origin_x": int(stamp.origin[1]),
                    "size": int(stamp.data.shape[-1]),
                    "n_bands": int(field_obj.n_bands),
                    "bands": ",".join(field_obj.band_names),
                    "n_members": len(members),
                    "members": json.dumps(np.round(members, 3).tolist()),
                    "verdict": "clean",
                    "label_uid": label.uid,
                    "user": label.user,
                    "created": label.created,
                    "note": label.note,
                    "model": label.model,
                    "model_version": label.model_version,
                    "n_accepted": len(accepted),
                    "accepted_components": json.dumps(accepted),
                    "rejected_components": json.dumps(rejected),
                    "noise": json.dumps([float(v) for v in np.asarray(field_obj.noise, float)]),
                    "zero_point": float(field_obj.zero_point),
                    "exposure": float(field_obj.exposure),
                    "pixel_scale": float(field_obj.pixel_scale),
                    "padded": bool(stamp.padded),
                }
            )
        log(f"{field_obj.name}: {len(targets)} labelled target(s), {n_field} clean exported")
    if not rows:
        detail = "; ".join(skipped) if skipped else "no isolated galaxy or blend has a current 'clean' label"
        raise DeblendInputError(f"nothing to export from {store.path}: {detail}")
    out.mkdir(parents=True, exist_ok=True)
    index = Table(rows=rows)
    index.meta["comments"] = [
        "napari-deblend export-training: one row per FITS cut-out; positions 0-based (y, x); "
        "members and accepted_components in cut-out pixels, center in field pixels"
    ]
    with atomic_path(out / INDEX_NAME) as tmp:
        index.write(tmp, format="ascii.ecsv", overwrite=True)
    return TrainingExport(
        index=index, out_dir=out, n_isolated=counts["isolated"], n_blends=counts["blend"], skipped=skipped
    )
