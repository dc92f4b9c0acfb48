"""In the viewer: single detections offered, the blend sep missed listed, ids those of a headless run."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from napari_deblend.field import write_field
from napari_deblend.parents import PIECE

from .conftest import gaussian_field, viewer_with_deblend_panel

pytest.importorskip("napari")

POINT, GALAXY, PAIR = (60.0, 60.0), (60.0, 190.0), ((180.0, 120.0), (180.0, 127.0))


@pytest.fixture
def pair_path(tmp_path):
    sources = [(*POINT, 2e6, 1.49), (*GALAXY, 1.5e6, 3.0), (*PAIR[0], 1.5e6, 3.0), (*PAIR[1], 1.0e6, 3.0)]
    return write_field(gaussian_field(sources, shape=(256, 256)), tmp_path / "pair.fits")


def test_the_viewer_offers_singles_lists_the_missed_blend_and_uses_the_catalogue_ids(
    make_napari_viewer, qtbot, tmp_path, pair_path
):
    from napari_deblend._widgets import BlendBrowserWidget
    from napari_deblend.pipeline import RunSettings, run_fields

    viewer, session, panel = viewer_with_deblend_panel(make_napari_viewer, qtbot, pair_path, "peeling")
    browser = BlendBrowserWidget(viewer)
    assert not session.blends and len(session.singles) == 2  # the galaxy and the merged pair, not the star
    panel.candidates_combo.setCurrentText("blends + every detection")
    assert len(session.singles) == 3
    panel.candidates_combo.setCurrentText("sep's blends only")
    assert session.singles == []
    panel.candidates_combo.setCurrentText("blends + detections larger than a point source")
    pair_id = session.blend_at(np.array(PAIR[0]))
    assert pair_id in {b.id for b in session.singles}

    viewer.reset_view()
    panel.deblend_in_view()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert {b for b, _ in session.results} == {b.id for b in session.singles}
    split = session.split_detections(pair_id)["peeling"]
    assert len(split) == 1  # the pair's detection holds two galaxies: a blend sep missed
    browser.filter_combo.setCurrentText("blends sep missed")
    assert pair_id in browser.shown_ids()
    assert all(any(session.split_detections(b).values()) for b in browser.shown_ids())
    assert "sep missed" in browser.table.item(browser._row_of(pair_id), 3).text()

    # the same field run headless: the viewer's layers carry the catalogue's ids
    summary = run_fields([pair_path], tmp_path / "run", RunSettings(model="peeling", device="cpu"), progress=False)
    assert summary.exit_code == 0
    cat = Table.read(tmp_path / "run" / "pair" / "catalog.ecsv")
    comp = cat[cat["KIND"] == "component"]
    positions = viewer.layers["peeling · all blends · positions"].features
    viewer_rows = sorted(zip(positions["blend"], positions["component"], positions["id"], positions["parent"],
                             positions["piece"]))  # fmt: skip
    run_rows = sorted(zip(comp["BLEND_ID"], comp["COMPONENT"], comp["ID"], comp["PARENT"],
                          (comp["DEBLEND_FLAGS"] & PIECE) > 0))  # fmt: skip
    assert viewer_rows == [(*(int(v) for v in row[:4]), bool(row[4])) for row in run_rows]  # pieces agree too
    numbers = viewer.layers["pair.fits detections"].features["number"]
    assert sorted(numbers) == sorted(cat[cat["KIND"] == "detection"]["NUMBER"])
    masks = viewer.layers["peeling · all blends · masks"].data
    assert set(np.unique(masks[masks > 0])) == set(comp["ID"])


@pytest.mark.parametrize("model", ["peeling", "unet"])
def test_the_viewer_marks_the_pieces_the_run_catalogue_flags(make_napari_viewer, qtbot, tmp_path, model):
    from napari_deblend.pipeline import RunSettings, run_fields
    from napari_deblend.simulate import simulate_field

    field, _ = simulate_field(512, seed=77)  # the realistic mix: knotty, spiral and irregular galaxies
    path = write_field(field, tmp_path / "mix.fits")
    viewer, session, panel = viewer_with_deblend_panel(make_napari_viewer, qtbot, path, model)
    viewer.reset_view()
    panel.deblend_in_view()
    qtbot.waitUntil(lambda: not panel.busy, timeout=300_000)
    assert run_fields([path], tmp_path / "run", RunSettings(model=model, device="cpu"), progress=False).exit_code == 0
    comp = Table.read(tmp_path / "run" / "mix" / "catalog.ecsv")
    comp = comp[comp["KIND"] == "component"]
    features = viewer.layers[f"{model} · all blends · positions"].features
    in_viewer = {int(i): bool(p) for i, p in zip(features["id"], features["piece"])}
    in_run = {int(i): bool(f & PIECE) for i, f in zip(comp["ID"], comp["DEBLEND_FLAGS"])}
    assert in_viewer == in_run and sum(in_run.values()) >= (model == "peeling")
    # a single detection is a blend sep missed only with two or more children that are no pieces
    for blend_id in {b.id for b in session.singles} & {b for b, _ in session.results}:
        split = session.split_detections(blend_id)[model]
        children = comp[comp["BLEND_ID"] == blend_id]
        galaxies = children[(children["DEBLEND_FLAGS"] & PIECE) == 0]
        assert bool(split) == (len(galaxies) >= 2)
