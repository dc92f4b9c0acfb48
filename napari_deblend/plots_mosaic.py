"""The comparison figure of the viewer's panel as one image: panels composited with numpy, texts in pixels.

:func:`~napari_deblend.plots.comparison_figure` with ``layout="mosaic"`` lays
out the same panels as its ``"fast"`` layout, but instead of one matplotlib
axes per panel (hundreds of milliseconds to build and draw) it paints every
panel, frame, mark and colourbar into one RGBA array the size of the render
(colormaps applied through their lookup tables, nearest-neighbour scaling) and
keeps the texts as :class:`~napari_deblend._figure_text.FigureText` placed in
pixels, for a GUI to draw on top (the napari panel draws them with Qt). The
figure holds one full-figure ``imshow`` of the pixels and an artist drawing the
texts, so it also saves like any matplotlib figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib import patheffects
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.text import Text

from ._figure_text import FigureText
from .plots_panels import (
    _ID_STYLE,
    _POOL_ATTRIBUTE,
    IMAGE_CMAP,
    RESIDUAL_CMAP,
    RESIDUAL_NSIGMA,
    TITLE_SEPARATOR,
    _flux_ticks,
    _label_colormap,
    _label_places,
    _Panel,
    _scalebar_arcsec,
    _short_number,
)

_MOSAIC_ATTRIBUTE = "_napari_deblend_mosaic"
_MOSAIC_AXES_ATTRIBUTE = "_napari_deblend_mosaic_axes"
#: Margins of the grid in figure fractions (left, right, bottom, top) and the gaps between cells, in
#: units of a cell: the same as the ``"fast"`` layout.
_MARGINS = (0.04, 0.99, 0.13, 0.86)
_WSPACE, _HSPACE = 0.08, 0.6
_BLACK = (0.0, 0.0, 0.0, 1.0)
_WHITE = (1.0, 1.0, 1.0, 1.0)


@dataclass
class ComparisonMosaic:
    """The comparison figure composited into one RGBA image, its texts placed in pixels for a GUI to draw.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``(H, W, 4)`` uint8 RGBA: panels, frames, marks, scale bar and colourbars, no text.
    texts : list of FigureText
        Titles, ids, notes, y labels, the suptitle and the colourbars' ticks and labels.
    panels : dict of str to tuple of int
        Panel label (as the axes labels of :func:`comparison_figure`) -> ``(x0, y0, width, height)``
        of its image in ``pixels`` (origin top left; the image's row 0, north, is the bottom row).
    kinds : dict of str to str
        Panel label -> ``"flux"``, ``"residual"``, ``"labels"`` or ``"note"``.
    dpi : float
        Pixels per inch (text sizes in points scale with it).
    """

    pixels: np.ndarray
    texts: list[FigureText]
    panels: dict[str, tuple[int, int, int, int]]
    kinds: dict[str, str]
    dpi: float


def figure_mosaic(figure: Figure) -> ComparisonMosaic | None:
    """The :class:`ComparisonMosaic` a ``layout="mosaic"`` figure shows (None for other figures)."""
    return figure.__dict__.get(_MOSAIC_ATTRIBUTE)


def _rgba8(color: Any) -> np.ndarray:
    return np.round(np.asarray(mcolors.to_rgba(color)) * 255).astype(np.uint8)


def _fill(pixels: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: np.ndarray,
          clip: tuple[int, int, int, int] | None = None) -> None:
    """Paint the pixel rectangle ``[x0, x1) x [y0, y1)`` (rounded; at least one pixel), clipped to ``clip``."""
    h, w = pixels.shape[:2]
    cx0, cy0, cx1, cy1 = clip if clip is not None else (0, 0, w, h)
    ix0, iy0 = int(round(x0)), int(round(y0))
    ix1, iy1 = max(int(round(x1)), ix0 + 1), max(int(round(y1)), iy0 + 1)
    ix0, iy0, ix1, iy1 = max(ix0, cx0, 0), max(iy0, cy0, 0), min(ix1, cx1, w), min(iy1, cy1, h)
    if ix1 > ix0 and iy1 > iy0:
        pixels[iy0:iy1, ix0:ix1] = color


def _frame(pixels: np.ndarray, box: tuple[int, int, int, int], width: float, color: np.ndarray,
           dash: float = 0.0) -> None:
    """A frame centred on the edges of ``box`` (``dash`` > 0: dashes and gaps of that length)."""
    x0, y0, bw, bh = box
    lw = max(int(round(width)), 1)
    a = lw // 2
    edges = [((x0 - a, y0 - a), (x0 + bw + lw - a, y0 - a + lw)),  # top
             ((x0 - a, y0 + bh - a), (x0 + bw + lw - a, y0 + bh - a + lw)),  # bottom
             ((x0 - a, y0 - a), (x0 - a + lw, y0 + bh + lw - a)),  # left
             ((x0 + bw - a, y0 - a), (x0 + bw - a + lw, y0 + bh + lw - a))]  # right
    for (ex0, ey0), (ex1, ey1) in edges:
        if dash <= 0:
            _fill(pixels, ex0, ey0, ex1, ey1, color)
            continue
        horizontal = ex1 - ex0 > ey1 - ey0
        start, stop = (ex0, ex1) if horizontal else (ey0, ey1)
        for s in np.arange(start, stop, 2 * dash):
            e = min(s + dash, stop)
            if horizontal:
                _fill(pixels, s, ey0, e, ey1, color)
            else:
                _fill(pixels, ex0, s, ex1, e, color)


def _upsample(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(ny, nx, 4)`` -> ``(height, width, 4)``, nearest neighbour."""
    ny, nx = rgba.shape[:2]
    rows = np.minimum(((np.arange(height) + 0.5) * ny / height).astype(int), ny - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * nx / width).astype(int), nx - 1)
    return rgba[rows[:, None], cols[None, :]]


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """Composite uint8 RGBA over white (masked/NaN pixels of a colormap are transparent)."""
    alpha = rgba[..., 3:4]
    if np.all(alpha == 255):
        return rgba
    out = rgba.astype(np.float32)
    out[..., :3] = out[..., :3] * (alpha / 255.0) + 255.0 * (1.0 - alpha / 255.0)
    out[..., 3] = 255.0
    return np.round(out).astype(np.uint8)


