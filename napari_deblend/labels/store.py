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
- **Keys survive re-opening and re-detection** (:mod:`.keys`). A blend that
  split or merged under new detection settings is a different blend and gets
  no label (the old label stays in the database). Components are keyed by
  index and position within their blend, with the model that produced them.
- **Bad input never destroys data, reading never writes** (:mod:`.database`):
  a file that is not SQLite, of another application, of a newer schema or an
  older layout is refused untouched; ``read_only=True`` opens it read-only;
  SQLite's errors (read-only, locked, disk full) become sentences.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeblendInputError
from .database import (
    APPLICATION_ID,
    BUSY_TIMEOUT_MS,
    DEFAULT_DATABASE_NAME,
    SCHEMA_VERSION,
    SQLITE_MAGIC,
    check_database_file,
    check_schema,
    connect,
    create_schema,
    sqlite_errors,
)
from .keys import (
    MEMBER_MATCH_RADIUS,
    TARGET_KINDS,
    FieldKey,
    TargetKey,
    field_content_hash,
    field_key,
    members_match,
)
from .label import (
    FAILURE_TYPES,
    LABEL_COLUMNS,
    VERDICTS,
    Label,
    check_label_row,
    check_text,
    check_verdict,
    default_user,
    utc_now,
)

__all__ = [  # re-exported: the names this module has always offered
    "APPLICATION_ID", "BUSY_TIMEOUT_MS", "DEFAULT_DATABASE_NAME", "FAILURE_TYPES", "LABEL_COLUMNS",
    "MEMBER_MATCH_RADIUS", "SCHEMA_VERSION", "SQLITE_MAGIC", "TARGET_KINDS", "VERDICTS", "FieldCheck", "FieldKey",
    "Label", "LabelStore", "TargetKey", "check_verdict", "default_user", "field_content_hash", "field_key",
    "members_match", "model_version", "utc_now",
]


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


