"""Tests of napari_deblend.plots: the comparison figure, saving it, and the table as text."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from napari_deblend.deblenders.base import DeblendResult, get_deblender
from napari_deblend.errors import DeblendInputError
from napari_deblend.measurements import Truth, measure
from napari_deblend.plots import (
    RESIDUAL_NSIGMA,
    _flux_ticks,
    comparison_figure,
    comparison_text,
    save_figure,
)

RESIDUAL_LABELS = ("residual", "other residual", "sextractor residual", "truth noise")


NOISE = 446.0


def gaussian(shape: tuple[int, int], y: float, x: float, flux: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return flux / (2 * np.pi * sigma**2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))


@pytest.fixture(scope="module")
def case():
    """A noisy Gaussian pair, its truth, SExtractor's result and a "neural" result made of the truth."""
    shape = (40, 40)
    positions = np.array([[20.0, 17.0], [21.0, 27.0]])
    comps = np.stack([gaussian(shape, 20, 17, 6e5, 2.5), gaussian(shape, 21, 27, 2.5e5, 2.0)])[:, None]
    blend = (comps.sum(axis=0) + np.random.default_rng(3).normal(0, NOISE, (1, *shape))).astype(np.float32)
    truth = Truth(comps, positions)
    sep = get_deblender("sextractor").deblend_batch(blend[None], noise=NOISE)[0]
    neural = DeblendResult(blend, comps * 0.95, positions + 0.3, model="demo-net", quality="High", noise=NOISE)
    return {"blend": blend, "noise": NOISE, "truth": truth, "sep": sep, "neural": neural}


def panels(fig: Figure) -> dict[str, object]:
    """The figure's panel axes by label (colourbars excluded)."""
    return {ax.get_label(): ax for ax in fig.axes if ax.get_label() != "<colorbar>"}


def grid_cells(fig: Figure) -> set[tuple[int, int]]:
    cells = set()
    for ax in panels(fig).values():
        spec = ax.get_subplotspec()
        cells.add((spec.rowspan.start, spec.colspan.start))
    return cells


def suptitle(fig: Figure) -> str:
    return fig._suptitle.get_text() if fig._suptitle is not None else ""


def test_figure_rows_and_axes(case):
    fig = comparison_figure(case["neural"], sextractor=case["sep"], truth=case["truth"])
    labels = panels(fig)
    k = case["neural"].n_components
    n_cols = k + 2  # blend, components, residual: SExtractor's two objects match the two components
    assert {"blend", "component 0", "component 1", "residual"} <= set(labels)
    assert {"sextractor segmentation", "sextractor residual", "truth blend", "truth noise"} <= set(labels)
    assert {f"truth component {j}" for j in range(len(case["truth"].components))} <= set(labels)
    # a full 3 x n_cols grid (empty cells hold a note), plus two colourbars
    assert grid_cells(fig) == {(r, c) for r in range(3) for c in range(n_cols)}
    assert len(fig.axes) == 3 * n_cols + 2
    assert "demo-net" in suptitle(fig) and "High" in suptitle(fig)
    assert all(ax.images[0].origin == "lower" for ax in labels.values() if ax.images)


def test_without_truth_and_sextractor(case):
    fig = comparison_figure(case["neural"], sextractor=False)
    labels = panels(fig)
    assert set(labels) == {"blend", "component 0", "component 1", "residual"}
    assert len(fig.axes) == 4 + 2


def test_sextractor_result_is_not_repeated(case):
    fig = comparison_figure(case["sep"])  # sextractor=None on a SExtractor result: no second identical row
    assert not any(label.startswith("sextractor") for label in panels(fig))
    assert grid_cells(fig) == {(0, c) for c in range(case["sep"].n_components + 2)}


def test_sextractor_is_run_when_none(case):
    fig = comparison_figure(case["neural"])
    labels = panels(fig)
    assert "sextractor segmentation" in labels
    assert any(label.startswith("sextractor component") for label in labels)


def test_other_row(case):
    fig = comparison_figure(case["neural"], sextractor=False, truth=case["truth"], other=case["sep"])
    labels = panels(fig)
    assert {"other masks", "other component 0", "other residual"} <= set(labels)
    rows = {labels[name].get_subplotspec().rowspan.start for name in ("blend", "other masks", "truth blend")}
    assert rows == {0, 1, 2}
    assert case["sep"].model in suptitle(fig)


