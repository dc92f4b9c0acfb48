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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib import patheffects, rcParams
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .errors import DeblendInputError
from .measurements import (
    MATCH_RADIUS,
    as_truth,
    component_measurements,
    is_sextractor_result,
    magnitude,
    match_positions,
    sextractor_status,
)

#: Stretches accepted by :func:`comparison_figure`.
STRETCHES = ("asinh", "linear")
#: Layouts accepted by :func:`comparison_figure`.
LAYOUTS = ("constrained", "fast", "mosaic")
#: File suffixes accepted by :func:`save_figure` and the matplotlib format they select.
SAVE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
#: Colormap of the flux panels.
IMAGE_CMAP = "magma"
#: Diverging colormap of the residual panels.
RESIDUAL_CMAP = "RdBu_r"
#: Qualitative colormap of the segmentation labels.
LABEL_CMAP = "tab10"
#: Residual colour limits, in units of the band-sum noise.
RESIDUAL_NSIGMA = 5.0
#: Linear (soft) scale of the asinh stretch, in units of the band-sum noise.
SOFT_NSIGMA = 2.0
#: Lower limit of the flux panels, in units of the band-sum noise.
VMIN_NSIGMA = -2.0
#: SExtractor components get one panel each up to this many; more share one panel.
MAX_SEP_PANELS = 3
#: Side of one panel, inches (default figure size).
PANEL_INCHES = 2.0

_ID_STYLE = {
    "color": "white",
    "fontsize": 8,
    "fontweight": "bold",
    "path_effects": [patheffects.withStroke(linewidth=2.2, foreground="black")],
}


# ---- panels ---------------------------------------------------------------------------------------


@dataclass
class _Panel:
    """One axes of the grid: what to draw and where."""

    row: int
    col: int
    label: str
    title: str = ""
    image: np.ndarray | None = None
    kind: str = "flux"  # flux | residual | labels | note
    text: str = ""
    marks: list[tuple[float, float, str]] = dc_field(default_factory=list)
    ylabel: str = ""
    outlines: np.ndarray | None = None  # labels image whose outlines to draw
    scalebar: bool = False


def _band_sum(array: np.ndarray) -> np.ndarray:
    """``(..., C, H, W)`` summed over bands -> ``(..., H, W)`` float64."""
    return np.asarray(array, dtype=np.float64).sum(axis=-3)


def _sum_noise(result: Any) -> float:
    """Background sigma of the band sum: from ``result.noise``, else a robust estimate on the residual."""
    n_bands = result.blend.shape[0]
    noise = float(getattr(result, "noise", float("nan")))
    if np.isfinite(noise) and noise > 0:
        return noise * np.sqrt(n_bands)
    resid = _band_sum(result.residual).ravel()
    mad = float(np.median(np.abs(resid - np.median(resid))))
    if mad > 0:
        return 1.4826 * mad
    spread = float(np.std(_band_sum(result.blend)))
    return spread if spread > 0 else 1.0


def _flux_norm(blend2d: np.ndarray, sigma: float, stretch: str) -> mcolors.Normalize:
    """The stretch shared by every flux panel: limits from the blend, soft scale from the noise."""
    vmin = VMIN_NSIGMA * sigma
    vmax = float(np.nanmax(blend2d)) if blend2d.size else 0.0
    if not vmax > vmin + sigma:
        vmax = vmin + 10.0 * sigma
    if stretch == "linear":
        return mcolors.Normalize(vmin=vmin, vmax=vmax)
    soft = SOFT_NSIGMA * sigma
    if hasattr(mcolors, "AsinhNorm"):
        return mcolors.AsinhNorm(linear_width=soft, vmin=vmin, vmax=vmax)
    return mcolors.FuncNorm(  # matplotlib < 3.6
        (lambda x: np.arcsinh(np.asarray(x) / soft), lambda y: soft * np.sinh(np.asarray(y))),
        vmin=vmin,
        vmax=vmax,
    )


def _flux_title(head: str, flux: float, zero_point: float, exposure: float, flux_name: str = "F") -> str:
    mag = magnitude(flux, zero_point, exposure)
    mag_text = f"{mag:.2f} mag" if np.isfinite(mag) else "no mag"
    return f"{head}\n{mag_text} · {flux_name} {_short_number(flux)} e⁻"


def _short_number(value: float) -> str:
    """A flux for a title: 3 significant figures, thousands as k, millions as M."""
    if not np.isfinite(value):
        return "nan"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _slots(reference: np.ndarray, positions: np.ndarray, n_reference: int) -> list[int]:
    """Column slot of each position: the slot of its matched reference, else new slots after them."""
    slots = [-1] * len(positions)
    if len(positions) and len(reference):
        for i, j in match_positions(positions, reference):
            slots[i] = j
    nxt = n_reference
    for i, slot in enumerate(slots):
        if slot < 0:
            slots[i] = nxt
            nxt += 1
    return slots


