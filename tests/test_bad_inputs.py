"""Bad input, table-driven: every case is one sentence on one line, exit code 2, no traceback, nothing half-written.

Each case makes its own files in a fresh folder, runs ``napari-deblend ...`` there and checks: the
exit code (2; 1 for a ``run`` whose field failed, by design), exactly one line on stderr naming what
was wrong, no traceback, no file created or changed in the folder (nothing half-written) and no
temporary file left behind.  pytest runs the cases in this process (through ``cli.main``; the ones
needing a file-size limit, a signal or a second process as subprocesses).  As a script it runs every
case as a real subprocess and counts::

    python tests/test_bad_inputs.py          # prints "N cases tried, M clean" (exit 1 unless all clean)

The ``LIBRARY_CASES`` call the library the same way: each must raise one ``DeblendInputError`` sentence.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if __name__ == "__main__":  # run as a script from anywhere: this checkout first on the path
    sys.path.insert(0, str(REPO))

from napari_deblend.cli import main  # noqa: E402
from napari_deblend.errors import DeblendInputError  # noqa: E402
from napari_deblend.field import Field, write_field  # noqa: E402

try:
    from .conftest import gaussian_field
except ImportError:  # run as a script
    from tests.conftest import gaussian_field

SOURCES = [(40, 40, 4e5, 2.0), (100, 60, 3e5, 2.5), (80, 90, 6e5, 3.0), (80, 102, 3e5, 2.5)]
TEMP_PREFIX = "napari_deblend_"


# ---- files the cases make ------------------------------------------------------------------------


def field_file(folder: Path, name: str = "f.fits") -> Path:
    """A 128x128 field with an isolated galaxy and a blend."""
    return write_field(gaussian_field(SOURCES, shape=(128, 128)), folder / name)


def constant_file(folder: Path, value: float, name: str) -> Path:
    return write_field(Field(np.full((1, 128, 128), value, np.float32)), folder / name)


def label_database(folder: Path, name: str = "labels.sqlite", clean: bool = True, note: str = "") -> Path:
    """A label database with clean labels on the blend and the isolated galaxies of ``f.fits``."""
    from napari_deblend import detect, find_blends, read_field
    from napari_deblend.labels import LabelStore
    from napari_deblend.labels.book import FieldLabels
    from napari_deblend.labels.targets import isolated_galaxies

    path = folder / "f.fits" if (folder / "f.fits").exists() else field_file(folder)
    field = read_field(path)
    cat, seg = detect(field)
    blends = find_blends(cat, seg)
    with LabelStore(folder / name, user="tester") as store:
        book = FieldLabels(store, field, blends, isolated_galaxies(cat, field.shape))
        book.label("blend", blends[0].id, "clean" if clean else "bad", model="sextractor", note=note)
    return folder / name


def sqlite_file(folder: Path, name: str, statements: list[str]) -> Path:
    """An SQLite file made with ``statements`` (another application's, a newer or an older layout)."""
    db = sqlite3.connect(folder / name)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()
    return folder / name


class _Hostile:
    """Unpickling this runs ``os.mkdir(marker)``: what a crafted checkpoint could do with a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def hostile_torch_file(folder: Path, name: str) -> Path:
    import torch

    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"rdn": _Hostile(folder / "CODE_RAN")}, folder / name)
    return folder / name


def peeling_weights(folder: Path, name: str, change: Callable[[dict], None]) -> Path:
    """A copy of the shipped peeling weights with ``change`` applied (no model card beside it)."""
    import torch

    from napari_deblend.deblenders.peeling import WEIGHTS_DIR

    checkpoint = torch.load(WEIGHTS_DIR / "peeling.pt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, folder / name)
    return folder / name


def _nan_weight(checkpoint: dict) -> None:
    checkpoint["rdn"]["head.0.weight"][0, 0, 0, 0] = float("nan")


def _inf_weight(checkpoint: dict) -> None:
    checkpoint["rdn"]["head.0.weight"][0, 0, 0, 0] = float("inf")


def labels_ecsv(folder: Path, name: str, edit: Callable[[list[str]], list[str]]) -> Path:
    """A label export (from a real database) with its lines edited."""
    from napari_deblend.labels import LabelStore
    from napari_deblend.labels.ecsv import export_labels_ecsv

    db = label_database(folder, "source.sqlite")
    with LabelStore(db, read_only=True) as store:
        export_labels_ecsv(store, folder / name)
    lines = (folder / name).read_text().splitlines()
    (folder / name).write_text("\n".join(edit(lines)) + "\n")
    for path in [db, *folder.glob("source.sqlite-*")]:
        path.unlink()
    return folder / name


def _last_row(lines: list[str], old: str, new: str) -> list[str]:
    return [*lines[:-1], lines[-1].replace(old, new)]


def read_only_folder() -> Path | None:
    """A folder nobody may write, even root (``/sys`` on Linux); None where there is none."""
    folder = Path("/sys")
    probe = folder / f".napari-deblend-probe-{os.getpid()}"
    try:
        probe.touch()
    except OSError:
        return folder if folder.is_dir() else None
    probe.unlink()
    return None


# ---- the cases -----------------------------------------------------------------------------------


@dataclass
class Case:
    """One bad input: ``setup(folder)`` makes its files and returns the command's arguments.

    ``expect``: words the error line must contain. ``code``: the exit code. ``allowed``: files the
    command may create (relative paths; e.g. a failed run's record). ``how``: ``"process"`` for cases
    that need their own process (a file-size limit); ``limit``: that limit in bytes.
    """

    name: str
    setup: Callable[[Path], list[str]]
    expect: tuple[str, ...]
    code: int = 2
    allowed: tuple[str, ...] = ()
    how: str = "either"
    limit: int | None = None
    needs: Callable[[], bool] = field(default=lambda: True)


def _detect(*extra: str, name: str = "f.fits") -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        if name == "f.fits":
            field_file(folder)
        return ["detect", name, "-o", "c.ecsv", *extra]

    return setup


def _run(*extra: str) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        field_file(folder)
        return ["run", "f.fits", "--out", "o", "--model", "sextractor", "--quiet", *extra]

    return setup


def _setup_then(make: Callable[[Path], object], argv: list[str]) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        make(folder)
        return [str(a).replace("{ro}", str(read_only_folder() or "/nonexistent")) for a in argv]

    return setup


_HELD_LOCKS: list = []


def _locked_run_folder(folder: Path) -> None:
    from napari_deblend.pipeline.lock import RunFolderLock

    field_file(folder)
    (folder / "o").mkdir()
    lock = RunFolderLock(folder / "o")
    lock.acquire()
    _HELD_LOCKS.append(lock)  # released after the case (see run_case)


def _two_fields_one_stem(folder: Path) -> None:
    field_file(folder)
    (folder / "sub").mkdir()
    field_file(folder / "sub")


def _run_of_other_parameters(folder: Path) -> None:
    field_file(folder)
    assert main(["run", str(folder / "f.fits"), "--out", str(folder / "o"), "--model", "sextractor", "--quiet",
                 "--thresh", "3"]) == 0


def _labels_and_second_field_bad(folder: Path) -> None:
    label_database(folder)
    (folder / "bad.fits").write_text("not a FITS file\n")


def _ro() -> bool:
    return read_only_folder() is not None


CASES: list[Case] = [
    # detect: outputs checked before reading, options before sep sees them
    Case("detect -o into a missing folder", _setup_then(field_file, ["detect", "f.fits", "-o", "nodir/c.ecsv"]),
         ("nodir",)),
    Case("detect --regions into a missing folder", _detect("--regions", "nodir/r.reg"), ("--regions", "nodir")),
    Case("detect --segmentation into a missing folder", _detect("--segmentation", "nodir/s.fits"),
         ("--segmentation",)),
    Case("detect -o in a read-only folder", _setup_then(field_file, ["detect", "f.fits", "-o", "{ro}/c.ecsv"]),
         ("-o", "cannot write"), needs=_ro),
    Case("detect -o naming a folder", _setup_then(lambda f: (field_file(f), (f / "d").mkdir()),
                                                  ["detect", "f.fits", "-o", "d"]), ("is a folder",)),
    Case("detect -o and --regions the same file", _detect("--regions", "c.ecsv"), ("same file",)),
    Case("detect --deblend-nthresh 100000 (sep crashed)", _detect("--deblend-nthresh", "100000"),
         ("deblend_nthresh", "256")),
    Case("detect --deblend-nthresh 0", _detect("--deblend-nthresh", "0"), ("deblend_nthresh",)),
    Case("detect --back-filter-size 2 (even)", _detect("--back-filter-size", "2"), ("back_filter_size", "odd")),
    Case("detect --thresh -1", _detect("--thresh", "-1"), ("thresh",)),
    Case("detect --thresh nan", _detect("--thresh", "nan"), ("thresh",)),
    Case("detect --thresh inf", _detect("--thresh", "inf"), ("thresh",)),
    Case("detect --deblend-cont 2", _detect("--deblend-cont", "2"), ("deblend_cont",)),
    Case("detect --minarea 0", _detect("--minarea", "0"), ("minarea",)),
    Case("detect --back-size 1", _detect("--back-size", "1"), ("back_size",)),
    Case("detect --back-size larger than the image", _detect("--back-size", "4096"), ("back_size",)),
    Case("detect --preset unknown", _detect("--preset", "nope"), ("nope",)),
    Case("detect --survey unknown", _detect("--survey", "nope"), ("nope",)),
    Case("detect --hdu that does not exist", _detect("--hdu", "9"), ("f.fits",)),
    Case("detect a constant image", _setup_then(lambda f: constant_file(f, 5.0, "const.fits"),
                                                ["detect", "const.fits", "-o", "c.ecsv", "--back-size", "32"]),
         ("const.fits", "constant")),
    Case("detect an all-zero image", _setup_then(lambda f: constant_file(f, 0.0, "zero.fits"),
                                                 ["detect", "zero.fits", "-o", "c.ecsv", "--back-size", "32"]),
         ("zero.fits",)),
    Case("detect a text file named .fits", _setup_then(lambda f: (f / "t.fits").write_text("hello\n"),
                                                       ["detect", "t.fits", "-o", "c.ecsv"]), ("t.fits",)),
    Case("detect an empty file", _setup_then(lambda f: (f / "e.fits").write_bytes(b""),
                                             ["detect", "e.fits", "-o", "c.ecsv"]), ("e.fits",)),
    Case("detect a truncated FITS file",
         _setup_then(lambda f: (f / "t.fits").write_bytes(field_file(f, "full.fits").read_bytes()[:5000]),
                     ["detect", "t.fits", "-o", "c.ecsv"]), ("t.fits",)),
    Case("detect a missing file", _setup_then(lambda f: None, ["detect", "none.fits", "-o", "c.ecsv"]),
         ("none.fits",)),
    Case("detect on a full disk", _detect(), ("c.ecsv", "cannot write"), how="process", limit=1_500),
    # run: every option before anything is read, connected or written
    Case("run --scheduler notaurl", _run("--scheduler", "notaurl"), ("--scheduler",)),
    Case("run --scheduler of an unknown scheme", _run("--scheduler", "foo://host:1"), ("--scheduler",)),
    Case("run --scheduler where nothing answers", _run("--scheduler", "tcp://127.0.0.1:1"),
         ("--scheduler", "nothing answers")),
    Case("run --device gpu", _run("--device", "gpu"), ("device", "gpu")),
    Case("run --retries -1", _run("--retries", "-1"), ("--retries",)),
    Case("run --dask-cluster local:0", _run("--dask-cluster", "local:0"), ("--dask-cluster",)),
    Case("run --dask-cluster local:100000", _run("--dask-cluster", "local:100000"), ("--dask-cluster",)),
    Case("run --deblend-nthresh 100000 (sep crashed)", _run("--deblend-nthresh", "100000"), ("deblend_nthresh",)),
    Case("run --back-filter-size 2", _run("--back-filter-size", "2"), ("back_filter_size",)),
    Case("run --tile-size 0", _run("--tile-size", "0"), ("tile",)),
    Case("run --overlap -5", _run("--overlap", "-5"), ("overlap",)),
    Case("run --model unknown", _setup_then(field_file, ["run", "f.fits", "--out", "o", "--model", "nope"]),
         ("nope",)),
    Case("run --survey unknown", _run("--survey", "nope"), ("nope",)),
    Case("run --out naming a file", _setup_then(lambda f: (field_file(f), (f / "o").write_text("x")),
                                                ["run", "f.fits", "--out", "o", "--model", "sextractor"]),
         ("is a file",)),
    Case("run --out in a read-only folder", _setup_then(field_file, ["run", "f.fits", "--out", "{ro}/o"]),
         ("--out", "cannot write"), needs=_ro),
    Case("run two fields of one name", _setup_then(_two_fields_one_stem,
                                                   ["run", "f.fits", "sub/f.fits", "--out", "o"]),
         ("would both write",)),
    Case("run into a folder another run holds", _setup_then(_locked_run_folder,
                                                            ["run", "f.fits", "--out", "o", "--model", "sextractor"]),
         ("in use by another",), allowed=("o/run.lock",)),
    Case("run into a folder of a run of other parameters",
         _setup_then(_run_of_other_parameters, ["run", "f.fits", "--out", "o", "--model", "sextractor"]),
         ("different parameters",)),
    Case("run on a constant image (exit 1: a field failed)",
         _setup_then(lambda f: constant_file(f, 5.0, "const.fits"),
                     ["run", "const.fits", "--out", "o", "--model", "sextractor", "--quiet", "--back-size", "32"]),
         ("const.fits", "constant"), code=1, allowed=("o", "o/run.json")),
    # labels: files that are not label databases, outputs that cannot be written
    Case("labels summary of a text file", _setup_then(lambda f: (f / "db").write_text("hello"),
                                                      ["labels", "summary", "db"]), ("not an SQLite",)),
    Case("labels summary of a missing file", _setup_then(lambda f: None, ["labels", "summary", "db"]),
         ("no such file",)),
    Case("labels summary of a folder", _setup_then(lambda f: (f / "db").mkdir(), ["labels", "summary", "db"]),
         ("directory",)),
    Case("labels summary of an empty file", _setup_then(lambda f: (f / "db").write_bytes(b""),
                                                        ["labels", "summary", "db"]), ("empty",)),
    Case("labels summary of another application's SQLite",
         _setup_then(lambda f: sqlite_file(f, "db", ["CREATE TABLE songs (title TEXT)"]), ["labels", "summary", "db"]),
         ("another application",)),
    Case("labels summary of a newer schema",
         _setup_then(lambda f: sqlite_file(f, "db", ["PRAGMA user_version = 99"]), ["labels", "summary", "db"]),
         ("newer",)),
    Case("labels summary of an older layout",
         _setup_then(lambda f: sqlite_file(f, "db", [f"PRAGMA application_id = {0x4E444C42}",
                                                     "CREATE TABLE labels (id INTEGER, verdict TEXT)"]),
                     ["labels", "summary", "db"]), ("older layout",)),
    Case("labels summary of a damaged database",
         _setup_then(lambda f: (f / "db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 3000),
                     ["labels", "summary", "db"]), ("db",)),
    Case("labels export without the ECSV name", _setup_then(label_database, ["labels", "export", "labels.sqlite"]),
         ("ECSV",)),
    Case("labels export into a missing folder",
         _setup_then(label_database, ["labels", "export", "labels.sqlite", "nodir/l.ecsv"]), ("nodir",)),
    Case("labels export over an existing file",
         _setup_then(lambda f: (label_database(f), (f / "l.ecsv").write_text("x")),
                     ["labels", "export", "labels.sqlite", "l.ecsv"]), ("exists",)),
    Case("labels export into a read-only folder",
         _setup_then(label_database, ["labels", "export", "labels.sqlite", "{ro}/l.ecsv"]), ("cannot write",),
         needs=_ro),
    Case("labels export on a full disk",  # room for SQLite's 32 KiB shared memory, not for a 60 kB note
         _setup_then(lambda f: label_database(f, note="n" * 60_000), ["labels", "export", "labels.sqlite", "l.ecsv"]),
         ("l.ecsv", "cannot write"), how="process", limit=45_000),
    Case("labels import of a text file (no database is made)",
         _setup_then(lambda f: (f / "l.ecsv").write_text("hello\n"), ["labels", "import", "new.sqlite", "l.ecsv"]),
         ("l.ecsv",)),
    Case("labels import of a table that is not labels",
         _setup_then(lambda f: (f / "l.ecsv").write_text("# %ECSV 1.0\n# ---\n# datatype:\n# - {name: a, datatype: "
                                                         "int64}\na\n1\n"), ["labels", "import", "new.sqlite", "l.ecsv"]),
         ("lacks label column",)),
    Case("labels import of an unknown verdict",
         _setup_then(lambda f: labels_ecsv(f, "l.ecsv", lambda lines: _last_row(lines, " clean ", " great ")),
                     ["labels", "import", "new.sqlite", "l.ecsv"]), ("verdict",)),
    Case("labels import of a NaN member position",
         _setup_then(lambda f: labels_ecsv(f, "l.ecsv", lambda lines: _last_row(lines, "[[", "[[NaN, NaN], [")),
                     ["labels", "import", "new.sqlite", "l.ecsv"]), ("NaN",)),
    Case("labels import into a file that is not SQLite",
         _setup_then(lambda f: (labels_ecsv(f, "l.ecsv", lambda lines: lines), (f / "db").write_text("hello")),
                     ["labels", "import", "db", "l.ecsv"]), ("not an SQLite",)),
    # export-training
    Case("export-training --out naming a file",
         _setup_then(lambda f: (label_database(f), (f / "out").write_text("x")),
                     ["export-training", "--labels", "labels.sqlite", "--out", "out"]), ("--out", "is a file")),
    Case("export-training --out in a read-only folder",
         _setup_then(label_database, ["export-training", "--labels", "labels.sqlite", "--out", "{ro}/out"]),
         ("cannot write",), needs=_ro),
    Case("export-training of a missing database",
         _setup_then(lambda f: None, ["export-training", "--labels", "none.sqlite", "--out", "out"]), ("none.sqlite",)),
    Case("export-training of a text file",
         _setup_then(lambda f: (f / "db").write_text("x"), ["export-training", "--labels", "db", "--out", "out"]),
         ("not an SQLite",)),
    Case("export-training --margin -1",
         _setup_then(label_database, ["export-training", "--labels", "labels.sqlite", "--out", "out", "--margin", "-1"]),
         ("--margin",)),
    Case("export-training with nothing clean",
         _setup_then(lambda f: label_database(f, clean=False),
                     ["export-training", "--labels", "labels.sqlite", "--out", "out"]), ("nothing to export",)),
    Case("export-training stopped by a bad second field (the first one's files are removed)",
         _setup_then(_labels_and_second_field_bad,
                     ["export-training", "--labels", "labels.sqlite", "--fields", "f.fits", "bad.fits", "--out", "out"]),
         ("bad.fits",)),
    # train: files that would run code, or are not weights
    Case("train --resume from a crafted checkpoint (it ran a shell command)",
         _setup_then(lambda f: hostile_torch_file(f, "out/checkpoint.pt"),
                     ["train", "peeling", "--out", "out", "--resume", "--minutes", "0.01"]),
         ("checkpoint.pt", "Python objects")),
    Case("train --init from a crafted weights file",
         _setup_then(lambda f: hostile_torch_file(f, "evil.pt"),
                     ["train", "peeling", "--init", "evil.pt", "--out", "out", "--minutes", "0.01"]),
         ("evil.pt", "Python objects")),
    Case("train --init from weights with a NaN",
         _setup_then(lambda f: peeling_weights(f, "nan.pt", _nan_weight),
                     ["train", "peeling", "--init", "nan.pt", "--out", "out", "--minutes", "0.01"]),
         ("nan.pt", "rdn.head.0.weight")),
    Case("train --init from a text file",
         _setup_then(lambda f: (f / "w.pt").write_text("hello"),
                     ["train", "peeling", "--init", "w.pt", "--out", "out", "--minutes", "0.01"]), ("w.pt",)),
    # evaluate, simulate
    Case("evaluate --device gpu", _setup_then(lambda f: None, ["evaluate", "--out", "e", "--device", "gpu"]),
         ("gpu",)),
    Case("simulate field into a missing folder",
         _setup_then(lambda f: None, ["simulate", "field", "--size", "64", "-o", "nodir/x.fits"]), ("nodir",)),
]


# ---- running a case ------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int | None
    stderr: str
    traceback: str = ""


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: its relative path and a digest of its bytes ("dir" for folders)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        out[key] = "dir" if path.is_dir() else hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def temp_leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*")}


def run_in_process(argv: list[str], folder: Path) -> Outcome:
    """``cli.main(argv)`` in ``folder``, stderr captured; a traceback if an exception escapes."""
    import warnings

    err = io.StringIO()
    previous = Path.cwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:  # a warning would be a line on stderr
            warnings.simplefilter("always")
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - exactly what the cases must never show
                return Outcome(None, err.getvalue(), traceback.format_exc())
        text = err.getvalue() + "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
        return Outcome(code, text)
    finally:
        os.chdir(previous)


def run_in_subprocess(argv: list[str], folder: Path, limit: int | None = None) -> Outcome:
    """``python -m napari_deblend.cli argv`` in ``folder`` (with a file-size limit: a full disk)."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG as an OSError, as ENOSPC on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "napari_deblend.cli", *argv], cwd=folder, env=env, text=True,
                          capture_output=True, timeout=600, preexec_fn=limited if limit else None)  # fmt: skip
    return Outcome(done.returncode, done.stderr)


def check_case(case: Case, folder: Path, subprocess_mode: bool) -> list[str]:
    """Run ``case`` in ``folder``; return what is wrong (empty: clean)."""
    argv = case.setup(folder)
    before, temp_before = snapshot(folder), temp_leftovers()
    try:
        if subprocess_mode or case.how == "process":
            outcome = run_in_subprocess(argv, folder, case.limit)
        else:
            outcome = run_in_process(argv, folder)
    finally:
        while _HELD_LOCKS:
            _HELD_LOCKS.pop().release()
    problems = []
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    if outcome.traceback or "Traceback" in outcome.stderr:
        problems.append("traceback: " + (outcome.traceback or outcome.stderr).strip().splitlines()[-1])
    if outcome.code != case.code:
        problems.append(f"exit code {outcome.code}, expected {case.code}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr, expected 1: {lines[:3]}")
    elif not all(word in lines[0] for word in case.expect):
        problems.append(f"error line lacks {case.expect}: {lines[0]}")
    after = snapshot(folder)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and k not in case.allowed)
    if changed:
        problems.append(f"files created or changed: {changed[:5]}")
    if temp_leftovers() - temp_before:
        problems.append(f"left in {tempfile.gettempdir()}: {sorted(temp_leftovers() - temp_before)}")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_sentence_and_nothing_half_written(case, tmp_path):
    if not case.needs():
        pytest.skip("no read-only folder on this machine")
    assert check_case(case, tmp_path, subprocess_mode=False) == []