def test_residual_diverging_and_symmetric(case):
    fig = comparison_figure(case["neural"], sextractor=case["sep"], truth=case["truth"])
    sigma = case["noise"]
    residuals = [ax for label, ax in panels(fig).items() if label in RESIDUAL_LABELS]
    assert len(residuals) == 3
    for ax in residuals:
        image = ax.images[0]
        assert image.get_cmap().name == "RdBu_r"
        lo, hi = image.get_clim()
        assert lo == pytest.approx(-hi)
        assert hi == pytest.approx(RESIDUAL_NSIGMA * sigma)


def test_flux_panels_share_one_stretch(case):
    fig = comparison_figure(case["neural"], sextractor=case["sep"], truth=case["truth"], other=case["sep"])
    flux = [
        ax for label, ax in panels(fig).items()
        if ax.images and label not in RESIDUAL_LABELS and label not in ("sextractor segmentation", "other masks")
    ]
    assert len(flux) >= 8
    norms = [ax.images[0].norm for ax in flux]
    assert all(isinstance(n, mcolors.AsinhNorm) for n in norms)
    assert len({(n.vmin, n.vmax) for n in norms}) == 1
    assert norms[0].vmax == pytest.approx(float(case["blend"].sum(axis=0).max()), rel=1e-5)
    assert norms[0].vmin < 0 < norms[0].vmax
    lin = comparison_figure(case["neural"], sextractor=False, stretch="linear")
    assert type(panels(lin)["blend"].images[0].norm) is mcolors.Normalize
    with pytest.raises(DeblendInputError, match="stretch"):
        comparison_figure(case["neural"], sextractor=False, stretch="log2")


def test_multiband_shows_band_sum(case):
    blend = np.concatenate([case["blend"], 0.5 * case["blend"]])
    comps = np.concatenate([case["truth"].components, 0.5 * case["truth"].components], axis=1)
    result = DeblendResult(blend, comps, case["truth"].positions, model="two-band", noise=case["noise"])
    fig = comparison_figure(result, sextractor=False)
    ax = panels(fig)["blend"]
    assert "sum of 2 bands" in ax.get_title()
    np.testing.assert_allclose(ax.images[0].get_array(), blend.sum(axis=0), rtol=1e-5)


def test_figure_is_reused_and_cleared(case):
    fig = Figure(figsize=(6, 4))
    out = comparison_figure(case["neural"], sextractor=False, figure=fig)
    assert out is fig
    comparison_figure(case["neural"], sextractor=False, figure=fig)
    assert len(fig.axes) == 4 + 2


def test_sextractor_without_objects(case):
    empty = DeblendResult(case["blend"], np.zeros((0, *case["blend"].shape)), np.zeros((0, 2)), model="sextractor")
    fig = comparison_figure(case["neural"], sextractor=empty)
    labels = panels(fig)
    assert {"sextractor segmentation", "sextractor residual"} <= set(labels)
    notes = [ax for label, ax in labels.items() if label.startswith("note 1 ")]
    assert len(notes) == 2  # each component's column says SExtractor missed it
    assert all(ax.texts[0].get_text() == "missed" for ax in notes)


def test_many_sextractor_objects_share_one_panel(case):
    shape = case["blend"].shape[-2:]
    spots = [(5.0, 5.0 + 6 * i) for i in range(6)]  # six small objects, far from the two components
    comps = np.stack([gaussian(shape, y, x, 1e4, 1.0) for y, x in spots])[:, None]
    shreds = DeblendResult(case["blend"], comps, np.array(spots), model="shredder", noise=NOISE)
    labels = panels(comparison_figure(case["neural"], sextractor=shreds))
    assert "sextractor components" in labels
    assert not any(label.startswith("sextractor component ") for label in labels)
    assert not any(label.startswith("note 1") for label in labels)  # one panel stands for all components


def test_save_png_pdf_and_unknown_suffix(case, tmp_path):
    fig = comparison_figure(case["neural"], sextractor=False)
    png = save_figure(fig, tmp_path / "blend.png", dpi=60)
    pdf = save_figure(fig, tmp_path / "blend.PDF")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000
    for bad in ("blend.jpg", "blend"):
        with pytest.raises(DeblendInputError, match="expected a file ending in"):
            save_figure(fig, tmp_path / bad)
    assert not (tmp_path / "blend.jpg").exists()


