"""A progress bar that never repaints synchronously.

``QProgressBar.setValue`` calls ``repaint()``: the window is recomposed at
once, and with napari's OpenGL canvas in it (software OpenGL under a virtual
display, or a slow GPU) that costs 0.1-0.3 s of the UI thread per call.
:class:`ProgressBar` only schedules a paint (``update()``): the paints of many
changes are coalesced into the next turn of the event loop, with the canvas's own.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtGui import QPainter
from qtpy.QtWidgets import QProgressBar, QSizePolicy, QStyle, QStyleOptionProgressBar, QWidget


class ProgressBar(QWidget):
    """A horizontal progress bar (``setRange``, ``setValue``, ``value`` as in QProgressBar) painted asynchronously."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._minimum, self._maximum, self._value = 0, 100, 0
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self._size_hint = QProgressBar().sizeHint()  # the style's size for a progress bar

    def sizeHint(self) -> Any:  # noqa: N802 (Qt name)
        return self._size_hint

    def minimumSizeHint(self) -> Any:  # noqa: N802 (Qt name)
        return self._size_hint

    def minimum(self) -> int:
        """The lower end of the range."""
        return self._minimum

    def maximum(self) -> int:
        """The upper end of the range."""
        return self._maximum

    def value(self) -> int:
        """The current value."""
        return self._value

    def setRange(self, minimum: int, maximum: int) -> None:  # noqa: N802 (Qt name)
        """Set the range; the value is clamped into it (a paint is scheduled if anything changed)."""
        before = (self._minimum, self._maximum, self._value)
        self._minimum, self._maximum = int(minimum), max(int(maximum), int(minimum))
        self._value = min(max(self._value, self._minimum), self._maximum)
        if (self._minimum, self._maximum, self._value) != before:
            self.update()

    def setValue(self, value: int) -> None:  # noqa: N802 (Qt name)
        """Set the value (clamped to the range) and schedule a paint."""
        value = min(max(int(value), self._minimum), self._maximum)
        if value != self._value:
            self._value = value
            self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        option = QStyleOptionProgressBar()
        option.initFrom(self)
        option.minimum, option.maximum, option.progress = self._minimum, self._maximum, self._value
        span = self._maximum - self._minimum
        percent = 100 * (self._value - self._minimum) // span if span > 0 else 0
        option.text = f"{percent}%"
        option.textVisible = True
        painter = QPainter(self)
        try:
            self.style().drawControl(QStyle.CE_ProgressBar, option, painter, self)
        finally:
            painter.end()
