"""A Qt widget showing a matplotlib figure rendered off the UI thread.

Building and drawing the comparison figure is matplotlib work, too long for
the UI thread. The figure is built and rendered with Agg in a worker thread
(:func:`render_figure`) and this widget only paints the finished pixels,
scaled to fit.

Text is the slow part of an Agg render (about two thirds of it for the
comparison figure: some 60 titles, ids and notes). :func:`render_figure_fast`
therefore renders the figure without its panel texts and returns where each
text goes; the widget draws them with Qt on top of the pixels (a few
milliseconds), once per figure. The comparison panel goes further: its figure
is a ``comparison_figure(layout="mosaic")``, already composited with numpy into
pixels of the render size, so :func:`render_figure_fast` hands over those
pixels and texts without drawing anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QFont, QImage, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from .._figure_text import FigureText

__all__ = ["FigureText", "FigureView", "draw_texts", "render_figure", "render_figure_fast"]


def render_figure(figure: Any) -> np.ndarray:
    """Draw a matplotlib figure with Agg (any thread) and return its ``(H, W, 4)`` uint8 RGBA pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _overlay_texts(figure: Any) -> list[Any]:
    """The texts :func:`render_figure_fast` leaves to Qt: titles and texts of the axes, the suptitle.

    Colourbar labels and tick labels stay with matplotlib (their place depends on the axis layout).
    """
    texts = [t for t in figure.texts]
    for ax in figure.axes:
        if ax.get_label() == "<colorbar>":
            continue
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
    return [t for t in texts if t.get_visible() and t.get_text()]


def _describe(text: Any, renderer: Any, height: int, dpi: float) -> FigureText:
    """Where and how a matplotlib Text is drawn, in image pixels (after the figure was drawn)."""
    from matplotlib import colors as mcolors
    from matplotlib.text import Annotation

    if isinstance(text, Annotation):
        text.update_positions(renderer)
    x, y = text.get_transform().transform(text.get_unitless_position())
    stroke, stroke_color = 0.0, (0.0, 0.0, 0.0, 1.0)
    for effect in text.get_path_effects():
        gc = getattr(effect, "_gc", {})
        if "linewidth" in gc:
            stroke = float(gc["linewidth"]) * dpi / 72.0
            stroke_color = mcolors.to_rgba(gc.get("foreground", "black"))
    weight = text.get_fontweight()
    return FigureText(
        text=text.get_text(),
        x=float(x),
        y=float(height - y),
        size=float(text.get_fontsize()) * dpi / 72.0,
        color=mcolors.to_rgba(text.get_color(), text.get_alpha()),
        ha=text.get_horizontalalignment(),
        va=text.get_verticalalignment(),
        rotation=float(text.get_rotation()),
        bold=weight in ("bold", "heavy", "extra bold", "black") or (isinstance(weight, int | float) and weight >= 600),
        italic=text.get_style() in ("italic", "oblique"),
        stroke=stroke,
        stroke_color=stroke_color,
    )


