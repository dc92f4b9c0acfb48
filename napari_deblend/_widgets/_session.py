"""Per-viewer state shared by the dock widgets: the field, its detections, its blends, the selection.

The *groups* a user can deblend are sep's blends (``blends``) and the single
detections offered to the deblender (``singles``, numbered after the blends;
which ones: ``candidate_mode``, see :mod:`napari_deblend.candidates`). A result
keeps the group's own components, each with its parent detection and its
catalogue id (:meth:`DeblendSession.own_children`, :mod:`napari_deblend.parents`),
the same ids as a headless run's catalogue.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
from psygnal import Signal

from ..blends import Blend
from ..candidates import DEFAULT_CANDIDATES, check_mode, find_candidates, psf_fwhm_pixels
from ..detection import DetectionResult
from ..field import Field
from ..parents import (
    child_ids,
    child_index,
    group_children,
    id_stride,
    min_child_separation,
    position_numbers,
)


@dataclass
class _Detections:
    field: Field
    result: DetectionResult
    blends: list[Blend]
    source_layer: Any = None
    layers: dict[str, Any] = dc_field(default_factory=dict)


class DeblendSession:
    """What the widgets of one viewer share.

    Signals
    -------
    detected(DeblendSession)
        New detections (and blends) are available.
    blend_selected(int)
        A blend was selected (its id; 0 for none).
    deblended(int, str)
        A deblending result for (blend id, model name) is available in ``results``.
    labels_changed()
        ``blend_verdicts`` changed (the Label panel labelled, undid or loaded labels).
    candidates_changed()
        ``singles`` changed (another ``candidate_mode``).
    """

    detected = Signal(object)
    blend_selected = Signal(int)
    deblended = Signal(int, str)
    labels_changed = Signal()
    candidates_changed = Signal()

    def __init__(self, viewer: Any) -> None:
        self._viewer = weakref.ref(viewer)
        self.detections: _Detections | None = None
        self._singles_mode = ""
        self._single_of_detection: dict[int, int] = {}
        #: catalogue number (a headless run's NUMBER: rank by position) of each detection, by row (sep label - 1)
        self.numbers = np.zeros(0, np.int64)
        self.selected_blend: int = 0
        #: (blend id, model name) -> DeblendResult of the latest run
        self.results: dict[tuple[int, str], Any] = {}
        #: (blend id, model name) -> earlier results kept by "keep previous results"
        self.kept: dict[tuple[int, str], list[Any]] = {}
        #: truth catalogue of a simulated field (astropy Table) and where it came from
        self.truth: Any = None
        self.truth_path: str | None = None
        self._truth_stamps: dict[tuple[int, tuple[int, int], tuple[int, int]], Any] = {}
        #: blend id -> current verdict on the whole blend ("clean", "bad", "ambiguous"), set by the Label panel
        self.blend_verdicts: dict[int, str] = {}
        #: which single detections are offered besides sep's blends ("extended", "all", "blends")
        self.candidate_mode: str = DEFAULT_CANDIDATES
        #: the single detections offered, as one-member blends numbered after the blends
        self.singles: list[Blend] = []
        #: group ids in the order the Blend browser shows them (n / p step through it), empty: id order
        self.browse_order: list[int] = []

    @property
    def viewer(self) -> Any:
        """The viewer (None once it is gone)."""
        return self._viewer()

    @property
    def blends(self) -> list[Blend]:
        """sep's blends of the current detection (empty before detection)."""
        return self.detections.blends if self.detections else []

    @property
    def groups(self) -> list[Blend]:
        """Everything that can be deblended: sep's blends, then the single detections offered."""
        return [*self.blends, *self.singles]

    def blend(self, blend_id: int) -> Blend | None:
        """The blend or offered single detection with this id, or None."""
        blends = self.blends
        if 0 < blend_id <= len(blends) and blends[blend_id - 1].id == blend_id:
            return blends[blend_id - 1]
        for blend in self.groups:
            if blend.id == blend_id:
                return blend
        return None

    def set_candidate_mode(self, mode: str) -> None:
        """Offer other single detections (``"extended"``, ``"all"`` or ``"blends"``) and announce it."""
        check_mode(mode)
        if mode == self.candidate_mode and (self.detections is None or self._singles_mode == mode):
            return
        self.candidate_mode = mode
        if self.detections is not None:
            self._find_singles()
            self.candidates_changed.emit()

    def _find_singles(self) -> None:
        detections = self.detections
        result = detections.result
        self.singles = find_candidates(
            result.catalog, detections.blends, self.candidate_mode, detection_rms=result.detection_rms,
            fwhm_pixels=psf_fwhm_pixels(detections.field.preset, detections.field.pixel_scale),
            detection=result.preset, shape=detections.field.shape,
        )  # fmt: skip
        self._singles_mode = self.candidate_mode
        self._single_of_detection = {int(b.members[0]): b.id for b in self.singles}

    def own_children(self, result: Any) -> Any:
        """A group's result with only its own components, their parents and catalogue ids (``info["ids"]``).

        Components of neighbours that fell on the stamp are left out (see
        :func:`napari_deblend.parents.group_children`); safe to call off the UI thread.
        """
        detections = self.detections
        blend = self.blend(int(result.blend_id))
        if detections is None or blend is None:
            return result
        separation = min_child_separation(psf_fwhm_pixels(detections.field.preset, detections.field.pixel_scale))
        kept = group_children(result, blend, detections.result.segmentation, min_separation=separation)
        parents = self.numbers[np.asarray(kept.info["parents"], int) - 1]  # sep's labels -> catalogue numbers
        kept.info["parents"] = parents
        kept.info["ids"] = child_ids(parents, child_index(parents), id_stride(len(self.numbers)))
        return kept

    def split_detections(self, blend_id: int) -> dict[str, list[int]]:
        """Model -> catalogue numbers of the detections of a group its latest result split into two or more galaxies.

        Pieces (:func:`napari_deblend.parents.piece_children`) are no galaxies of their own, as in the run's catalogue.
        """
        out = {}
        for model, result in self.results_for(blend_id).items():
            parents = np.asarray(result.info.get("parents", []), int)
            pieces = np.asarray(result.info.get("pieces", np.zeros(len(parents), bool)), bool)
            values, counts = np.unique(parents[~pieces], return_counts=True)  # galaxies of their own, as the catalogue
            out[model] = [int(v) for v in values[counts >= 2]]
        return out

    def set_detections(self, detections: _Detections) -> None:
        """Replace the detections and announce them."""
        self.detections = detections
        self.selected_blend = 0
        self.results.clear()
        self.kept.clear()
        self._truth_stamps.clear()
        self.blend_verdicts = {}
        self.browse_order = []
        catalog = detections.result.catalog
        self.numbers = position_numbers(catalog["y"], catalog["x"]) if len(catalog) else np.zeros(0, np.int64)
        self._find_singles()
        self._find_truth(detections.field)
        self.detected.emit(self)

    def _find_truth(self, field: Field) -> None:
        """Load the truth catalogue beside the field's FITS file (``<name>_truth.ecsv``), if there is one."""
        from ..truth import read_truth_catalog, truth_catalog_path

        path = truth_catalog_path(field.path[0] if field.path else None)
        if path is None or str(path) == self.truth_path:
            return
        try:
            self.set_truth(read_truth_catalog(path), str(path))
        except Exception as exc:  # a broken sidecar must not stop detection
            from napari.utils.notifications import show_warning

            show_warning(f"napari-deblend: ignoring the truth catalogue beside the field: {exc}")

    def set_truth(self, table: Any, path: str | None = None) -> None:
        """Use this truth catalogue (field pixel positions) for the truth rows of comparisons."""
        self.truth, self.truth_path = table, path
        self._truth_stamps.clear()

    def truth_for(self, result: Any) -> Any:
        """True components in a result's stamp (None without a truth catalogue or galaxy), cached."""
        if self.truth is None:
            return None
        from ..truth import truth_for_stamp

        origin = tuple(int(v) for v in result.origin)
        shape = tuple(int(v) for v in result.blend.shape[-2:])
        key = (int(result.blend_id), origin, shape)
        if key not in self._truth_stamps:
            preset = self.detections.field.preset if self.detections else None
            self._truth_stamps[key] = truth_for_stamp(self.truth, origin, shape, preset=preset,
                                                      n_bands=result.blend.shape[0],
                                                      footprint=self._blend_footprint(result.blend_id, origin, shape))
        return self._truth_stamps[key]

    def add_result(self, blend_id: int, model: str, result: Any, keep: bool = False) -> None:
        """Store a deblending result (keeping the previous one when ``keep``) and announce it."""
        key = (int(blend_id), model)
        if keep and key in self.results:
            self.kept.setdefault(key, []).append(self.results[key])
        elif not keep:
            self.kept.pop(key, None)
        self.results[key] = result
        self.deblended.emit(int(blend_id), model)

    def results_for(self, blend_id: int) -> dict[str, Any]:
        """Model name -> result, for one blend."""
        return {model: r for (b, model), r in self.results.items() if b == blend_id}

    def _blend_footprint(self, blend_id: int, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray | None:
        """Stamp-shaped bool mask of the blend members' segmentation (None when unknown)."""
        blend = self.blend(blend_id)
        if blend is None or self.detections is None:
            return None
        seg = self.detections.result.segmentation
        labels = np.asarray(blend.members, int)  # catalogue ids are the segmentation labels
        footprint = np.zeros(shape, bool)
        y0, x0 = origin
        ys, xs = slice(max(y0, 0), min(y0 + shape[0], seg.shape[0])), slice(max(x0, 0), min(x0 + shape[1], seg.shape[1]))
        footprint[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0] = np.isin(seg[ys, xs], labels)
        return footprint

    def select(self, blend_id: int) -> None:
        """Select a blend by id (0 clears) and announce it."""
        if blend_id and self.blend(blend_id) is None:
            return
        self.selected_blend = int(blend_id)
        self.blend_selected.emit(self.selected_blend)

    def step(self, offset: int) -> None:
        """Select the next (+1) or previous (-1) group in the browser's order (else id order), wrapping around."""
        ids = list(self.browse_order) or [b.id for b in self.groups]
        if not ids:
            return
        if self.selected_blend in ids:
            index = (ids.index(self.selected_blend) + offset) % len(ids)
        else:
            index = 0 if offset > 0 else len(ids) - 1
        self.select(ids[index])

    def blend_at(self, data_position: np.ndarray) -> int:
        """Id of the group whose member footprint (or a blend whose bounding box) holds ``(y, x)``; 0 if none."""
        if not self.detections:
            return 0
        seg = self.detections.result.segmentation
        y, x = (int(round(v)) for v in data_position[-2:])
        if 0 <= y < seg.shape[0] and 0 <= x < seg.shape[1] and seg[y, x] > 0:
            cat = self.detections.result.catalog
            blend_id = int(cat["blend_id"][seg[y, x] - 1])
            if blend_id:
                return blend_id
            single = self._single_of_detection.get(int(seg[y, x]), 0)
            if single:
                return single
        for blend in self.blends:
            ymin, ymax, xmin, xmax = blend.bbox
            if ymin <= y < ymax and xmin <= x < xmax:
                return blend.id
        return 0


_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> DeblendSession:
    """The session of a viewer, created on first use."""
    session = _sessions.get(viewer)
    if session is None:
        session = _sessions[viewer] = DeblendSession(viewer)
    return session