def test_comparison_text(case):
    table = measure(case["neural"], truth=case["truth"], sextractor=case["sep"])
    text = comparison_text(table)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == 1 + len(table)
    header = lines[0].split("\t")
    assert len(header) == len(table.colnames)
    assert header[table.colnames.index("flux")] == "flux [electron]"
    for line, row in zip(lines[1:], table):
        cells = dict(zip(table.colnames, line.split("\t")))
        assert len(cells) == len(table.colnames)
        assert cells["flux"] == f"{row['flux']:.1f}"
        assert cells["mag"] == f"{row['mag']:.3f}"
        assert cells["mu20"] == f"{row['mu20']:.3f}"
        assert cells["e1"] == f"{row['e1']:.3f}"
        assert cells["truth_flux"] == f"{row['truth_flux']:.1f}"
        assert cells["model"] == "demo-net"
    short = comparison_text(table, columns=["component", "flux"])
    assert short.split("\n")[0] == "component\tflux [electron]"
    with pytest.raises(DeblendInputError, match="not in the table"):
        comparison_text(table, columns=["nope"])


def test_flux_ticks_are_round_and_inside():
    norm = mcolors.AsinhNorm(linear_width=900.0, vmin=-900.0, vmax=12000.0)
    ticks = _flux_ticks(norm)
    assert 0.0 in ticks and ticks == sorted(ticks)
    assert all(-900.0 <= t <= 12000.0 for t in ticks)
    assert 10000.0 in ticks


# ---- the viewer's mosaic layout -------------------------------------------------------------------


def _mosaic(case, **kwargs):
    from napari_deblend.plots import figure_mosaic

    fig = Figure(figsize=(9.0, 6.2), dpi=100)
    comparison_figure(case["neural"], figure=fig, layout="mosaic", **kwargs)
    return fig, figure_mosaic(fig)


def test_mosaic_has_the_panels_of_the_grid(case):
    reference = comparison_figure(case["neural"], sextractor=case["sep"], truth=case["truth"], other=case["sep"])
    fig, mosaic = _mosaic(case, sextractor=case["sep"], truth=case["truth"], other=case["sep"])
    assert set(mosaic.panels) == set(panels(reference))
    assert mosaic.pixels.shape == (620, 900, 4) and mosaic.pixels.dtype == np.uint8
    # one full-figure image, nothing else drawn by matplotlib axes
    assert len(fig.axes) == 1 and len(fig.axes[0].images) == 1
    assert fig.axes[0].images[0].get_array().shape == (620, 900, 4)
    # boxes lie inside the image, apart from each other, rows top to bottom
    boxes = mosaic.panels
    for x0, y0, w, h in boxes.values():
        assert 0 <= x0 and x0 + w <= 900 and 0 <= y0 and y0 + h <= 620 and w > 20 and h > 20
    assert boxes["blend"][1] < boxes["other masks"][1] < boxes["sextractor segmentation"][1] < boxes["truth blend"][1]
    assert boxes["blend"][0] < boxes["component 0"][0] < boxes["component 1"][0] < boxes["residual"][0]


def test_mosaic_texts(case):
    _, mosaic = _mosaic(case, sextractor=case["sep"], truth=case["truth"])
    texts = {t.text: t for t in mosaic.texts}
    assert suptitle(comparison_figure(case["neural"], sextractor=case["sep"])) in texts
    assert any(t.startswith("component 1\n") for t in texts) and any(t.startswith("T2\n") for t in texts)
    assert {"demo-net", "SExtractor", "truth"} <= set(texts)  # row labels, turned a quarter
    assert texts["truth"].rotation == 90.0
    ids = [t for t in mosaic.texts if t.text in ("1", "2", "S1", "T1")]
    assert ids and all(t.bold and t.stroke > 0 and t.color == (1.0, 1.0, 1.0, 1.0) for t in ids)
    assert "flux panels: e⁻ / pixel" in texts and any(t.startswith("residual (σ") for t in texts)
    # a title stands over its panel
    x0, y0, w, _ = mosaic.panels["component 0"]
    title = next(t for t in mosaic.texts if t.text.startswith("component 1\n"))
    assert abs(title.x - (x0 + w / 2)) < 1 and title.y < y0


def test_mosaic_pixels_are_the_colormap_of_the_values(case):
    import matplotlib

    from napari_deblend.plots import IMAGE_CMAP, RESIDUAL_CMAP, _flux_norm, _sum_noise

    result = case["neural"]
    _, mosaic = _mosaic(case, sextractor=False)
    sigma = _sum_noise(result)
    norm = _flux_norm(result.blend.sum(axis=0).astype(float), sigma, "asinh")
    x0, y0, w, h = mosaic.panels["component 0"]
    image = result.components[0].sum(axis=0)
    ny, nx = image.shape
    lut = matplotlib.colormaps[IMAGE_CMAP]
    for iy, ix in ((16, 13), (5, 30), (35, 3)):  # image pixel (y, x) off the mark; north up: row 0 at the bottom
        px = x0 + int((ix + 0.5) * w / nx)
        py = y0 + h - 1 - int((iy + 0.5) * h / ny)
        expected = np.asarray(lut(norm(float(image[iy, ix])), bytes=True))
        np.testing.assert_array_equal(mosaic.pixels[py, px], expected)
    x0, y0, w, h = mosaic.panels["residual"]
    resid = result.residual.sum(axis=0)
    limit = RESIDUAL_NSIGMA * sigma
    px, py = x0 + int(3.5 * w / nx), y0 + h - 1 - int(8.5 * h / ny)
    expected = matplotlib.colormaps[RESIDUAL_CMAP](mcolors.Normalize(-limit, limit)(resid[8, 3]), bytes=True)
    np.testing.assert_array_equal(mosaic.pixels[py, px], np.asarray(expected))


