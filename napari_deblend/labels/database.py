"""The SQLite file behind a label store: its schema, how it is opened (for writing or only reading), its errors.

- **Bad input never destroys data.** A file that is not SQLite, an SQLite file
  of another application, a database of a newer schema or of an older layout
  raises :class:`~napari_deblend.errors.DeblendInputError` before anything is
  written.
- **Reading never writes.** A database opened for reading (summary, export,
  ``export-training``) is opened read-only, so a read-only file, folder or disk
  is fine.
- **SQLite's errors become sentences** naming the file and what to do
  (:func:`sqlite_errors`): read-only, locked by another program, disk full,
  damaged.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from ..errors import DeblendInputError
from .label import LABEL_COLUMNS, utc_now

#: Schema version written to ``PRAGMA user_version``; a database with a larger one is refused.
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of napari-deblend label databases ("NDLB").
APPLICATION_ID = 0x4E444C42
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Default database name in a project folder.
DEFAULT_DATABASE_NAME = "napari-deblend-labels.sqlite"
BUSY_TIMEOUT_MS = 30_000

SCHEMA = """
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


def check_database_file(path: Path, read_only: bool = False) -> None:
    """Refuse, without touching it, a path that is no SQLite database (or, for reading, no file at all)."""
    if path.is_dir():
        raise DeblendInputError(
            f"label database {path} is a directory: expected a file (e.g. {DEFAULT_DATABASE_NAME})"
        )
    if read_only and not path.exists():
        raise DeblendInputError(f"label database {path}: no such file")
    if not path.exists():
        return
    try:
        with open(path, "rb") as stream:
            head = stream.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise DeblendInputError(
            f"label database {path} cannot be read ({exc.strerror or exc}): expected a file you may read"
        ) from None
    if not head:
        if read_only:
            raise DeblendInputError(f"label database {path} is an empty file: expected a label database")
        return
    if head != SQLITE_MAGIC:
        raise DeblendInputError(
            f"label database {path} is not an SQLite database (it starts with {head[:8]!r}); "
            "choose another file — this one was left untouched"
        )


def connect(path: Path, read_only: bool, timeout: float) -> sqlite3.Connection:
    """Open the database for writing, or only to read (the caller never writes; works on read-only files).

    To read, the file is opened without creating it (``mode=rw``) where that works, so that
    SQLite removes the WAL's side files when the connection closes; on a read-only file,
    folder or disk it is opened ``mode=ro``, and if even that cannot set up the WAL's
    shared memory, as the file is on disk (``immutable=1``).
    """
    if read_only:
        target = f"file:{quote(str(path.resolve()))}"
        for mode in ("mode=rw", "mode=ro", "mode=ro&immutable=1"):
            connection = _connect(f"{target}?{mode}", path, timeout, quiet=mode != "mode=ro&immutable=1")
            if connection is None:
                continue
            try:
                connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:  # read-only file or folder: the next, more careful mode
                connection.close()
                continue
            except sqlite3.DatabaseError:  # not a database: check_schema says so
                pass
            break
    else:
        connection = _connect(str(path), path, timeout, uri=False)
    connection.row_factory = sqlite3.Row
    return connection


def _connect(target: str, path: Path, timeout: float, uri: bool = True, quiet: bool = False):
    """A connection, or (``quiet``) None when SQLite cannot open the file this way."""
    try:
        return sqlite3.connect(target, timeout=timeout, isolation_level=None, check_same_thread=False, uri=uri)
    except sqlite3.Error as exc:
        if quiet:
            return None
        raise DeblendInputError(f"label database {path}: cannot open ({exc}); expected a file you may read") from None


def check_schema(db: sqlite3.Connection, path: Path) -> bool:
    """Read (never write) the version, owner and layout of a database; returns whether it holds our tables."""
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {r[1] for r in db.execute("PRAGMA table_info(labels)")} if "labels" in tables else set()
    except sqlite3.DatabaseError as exc:
        raise DeblendInputError(
            f"label database {path} cannot be read as SQLite ({exc}); it was left untouched"
        ) from None
    if version > SCHEMA_VERSION:
        raise DeblendInputError(
            f"label database {path} has schema version {version}, newer than the {SCHEMA_VERSION} "
            "this napari-deblend reads: upgrade napari-deblend (the file was left untouched)"
        )
    if tables and app_id != APPLICATION_ID:
        raise DeblendInputError(
            f"label database {path} is an SQLite database of another application "
            f"(tables: {', '.join(sorted(tables)[:5])}); choose another file — this one was left untouched"
        )
    missing = [c for c in LABEL_COLUMNS if columns and c not in columns]
    if tables and ("labels" not in tables or missing):
        what = f"its labels table lacks {', '.join(missing)}" if "labels" in tables else "it has no labels table"
        raise DeblendInputError(
            f"label database {path} has an older layout ({what}): expected schema version {SCHEMA_VERSION}; "
            "export its labels with the napari-deblend that made it and import them here (the file was left untouched)"
        )
    return "labels" in tables


def create_schema(db: sqlite3.Connection) -> None:
    """Create the tables (if missing) and stamp the owner and version, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created', ?)", (utc_now(),))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@contextlib.contextmanager
def sqlite_errors(path: Path, action: str, timeout: float) -> Iterator[None]:
    """Turn SQLite's errors inside the block into one :class:`DeblendInputError` naming the file and what to do.

    Parameters
    ----------
    path : Path
        The database.
    action : str
        What was being done, e.g. ``"saving the label"`` (``"nothing was saved"`` follows for writes).
    timeout : float
        Seconds SQLite waited for a lock, for the message.
    """
    try:
        yield
    except sqlite3.Error as exc:
        raise DeblendInputError(f"label database {path}: {describe_sqlite_error(exc, timeout)} while {action}") from None


def describe_sqlite_error(exc: sqlite3.Error, timeout: float) -> str:
    """What an SQLite error means for the user, and what to do about it."""
    message = str(exc)
    lower = message.lower()
    if "readonly" in lower or "read-only" in lower:
        return (f"the file is read-only ({message}); expected a file and folder you may write, "
                "or open it only to read (summary, export)")
    if "locked" in lower or "busy" in lower:
        return (f"locked by another program for {timeout:g} s ({message}); close the other program "
                "(or its open transaction) and try again")
    if "full" in lower:
        return f"the disk is full ({message}); free some space and try again"
    if "malformed" in lower or "not a database" in lower or "corrupt" in lower:
        return f"the file is damaged ({message}); restore it from a copy or an ECSV export"
    if "no such column" in lower or "no such table" in lower:
        return f"its layout is not schema version {SCHEMA_VERSION} ({message})"
    if "unable to open" in lower or "disk i/o" in lower:
        return f"the file cannot be opened or read ({message}); check its folder, disk and permissions"
    return f"SQLite error ({message})"