def _check_same_shape(result: Any, other: Any, what: str) -> None:
    if tuple(np.shape(other)[-2:]) != tuple(result.blend.shape[-2:]):
        raise DeblendInputError(
            f"{what} has images of {np.shape(other)[-2]}x{np.shape(other)[-1]} pixels: expected the blend's "
            f"{result.blend.shape[-2]}x{result.blend.shape[-1]}"
        )


def _resolve_sextractor(result: Any, sextractor: Any) -> Any:
    """``None``: run the ``sextractor`` deblender on the blend (or reuse ``result``); ``False``: none."""
    if sextractor is False:
        return None
    if sextractor is None or sextractor is True:
        if is_sextractor_result(result):
            return None  # the result is SExtractor's: no second, identical row
        from .deblenders.base import get_deblender

        noise = float(getattr(result, "noise", float("nan")))
        noise_arg = noise if np.isfinite(noise) and noise > 0 else None
        return get_deblender("sextractor").deblend_batch(result.blend[None], noise=noise_arg)[0]
    return sextractor


def _segmentation(sep: Any) -> np.ndarray:
    """Labels image ``(H, W)``, 1..K brightest first: sep's own, else from the masks."""
    seg = (sep.info or {}).get("segmentation")
    if seg is not None:
        return np.asarray(seg, dtype=int)
    return _labels_from_masks(sep).astype(int)


# ---- building the grid ----------------------------------------------------------------------------


def _plan(
    result: Any, sep: Any, truth: Any, other: Any, sigma: float, zero_point: float, exposure: float
) -> tuple[list[_Panel], int]:
    """All panels of the figure and the number of columns (one row per method, then the truth)."""
    k = result.n_components
    other_slots = _slots(result.positions, other.positions, k) if other is not None else []
    truth_slots = _slots(result.positions, truth.positions, k) if truth is not None else []
    sep_slots = _slots(result.positions, sep.positions, k) if sep is not None else []
    sep_single = sep is not None and sep.n_components > 0 and max(sep_slots) + 1 > k + MAX_SEP_PANELS
    used = [k, *[s + 1 for s in other_slots], *[s + 1 for s in truth_slots]]
    if sep is not None:
        used.append(1 if sep_single else max([0, *[s + 1 for s in sep_slots]]))
    c_resid = max(used) + 1
    n_bands = result.blend.shape[0]
    blend_title = "blend" if n_bands == 1 else f"blend (sum of {n_bands} bands)"
    marks = [(y, x, str(i + 1)) for i, (y, x) in enumerate(result.positions)]
    panels = [
        _Panel(0, 0, "blend", blend_title, _band_sum(result.blend), marks=marks, ylabel=_short_model(result),
               scalebar=True)
    ]
    panels += _component_panels(0, result, list(range(k)), "component", "", zero_point, exposure)
    panels.append(_residual_panel(0, c_resid, "residual", result.residual, sigma))
    notes: dict[int, Any] = {0: lambda slot: "no\ncomponent"}
    row = 1
    if other is not None:
        notes[row] = lambda slot: "no matching\ncomponent"
        title = "masks" + (f"\nquality: {other.quality}" if other.quality else "")
        panels.append(_Panel(row, 0, "other masks", title, _labels_from_masks(other), kind="labels",
                             marks=[(y, x, str(i + 1)) for i, (y, x) in enumerate(other.positions)],
                             ylabel=_short_model(other)))
        panels += _component_panels(row, other, other_slots, "other component", "", zero_point, exposure)
        panels.append(_residual_panel(row, c_resid, "other residual", other.residual, sigma))
        row += 1
    if sep is not None:
        status, index = sextractor_status(result.positions, sep.positions)
        seg = _segmentation(sep)

        def sep_note(slot: int, status: list[str] = status, index: np.ndarray = index) -> str:
            if slot >= k:
                return "no object\nhere"
            if status[slot] == "merged":
                return f"merged into S{index[slot] + 1}"
            inside = 0
            if np.all(np.isfinite(result.positions[slot])):
                y, x = np.round(result.positions[slot]).astype(int)
                inside = seg[y, x] if 0 <= y < seg.shape[0] and 0 <= x < seg.shape[1] else 0
            return f"not deblended:\ninside S{inside}" if inside > 0 else "missed"

        if not sep_single:  # the shared panel stands for all the components: no per-column notes
            notes[row] = sep_note
        panels += _sextractor_panels(row, sep, sep_slots, sep_single, c_resid, sigma, zero_point, exposure)
        row += 1
    if truth is not None:
        notes[row] = lambda slot: f"no truth within\n{MATCH_RADIUS:g} px (spurious?)" if slot < k else "—"
        t_comps = _band_sum(truth.components)
        t_marks = [(y, x, f"T{j + 1}") for j, (y, x) in enumerate(truth.positions)]
        t_sum = t_comps.sum(axis=0) if len(t_comps) else np.zeros(result.blend.shape[-2:])
        panels.append(_Panel(row, 0, "truth blend", "noiseless sum", t_sum, marks=t_marks, ylabel="truth"))
        for j, slot in enumerate(truth_slots):
            head = f"T{j + 1}" + ("" if slot < k else " unmatched")  # short: the row is labelled "truth"
            title = _flux_title(head, float(t_comps[j].sum()), zero_point, exposure)
            panels.append(_Panel(row, 1 + slot, f"truth component {j}", title, t_comps[j], marks=[t_marks[j]]))
        noise_image = _band_sum(result.blend) - t_sum
        panel = _residual_panel(row, c_resid, "truth noise", noise_image[None], sigma)
        panel.title = panel.title.replace("residual", "blend − Σ truth")
        panels.append(panel)
    occupied = {(p.row, p.col) for p in panels}
    for r, note in notes.items():
        for col in range(1, c_resid):
            if (r, col) not in occupied:
                panels.append(_Panel(r, col, f"note {r} {col}", kind="note", text=note(col - 1),
                                     image=np.zeros(result.blend.shape[-2:])))
    return panels, c_resid + 1