def render_figure_fast(figure: Any) -> tuple[np.ndarray, list[FigureText]]:
    """Render a figure without its axes' texts; return the pixels and the texts for :meth:`FigureView.set_pixels`.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The figure (left as it was: its texts are hidden for the render only). A
        ``comparison_figure(layout="mosaic")`` figure is not drawn at all: its
        mosaic's pixels and texts are returned.

    Returns
    -------
    pixels : numpy.ndarray
        ``(H, W, 4)`` uint8 RGBA.
    texts : list of FigureText
        Titles, ids, notes and the suptitle, placed in the pixels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ..plots import figure_mosaic

    mosaic = figure_mosaic(figure)
    if mosaic is not None and mosaic.pixels.shape[:2] == _pixel_size(figure):
        # a mosaic figure (comparison_figure(layout="mosaic")): its pixels are the render
        return mosaic.pixels, list(mosaic.texts)
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    texts = _overlay_texts(figure)
    for text in texts:
        text.set_visible(False)
    try:
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba()).copy()
        renderer = canvas.get_renderer()
        # matplotlib moves a hidden title off the axes (its extent is a unit box); the panels have no
        # ticks above them, so a title sits on the axes' top edge (plus its pad)
        for ax in figure.axes:
            for title in (ax.title, ax._left_title, ax._right_title):
                if title in texts:
                    title.set_position((title.get_position()[0], 1.0))
        described = [_describe(t, renderer, pixels.shape[0], figure.dpi) for t in texts]
    finally:
        for text in texts:
            text.set_visible(True)
    return pixels, described


def _pixel_size(figure: Any) -> tuple[int, int]:
    """``(height, width)`` of a figure rendered at its dpi."""
    width, height = figure.get_size_inches() * figure.dpi
    return max(int(round(height)), 1), max(int(round(width)), 1)


def _font(size: float, bold: bool, italic: bool) -> QFont:
    font = QFont("DejaVu Sans")
    font.setPixelSize(max(int(round(size)), 1))
    font.setBold(bold)
    font.setItalic(italic)
    return font


def draw_texts(image: QImage, texts: list[FigureText]) -> None:
    """Draw texts placed by :func:`render_figure_fast` on an image (UI thread)."""
    from qtpy.QtGui import QFontMetricsF

    painter = QPainter(image)
    painter.setRenderHint(QPainter.Antialiasing, True)
    painter.setRenderHint(QPainter.TextAntialiasing, True)
    try:
        for t in texts:
            font = _font(t.size, t.bold, t.italic)
            metrics = QFontMetricsF(font)
            lines = t.text.split("\n")
            line_height = metrics.height()
            width = max(metrics.horizontalAdvance(line) for line in lines)
            height = line_height * len(lines)
            # the box's top-left corner relative to the anchor, in the text's own (rotated) frame
            left = {"left": 0.0, "center": -width / 2, "right": -width}.get(t.ha, 0.0)
            top = {"top": 0.0, "center": -height / 2, "center_baseline": -height / 2,
                   "bottom": -height, "baseline": -(height - metrics.descent())}.get(t.va, -height)
            painter.save()
            painter.translate(t.x, t.y)
            if t.rotation:
                # matplotlib aligns the rotated box; for the quarter turns used here that is the
                # unrotated alignment with the axes swapped
                painter.rotate(-t.rotation)
                if abs(t.rotation % 360 - 90) < 1e-6:
                    left = {"bottom": 0.0, "center": -width / 2, "top": -width}.get(t.va, -width / 2)
                    top = {"right": -height, "center": -height / 2, "left": 0.0}.get(t.ha, -height / 2)
            painter.setFont(font)
            color = QColor.fromRgbF(*t.color)
            for i, line in enumerate(lines):
                line_width = metrics.horizontalAdvance(line)
                x = left + {"left": 0.0, "center": (width - line_width) / 2, "right": width - line_width}.get(
                    t.ha if not t.rotation else "center", 0.0)
                baseline = top + i * line_height + metrics.ascent()
                if t.stroke > 0:
                    path = QPainterPath()
                    path.addText(QPointF(x, baseline), font, line)
                    pen = QPen(QColor.fromRgbF(*t.stroke_color), t.stroke)
                    pen.setJoinStyle(Qt.RoundJoin)
                    painter.strokePath(path, pen)
                    painter.fillPath(path, color)
                else:
                    painter.setPen(color)
                    painter.drawText(QPointF(x, baseline), line)
            painter.restore()
    finally:
        painter.end()


class FigureView(QWidget):
    """Paints pre-rendered figure pixels, keeping their aspect; asks for a re-render when resized.

    Signals
    -------
    resized()
        Emitted (debounced, 250 ms) when the widget's size settles at a new value.
    """

    resized = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: QImage | None = None
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self._resize_timer = QTimer(self)
        self._resize_timer.setSingleShot(True)
        self._resize_timer.setInterval(250)
        self._resize_timer.timeout.connect(self.resized.emit)

    def render_size(self) -> tuple[int, int]:
        """``(width, height)`` in device pixels to render a figure for."""
        ratio = self.devicePixelRatioF()
        return max(int(self.width() * ratio), 320), max(int(self.height() * ratio), 200)

    def set_pixels(self, rgba: np.ndarray | None, texts: list[FigureText] | None = None) -> None:
        """Show these ``(H, W, 4)`` uint8 pixels (None clears), with ``texts`` drawn on them."""
        if rgba is None:
            self._image = None
        else:
            h, w = rgba.shape[:2]
            data = np.ascontiguousarray(rgba, dtype=np.uint8)
            self._image = QImage(data.data, w, h, 4 * w, QImage.Format_RGBA8888).copy()
            if texts:
                draw_texts(self._image, texts)
        self.update()

    def has_pixels(self) -> bool:
        """True when a figure is shown."""
        return self._image is not None

    def image(self) -> QImage | None:
        """The image shown (figure pixels and texts), None when empty."""
        return self._image

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("white"))
        if self._image is not None:
            w, h = self.width(), self.height()
            scale = min(w / self._image.width(), h / self._image.height())
            tw, th = self._image.width() * scale, self._image.height() * scale
            painter.setRenderHint(QPainter.SmoothPixmapTransform, True)
            painter.drawImage(QRectF((w - tw) / 2, (h - th) / 2, tw, th), self._image)
        painter.end()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        self._resize_timer.start()
