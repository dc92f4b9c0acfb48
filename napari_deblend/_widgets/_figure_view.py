"""A Qt widget showing a matplotlib figure rendered off the UI thread.

Building and drawing the comparison figure takes ~0.4 s of matplotlib work, too
long for the UI thread. The figure is built and rendered with Agg in a worker
thread (:func:`render_figure`) and this widget only paints the finished pixels,
scaled to fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QRectF, QTimer, Signal
from qtpy.QtGui import QColor, QImage, QPainter
from qtpy.QtWidgets import QSizePolicy, QWidget


def render_figure(figure: Any) -> np.ndarray:
    """Draw a matplotlib figure with Agg (any thread) and return its ``(H, W, 4)`` uint8 RGBA pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


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

    def set_pixels(self, rgba: np.ndarray | None) -> None:
        """Show these ``(H, W, 4)`` uint8 pixels (None clears)."""
        if rgba is None:
            self._image = None
        else:
            h, w = rgba.shape[:2]
            data = np.ascontiguousarray(rgba, dtype=np.uint8)
            self._image = QImage(data.data, w, h, 4 * w, QImage.Format_RGBA8888).copy()
        self.update()

    def has_pixels(self) -> bool:
        """True when a figure is shown."""
        return self._image is not None

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