# shorter spellings tried, in order, on a title or note line wider than its panel
_SHORTER = ((" unmatched", "*"), ("component ", "comp. "), ("components", "comps"), ("segmentation", "segm."),
            ("noiseless sum", "Σ truth"), (" mag", ""), (" e⁻", ""))
_CHAR_WIDTH = 0.62  # average glyph width of the sans-serif text (DejaVu digits: 0.636), in font sizes


def fit_title(title: str, width_px: float, size_pt: float, pt: float) -> str:
    """A figure's one-line title fitted to ``width_px``: its last parts dropped first, then cut with "…"."""
    parts = title.split(TITLE_SEPARATOR)
    while len(parts) > 1 and len(TITLE_SEPARATOR.join(parts)) * _CHAR_WIDTH * size_pt * pt > width_px:
        parts.pop()
    return fit_text(TITLE_SEPARATOR.join(parts), width_px, size_pt, pt)


def fit_text(text: str, width_px: float, size_pt: float, pt: float) -> str:
    """``text`` shortened to fit ``width_px``: shorter spellings, then later lines dropped, then cut with "…".

    Every line is fitted on its own; the first line always stays (cut if it must).
    A panel narrower than its title (many components in a docked panel) keeps the
    id and what fits of the magnitude, instead of titles running into each other.
    """
    def fits(line: str) -> bool:
        return len(line) * _CHAR_WIDTH * size_pt * pt <= width_px

    fitted = []
    for index, line in enumerate(text.split("\n")):
        for long, short in _SHORTER:
            if fits(line):
                break
            line = line.replace(long, short)
        if " · " in line and not fits(line):
            line = line.split(" · ")[0]
        if not fits(line):
            if index:
                continue
            keep = max(int(width_px / (_CHAR_WIDTH * size_pt * pt)) - 1, 1)
            line = line[:keep] + "…" if keep < len(line) else line
        fitted.append(line)
    return "\n".join(fitted)