def _short_model(result: Any) -> str:
    return str(result.model) or "model"


def _component_panels(
    row: int, result: Any, slots: list[int], label: str, prefix: str, zero_point: float, exposure: float,
    flux_name: str = "F",
) -> list[_Panel]:
    """One panel per component of ``result``, in the columns given by ``slots``."""
    flux = component_measurements(result)["flux"]
    comps = _band_sum(result.components)
    out = []
    for i, slot in enumerate(slots):
        y, x = result.positions[i]
        title = _flux_title(f"{prefix}{i + 1}" if prefix else f"component {i + 1}", flux[i], zero_point, exposure,
                            flux_name)
        out.append(_Panel(row, 1 + slot, f"{label} {i}", title, comps[i], marks=[(y, x, f"{prefix}{i + 1}")]))
    return out


def _residual_panel(row: int, col: int, label: str, residual: np.ndarray, sigma: float) -> _Panel:
    image = _band_sum(residual)
    rms = float(np.sqrt(np.mean(image**2))) / sigma if image.size else float("nan")
    return _Panel(row, col, label, f"residual\nrms {rms:.2f}σ", image, kind="residual")


def _labels_from_masks(result: Any) -> np.ndarray:
    """Labels image 1..K from a result's ``(K, H, W)`` masks (the first component wins overlaps)."""
    masks = np.asarray(result.masks, dtype=bool).reshape(-1, *result.blend.shape[-2:])
    labels = np.zeros(result.blend.shape[-2:], dtype=float)
    for k in range(len(masks) - 1, -1, -1):
        labels[masks[k]] = k + 1
    return labels


def _sextractor_panels(
    row: int, sep: Any, slots: list[int], single: bool, c_resid: int, sigma: float, zero_point: float,
    exposure: float,
) -> list[_Panel]:
    seg = _segmentation(sep)
    n = sep.n_components
    marks = [(y, x, f"S{i + 1}") for i, (y, x) in enumerate(sep.positions)]
    noun = "object" if n == 1 else "objects"
    panels = [
        _Panel(row, 0, "sextractor segmentation", f"segmentation\n{n} {noun}", seg.astype(float), kind="labels",
               marks=marks, ylabel="SExtractor")
    ]
    name = "F_auto" if is_sextractor_result(sep) else "F"
    if single:
        total = _band_sum(sep.components).sum(axis=0)
        panels.append(_Panel(row, 1, "sextractor components", f"components\n{n} {noun}, outlined", total,
                             marks=marks, outlines=seg))
    else:
        panels += _component_panels(row, sep, slots, "sextractor component", "S", zero_point, exposure, name)
    panels.append(_residual_panel(row, c_resid, "sextractor residual", sep.residual, sigma))
    return panels


# ---- drawing --------------------------------------------------------------------------------------


def _label_colormap(n_labels: int) -> tuple[mcolors.Colormap, mcolors.Normalize]:
    """A qualitative colormap for labels 0..n (0 = background, light grey)."""
    import matplotlib

    base = matplotlib.colormaps[LABEL_CMAP]
    n_base = getattr(base, "N", 10)
    colours = ["#e8e8e8"] + [base(i % n_base) for i in range(max(n_labels, 1))]
    cmap = mcolors.ListedColormap(colours)
    return cmap, mcolors.BoundaryNorm(np.arange(-0.5, len(colours) + 0.5), cmap.N)


