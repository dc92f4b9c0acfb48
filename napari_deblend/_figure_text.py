"""A text of a figure placed in pixels, for a GUI to draw over pre-rendered figure pixels (no Qt, no matplotlib)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FigureText:
    """One text of a figure, placed in the rendered image's pixels (origin top left).

    Attributes
    ----------
    text : str
        The text (may hold newlines).
    x, y : float
        Anchor, in pixels of the rendered image.
    size : float
        Font size in pixels.
    color : tuple of float
        RGBA in 0-1.
    ha, va : str
        Horizontal (left, center, right) and vertical (top, center, bottom, baseline) alignment of
        the text's box on the anchor, as in matplotlib (``baseline``: the last line's baseline).
    rotation : float
        Degrees, counter-clockwise.
    bold, italic : bool
        Font weight and style.
    stroke : float
        Width in pixels of an outline drawn under the text (0: none).
    stroke_color : tuple of float
        RGBA of the outline.
    """

    text: str
    x: float
    y: float
    size: float
    color: tuple[float, float, float, float]
    ha: str = "left"
    va: str = "baseline"
    rotation: float = 0.0
    bold: bool = False
    italic: bool = False
    stroke: float = 0.0
    stroke_color: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)
