"""One label (a verdict on a blend, a component or an isolated galaxy) as stored, and the checks of its fields."""

from __future__ import annotations

import getpass
import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DeblendInputError

VERDICTS = ("clean", "bad", "ambiguous")
FAILURE_TYPES = ("shredded", "merged", "missed", "spurious", "artefact", "other")

#: Columns of a label row, in table order (also the ECSV columns).
LABEL_COLUMNS = (
    "uid",
    "field_hash",
    "field_path",
    "kind",
    "center_y",
    "center_x",
    "bbox",
    "members",
    "component",
    "component_y",
    "component_x",
    "verdict",
    "failure",
    "note",
    "model",
    "model_version",
    "user",
    "created",
    "detection",
)


@dataclass(frozen=True)
class Label:
    """One verdict, as stored.

    Attributes
    ----------
    id : int
        Row id in this database (0 for a label not stored yet).
    uid : str
        Globally unique id (survives export and import).
    field_hash, field_path : str
        The field (see :class:`FieldKey`).
    kind : str
        ``"blend"`` or ``"isolated"``.
    center : tuple of float
        Mean member position ``(y, x)``.
    bbox : tuple of int
        ``(ymin, ymax, xmin, xmax)`` of the target when labelled.
    members : numpy.ndarray
        ``(K, 2)`` member positions ``(y, x)``.
    component : int
        0 for the whole blend (or the isolated galaxy); k >= 1 for component k of ``model``'s result.
    component_position : tuple of float or None
        ``(y, x)`` of that component in field pixels.
    verdict : str
        ``clean``, ``bad`` or ``ambiguous``.
    failure : str or None
        Failure type of a ``bad`` verdict (see :data:`FAILURE_TYPES`).
    note : str
        Free text.
    model, model_version : str
        The deblender whose result was judged (empty when only detections were judged).
    user : str
        Who labelled.
    created : str
        UTC time, ISO 8601 with microseconds.
    detection : dict
        Detection settings in force (preset, thresholds), for the record.
    """

    id: int
    uid: str
    field_hash: str
    field_path: str
    kind: str
    center: tuple[float, float]
    bbox: tuple[int, int, int, int]
    members: np.ndarray
    component: int
    component_position: tuple[float, float] | None
    verdict: str
    failure: str | None
    note: str
    model: str
    model_version: str
    user: str
    created: str
    detection: dict = field(default_factory=dict)

    def describe(self) -> str:
        """``bad (merged) · peeling sha256:59395eeef700 · alice · 2024-05-01 12:00`` and the note."""
        verdict = f"{self.verdict} ({self.failure})" if self.failure else self.verdict
        parts = [verdict]
        if self.model:
            parts.append(self.model_version or self.model)
        parts += [self.user, self.created[:16].replace("T", " ")]
        text = " · ".join(p for p in parts if p)
        return f"{text} — {self.note}" if self.note else text

    def as_row(self) -> dict[str, Any]:
        """The database / ECSV row of this label."""
        cy, cx = self.component_position if self.component_position is not None else (None, None)
        return {
            "uid": self.uid,
            "field_hash": self.field_hash,
            "field_path": self.field_path,
            "kind": self.kind,
            "center_y": float(self.center[0]),
            "center_x": float(self.center[1]),
            "bbox": json.dumps([int(v) for v in self.bbox]),
            "members": json.dumps(np.round(np.asarray(self.members, float), 3).tolist()),
            "component": int(self.component),
            "component_y": cy,
            "component_x": cx,
            "verdict": self.verdict,
            "failure": self.failure,
            "note": self.note,
            "model": self.model,
            "model_version": self.model_version,
            "user": self.user,
            "created": self.created,
            "detection": json.dumps(self.detection, sort_keys=True),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any] | sqlite3.Row) -> Label:
        """A label from a database / ECSV row."""
        row = dict(row)
        position = None
        if row.get("component_y") is not None and row.get("component_x") is not None:
            position = (float(row["component_y"]), float(row["component_x"]))
        return cls(
            id=int(row.get("id") or 0),
            uid=str(row["uid"]),
            field_hash=str(row["field_hash"]),
            field_path=str(row["field_path"]),
            kind=str(row["kind"]),
            center=(float(row["center_y"]), float(row["center_x"])),
            bbox=tuple(int(v) for v in json.loads(row["bbox"])),
            members=np.asarray(json.loads(row["members"]), float).reshape(-1, 2),
            component=int(row["component"]),
            component_position=position,
            verdict=str(row["verdict"]),
            failure=row["failure"] or None,
            note=str(row.get("note") or ""),
            model=str(row.get("model") or ""),
            model_version=str(row.get("model_version") or ""),
            user=str(row.get("user") or ""),
            created=str(row["created"]),
            detection=json.loads(row.get("detection") or "{}"),
        )


def check_verdict(verdict: str, failure: str | None) -> str | None:
    """Validate a verdict and its failure type; returns the failure type to store."""
    if verdict not in VERDICTS:
        raise DeblendInputError(f"verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
    if failure in ("", None):
        failure = None
    if verdict != "bad":
        if failure is not None:
            raise DeblendInputError(
                f"failure type {failure!r} given with verdict {verdict!r}: only 'bad' has one"
            )
        return None
    if failure is None:
        failure = "other"
    if failure not in FAILURE_TYPES:
        raise DeblendInputError(f"failure type {failure!r}: expected one of {', '.join(FAILURE_TYPES)}")
    return failure


def utc_now() -> str:
    """Current UTC time, ISO 8601 with microseconds (sorts as text)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def default_user() -> str:
    """The login name (``"unknown"`` when there is none)."""
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def check_text(value: Any, name: str) -> str:
    """``value`` as text that UTF-8 (SQLite, ECSV) can hold; a sentence naming ``name`` for a lone surrogate.

    Raises
    ------
    DeblendInputError
        ``value`` is not a string, or holds a lone surrogate (half of a UTF-16 pair, e.g. from a
        clipboard or a badly decoded file), which no UTF-8 file can store.
    """
    if not isinstance(value, str):
        raise DeblendInputError(f"{name} is {type(value).__name__}: expected text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DeblendInputError(
            f"{name} holds a character that cannot be stored (lone surrogate U+{ord(value[exc.start]):04X} at "
            f"position {exc.start}): expected text without it"
        ) from None
    return value


def check_label_row(row: dict[str, Any], where: str = "label") -> None:
    """Refuse a label row that would fail inside SQLite or come back different: text, verdict, finite positions."""
    for name in ("uid", "field_hash", "field_path", "kind", "bbox", "members", "verdict", "note", "model",
                 "model_version", "user", "created", "detection"):
        check_text(row[name], f"{where} {name}")
    if row["failure"] is not None:
        check_text(row["failure"], f"{where} failure")
    check_verdict(row["verdict"], row["failure"])
    for name in ("center_y", "center_x"):
        if not np.isfinite(row[name]):
            raise DeblendInputError(f"{where} {name} is {row[name]}: expected a finite position in field pixels")
    if not np.isfinite(np.asarray(json.loads(row["members"]), float)).all():
        raise DeblendInputError(f"{where} members {row['members']}: NaN or inf position(s): expected finite field pixels")