# ---- the library ---------------------------------------------------------------------------------


def _blend_field():
    from napari_deblend import detect, find_blends

    field = gaussian_field(SOURCES, shape=(128, 128))
    cat, seg = detect(field)
    return field, cat, seg, find_blends(cat, seg)


def _find_blends_nan(folder: Path) -> None:
    from napari_deblend import find_blends

    _, cat, seg, _ = _blend_field()
    cat["x"][0] = np.nan
    find_blends(cat, seg)


def _store_and_target(folder: Path, **store_options):
    from napari_deblend.labels import FieldKey, LabelStore, TargetKey

    if not (folder / "labels.sqlite").exists():
        LabelStore(folder / "labels.sqlite").close()
    store = LabelStore(folder / "labels.sqlite", **store_options)
    target = TargetKey("blend", np.array([[10.0, 10.0], [12.0, 14.0]]), (5, 20, 5, 20))
    return store, FieldKey("0" * 40, "/tmp/f.fits"), target


def _label_with_surrogate(folder: Path) -> None:
    store, key, target = _store_and_target(folder)
    with store:
        store.add(key, target, "clean", note="good \ud800 blend")


def _label_with_nan_member(folder: Path) -> None:
    from napari_deblend.labels import TargetKey

    store, key, _ = _store_and_target(folder)
    with store:
        store.add(key, TargetKey("blend", np.array([[np.nan, 1.0], [2.0, 3.0]]), (0, 9, 0, 9)), "clean")


