"""The label store: one SQLite database of human verdicts on blends, components and isolated galaxies.

Design (what an astronomer can rely on):

- **Every label is committed when made.** Each :meth:`LabelStore.add` is one
  ``BEGIN IMMEDIATE … COMMIT`` transaction in WAL mode with
  ``synchronous=FULL``; once it returns, killing the process loses nothing.
- **Several viewers may share one database.** WAL lets readers and one
  writer work at once; writers wait for each other (``busy_timeout``) instead
  of failing.
- **Labels are history.** A new label for the same target does not overwrite
  the old one: the *current* label is the latest row; :meth:`LabelStore.undo`
  deletes the last row this store made, so the previous verdict comes back.
- **Keys survive re-opening and re-detection.** A field is keyed by a SHA-1 of
  its pixel data (bands, shape, values; not of the file, so a copied, renamed or
  re-compressed file keeps its labels), its file path is kept for information
  and for spotting a file whose content changed. A blend is keyed by the
  positions of its members (field pixels, 0-based ``(y, x)``): after a new
  detection, a stored label attaches to the blend that has the same number of
  members, each within :data:`MEMBER_MATCH_RADIUS` pixels of a stored one. A
  blend that split or merged under new detection settings is a different blend
  and gets no label (the old label stays in the database). Components are keyed
  by index and position within their blend, with the model that produced them.
- **Bad input never destroys data.** A file that is not SQLite, an SQLite file
  of another application, or a database of a newer schema raises
  :class:`~napari_deblend.errors.DeblendInputError` before anything is written.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeblendInputError

#: Schema version written to ``PRAGMA user_version``; a database with a larger one is refused.
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of napari-deblend label databases ("NDLB").
APPLICATION_ID = 0x4E444C42
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Default database name in a project folder.
DEFAULT_DATABASE_NAME = "napari-deblend-labels.sqlite"

VERDICTS = ("clean", "bad", "ambiguous")
FAILURE_TYPES = ("shredded", "merged", "missed", "spurious", "artefact", "other")
#: What a label is about: a blend (whole, or one of its components) or an isolated galaxy.
TARGET_KINDS = ("blend", "isolated")
#: A stored member position matches a detected one within this many pixels.
MEMBER_MATCH_RADIUS = 2.0
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    field_hash TEXT NOT NULL,
    field_path TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('blend', 'isolated')),
    center_y REAL NOT NULL,
    center_x REAL NOT NULL,
    bbox TEXT NOT NULL,
    members TEXT NOT NULL,
    component INTEGER NOT NULL DEFAULT 0,
    component_y REAL,
    component_x REAL,
    verdict TEXT NOT NULL CHECK (verdict IN ('clean', 'bad', 'ambiguous')),
    failure TEXT CHECK (failure IS NULL OR failure IN
        ('shredded', 'merged', 'missed', 'spurious', 'artefact', 'other')),
    note TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    model_version TEXT NOT NULL DEFAULT '',
    user TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    detection TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS labels_field ON labels (field_hash, kind, center_y, center_x);
CREATE INDEX IF NOT EXISTS labels_path ON labels (field_path);
"""

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


# ---- keys -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldKey:
    """How a field is recognised: a content hash of its pixels, and where it was read from.

    Attributes
    ----------
    content_hash : str
        SHA-1 (hex) of the band count, shape and float32 pixel values.
    path : str
        The file(s) the field came from (``|``-separated absolute paths; ``""`` for arrays).
    name : str
        Short display name.
    """

    content_hash: str
    path: str
    name: str = ""


def field_content_hash(data: np.ndarray) -> str:
    """SHA-1 of a field's pixels: shape and native float32 values, C order.

    Parameters
    ----------
    data : numpy.ndarray
        ``(C, H, W)`` or ``(H, W)`` pixels (a :class:`~napari_deblend.field.Field`'s ``data``).

    Returns
    -------
    str
        40 hexadecimal digits.
    """
    array = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
    if array.ndim == 2:
        array = array[None]
    digest = hashlib.sha1(repr(tuple(array.shape)).encode())
    digest.update(array.astype("<f4", copy=False).tobytes())
    return digest.hexdigest()


def field_key(field_obj: Any) -> FieldKey:
    """The :class:`FieldKey` of a :class:`~napari_deblend.field.Field`."""
    paths = [str(Path(p).resolve()) for p in (field_obj.path or [])]
    return FieldKey(field_content_hash(field_obj.data), "|".join(paths), getattr(field_obj, "name", ""))