class _MosaicPainter:
    """Draws the panels of :func:`_plan` into one image (see :func:`comparison_mosaic`)."""

    def __init__(self, width: int, height: int, dpi: float) -> None:
        self.pixels = np.full((height, width, 4), 255, dtype=np.uint8)
        self.texts: list[FigureText] = []
        self.pt = dpi / 72.0  # pixels per point

    def text(self, text: str, x: float, y: float, size_pt: float, **kwargs: Any) -> None:
        if "stroke" in kwargs:
            kwargs["stroke"] *= self.pt
        self.texts.append(FigureText(text, float(x), float(y), size_pt * self.pt,
                                     kwargs.pop("color", _BLACK), **kwargs))

    def image(self, box: tuple[int, int, int, int], rgba: np.ndarray) -> None:
        """A ``(ny, nx, 4)`` image with ``origin="lower"`` in a box, nearest-neighbour scaled."""
        x0, y0, bw, bh = box
        self.pixels[y0:y0 + bh, x0:x0 + bw] = _over_white(_upsample(rgba[::-1], bw, bh))

    def outlines(self, box: tuple[int, int, int, int], labels: np.ndarray) -> None:
        """The outline of each label (1..n) in its label colour, one pixel inside its region."""
        x0, y0, bw, bh = box
        n_labels = int(labels.max())
        up = _upsample(labels[::-1, :, None].astype(int), bw, bh)[..., 0]
        edge = np.zeros(up.shape, dtype=bool)
        edge[:-1] |= up[:-1] != up[1:]
        edge[1:] |= up[1:] != up[:-1]
        edge[:, :-1] |= up[:, :-1] != up[:, 1:]
        edge[:, 1:] |= up[:, 1:] != up[:, :-1]
        edge &= up > 0
        cmap, _ = _label_colormap(n_labels)
        colours = np.asarray(cmap(np.arange(n_labels + 1), bytes=True))
        region = self.pixels[y0:y0 + bh, x0:x0 + bw]
        region[edge] = colours[up[edge]]

    def marks(self, box: tuple[int, int, int, int], marks: list[tuple[float, float, str]],
              shape: tuple[int, int]) -> None:
        """A cross at each position (white on black) and its id beside it."""
        x0, y0, bw, bh = box
        ny, nx = shape
        marks = [m for m in marks if np.isfinite(m[0]) and np.isfinite(m[1])]
        clip = (x0, y0, x0 + bw, y0 + bh)
        half, white, black = 3.0 * self.pt, 1.2 * self.pt, 2.5 * self.pt  # markersize 6, edge 1.2, stroke 2.5
        # ids need room: in a small panel with many marks they would cover each other and the image
        with_ids = len(marks) <= max(2, int(bw * bh / (18 * self.pt) ** 2 / 4))
        for (y, x, text), (sx, sy) in zip(marks, _label_places(marks, shape)):
            cx, cy = x0 + (x + 0.5) / nx * bw, y0 + bh - (y + 0.5) / ny * bh
            for colour, width, length in ((_rgba8("black"), black, half + (black - white) / 2),
                                          (_rgba8("white"), white, half)):
                _fill(self.pixels, cx - length, cy - width / 2, cx + length, cy + width / 2, colour, clip)
                _fill(self.pixels, cx - width / 2, cy - length, cx + width / 2, cy + length, colour, clip)
            if with_ids:
                self.text(text, cx + 3 * sx * self.pt, cy - 3 * sy * self.pt, _ID_STYLE["fontsize"], color=_WHITE,
                          ha="left" if sx > 0 else "right", va="bottom" if sy > 0 else "top", bold=True, stroke=2.2)

    def scalebar(self, box: tuple[int, int, int, int], shape: tuple[int, int], pixel_scale: float) -> None:
        """A 1″/2″/5″ bar in the lower-left corner (as :func:`_draw_scalebar`)."""
        x0, y0, bw, bh = box
        height, width = shape
        arcsec = _scalebar_arcsec(width, pixel_scale)
        if arcsec is None:
            return
        length = arcsec / pixel_scale
        fx, fy = bw / width, bh / height  # pixels per image pixel

        def at(x: float, y: float) -> tuple[float, float]:
            return x0 + (x + 0.5) * fx, y0 + bh - (y + 0.5) * fy

        ax0, ay = at(0.06 * width, 0.07 * height)
        ax1, _ = at(0.06 * width + length, 0.07 * height)
        clip = (x0, y0, x0 + bw, y0 + bh)
        for colour, lw in ((_rgba8("black"), 3.5 * self.pt), (_rgba8("white"), 2.0 * self.pt)):
            extra = (lw - 2.0 * self.pt) / 2
            _fill(self.pixels, ax0 - extra, ay - lw / 2, ax1 + extra, ay + lw / 2, colour, clip)
        tx, ty = at(0.06 * width + length / 2, 0.1 * height)
        self.text(f'{arcsec:g}"', tx, ty, 7, color=_WHITE, ha="center", va="bottom", stroke=2.0)

    def colourbar(self, box: tuple[int, int, int, int], cmap: Any, norm: mcolors.Normalize, ticks: Any,
                  labels: list[str], label: str) -> None:
        """A horizontal colourbar: the colormap strip, a frame, ticks under it, their labels and the label."""
        x0, y0, bw, bh = box
        positions = np.clip(np.asarray(norm(np.asarray(ticks, float)), float), 0.0, 1.0)
        strip = np.asarray(cmap((np.arange(bw) + 0.5) / bw, bytes=True))[None]
        self.pixels[y0:y0 + bh, x0:x0 + bw] = _over_white(np.repeat(strip, bh, axis=0))
        _frame(self.pixels, box, 0.8 * self.pt, _rgba8("black"))
        tick_len, tick_w = 3.5 * self.pt, 0.8 * self.pt
        for f, text in zip(positions, labels):
            x = x0 + f * bw
            _fill(self.pixels, x - tick_w / 2, y0 + bh, x + tick_w / 2, y0 + bh + tick_len, _rgba8("black"))
            self.text(text, x, y0 + bh + tick_len + 3.5 * self.pt, 7, ha="center", va="top")
        self.text(label, x0 + bw / 2, y0 + bh + tick_len + 3.5 * self.pt + 7 * 1.2 * self.pt + 1 * self.pt, 8,
                  ha="center", va="top")