def _label_into_read_only_store(folder: Path) -> None:
    store, key, target = _store_and_target(folder, read_only=True)
    with store:
        store.add(key, target, "clean")


def _label_into_locked_store(folder: Path) -> None:
    store, key, target = _store_and_target(folder, timeout=0.2)
    other = sqlite3.connect(folder / "labels.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another program in the middle of a write
    try:
        with store:
            store.add(key, target, "clean")
    finally:
        other.execute("ROLLBACK")
        other.close()


def _label_into_full_store(folder: Path) -> None:
    store, key, target = _store_and_target(folder)
    with store:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
        store.add(key, target, "clean", note="x" * 100_000)


def _load_peeling(folder: Path, change: Callable[[dict], None]) -> None:
    from napari_deblend.deblenders.peeling import PeelingDeblender

    PeelingDeblender(device="cpu", weights=peeling_weights(folder, "w.pt", change))


def _bit_flipped_weights(folder: Path) -> None:
    import shutil

    from napari_deblend.deblenders.peeling import WEIGHTS_DIR, PeelingDeblender

    for suffix in (".pt", ".json"):
        shutil.copyfile(WEIGHTS_DIR / f"peeling{suffix}", folder / f"peeling{suffix}")
    data = bytearray((folder / "peeling.pt").read_bytes())
    data[len(data) // 2] ^= 0x10
    (folder / "peeling.pt").write_bytes(bytes(data))
    PeelingDeblender(device="cpu", weights=folder / "peeling.pt")


def _hostile_weights(folder: Path) -> None:
    from napari_deblend.deblenders.peeling import PeelingDeblender

    PeelingDeblender(device="cpu", weights=hostile_torch_file(folder, "evil.pt"))


def _hostile_training_checkpoint(folder: Path) -> None:
    from napari_deblend.deblenders.checkpoints import load_training_checkpoint

    load_training_checkpoint(hostile_torch_file(folder, "checkpoint.pt"), {"rdn"})


def _config(key: str, **changes) -> Callable[[dict], None]:
    return lambda checkpoint: checkpoint[key].update(changes)


def _deblend(*args, **kwargs) -> Callable[[Path], None]:
    def call(folder: Path) -> None:
        from napari_deblend import deblend

        field, _, _, blends = _blend_field()
        named = {"FIELD": field, "BLEND": blends[0]}
        deblend(*[named[a] if isinstance(a, str) else a for a in args], **kwargs)

    return call


def _detect_array(folder: Path) -> None:
    from napari_deblend import detect

    detect(np.zeros((64, 64), np.float32))


def _find_blends_array(folder: Path) -> None:
    from napari_deblend import find_blends

    find_blends(np.zeros(4))


LIBRARY_CASES: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("detect(array)", _detect_array, ("Field",)),
    ("find_blends(array)", _find_blends_array, ("Table",)),
    ("find_blends with a NaN position", _find_blends_nan, ("NaN",)),
    ("deblend(field, 3)", _deblend("FIELD", 3, model="sextractor"), ("Blend",)),
    ("deblend(3)", _deblend(3, model="sextractor"), ("stamp",)),
    ("deblend with stamp_size=100000 (torch asked for 51 GB)",
     _deblend("FIELD", "BLEND", model="peeling", device="cpu", stamp_size=100_000), ("stamp_size",)),
    ("deblend a 5000x5000 stamp", _deblend(np.zeros((5000, 5000), np.float32), model="peeling", device="cpu"),
     ("1024",)),
    ("deblend on device gpu", _deblend("FIELD", "BLEND", model="peeling", device="gpu"), ("gpu",)),
    ("a label note with a lone surrogate", _label_with_surrogate, ("note", "surrogate")),
    ("a label with a NaN member position", _label_with_nan_member, ("NaN",)),
    ("a label into a database opened read-only", _label_into_read_only_store, ("read-only",)),
    ("a label into a database another program locks", _label_into_locked_store, ("locked", "not saved")),
    ("a label into a database on a full disk", _label_into_full_store, ("full", "not saved")),
    ("weights with a NaN", lambda f: _load_peeling(f, _nan_weight), ("NaN", "rdn.head.0.weight")),
    ("weights with an inf", lambda f: _load_peeling(f, _inf_weight), ("inf", "head.0.weight")),
    ("weights bit-flipped (SHA-256 of the card)", _bit_flipped_weights, ("SHA-256",)),
    ("weights that would run code", _hostile_weights, ("Python objects",)),
    ("a training checkpoint that would run code", _hostile_training_checkpoint, ("Python objects",)),
    ("weights whose config has an unknown key", lambda f: _load_peeling(f, _config("rdn_config", colour=3)),
     ("colour",)),
    ("weights whose config has a negative size", lambda f: _load_peeling(f, _config("rdn_config", features=-4)),
     ("features",)),
    ("weights whose config asks for a huge network",
     lambda f: _load_peeling(f, _config("rdn_config", features=1_000_000)), ("does not fit",)),
]


@pytest.mark.parametrize("name, call, expect", LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_library_misuse_is_one_sentence(name, call, expect, tmp_path):
    before = snapshot(tmp_path)
    with pytest.raises(DeblendInputError) as raised:
        call(tmp_path)
    message = str(raised.value)
    assert "\n" not in message and "weights_only" not in message, message
    assert all(word in message for word in expect), message
    assert not (tmp_path / "CODE_RAN").exists()
    assert not any(k.endswith(".part") for k in set(snapshot(tmp_path)) - set(before))


# ---- as a script: every command-line case in its own process, counted ----------------------------


def count(verbose: bool = True) -> tuple[int, int]:
    """Run every case as a subprocess; print each failure; return ``(tried, clean)``."""
    tried = clean = 0
    for case in CASES:
        if not case.needs():
            continue
        with tempfile.TemporaryDirectory(prefix="bad-input-") as folder:
            start = time.perf_counter()
            problems = check_case(case, Path(folder), subprocess_mode=True)
        tried += 1
        clean += not problems
        if verbose:
            print(f"{'clean' if not problems else 'NOT CLEAN'}  {case.name} [{time.perf_counter() - start:.1f} s]"
                  + "".join(f"\n    {p}" for p in problems), flush=True)
    for name, call, expect in LIBRARY_CASES:
        with tempfile.TemporaryDirectory(prefix="bad-input-") as folder:
            try:
                call(Path(folder))
                problems = ["no error"]
            except DeblendInputError as exc:
                problems = [] if all(w in str(exc) for w in expect) and "\n" not in str(exc) else [str(exc)]
            except Exception:  # noqa: BLE001
                problems = [traceback.format_exc().strip().splitlines()[-1]]
            problems += ["code ran"] if (Path(folder) / "CODE_RAN").exists() else []
        tried += 1
        clean += not problems
        if verbose:
            print(f"{'clean' if not problems else 'NOT CLEAN'}  library: {name}" + "".join(f"\n    {p}" for p in problems))
    return tried, clean


if __name__ == "__main__":
    tried, clean = count()
    print(f"{tried} cases tried, {clean} clean")
    sys.exit(0 if tried == clean else 1)


# ---- valid inputs that used to fail, and the guarantees kept --------------------------------------


def test_shipped_weights_match_the_sha256_of_their_model_cards():
    from napari_deblend.deblenders.checkpoints import CARD_SHA256_KEY, file_sha256
    from napari_deblend.deblenders.peeling import WEIGHTS_DIR

    weights = sorted(WEIGHTS_DIR.glob("*.pt"))
    assert len(weights) >= 4
    for path in weights:  # new weights are installed with `train --install`, which records it
        card = json.loads(path.with_suffix(".json").read_text())
        assert card.get(CARD_SHA256_KEY) == file_sha256(path), f"{path.name}: run record_weights_sha256({path})"


def test_run_on_a_file_name_that_is_not_ascii(tmp_path):
    from astropy.io import fits

    field_file(tmp_path, "champ_é.fits")
    argv = ["run", str(tmp_path / "champ_é.fits"), "--out", str(tmp_path / "o"), "--model", "sextractor", "--quiet"]
    assert main(argv) == 0
    header = fits.getheader(tmp_path / "o" / "champ_é" / "components.fits")
    assert header["FIELD"] == "champ_\\xe9.fits"  # escaped, nothing lost
    assert main(argv) == 0  # and the resume that used to fail again


def test_export_training_of_names_that_are_not_ascii(tmp_path):
    from astropy.io import fits

    from napari_deblend import detect, find_blends, read_field
    from napari_deblend.labels import LabelStore
    from napari_deblend.labels.book import FieldLabels
    from napari_deblend.labels.targets import isolated_galaxies

    path = field_file(tmp_path, "champ_é.fits")
    field = read_field(path)
    cat, seg = detect(field)
    blends = find_blends(cat, seg)
    with LabelStore(tmp_path / "db.sqlite", user="Zoë") as store:
        FieldLabels(store, field, blends, isolated_galaxies(cat, field.shape)).label("blend", blends[0].id, "clean")
    assert main(["export-training", "--labels", str(tmp_path / "db.sqlite"), "--out", str(tmp_path / "t")]) == 0
    (cutout,) = (tmp_path / "t" / "blends").glob("*.fits")
    header = fits.getheader(cutout)
    assert header["LABELER"] == "Zo\\xeb" and header["FIELD"] == "champ_\\xe9.fits"


def test_label_text_round_trips_exactly_through_ecsv(tmp_path, capsys):
    from napari_deblend.labels import FieldKey, LabelStore, TargetKey

    notes = ["a\r\nb\tc", "line\u2028break, \"quoted\" \\n not a newline", "é" + "n" * 140_000, "plain"]
    target = TargetKey("blend", np.array([[10.0, 10.0], [12.0, 14.0]]), (5, 20, 5, 20))
    with LabelStore(tmp_path / "a.sqlite", user=" spaced user ") as store:
        for note in notes:
            store.add(FieldKey("0" * 40, "/data/champ_é.fits"), target, "clean", note=note)
        before = store.labels()
    assert main(["labels", "export", str(tmp_path / "a.sqlite"), str(tmp_path / "l.ecsv")]) == 0
    assert main(["labels", "import", str(tmp_path / "b.sqlite"), str(tmp_path / "l.ecsv")]) == 0
    with LabelStore(tmp_path / "b.sqlite", read_only=True) as store:
        after = store.labels()
    assert [label.note for label in after] == notes
    for old, new in zip(before, after):
        assert old.as_row() == new.as_row()


def test_reading_labels_changes_no_file(tmp_path, capsys):
    db = label_database(tmp_path)
    before = snapshot(tmp_path)
    assert main(["labels", "summary", str(db)]) == 0
    assert main(["labels", "export", str(db), str(tmp_path / "l.ecsv")]) == 0
    assert {k: v for k, v in snapshot(tmp_path).items() if k != "l.ecsv"} == before


def test_resumed_run_keeps_the_timings_of_its_finished_tiles(tmp_path):
    from astropy.io import fits

    from napari_deblend.pipeline import RunSettings, run_fields

    path = field_file(tmp_path)
    settings = RunSettings(model="sextractor", device="cpu", tile_size=64, keep_work=True)
    run_fields([path], tmp_path / "o", settings, progress=False)
    field_dir = tmp_path / "o" / "f"
    (field_dir / "run.json").unlink()  # as if the run had stopped before assembling the field
    run_fields([path], tmp_path / "o", settings, progress=False)
    record = json.loads((field_dir / "run.json").read_text())
    parts = sorted((field_dir / "work" / "parts").glob("tile_*.fits"))
    detect_seconds = sum(fits.getval(part, "TDETECT") for part in parts)
    assert len(parts) == 4 and detect_seconds > 0
    assert record["timings"]["detect"] == pytest.approx(detect_seconds)


def _gzip_field(path: Path, side: int) -> Path:
    """A gzipped FITS image of ``side`` x ``side`` zeros, written in blocks (small on disk, large decompressed)."""
    import gzip

    from astropy.io import fits

    header = fits.PrimaryHDU(np.zeros((1, 1), np.float32)).header
    header["NAXIS1"], header["NAXIS2"] = side, side
    size = side * side * 4
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(header.tostring().encode("ascii"))
        block = bytes(16 << 20)
        for start in range(0, size, len(block)):
            stream.write(block[: min(len(block), size - start)])
        stream.write(bytes(-size % 2880))
    return path


def test_sigterm_while_reading_a_gzipped_field_leaves_no_temporary_copy(tmp_path):
    _gzip_field(tmp_path / "big.fits.gz", 6000)  # 144 MB once decompressed
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}
    child = subprocess.Popen([sys.executable, "-m", "napari_deblend.cli", "detect", "big.fits.gz", "-o", "c.ecsv"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a budget
        while not list(scratch.glob(f"{TEMP_PREFIX}*/*")) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert child.poll() is None, "the read finished before a temporary copy was seen"
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 143 and stderr.strip().splitlines() == ["napari-deblend detect: terminated"]
    assert list(scratch.iterdir()) == [] and not (tmp_path / "c.ecsv").exists()


def test_run_on_a_header_with_non_ascii_bytes(tmp_path, capsys):
    from astropy.io import fits

    path = field_file(tmp_path)
    with fits.open(path) as hdul:
        hdul[1].header["OBSERVER"] = ("Xavier", "who took it")
        hdul.writeto(tmp_path / "bytes.fits")
    raw = (tmp_path / "bytes.fits").read_bytes()
    (tmp_path / "bytes.fits").write_bytes(raw.replace(b"'Xavier", b"'Xavi\xe9r"))  # latin-1, not ASCII
    assert main(["run", str(tmp_path / "bytes.fits"), "--out", str(tmp_path / "o"), "--model", "sextractor",
                 "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err