@dataclass(frozen=True)
class TargetKey:
    """What a label is about, in field pixels: a blend or an isolated galaxy.

    Attributes
    ----------
    kind : str
        ``"blend"`` or ``"isolated"``.
    members : numpy.ndarray
        ``(K, 2)`` member positions ``(y, x)``, 0-based field pixels (one row for an isolated galaxy).
    bbox : tuple of int
        ``(ymin, ymax, xmin, xmax)``, exclusive maxima.
    """

    kind: str
    members: np.ndarray
    bbox: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        """Mean member position ``(y, x)`` (stable under re-detection, unlike the bounding box)."""
        y, x = np.asarray(self.members, float).reshape(-1, 2).mean(axis=0)
        return float(y), float(x)

    @classmethod
    def from_blend(cls, blend: Any) -> TargetKey:
        """Key of a :class:`~napari_deblend.blends.Blend` (one member: an isolated galaxy)."""
        members = np.asarray(blend.positions, float).reshape(-1, 2)
        kind = "blend" if len(members) > 1 else "isolated"
        return cls(kind, members, tuple(int(v) for v in blend.bbox))


def members_match(stored: np.ndarray, current: np.ndarray, radius: float = MEMBER_MATCH_RADIUS) -> bool:
    """Whether two member lists are the same sources: same count, one-to-one within ``radius`` pixels."""
    stored = np.asarray(stored, float).reshape(-1, 2)
    current = np.asarray(current, float).reshape(-1, 2)
    if len(stored) != len(current) or not len(stored):
        return False
    from scipy.optimize import linear_sum_assignment

    distance = np.hypot(*(stored[:, None, :] - current[None, :, :]).transpose(2, 0, 1))
    rows, cols = linear_sum_assignment(distance)
    return bool(np.all(distance[rows, cols] <= radius))


# ---- labels ---------------------------------------------------------------------------------------


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
        """``bad (merged) · peeling v1 · alice · 2024-05-01 12:00`` and the note."""
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


@dataclass
class FieldCheck:
    """What the database holds about a field (see :meth:`LabelStore.check_field`).

    Attributes
    ----------
    n_labels : int
        Labels made on this content.
    n_changed : int
        Labels made on a file of the same path whose content was different: kept in the
        database, not attached to this field.
    warning : str
        A sentence for the user when ``n_changed`` > 0, else ``""``.
    """

    n_labels: int
    n_changed: int
    warning: str = ""


# ---- the store ------------------------------------------------------------------------------------


def _check_database_file(path: Path) -> None:
    """Refuse, without touching it, a file that is not an SQLite database."""
    if path.is_dir():
        raise DeblendInputError(
            f"label database {path} is a directory: expected a file (e.g. {DEFAULT_DATABASE_NAME})"
        )
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as stream:
        head = stream.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise DeblendInputError(
            f"label database {path} is not an SQLite database (it starts with {head[:8]!r}); "
            "choose another file — this one was left untouched"
        )