def _mosaic(
    panels: list[_Panel], n_rows: int, n_cols: int, norm: mcolors.Normalize, sigma: float, pixel_scale: float,
    width: int, height: int, dpi: float, suptitle: str,
) -> ComparisonMosaic:
    """Draw the panels of :func:`_plan` into one image, in the grid of the ``"fast"`` layout."""
    import matplotlib

    painter = _MosaicPainter(width, height, dpi)
    pt = painter.pt
    left, right, bottom, top = _MARGINS
    grid_x0, grid_y0 = left * width, (1.0 - top) * height
    grid_w, grid_h = (right - left) * width, (top - bottom) * height
    cbar_h = 0.05 * grid_h  # the colourbars take 5 % of the grid's height under it (pad 1 %, bar 4 %)
    cell_w = grid_w / (n_cols + _WSPACE * (n_cols - 1))
    cell_h = (grid_h - cbar_h) / (n_rows + _HSPACE * (n_rows - 1))
    gap_w, gap_h = _WSPACE * cell_w, _HSPACE * cell_h
    shape = panels[0].image.shape
    aspect = shape[1] / shape[0]
    box_w = min(cell_w, cell_h * aspect)
    box_h = box_w / aspect
    per_column = width / dpi / max(n_cols, 1)  # inches, as in the "fast" layout
    # narrower columns (a docked panel with many components or truth galaxies) get smaller titles
    title_size = 8 if per_column >= 1.6 else 6.5 if per_column >= 1.0 else 5.5
    limit = RESIDUAL_NSIGMA * sigma
    flux_cmap, resid_cmap = matplotlib.colormaps[IMAGE_CMAP], matplotlib.colormaps[RESIDUAL_CMAP]
    resid_norm = mcolors.Normalize(vmin=-limit, vmax=limit)
    boxes: dict[str, tuple[int, int, int, int]] = {}
    kinds: dict[str, str] = {}
    frame_w = 0.8 * pt
    for p in panels:
        cx = grid_x0 + p.col * (cell_w + gap_w) + cell_w / 2
        cy = grid_y0 + p.row * (cell_h + gap_h) + cell_h / 2
        x0, y0 = int(round(cx - box_w / 2)), int(round(cy - box_h / 2))
        box = (x0, y0, max(int(round(cx + box_w / 2)) - x0, 1), max(int(round(cy + box_h / 2)) - y0, 1))
        boxes[p.label], kinds[p.label] = box, p.kind
        if p.kind == "note":
            _frame(painter.pixels, box, frame_w, _rgba8("0.7"), dash=3 * frame_w)
            # a narrow panel (a docked viewer with many columns) gets smaller note text, so it stays inside
            note_size = 8 if per_column >= 1.2 else 6 if per_column >= 1.0 else 5
            note = fit_text(p.text, 0.95 * box_w, note_size, pt)
            note = note if note.count("\n") == p.text.count("\n") else "—"  # half a note says nothing
            painter.text(note, x0 + box[2] / 2, y0 + box[3] / 2, note_size,
                         italic=True, color=mcolors.to_rgba("0.4"), ha="center", va="center")
            continue
        if p.kind == "flux":
            rgba = flux_cmap(norm(p.image), bytes=True)
        elif p.kind == "residual":
            rgba = resid_cmap(resid_norm(p.image), bytes=True)
        else:
            cmap, lnorm = _label_colormap(int(p.image.max()) if p.image.size else 0)
            rgba = cmap(lnorm(p.image), bytes=True)
        painter.image(box, np.asarray(rgba))
        if p.outlines is not None and p.outlines.max() > 0:
            painter.outlines(box, p.outlines)
        painter.marks(box, p.marks, p.image.shape)
        if p.scalebar:
            painter.scalebar(box, p.image.shape, pixel_scale)
        _frame(painter.pixels, box, frame_w, _rgba8("black"))
        title = p.title if per_column >= 1.6 else p.title.replace(" · ", "\n")
        title = fit_text(title, cell_w + 0.3 * gap_w, title_size, pt) if title else title
        if title:
            painter.text(title, x0 + box[2] / 2, y0 - 6.0 * pt, title_size, ha="center", va="baseline")
        if p.ylabel:
            painter.text(p.ylabel, x0 - 0.04 * box[2], y0 + box[3] / 2, 8, ha="right", va="center", rotation=90.0)
    # colourbars under the grid: the flux one under the flux columns, the residual one under the residual column
    cbar_y0 = grid_y0 + grid_h - cbar_h + 0.01 * grid_h
    if any(p.kind == "flux" for p in panels):
        span_x0, span_x1 = grid_x0, grid_x0 + (n_cols - 1) * cell_w + (n_cols - 2) * gap_w
        bar_w = 0.8 * (span_x1 - span_x0)
        bar_h = bar_w / (25 * max(n_cols - 1, 1))
        ticks = _flux_ticks(norm)
        box = (int(round((span_x0 + span_x1 - bar_w) / 2)), int(round(cbar_y0)), max(int(round(bar_w)), 1),
               max(int(round(bar_h)), 1))
        painter.colourbar(box, flux_cmap, norm, ticks, [_short_number(t) if t else "0" for t in ticks],
                          "flux panels: e⁻ / pixel")
    if any(p.kind == "residual" for p in panels):
        span_x0 = grid_x0 + (n_cols - 1) * (cell_w + gap_w)
        bar_w = 0.8 * cell_w
        # five tick labels need ~1.4 in; a narrower bar gets three and a shorter label
        wide = bar_w / dpi >= 1.4
        ticks = np.linspace(-RESIDUAL_NSIGMA, RESIDUAL_NSIGMA, 5 if wide else 3)
        box = (int(round(span_x0 + (cell_w - bar_w) / 2)), int(round(cbar_y0)), max(int(round(bar_w)), 1),
               max(int(round(bar_w / 20)), 1))
        label = f"residual (σ = {_short_number(sigma)} e⁻)" if wide else f"σ = {_short_number(sigma)} e⁻"
        painter.colourbar(box, resid_cmap, resid_norm, ticks * sigma, [f"{t:+g}σ" if t else "0" for t in ticks],
                          label)
    painter.text(fit_title(suptitle, 0.98 * width, 10, pt), width / 2, 0.02 * height, 10, ha="center", va="top")
    return ComparisonMosaic(painter.pixels, painter.texts, boxes, kinds, float(dpi))


