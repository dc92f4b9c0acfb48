"""The labels of one open field: its blends and isolated galaxies, their current verdicts, labelling and undo.

:class:`FieldLabels` is what the napari Label panel drives (the panel only
turns clicks and keys into these calls); it can be used from a script too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from .store import Label, LabelStore, TargetKey, field_key


class FieldLabels:
    """Labels of one field in a :class:`~napari_deblend.labels.store.LabelStore`.

    Parameters
    ----------
    store : LabelStore
        The database.
    field : Field
        The field (its pixels give the content hash).
    blends : sequence of Blend
        The field's current blends.
    isolated : sequence of Blend, optional
        One-member blends of the isolated galaxies
        (:func:`~napari_deblend.labels.targets.isolated_galaxies`).
    detection : object, optional
        Detection settings (a dataclass or dict), stored with each label.

    Attributes
    ----------
    check : FieldCheck
        Labels of this content, and labels of an earlier content of the same file
        (``check.warning`` says so; those are kept but not attached).
    """

    def __init__(
        self,
        store: LabelStore,
        field: Any,
        blends: Sequence[Any],
        isolated: Sequence[Any] = (),
        detection: Any = None,
    ) -> None:
        self.store = store
        self.key = field_key(field)
        self.check = store.check_field(self.key)
        self.blends = {int(b.id): b for b in blends}
        self.isolated = {int(g.id): g for g in isolated}
        self.isolated_order = [int(g.id) for g in isolated]
        if is_dataclass(detection):
            detection = asdict(detection)
        self.detection = {
            k: v for k, v in dict(detection or {}).items() if isinstance(v, (str, int, float, bool))
        }
        self.current: dict[str, dict[int, dict[int, Label]]] = {"blend": {}, "isolated": {}}
        self.refresh()

    def _targets(self, kind: str) -> dict[int, Any]:
        return self.blends if kind == "blend" else self.isolated

    def refresh(self) -> None:
        """Re-read the current labels from the database (e.g. written by another viewer)."""
        for kind in ("blend", "isolated"):
            targets = [(tid, TargetKey.from_blend(t)) for tid, t in self._targets(kind).items()]
            # a one-member "blend" cannot exist, so TargetKey.from_blend gives the right kind
            self.current[kind] = self.store.current_labels(self.key, targets)

    def label(
        self,
        kind: str,
        target_id: int,
        verdict: str,
        *,
        failure: str | None = None,
        note: str = "",
        component: int = 0,
        component_position: Sequence[float] | None = None,
        model: str = "",
        model_version: str = "",
    ) -> Label:
        """Label a blend (or one of its components) or an isolated galaxy; committed before returning."""
        target = self._targets(kind)[int(target_id)]
        label = self.store.add(
            self.key,
            TargetKey.from_blend(target),
            verdict,
            failure=failure,
            note=note,
            component=component,
            component_position=component_position,
            model=model,
            model_version=model_version,
            detection=self.detection,
        )
        self.current[kind].setdefault(int(target_id), {})[int(component)] = label
        return label

    def undo(self) -> Label | None:
        """Remove the last label made here; the target's previous label (if any) is current again."""
        label = self.store.undo()
        if label is not None:
            self.refresh()
        return label

    def labels_of(self, kind: str, target_id: int) -> dict[int, Label]:
        """``{component: current label}`` of one target (component 0: the whole target)."""
        return self.current[kind].get(int(target_id), {})

    def verdict(self, kind: str, target_id: int, component: int = 0) -> str | None:
        """Current verdict of a target (or component), None if unlabelled."""
        label = self.labels_of(kind, target_id).get(component)
        return label.verdict if label else None

    def blend_verdicts(self) -> dict[int, str]:
        """``{blend id: verdict on the whole blend}`` for labelled blends."""
        return {tid: labels[0].verdict for tid, labels in self.current["blend"].items() if 0 in labels}

    def isolated_verdicts(self) -> dict[int, str]:
        """``{catalogue id: verdict}`` for labelled isolated galaxies."""
        return {tid: labels[0].verdict for tid, labels in self.current["isolated"].items() if 0 in labels}

    def progress(self) -> dict[str, tuple[int, int]]:
        """``{"blend": (labelled, total), "isolated": (labelled, total)}``."""
        return {
            "blend": (len(self.blend_verdicts()), len(self.blends)),
            "isolated": (len(self.isolated_verdicts()), len(self.isolated)),
        }

    def next_isolated(
        self, after: int | None = None, step: int = 1, unlabelled_only: bool = True
    ) -> int | None:
        """The next isolated galaxy (brightest first) after ``after``, wrapping; None when there is none."""
        order = self.isolated_order
        if not order:
            return None
        start = order.index(after) if after in order else -1 if step > 0 else 0
        labelled = self.isolated_verdicts() if unlabelled_only else {}
        for offset in range(1, len(order) + 1):
            candidate = order[(start + step * offset) % len(order)]
            if candidate not in labelled:
                return candidate
        return None