class LabelStore:
    """Labels in an SQLite database (WAL mode; every label committed when made).

    Parameters
    ----------
    path : str or Path
        Database file; created (with its folder) when missing.
    user : str, optional
        Name recorded with each label (default: the login name).

    Raises
    ------
    DeblendInputError
        If the file is not SQLite, belongs to another application, or has a
        newer schema than this version of napari-deblend reads. The file is not
        modified.

    Examples
    --------
    >>> store = LabelStore("labels.sqlite")                            # doctest: +SKIP
    >>> key = field_key(field)                                         # doctest: +SKIP
    >>> store.add(key, TargetKey.from_blend(blends[0]), "bad", failure="merged", model="peeling")  # doctest: +SKIP
    >>> store.undo()                                                   # doctest: +SKIP
    """

    def __init__(self, path: str | Path, user: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.user = user or default_user()
        self._undo: list[int] = []
        _check_database_file(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise DeblendInputError(f"label database {self.path}: cannot open ({exc})") from None
        self._db.row_factory = sqlite3.Row
        try:
            self._check_schema()
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._create_schema()
        except BaseException:
            self._db.close()
            raise

    # ---- opening ----------------------------------------------------------------------------------
    def _check_schema(self) -> None:
        """Read (never write) the version and owner of an existing database."""
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise DeblendInputError(
                f"label database {self.path} cannot be read as SQLite ({exc}); it was left untouched"
            ) from None
        if version > SCHEMA_VERSION:
            raise DeblendInputError(
                f"label database {self.path} has schema version {version}, newer than the {SCHEMA_VERSION} "
                "this napari-deblend reads: upgrade napari-deblend (the file was left untouched)"
            )
        if tables and app_id != APPLICATION_ID:
            raise DeblendInputError(
                f"label database {self.path} is an SQLite database of another application "
                f"(tables: {', '.join(sorted(tables)[:5])}); choose another file — this one was left untouched"
            )

    def _create_schema(self) -> None:
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created', ?)", (utc_now(),))

    class _Transaction:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")  # take the write lock now (waits up to busy_timeout)
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _transaction(self) -> LabelStore._Transaction:
        return LabelStore._Transaction(self._db)

    def close(self) -> None:
        """Close the connection (labels are already committed)."""
        self._db.close()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- writing ----------------------------------------------------------------------------------
    def add(
        self,
        field: FieldKey,
        target: TargetKey,
        verdict: str,
        *,
        failure: str | None = None,
        note: str = "",
        component: int = 0,
        component_position: Sequence[float] | None = None,
        model: str = "",
        model_version: str = "",
        detection: dict | None = None,
        user: str | None = None,
    ) -> Label:
        """Record a verdict and commit it before returning.

        Parameters
        ----------
        field : FieldKey
            The field (see :func:`field_key`).
        target : TargetKey
            The blend or isolated galaxy.
        verdict : str
            ``clean``, ``bad`` or ``ambiguous``.
        failure : str, optional
            For ``bad``: one of :data:`FAILURE_TYPES` (default ``other``).
        note : str
            Free text.
        component : int
            0 for the whole blend, k >= 1 for component k of ``model``'s result.
        component_position : sequence of float, optional
            ``(y, x)`` of the component in field pixels.
        model, model_version : str
            The deblender whose result was judged.
        detection : dict, optional
            Detection settings, stored for the record.
        user : str, optional
            Default: the store's user.

        Returns
        -------
        Label
            The stored label (with its row id).
        """
        failure = check_verdict(verdict, failure)
        if target.kind not in TARGET_KINDS:
            raise DeblendInputError(f"target kind {target.kind!r}: expected one of {', '.join(TARGET_KINDS)}")
        if component < 0 or (component and target.kind != "blend"):
            raise DeblendInputError(f"component {component}: expected 0, or k >= 1 for a blend's component")
        position = None if component_position is None else tuple(float(v) for v in component_position)
        label = Label(
            id=0,
            uid=uuid.uuid4().hex,
            field_hash=field.content_hash,
            field_path=field.path,
            kind=target.kind,
            center=target.center,
            bbox=tuple(int(v) for v in target.bbox),
            members=np.asarray(target.members, float).reshape(-1, 2),
            component=int(component),
            component_position=position,
            verdict=verdict,
            failure=failure,
            note=str(note or "").strip(),
            model=str(model or ""),
            model_version=str(model_version or ""),
            user=user or self.user,
            created=utc_now(),
            detection=dict(detection or {}),
        )
        with self._transaction() as db:
            cursor = db.execute(self._insert_sql(), label.as_row())
            row_id = int(cursor.lastrowid)
        self._undo.append(row_id)
        return Label(**{**label.__dict__, "id": row_id})

    @staticmethod
    def _insert_sql(ignore: bool = False) -> str:
        columns = ", ".join(LABEL_COLUMNS)
        values = ", ".join(f":{c}" for c in LABEL_COLUMNS)
        return f"INSERT {'OR IGNORE ' if ignore else ''}INTO labels ({columns}) VALUES ({values})"

    def undo(self) -> Label | None:
        """Delete the last label this store made (still present); returns it, or None when there is none."""
        while self._undo:
            row_id = self._undo.pop()
            with self._transaction() as db:
                row = db.execute("SELECT * FROM labels WHERE id = ?", (row_id,)).fetchone()
                if row is None:
                    continue
                db.execute("DELETE FROM labels WHERE id = ?", (row_id,))
            return Label.from_row(row)
        return None

    @property
    def can_undo(self) -> bool:
        """Whether this store made a label that :meth:`undo` can remove."""
        return bool(self._undo)

    def import_labels(self, labels: Iterable[Label]) -> int:
        """Insert labels (e.g. read from ECSV) in one transaction; labels already present (same uid) are skipped.

        Returns
        -------
        int
            Number of labels added.
        """
        rows = [label.as_row() for label in labels]
        for row in rows:
            check_verdict(row["verdict"], row["failure"])
        with self._transaction() as db:
            before = db.total_changes
            db.executemany(self._insert_sql(ignore=True), rows)
            return db.total_changes - before

    # ---- reading ----------------------------------------------------------------------------------
    def labels(self, field_hash: str | None = None, kind: str | None = None) -> list[Label]:
        """Every stored label (history included), oldest first; optionally of one field and kind."""
        sql, args = "SELECT * FROM labels", []
        conditions = []
        if field_hash is not None:
            conditions.append("field_hash = ?")
            args.append(field_hash)
        if kind is not None:
            conditions.append("kind = ?")
            args.append(kind)
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        return [Label.from_row(r) for r in self._db.execute(sql + " ORDER BY created, id", args)]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM labels").fetchone()[0])

    def field_hashes(self) -> list[str]:
        """Content hashes of the fields that have labels."""
        return [r[0] for r in self._db.execute("SELECT DISTINCT field_hash FROM labels ORDER BY field_hash")]

    def check_field(self, field: FieldKey) -> FieldCheck:
        """How many labels belong to this field's content, and how many to an earlier content of its file."""
        n_labels = int(
            self._db.execute(
                "SELECT COUNT(*) FROM labels WHERE field_hash = ?", (field.content_hash,)
            ).fetchone()[0]
        )
        n_changed = 0
        if field.path:
            n_changed = int(
                self._db.execute(
                    "SELECT COUNT(*) FROM labels WHERE field_path = ? AND field_hash != ?",
                    (field.path, field.content_hash),
                ).fetchone()[0]
            )
        warning = ""
        if n_changed:
            warning = (
                f"{field.name or field.path}: {n_changed} label(s) in {self.path.name} were made when this "
                "file had different pixels; they are kept in the database but not attached to the field"
            )
        return FieldCheck(n_labels, n_changed, warning)

    def current_labels(
        self, field: FieldKey | str, targets: Sequence[tuple[int, TargetKey]]
    ) -> dict[int, dict[int, Label]]:
        """The current (latest) label of each target and component.

        Parameters
        ----------
        field : FieldKey or str
            The field (or its content hash).
        targets : sequence of (int, TargetKey)
            Your id for each target (e.g. the blend id) and its key.

        Returns
        -------
        dict
            ``{target id: {component: Label}}`` for targets with at least one label;
            component 0 is the whole blend (or the isolated galaxy).
        """
        content_hash = field if isinstance(field, str) else field.content_hash
        if not targets:
            return {}
        stored = self.labels(content_hash)
        if not stored:
            return {}
        from scipy.spatial import cKDTree

        centers = np.array([label.center for label in stored], float)
        tree = cKDTree(centers)
        out: dict[int, dict[int, Label]] = {}
        for target_id, key in targets:
            near = tree.query_ball_point(key.center, r=MEMBER_MATCH_RADIUS + 1e-6)
            matched: dict[int, Label] = {}
            for index in sorted(near, key=lambda i: (stored[i].created, stored[i].id)):
                label = stored[index]
                if label.kind == key.kind and members_match(label.members, key.members):
                    matched[label.component] = label  # later rows replace earlier ones
            if matched:
                out[int(target_id)] = matched
        return out


_WEIGHT_DIGESTS: dict[str, str] = {}


def model_version(model: str, result_model: str = "") -> str:
    """What identifies the judged model: the result's ``model`` (e.g. ``peeling v1``) and the shipped weights' SHA-1.

    Parameters
    ----------
    model : str
        Registry name (``peeling``, ``sextractor``, ...).
    result_model : str
        :attr:`~napari_deblend.deblenders.base.DeblendResult.model` of the judged result.

    Returns
    -------
    str
        e.g. ``"peeling v1 weights 1a2b3c4d5e"`` (no weights part for models without a weights file).
    """
    text = result_model or model
    if model not in _WEIGHT_DIGESTS:
        weights = Path(__file__).resolve().parent.parent / "deblenders" / "weights" / f"{model}.pt"
        digest = ""
        if model and weights.exists():
            digest = hashlib.sha1(weights.read_bytes()).hexdigest()[:10]
        _WEIGHT_DIGESTS[model] = digest
    return f"{text} weights {_WEIGHT_DIGESTS[model]}" if _WEIGHT_DIGESTS[model] else text