class _MosaicTexts(Artist):
    """The texts of a mosaic, drawn by matplotlib when the figure is (one re-used ``Text``; cheap to make)."""

    def __init__(self, mosaic: ComparisonMosaic) -> None:
        super().__init__()
        self.mosaic = mosaic
        self.zorder = 10

    def draw(self, renderer: Any) -> None:
        figure = self.figure
        if figure is None or not self.get_visible():
            return
        height, width = self.mosaic.pixels.shape[:2]
        to_points = 72.0 / self.mosaic.dpi
        text = Text(transform=figure.transFigure, linespacing=1.1)
        text.set_figure(figure)
        for t in self.mosaic.texts:
            effects = ([patheffects.withStroke(linewidth=t.stroke * to_points, foreground=t.stroke_color)]
                       if t.stroke else [])
            text.update({"position": (t.x / width, 1.0 - t.y / height), "text": t.text,
                         "fontsize": t.size * to_points, "color": t.color, "ha": t.ha, "va": t.va,
                         "rotation": t.rotation, "fontweight": "bold" if t.bold else "normal",
                         "fontstyle": "italic" if t.italic else "normal", "path_effects": effects})
            text.draw(renderer)


def _show_mosaic(figure: Figure, mosaic: ComparisonMosaic) -> None:
    """Make ``figure`` one full-figure image of the mosaic, with its texts as figure texts.

    The figure is only drawn by matplotlib when it is saved or shown outside
    the viewer; the panel takes the pixels and texts of the mosaic directly
    (see :func:`~napari_deblend._widgets._figure_view.render_figure_fast`).
    """
    height, width = mosaic.pixels.shape[:2]
    ax = figure.__dict__.get(_MOSAIC_AXES_ATTRIBUTE)
    if ax is None or ax not in figure.axes or len(figure.axes) != 1:
        figure.clear()
        figure.__dict__.pop(_POOL_ATTRIBUTE, None)
        figure.set_layout_engine("none")
        ax = figure.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()
        ax.imshow(mosaic.pixels, interpolation="nearest", aspect="auto")
        figure.__dict__[_MOSAIC_AXES_ATTRIBUTE] = ax
    else:
        image = ax.images[0]
        image.set_data(mosaic.pixels)
        image.set_extent((-0.5, width - 0.5, height - 0.5, -0.5))
    for artist in list(figure.artists):
        if isinstance(artist, _MosaicTexts):
            artist.remove()
    figure.add_artist(_MosaicTexts(mosaic))
    figure.__dict__[_MOSAIC_ATTRIBUTE] = mosaic
