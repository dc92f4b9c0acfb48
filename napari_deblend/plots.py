"""Matplotlib figures: the blend comparison panel (neural vs SExtractor vs truth) and its exports.

The figure is built on :class:`matplotlib.figure.Figure` directly (no pyplot
global state), so it embeds in Qt through ``FigureCanvasQTAgg`` and saves with
:func:`save_figure`. Multi-band stamps are shown as their band sum.

Layout of :func:`comparison_figure`: one row per method, then the truth; columns
are shared by all rows::

    blend               | component 0 .. K-1      | residual
    other's masks       | other's components      | other's residual      (optional)
    SExtractor segm.    | SExtractor components   | SExtractor residual   (optional)
    truth noiseless sum | truth components        | blend - sum(truth)    (optional)

Components of the lower rows stand under the component of the main result they
match (within :data:`~napari_deblend.measurements.MATCH_RADIUS` pixels), so a
column compares one galaxy across methods; unmatched ones get columns of their
own, and an empty cell says why (e.g. "merged into S1", "missed").

What goes in each panel is planned in :mod:`napari_deblend.plots_panels`; this
module draws the plan with matplotlib axes (exports and the ``"fast"`` layout),
and :mod:`napari_deblend.plots_mosaic` paints it into one image (the viewer's
``"mosaic"`` layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib import patheffects, rcParams
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .errors import DeblendInputError
from .measurements import as_truth
from .plots_mosaic import (
    _MOSAIC_ATTRIBUTE,
    _MOSAIC_AXES_ATTRIBUTE,
    ComparisonMosaic,
    _mosaic,
    _show_mosaic,
    figure_mosaic,
)
from .plots_panels import (
    _ID_STYLE,
    _POOL_ATTRIBUTE,
    IMAGE_CMAP,
    RESIDUAL_CMAP,
    RESIDUAL_NSIGMA,
    _band_sum,
    _check_same_shape,
    _flux_norm,
    _flux_ticks,
    _label_colormap,
    _label_places,
    _Panel,
    _plan,
    _resolve_sextractor,
    _scalebar_arcsec,
    _short_number,
    _sum_noise,
    _suptitle,
)

#: Stretches accepted by :func:`comparison_figure`.
STRETCHES = ("asinh", "linear")
#: Layouts accepted by :func:`comparison_figure`.
LAYOUTS = ("constrained", "fast", "mosaic")
#: File suffixes accepted by :func:`save_figure` and the matplotlib format they select.
SAVE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
#: Side of one panel, inches (default figure size).
PANEL_INCHES = 2.0

# ---- drawing --------------------------------------------------------------------------------------


def _draw_marks(ax: Axes, marks: list[tuple[float, float, str]], shape: tuple[int, int]) -> None:
    """A cross at each position and its id beside it (white on a black outline)."""
    marks = [m for m in marks if np.isfinite(m[0]) and np.isfinite(m[1])]
    for (y, x, text), (sx, sy) in zip(marks, _label_places(marks, shape)):
        ax.plot([x], [y], marker="+", color="white", markersize=6, markeredgewidth=1.2,
                path_effects=[patheffects.withStroke(linewidth=2.5, foreground="black")])
        ax.annotate(text, (x, y), xytext=(3 * sx, 3 * sy), textcoords="offset points",
                    ha="left" if sx > 0 else "right", va="bottom" if sy > 0 else "top", **_ID_STYLE)


def _draw_note(ax: Axes, text: str, shape: tuple[int, int]) -> None:
    """An empty cell of the grid: a dashed frame the size of an image and a short explanation."""
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(-0.5, shape[0] - 0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_linestyle((0, (3, 3)))
        spine.set_edgecolor("0.7")
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.4",
            style="italic")


def _draw_scalebar(ax: Axes, shape: tuple[int, int], pixel_scale: float) -> None:
    """A 1″/2″/5″ bar in the lower-left corner of the panel."""
    height, width = shape
    arcsec = _scalebar_arcsec(width, pixel_scale)
    if arcsec is None:
        return
    length = arcsec / pixel_scale
    x0, y0 = 0.06 * width, 0.07 * height
    stroke = [patheffects.withStroke(linewidth=3.5, foreground="black")]
    ax.plot([x0, x0 + length], [y0, y0], color="white", linewidth=2, solid_capstyle="butt", path_effects=stroke)
    ax.text(x0 + length / 2, y0 + 0.03 * height, f'{arcsec:g}"', ha="center", va="bottom", fontsize=7,
            color="white", path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])


def _reset_axes(ax: Axes) -> None:
    """Empty an axes drawn by :func:`_draw` before, for another panel (much cheaper than a new one)."""
    for artist in [*ax.images, *ax.lines, *ax.texts, *ax.collections, *ax.patches]:
        artist.remove()
    for spine in ax.spines.values():
        spine.set_linestyle("solid")
        spine.set_edgecolor(rcParams["axes.edgecolor"])
    ax.set_title("")


def _panel_axes(fig: Figure, grid: Any, index: int, p: _Panel, fast: bool) -> Axes:
    """The axes of the ``index``-th panel: new, or in ``fast`` mode one kept from the figure's last draw.

    Fast axes have no x/y ``Axis`` (nothing to draw there: the panels have no
    ticks), so they cost less to make and to draw; their y label is a text.
    """
    spec = grid[p.row, p.col]
    if not fast:
        return fig.add_subplot(spec)
    pool = fig.__dict__.setdefault(_POOL_ATTRIBUTE, [])
    if index < len(pool):
        ax = pool[index]
        _reset_axes(ax)
        if ax not in fig.axes:
            fig.add_axes(ax)
        ax.set_subplotspec(spec)
        ax.set_position(spec.get_position(fig))
        return ax
    ax = fig.add_subplot(spec)
    ax.xaxis.set_visible(False)
    ax.yaxis.set_visible(False)
    pool.append(ax)
    return ax


def _draw(
    fig: Figure, panels: list[_Panel], n_rows: int, n_cols: int, norm: mcolors.Normalize, sigma: float,
    pixel_scale: float, fast: bool = False,
) -> None:
    """Draw the panels on a grid, with the two colourbars under it.

    ``fast`` (the panel in the viewer) re-uses the axes of the figure's previous
    fast draw and leaves out the x/y axes, about halving the time to build and
    render the figure; the picture is the same.
    """
    grid = fig.add_gridspec(n_rows, n_cols)
    panel_axes, flux_axes, resid_axes = [], [], []
    flux_image = resid_image = None
    limit = RESIDUAL_NSIGMA * sigma
    if fast:  # forget the last draw's colourbars and unused panels
        pool = fig.__dict__.get(_POOL_ATTRIBUTE, [])
        for ax in list(fig.axes):
            if ax not in pool[: len(panels)]:
                fig.delaxes(ax)
    for index, p in enumerate(panels):
        ax = _panel_axes(fig, grid, index, p, fast)
        ax.set_label(p.label)
        panel_axes.append(ax)
        shape = p.image.shape
        if p.kind == "note":
            _draw_note(ax, p.text, shape)
            continue
        if p.kind == "flux":
            im = ax.imshow(p.image, origin="lower", cmap=IMAGE_CMAP, norm=norm, interpolation="nearest")
            flux_axes.append(ax)
            flux_image = im
        elif p.kind == "residual":
            im = ax.imshow(p.image, origin="lower", cmap=RESIDUAL_CMAP, vmin=-limit, vmax=limit,
                           interpolation="nearest")
            resid_axes.append(ax)
            resid_image = im
        else:  # labels
            n_labels = int(p.image.max()) if p.image.size else 0
            cmap, lnorm = _label_colormap(n_labels)
            ax.imshow(p.image, origin="lower", cmap=cmap, norm=lnorm, interpolation="nearest")
        if p.outlines is not None and p.outlines.max() > 0:
            n_labels = int(p.outlines.max())
            cmap, _ = _label_colormap(n_labels)
            for lab in range(1, n_labels + 1):
                ax.contour((p.outlines == lab).astype(float), levels=[0.5], colors=[cmap(lab)], linewidths=1.0,
                           origin="lower")
        _draw_marks(ax, p.marks, shape)
        if p.scalebar:
            _draw_scalebar(ax, shape, pixel_scale)
        # in a narrow figure (a dock widget), give magnitude and flux a line each and shrink the text
        per_column = fig.get_figwidth() / max(n_cols, 1)
        title = p.title if per_column >= 1.6 else p.title.replace(" · ", "\n")
        ax.set_title(title, fontsize=8 if per_column >= 1.6 else 6.5, linespacing=1.1)
        if fast:  # re-used axes: the limits of this image, not the union with earlier ones
            ax.set_xlim(-0.5, shape[1] - 0.5)
            ax.set_ylim(-0.5, shape[0] - 0.5)
            if p.ylabel:
                ax.text(-0.04, 0.5, p.ylabel, transform=ax.transAxes, rotation=90, ha="right", va="center",
                        fontsize=8)
            continue
        ax.set_xticks([])
        ax.set_yticks([])
        if p.ylabel:
            ax.set_ylabel(p.ylabel, fontsize=8)
    # both colourbars lie under the grid: the flux one under the flux columns, the residual one under
    # the residual column
    if flux_image is not None:
        under = [ax for ax, p in zip(panel_axes, panels) if p.col < n_cols - 1]
        cbar = fig.colorbar(flux_image, ax=under, location="bottom", fraction=0.04, pad=0.01, shrink=0.8,
                            aspect=25 * max(n_cols - 1, 1))
        ticks = _flux_ticks(norm)
        cbar.set_ticks(ticks, labels=[_short_number(t) if t else "0" for t in ticks])
        cbar.set_label("flux panels: e⁻ / pixel", fontsize=8, labelpad=1)
        cbar.ax.tick_params(labelsize=7)
    if resid_image is not None:
        cbar = fig.colorbar(resid_image, ax=resid_axes, location="bottom", fraction=0.04, pad=0.01, shrink=0.8,
                            aspect=20)
        ticks = np.linspace(-RESIDUAL_NSIGMA, RESIDUAL_NSIGMA, 5)
        cbar.set_ticks(ticks * sigma, labels=[f"{t:+g}σ" if t else "0" for t in ticks])
        cbar.set_label(f"residual (σ = {_short_number(sigma)} e⁻)", fontsize=8, labelpad=1)
        cbar.ax.tick_params(labelsize=7)


# ---- public API -----------------------------------------------------------------------------------


def comparison_figure(
    result: Any,
    sextractor: Any = None,
    truth: Any = None,
    other: Any = None,
    figure: Figure | None = None,
    stretch: str = "asinh",
    preset: Any = None,
    layout: str = "constrained",
) -> Figure:
    """The panel astronomers look at for one blend: components, residual, other model, SExtractor, truth.

    One row per method (see the module docstring): ``result`` (blend, its
    components titled with magnitude and flux, residual), optionally ``other``
    (its masks, components, residual), SExtractor (segmentation with its labels
    in a qualitative colormap, its components, or one outlined panel when it
    finds more than three objects beyond the components, and its residual), and
    optionally the truth (noiseless sum, components, noise ``blend - sum(truth)``).
    Components of the lower rows sit under the component of ``result`` they
    match; empty cells say why (merged, missed, no match).

    Every flux panel uses the same stretch (limits from the blend, asinh soft
    scale of 2 sigma of the noise) with one shared colourbar; residual panels
    use the diverging ``RdBu_r`` at ±5 sigma of the noise (estimated on the
    residual when ``result.noise`` is unknown) with their own colourbar.
    Component ids are drawn at their positions (``S`` for SExtractor, ``T``
    for truth), ``origin="lower"`` (north up), a scale bar in arcseconds sits on
    the blend, and the suptitle names the model, its quality flag and device.
    Axes carry labels (``Axes.get_label()``): ``"blend"``, ``"component k"``,
    ``"residual"``, ``"other masks"``, ``"other component k"``, ``"other residual"``,
    ``"sextractor segmentation"``, ``"sextractor component k"`` or
    ``"sextractor components"``, ``"sextractor residual"``, ``"truth blend"``,
    ``"truth component j"``, ``"truth noise"`` and ``"note <row> <col>"`` for
    empty cells; colourbars are ``"<colorbar>"``.

    Parameters
    ----------
    result : DeblendResult
        The deblend result to show.
    sextractor : DeblendResult or None or bool
        SExtractor result to compare with; ``None`` (or ``True``) runs the
        ``sextractor`` deblender on ``result.blend`` with ``result.noise``, or
        shows no second row when ``result`` itself comes from SExtractor;
        ``False`` omits the SExtractor row.
    truth : Truth or dict or (BlendSet, int), optional
        Noiseless truth (``components`` ``(M, C, H, W)``, ``positions``
        ``(M, 2)`` ``(y, x)``), see :func:`napari_deblend.measurements.as_truth`.
    other : DeblendResult, optional
        A second model's result on the same blend ("compare with").
    figure : matplotlib.figure.Figure, optional
        Figure to draw into (cleared first; e.g. one held by a Qt canvas);
        default: a new figure sized for the grid.
    stretch : {"asinh", "linear"}
        Stretch of the flux panels.
    preset : str or SurveyPreset, optional
        Survey preset for magnitudes and the angular scale bar (default ``lsst-i``).
    layout : {"constrained", "fast", "mosaic"}
        ``"constrained"`` (exports): matplotlib's constrained layout.
        ``"fast"``: fixed margins, no x/y axes, and the axes of ``figure``'s
        previous fast draw are re-used, about three times quicker to build and
        draw. ``"mosaic"`` (the viewer's panel): the grid of ``"fast"``
        composited with numpy into one image the size of ``figure`` in pixels
        (colormaps applied through their lookup tables, nearest-neighbour
        scaling), shown by one full-figure ``imshow``; the texts are figure
        texts, also kept in pixels for a GUI to draw (:func:`figure_mosaic`).
        Some 20 times quicker than ``"fast"``.

    Returns
    -------
    matplotlib.figure.Figure
        The figure; save it with :func:`save_figure`.

    Raises
    ------
    DeblendInputError
        For an unknown stretch, or truth/other images of another size than the blend.
    """
    from .presets import get_preset

    if stretch not in STRETCHES:
        raise DeblendInputError(f"stretch={stretch!r}: expected one of {', '.join(STRETCHES)}")
    p = get_preset(preset)
    sep = _resolve_sextractor(result, sextractor)
    truth = as_truth(truth) if truth is not None else None
    for what, obj in (("truth", truth), ("other", other), ("sextractor", sep)):
        if obj is not None:
            _check_same_shape(result, obj.components if what == "truth" else obj.blend, what)
    sigma = _sum_noise(result)
    panels, n_cols = _plan(result, sep, truth, other, sigma, p.zero_point, p.exposure)
    n_rows = max(panel.row for panel in panels) + 1
    if layout not in LAYOUTS:
        raise DeblendInputError(f"layout={layout!r}: expected 'constrained' (exports), 'fast' or 'mosaic' "
                                "(interactive)")
    fast = layout == "fast"
    if figure is None:
        figure = Figure(figsize=(n_cols * PANEL_INCHES + 0.5, n_rows * (PANEL_INCHES + 0.45) + 0.9))
    if layout == "mosaic":
        width, height = (max(int(round(v)), 1) for v in figure.get_size_inches() * figure.dpi)
        norm = _flux_norm(_band_sum(result.blend), sigma, stretch)
        mosaic = _mosaic(panels, n_rows, n_cols, norm, sigma, p.pixel_scale, width, height, float(figure.dpi),
                         _suptitle(result, other, stretch))
        _show_mosaic(figure, mosaic)
        return figure
    figure.__dict__.pop(_MOSAIC_ATTRIBUTE, None)
    figure.__dict__.pop(_MOSAIC_AXES_ATTRIBUTE, None)
    if not (fast and _POOL_ATTRIBUTE in figure.__dict__):  # a fast figure keeps its axes for the next draw
        figure.clear()
        figure.__dict__.pop(_POOL_ATTRIBUTE, None)
    if layout == "constrained":
        figure.set_layout_engine("constrained")
        figure.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.03, hspace=0.05)
    else:  # fixed margins: constrained layout costs ~1 s a draw, too slow for a click in the viewer
        figure.set_layout_engine("none")
        figure.subplots_adjust(left=0.04, right=0.99, bottom=0.13, top=0.86, wspace=0.08, hspace=0.6)
    norm = _flux_norm(_band_sum(result.blend), sigma, stretch)
    _draw(figure, panels, n_rows, n_cols, norm, sigma, p.pixel_scale, fast=fast)
    figure.suptitle(_suptitle(result, other, stretch), fontsize=10)
    return figure


def save_figure(fig: Figure, path: str | Path, dpi: float = 150) -> Path:
    """Save a figure; the format follows the suffix (``.png``, ``.pdf``, ``.svg``).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        Figure to save.
    path : str or pathlib.Path
        Output file.
    dpi : float
        Resolution of raster output.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    DeblendInputError
        If the suffix is not one of :data:`SAVE_FORMATS`.
    """
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DeblendInputError(
            f"cannot save a figure as {path.name!r}: expected a file ending in {', '.join(SAVE_FORMATS)}"
        )
    fig.savefig(path, format=fmt, dpi=dpi)
    return path


# ---- the comparison table as text -----------------------------------------------------------------

_FORMATS = {"flux": "%.1f", "mag": "%.3f", "mu20": "%.3f", "mu02": "%.3f", "mu11": "%.3f", "e1": "%.3f",
            "e2": "%.3f", "x": "%.2f", "y": "%.2f", "dflux_frac": "%.4f", "dmag": "%.3f", "de1": "%.3f",
            "de2": "%.3f"}


def _column_format(name: str) -> str:
    base = name
    for prefix in ("sep_", "truth_"):
        if base.startswith(prefix):
            base = base[len(prefix):]
    return _FORMATS.get(base, "%.4g")


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else fmt % value
    if np.ma.is_masked(value):
        return ""
    return " ".join(str(value).split())  # no tabs or newlines inside a cell


def comparison_text(table: Any, columns: Sequence[str] | None = None) -> str:
    """A tab-separated plain-text version of a :func:`~napari_deblend.measurements.measure` table.

    Parameters
    ----------
    table : astropy.table.Table
        One row per component.
    columns : sequence of str, optional
        Columns to write, in order (default: all).

    Returns
    -------
    str
        A header line (column names, with units in brackets) and one line per
        row; fluxes ``%.1f``, magnitudes, moments and ellipticities ``%.3f``,
        positions ``%.2f``, other floats ``%.4g``, NaN as ``nan``. Ends with a newline.

    Raises
    ------
    DeblendInputError
        If a requested column is not in the table.
    """
    names = list(table.colnames if columns is None else columns)
    missing = [n for n in names if n not in table.colnames]
    if missing:
        raise DeblendInputError(f"columns {missing} are not in the table: expected some of {table.colnames}")
    header = []
    for name in names:
        unit = getattr(table[name], "unit", None)
        header.append(f"{name} [{unit}]" if unit is not None and str(unit) else name)
    lines = ["\t".join(header)]
    formats = [_column_format(n) for n in names]
    for row in table:
        lines.append("\t".join(_cell(row[n], f) for n, f in zip(names, formats)))
    return "\n".join(lines) + "\n"


# the mosaic layout lives in its own module, which builds on the panels above


__all__ = ["IMAGE_CMAP", "LAYOUTS", "RESIDUAL_CMAP", "STRETCHES", "ComparisonMosaic", "comparison_figure",
           "comparison_text", "figure_mosaic", "save_figure"]