def _label_places(marks: list[tuple[float, float, str]], shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Side ``(sx, sy)`` of each mark on which to write its id, so that ids overlap neither each other
    nor the other marks, nor leave the panel (greedy, brightest/first mark first)."""
    height, width = shape
    char_w, text_h, gap = 0.04 * width, 0.065 * height, 0.03 * width  # rough size of 8-pt text, in pixels
    points = np.array([(x, y) for y, x, _ in marks], dtype=float).reshape(-1, 2)
    placed: list[tuple[float, float, float, float]] = []  # label boxes: centre x, centre y, half w, half h
    sides = []
    for i, (y, x, text) in enumerate(marks):
        half_w, half_h = 0.5 * char_w * max(len(text), 1), 0.5 * text_h
        best, best_score = (1, 1), -np.inf
        for rank, (sx, sy) in enumerate(((1, 1), (-1, 1), (1, -1), (-1, -1))):
            cx, cy = x + sx * (gap + half_w), y + sy * (gap + half_h)
            score = -rank * 1e-3  # prefer up-right, then up-left, ...
            # leaving the panel is worst
            out = max(0.0, half_w - cx + 0.5, cx + half_w - width + 0.5, half_h - cy + 0.5, cy + half_h - height + 0.5)
            score -= 10.0 * out
            # overlap with labels already placed and with the other marks
            for bx, by, bw, bh in placed:
                ox = max(0.0, half_w + bw - abs(cx - bx))
                oy = max(0.0, half_h + bh - abs(cy - by))
                score -= ox * oy
            for j, (px, py) in enumerate(points):
                if j != i and abs(px - cx) < half_w + 1 and abs(py - cy) < half_h + 1:
                    score -= 2.0 * half_h
            if score > best_score:
                best, best_score = (sx, sy), score
        sx, sy = best
        placed.append((x + sx * (gap + half_w), y + sy * (gap + half_h), half_w, half_h))
        sides.append(best)
    return sides


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


def _scalebar_arcsec(width: int, pixel_scale: float) -> float | None:
    """Length in arcsec (5, 2, 1 or 0.5) of a scale bar at most 30 % of a ``width``-pixel panel (None: none fits)."""
    if not pixel_scale > 0:
        return None
    return next((a for a in (5.0, 2.0, 1.0, 0.5) if a / pixel_scale <= 0.3 * width), None)


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


_POOL_ATTRIBUTE = "_napari_deblend_axes_pool"


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


def _flux_ticks(norm: mcolors.Normalize, min_gap: float = 0.09) -> list[float]:
    """Round colourbar ticks (0, ±1/2/5 × 10^n) at least ``min_gap`` apart in the stretched scale."""
    vmin, vmax = float(norm.vmin), float(norm.vmax)
    top = int(np.ceil(np.log10(max(abs(vmin), abs(vmax), 1e-30))))
    candidates = {0.0}
    for power in range(top - 8, top + 1):
        for mantissa in (1.0, 2.0, 5.0):
            candidates.update({mantissa * 10.0**power, -mantissa * 10.0**power})
    inside = sorted(v for v in candidates if vmin <= v <= vmax)
    # keep 0 first, then the largest values (most informative), then fill downwards
    position = dict(zip(inside, np.asarray(norm(np.asarray(inside, float)), float).ravel().tolist()))
    chosen: list[float] = []
    for v in sorted(inside, key=lambda v: (v != 0.0, -abs(v))):
        if all(abs(position[v] - position[c]) >= min_gap for c in chosen):
            chosen.append(v)
    return sorted(chosen)


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


def _suptitle(result: Any, other: Any, stretch: str) -> str:
    parts = [_short_model(result)]
    if result.quality:
        parts.append(f"quality: {result.quality}")
    origin = tuple(int(v) for v in result.origin)
    if result.blend_id or any(origin):
        parts.append(f"blend {result.blend_id} at (y, x) = {origin}")
    parts.append(f"device {result.device}")
    if other is not None:
        parts.append(f"vs {_short_model(other)}" + (f" ({other.quality})" if other.quality else ""))
    parts.append(f"{stretch} stretch")
    return "  ·  ".join(parts)


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
from .plots_mosaic import (  # noqa: E402
    _MOSAIC_ATTRIBUTE,
    _MOSAIC_AXES_ATTRIBUTE,
    ComparisonMosaic,
    _mosaic,
    _show_mosaic,
    figure_mosaic,
)

__all__ = ["LAYOUTS", "STRETCHES", "ComparisonMosaic", "comparison_figure", "comparison_text", "figure_mosaic",
           "save_figure"]
