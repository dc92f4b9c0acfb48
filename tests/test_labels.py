"""The label store: commits, undo, keys that survive re-detection, bad files, crashes and concurrent writers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from napari_deblend import detect, find_blends, read_field, write_field
from napari_deblend.errors import DeblendInputError
from napari_deblend.labels import LabelStore, TargetKey, field_key
from napari_deblend.labels.book import FieldLabels
from napari_deblend.labels.ecsv import export_labels_ecsv, import_labels_ecsv
from napari_deblend.labels.export import LabelExportWarning, export_training
from napari_deblend.labels.store import SCHEMA_VERSION
from napari_deblend.labels.targets import isolated_galaxies

from .conftest import gaussian_field

SOURCES = [
    (40, 40, 4e5, 2.0),
    (200, 60, 3e5, 2.5),
    (60, 200, 2e5, 2.0),
    (150, 150, 6e5, 3.0),
    (150, 162, 3e5, 2.5),
]


@pytest.fixture
def labelled_field(tmp_path):
    path = write_field(gaussian_field(SOURCES), tmp_path / "field.fits")
    field = read_field(path)
    cat, seg = detect(field)
    blends = find_blends(cat, seg)
    return path, field, cat, blends, isolated_galaxies(cat, field.shape)


def test_label_undo_and_history(tmp_path, labelled_field):
    _, field, _, blends, isolated = labelled_field
    with LabelStore(tmp_path / "labels.sqlite", user="alice") as store:
        book = FieldLabels(store, field, blends, isolated)
        blend = blends[0].id
        book.label(
            "blend",
            blend,
            "bad",
            failure="merged",
            note="two cores",
            model="peeling",
            model_version="peeling v1",
        )
        book.label("blend", blend, "clean")
        book.label(
            "blend", blend, "ambiguous", component=1, component_position=(150.0, 150.0), model="peeling"
        )
        assert book.verdict("blend", blend) == "clean"
        assert book.verdict("blend", blend, component=1) == "ambiguous"
        assert book.progress()["blend"] == (1, len(blends))
        assert book.undo().component == 1
        assert book.undo().verdict == "clean"
        first = book.labels_of("blend", blend)[0]  # the earlier label is current again
        assert (first.verdict, first.failure, first.note, first.user) == (
            "bad",
            "merged",
            "two cores",
            "alice",
        )
        assert first.model_version == "peeling v1" and first.created.endswith("Z")
        assert len(store) == 1
        with pytest.raises(DeblendInputError, match="verdict"):
            book.label("blend", blend, "great")
        with pytest.raises(DeblendInputError, match="failure type"):
            book.label("blend", blend, "bad", failure="exploded")


def test_labels_survive_reopening_and_redetection(tmp_path, labelled_field):
    path, field, _, blends, isolated = labelled_field
    db = tmp_path / "labels.sqlite"
    with LabelStore(db) as store:
        book = FieldLabels(store, field, blends, isolated)
        book.label("blend", blends[0].id, "bad", failure="shredded")
        book.label("isolated", isolated[0].id, "clean")
    # reopen, and detect again with other settings: same sources, new ids and slightly new positions
    field2 = read_field(path)
    cat2, seg2 = detect(field2, thresh=2.0)
    blends2 = find_blends(cat2, seg2)
    with LabelStore(db) as store:
        book = FieldLabels(store, field2, blends2, isolated_galaxies(cat2, field2.shape))
        assert list(book.blend_verdicts().values()) == ["bad"]
        assert list(book.isolated_verdicts().values()) == ["clean"]


def test_changed_field_keeps_labels_but_does_not_attach_them(tmp_path, labelled_field):
    path, field, _, blends, isolated = labelled_field
    db = tmp_path / "labels.sqlite"
    with LabelStore(db) as store:
        FieldLabels(store, field, blends, isolated).label("blend", blends[0].id, "clean")
    changed = gaussian_field(SOURCES, seed=5)  # same sources, other noise: other pixels, same file name
    write_field(changed, path, overwrite=True)
    field2 = read_field(path)
    cat2, seg2 = detect(field2)
    blends2 = find_blends(cat2, seg2)
    with LabelStore(db) as store:
        book = FieldLabels(store, field2, blends2)
        assert book.check.n_changed == 1 and "different pixels" in book.check.warning
        assert book.blend_verdicts() == {}
        assert len(store) == 1  # kept
        with (
            pytest.warns(LabelExportWarning, match="different pixels"),
            pytest.raises(DeblendInputError, match="nothing to export"),
        ):
            export_training(store, [path], tmp_path / "out")


def test_not_sqlite_and_newer_schema_are_refused_untouched(tmp_path):
    text = tmp_path / "notes.sqlite"
    text.write_bytes(b"these are my observing notes\n" * 10)
    before = text.read_bytes()
    with pytest.raises(DeblendInputError, match="not an SQLite database"):
        LabelStore(text)
    assert text.read_bytes() == before

    newer = tmp_path / "newer.sqlite"
    with LabelStore(newer) as store:
        store.add(
            field_key(gaussian_field([(20, 20, 1e5, 2.0)], shape=(40, 40))),
            TargetKey("isolated", np.array([[20.0, 20.0]]), (10, 30, 10, 30)),
            "clean",
        )
    con = sqlite3.connect(newer)
    con.execute("PRAGMA journal_mode = DELETE")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    before = newer.read_bytes()
    with pytest.raises(DeblendInputError, match="newer"):
        LabelStore(newer)
    assert newer.read_bytes() == before
    assert not (tmp_path / "newer.sqlite-wal").exists()

    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE photos (name TEXT)")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(DeblendInputError, match="another application"):
        LabelStore(other)
    assert other.read_bytes() == before


def test_ecsv_round_trip(tmp_path, labelled_field):
    _, field, _, blends, isolated = labelled_field
    with LabelStore(tmp_path / "a.sqlite") as store:
        book = FieldLabels(store, field, blends, isolated)
        book.label("blend", blends[0].id, "bad", failure="missed", note="faint, 3rd source")
        book.label("isolated", isolated[0].id, "clean")
        assert export_labels_ecsv(store, tmp_path / "labels.ecsv") == 2
        original = {label.uid: label for label in store.labels()}
    with LabelStore(tmp_path / "b.sqlite") as other:
        assert import_labels_ecsv(other, tmp_path / "labels.ecsv") == 2
        assert import_labels_ecsv(other, tmp_path / "labels.ecsv") == 0  # idempotent
        for label in other.labels():
            ref = original[label.uid]
            assert (label.verdict, label.failure, label.note, label.kind, label.bbox) == (
                ref.verdict,
                ref.failure,
                ref.note,
                ref.kind,
                ref.bbox,
            )
            np.testing.assert_allclose(label.members, ref.members, atol=1e-3)
    (tmp_path / "bad.ecsv").write_text("a,b\n1,2\n")
    with (
        LabelStore(tmp_path / "b.sqlite") as other,
        pytest.raises(DeblendInputError, match="not an ECSV|lacks"),
    ):
        import_labels_ecsv(other, tmp_path / "bad.ecsv")


def test_export_with_nothing_labelled(tmp_path, labelled_field):
    path, field, _, blends, isolated = labelled_field
    with pytest.raises(DeblendInputError, match="holds no label"):
        export_training(tmp_path / "empty.sqlite", [path], tmp_path / "out")
    with LabelStore(tmp_path / "l.sqlite") as store:
        FieldLabels(store, field, blends, isolated).label("blend", blends[0].id, "bad", failure="merged")
        with pytest.raises(DeblendInputError, match="clean"):
            export_training(store, [path], tmp_path / "out")
    assert not (tmp_path / "out" / "index.ecsv").exists()


_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from napari_deblend.labels import FieldKey, LabelStore, TargetKey
    db, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    key = FieldKey("f" * 40, "/data/field.fits", "field.fits")
    store = LabelStore(db, user=tag)
    print("ready", flush=True)
    for i in range(n):
        target = TargetKey("isolated", np.array([[float(i), 5.0]]), (i, i + 1, 5, 6))
        label = store.add(key, target, "clean", note=f"{tag} {i}")
        print(label.uid, flush=True)
""")