def test_mosaic_figure_is_reused_and_saves(case, tmp_path):
    fig, first = _mosaic(case, sextractor=case["sep"])
    comparison_figure(case["neural"], sextractor=False, figure=fig, layout="mosaic")
    from napari_deblend.plots import figure_mosaic

    second = figure_mosaic(fig)
    assert second is not first and "sextractor residual" not in second.panels
    assert len(fig.axes) == 1 and len(fig.artists) == 1
    png = save_figure(fig, tmp_path / "mosaic.png", dpi=100)  # drawn by matplotlib, texts included
    assert png.stat().st_size > 10_000
    # another layout into the same figure forgets the mosaic
    comparison_figure(case["neural"], sextractor=False, figure=fig, layout="fast")
    assert figure_mosaic(fig) is None and len(fig.axes) > 1
    with pytest.raises(DeblendInputError, match="layout"):
        comparison_figure(case["neural"], sextractor=False, layout="grid")


def test_fit_text_shortens_then_drops_lines_then_cuts():
    from napari_deblend.plots_mosaic import fit_text

    pt = 100 / 72
    title = "T3 unmatched\n24.23 mag · F 145k e⁻"
    assert fit_text(title, 500, 8, pt) == title  # room: unchanged
    narrow = fit_text(title, 45, 6.5, pt)
    assert narrow.startswith("T3*") and "unmatched" not in narrow
    assert all(len(line) * 0.62 * 6.5 * pt <= 45 for line in narrow.split("\n"))
    assert fit_text("a very long first line\nsecond", 20, 8, pt).endswith("…")  # the first line stays, cut


def test_crowded_mosaic_titles_do_not_overlap(case):
    """Twelve truth columns in a docked-panel-sized figure: every title within its column, ids only where they fit."""
    from napari_deblend.plots_mosaic import _CHAR_WIDTH

    shape = case["blend"].shape[-2:]
    rng = np.random.default_rng(0)
    positions = np.column_stack([rng.uniform(5, 35, 12), rng.uniform(5, 35, 12)])
    comps = np.stack([gaussian(shape, y, x, 1e5, 1.5) for y, x in positions])[:, None]
    figure = Figure(figsize=(5.2, 4.0), dpi=100)
    comparison_figure(case["neural"], sextractor=case["sep"], truth=Truth(comps, positions), figure=figure,
                      layout="mosaic")
    from napari_deblend.plots import figure_mosaic

    mosaic = figure_mosaic(figure)
    boxes = [box for label, box in mosaic.panels.items() if label.startswith("truth component")]
    assert len(boxes) == 12
    step = sorted(box[0] for box in boxes)[1] - sorted(box[0] for box in boxes)[0]
    titles = [t for t in mosaic.texts if t.text.startswith("T") and "\n" in t.text]
    assert len(titles) == 12
    for t in titles:
        widest = max(len(line) for line in t.text.split("\n")) * _CHAR_WIDTH * t.size
        assert widest <= step  # within its column: no title runs into the next one


def test_a_narrow_mosaic_keeps_the_title_s_first_parts_whole(case):
    """A docked panel narrower than the title drops its last parts instead of clipping both ends."""
    from dataclasses import replace

    from napari_deblend.plots import figure_mosaic

    neural = replace(case["neural"], model="peeling sha256:59395eeef700", blend_id=6, origin=(54, 710))
    full = suptitle(comparison_figure(neural, sextractor=case["sep"]))
    fig = Figure(figsize=(5.0, 4.0), dpi=100)
    comparison_figure(neural, figure=fig, layout="mosaic", sextractor=case["sep"])
    title = figure_mosaic(fig).texts[-1].text
    assert title.startswith("peeling sha256:59395eeef700  ·  quality: High") and full.startswith(title)
    assert "stretch" in full and "stretch" not in title and "…" not in title
    assert {t.text for t in figure_mosaic(fig).texts} >= {"peeling"}  # the row label names the deblender only