class LabelStore:
    """Labels in an SQLite database (WAL mode; every label committed when made).

    Parameters
    ----------
    path : str or Path
        Database file; created (with its folder) when missing, unless ``read_only``.
    user : str, optional
        Name recorded with each label (default: the login name).
    read_only : bool
        Open only to read (summary, export): nothing is ever written, so a read-only
        file, folder or disk is fine; the file must exist.
    timeout : float
        Seconds to wait for another program's lock before giving up with a sentence.

    Raises
    ------
    DeblendInputError
        If the file is not SQLite, belongs to another application, has a newer
        schema or an older layout than this version of napari-deblend reads, or
        cannot be opened. The file is not modified.

    Examples
    --------
    >>> store = LabelStore("labels.sqlite")                            # doctest: +SKIP
    >>> key = field_key(field)                                         # doctest: +SKIP
    >>> store.add(key, TargetKey.from_blend(blends[0]), "bad", failure="merged", model="peeling")  # doctest: +SKIP
    >>> store.undo()                                                   # doctest: +SKIP
    """

    def __init__(self, path: str | Path, user: str | None = None, *, read_only: bool = False,
                 timeout: float = BUSY_TIMEOUT_MS / 1000) -> None:
        self.path = Path(path).expanduser()
        self.user = user or default_user()
        self.read_only = read_only
        self.timeout = float(timeout)
        self._undo: list[int] = []
        check_database_file(self.path, read_only=read_only)
        created = not self.path.exists()
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DeblendInputError(f"label database {self.path}: cannot make its folder "
                                        f"({exc.strerror or exc}): expected a folder you may write") from None
        self._db = connect(self.path, read_only, self.timeout)
        try:
            with self._errors("opening it"):
                self._db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                has_tables = check_schema(self._db, self.path)
                if read_only and not has_tables:
                    raise DeblendInputError(f"label database {self.path} holds no label table: "
                                            "expected a database made by the Label panel")
                if not read_only:
                    self._db.execute("PRAGMA journal_mode = WAL")
                    self._db.execute("PRAGMA synchronous = FULL")
                    create_schema(self._db)
        except BaseException:
            self._db.close()
            if created:  # a database this call began to create is not left half-made
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            raise

    def _errors(self, action: str):
        """SQLite errors in the block as one sentence naming this database (see :func:`.database.sqlite_errors`)."""
        return sqlite_errors(self.path, action, self.timeout)

    class _Transaction:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")  # take the write lock now (waits up to busy_timeout)
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            if exc_type is None:
                self.db.execute("COMMIT")
            elif self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the error that brought us here is the one to report
                    self.db.execute("ROLLBACK")

    def _transaction(self) -> LabelStore._Transaction:
        if self.read_only:
            raise DeblendInputError(f"label database {self.path} was opened read-only: expected it opened for "
                                    "writing (read_only=False) to change labels")
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
        target.check()
        if isinstance(component, bool) or not isinstance(component, (int, np.integer)):
            raise DeblendInputError(f"component {component!r}: expected a whole number")
        if component < 0 or (component and target.kind != "blend"):
            raise DeblendInputError(f"component {component}: expected 0, or k >= 1 for a blend's component")
        position = None if component_position is None else tuple(float(v) for v in component_position)
        if position is not None and (len(position) != 2 or not np.isfinite(position).all()):
            raise DeblendInputError(f"component_position {component_position!r}: expected finite (y, x) field pixels")
        for name, text in (("note", note), ("model", model), ("model_version", model_version), ("user", user)):
            check_text(text or "", name)
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
        row = label.as_row()
        check_label_row(row)
        with self._errors("saving the label (it was not saved)"), self._transaction() as db:
            cursor = db.execute(self._insert_sql(), row)
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
            row_id = self._undo[-1]
            with self._errors("undoing the last label (it is still there)"), self._transaction() as db:
                row = db.execute("SELECT * FROM labels WHERE id = ?", (row_id,)).fetchone()
                if row is not None:
                    db.execute("DELETE FROM labels WHERE id = ?", (row_id,))
            self._undo.pop()
            if row is not None:
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
        for number, row in enumerate(rows, start=1):
            check_label_row(row, where=f"label {number}")
        with self._errors("adding the labels (none was added)"), self._transaction() as db:
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
        with self._errors("reading the labels"):
            rows = self._db.execute(sql + " ORDER BY created, id", args).fetchall()
        return [Label.from_row(r) for r in rows]

    def __len__(self) -> int:
        with self._errors("counting the labels"):
            return int(self._db.execute("SELECT COUNT(*) FROM labels").fetchone()[0])

    def field_hashes(self) -> list[str]:
        """Content hashes of the fields that have labels."""
        with self._errors("reading the labels"):
            return [r[0] for r in self._db.execute("SELECT DISTINCT field_hash FROM labels ORDER BY field_hash")]

    def check_field(self, field: FieldKey) -> FieldCheck:
        """How many labels belong to this field's content, and how many to an earlier content of its file."""
        with self._errors("reading the labels"):
            n_labels = int(
                self._db.execute("SELECT COUNT(*) FROM labels WHERE field_hash = ?", (field.content_hash,)).fetchone()[0]
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
    """What identifies the judged model: the result's ``model`` (e.g. ``peeling sha256:59395eeef700``, which names
    its weights), else the registry name and the shipped weights' SHA-1.

    Parameters
    ----------
    model : str
        Registry name (``peeling``, ``sextractor``, ...).
    result_model : str
        :attr:`~napari_deblend.deblenders.base.DeblendResult.model` of the judged result.

    Returns
    -------
    str
        ``result_model`` when it names its weights (``sha256:``), else e.g. ``"peeling weights 1a2b3c4d5e"``
        (no weights part for models without a weights file).
    """
    text = result_model or model
    if "sha256:" in text:
        return text
    if model not in _WEIGHT_DIGESTS:
        weights = Path(__file__).resolve().parent.parent / "deblenders" / "weights" / f"{model}.pt"
        digest = ""
        if model and weights.exists():
            digest = hashlib.sha1(weights.read_bytes()).hexdigest()[:10]
        _WEIGHT_DIGESTS[model] = digest
    return f"{text} weights {_WEIGHT_DIGESTS[model]}" if _WEIGHT_DIGESTS[model] else text