def _writer(db, tag, n):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db), tag, str(n)], stdout=subprocess.PIPE, text=True, env=env
    )


def test_killing_a_labelling_process_loses_nothing_committed(tmp_path):
    db = tmp_path / "labels.sqlite"
    process = _writer(db, "killed", 100_000)
    assert process.stdout.readline().strip() == "ready"
    committed = [process.stdout.readline().strip() for _ in range(40)]
    os.kill(process.pid, signal.SIGKILL)  # in the middle of its next transactions
    process.wait(timeout=30)
    with LabelStore(db) as store:
        uids = {label.uid for label in store.labels()}
        assert set(committed) <= uids
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store.add(
            field_key(gaussian_field([(5, 5, 1e4, 1.0)], shape=(16, 16))),
            TargetKey("isolated", np.array([[5.0, 5.0]]), (0, 10, 0, 10)),
            "clean",
        )  # still writable


def test_two_processes_write_at_once(tmp_path):
    db = tmp_path / "labels.sqlite"
    LabelStore(db).close()
    n = 60
    writers = [_writer(db, tag, n) for tag in ("left", "right")]
    outputs = [w.communicate(timeout=120)[0].split() for w in writers]
    assert all(w.returncode == 0 for w in writers)
    with LabelStore(db) as store:
        labels = store.labels()
        assert len(labels) == 2 * n
        assert {label.uid for label in labels} == {uid for out in outputs for uid in out[1:]}
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_wal_mode_and_schema_version(tmp_path):
    with LabelStore(tmp_path / "l.sqlite") as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LabelStore(tmp_path / "l.sqlite").close()  # reopening is silent
