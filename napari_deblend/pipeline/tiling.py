"""Cutting a field into overlapping tiles, and deciding which tile owns a source or a blend.

A tile has a *core* (the tiles' cores partition the field, without overlap)
and an *outer* box: the core grown by a halo on every side, clipped to the
field.  Detection runs on the outer box; a tile keeps only what it *owns*:
isolated detections whose centre lies in its core, and blends whose centre
lies in its core (with all their members, wherever their centres are).  Each
detection and each blend is therefore counted once, and, as long as the halo
is wider than anything a tile owns (checked by :func:`reaches_outer_edge`,
the caller grows the halo otherwise), nothing it owns is cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import DeblendInputError

#: Default side of a tile's core, pixels (a 2048² float32 tile is 16 MB per band).
DEFAULT_TILE_SIZE = 2048
#: Default halo around a core, pixels: wider than the blends of a typical survey field.
DEFAULT_OVERLAP = 128
#: Pixels an owned object must keep from a cut (non-field) edge of the outer box.
EDGE_GUARD = 8

Box = tuple[int, int, int, int]  # ymin, ymax, xmin, xmax (exclusive maxima)


@dataclass(frozen=True)
class Tile:
    """One tile of a field.

    Attributes
    ----------
    index : int
        Tile number, row-major from the top-left, 0-based.
    core : tuple of int
        ``(ymin, ymax, xmin, xmax)`` of the pixels this tile owns (exclusive maxima).
    outer : tuple of int
        The core grown by ``halo`` pixels on each side, clipped to the field.
    halo : int
        Width of the halo, pixels.
    field_shape : tuple of int
        ``(H, W)`` of the field.
    """

    index: int
    core: Box
    outer: Box
    halo: int
    field_shape: tuple[int, int]

    @property
    def origin(self) -> tuple[int, int]:
        """``(y0, x0)`` of the outer box in the field: add it to tile pixels to get field pixels."""
        return self.outer[0], self.outer[2]

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` of the outer box."""
        ymin, ymax, xmin, xmax = self.outer
        return ymax - ymin, xmax - xmin

    @property
    def covers_field(self) -> bool:
        """Whether the outer box is the whole field (it cannot grow further)."""
        return self.outer == (0, self.field_shape[0], 0, self.field_shape[1])

    def grown(self, halo: int) -> Tile:
        """The same core with a wider halo."""
        return Tile(
            self.index, self.core, _outer_box(self.core, halo, self.field_shape), halo, self.field_shape
        )

    def owns(self, y: np.ndarray | float, x: np.ndarray | float) -> np.ndarray:
        """Whether field positions ``(y, x)`` (0-based, pixel centres at integers) lie in the core.

        A pixel ``i`` spans ``[i - 0.5, i + 0.5)``, so every position of the field
        belongs to exactly one core.
        """
        ymin, ymax, xmin, xmax = self.core
        y = np.asarray(y, float) + 0.5
        x = np.asarray(x, float) + 0.5
        height, width = self.field_shape
        # positions just outside the field (sub-pixel centroids at the edge) go to the edge tiles
        y = np.clip(y, 0.0, np.nextafter(height, 0))
        x = np.clip(x, 0.0, np.nextafter(width, 0))
        return (y >= ymin) & (y < ymax) & (x >= xmin) & (x < xmax)


def _outer_box(core: Box, halo: int, shape: tuple[int, int]) -> Box:
    ymin, ymax, xmin, xmax = core
    return max(ymin - halo, 0), min(ymax + halo, shape[0]), max(xmin - halo, 0), min(xmax + halo, shape[1])


def plan_tiles(
    shape: tuple[int, int], tile_size: int = DEFAULT_TILE_SIZE, overlap: int = DEFAULT_OVERLAP
) -> list[Tile]:
    """Cut a field of ``shape`` into tiles of (about) ``tile_size`` pixels with ``overlap`` pixels of halo.

    Cores are as equal as possible: a 5000-pixel side with ``tile_size=2048``
    gives three cores of 1667 or 1666 pixels.  A field no larger than
    ``tile_size`` is one tile, whose outer box is the field.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the field.
    tile_size : int
        Largest side of a core, pixels.
    overlap : int
        Halo added around each core, pixels (>= 0).

    Returns
    -------
    list of Tile
        Row-major, top-left first.

    Raises
    ------
    DeblendInputError
        For a non-positive tile size, a negative overlap or an empty field.
    """
    height, width = (int(v) for v in shape)
    if tile_size < 1:
        raise DeblendInputError(f"tile size {tile_size}: expected a positive number of pixels")
    if overlap < 0:
        raise DeblendInputError(f"tile overlap {overlap}: expected a non-negative number of pixels")
    if height < 1 or width < 1:
        raise DeblendInputError(f"field shape {shape}: expected positive sides")
    y_edges = _edges(height, tile_size)
    x_edges = _edges(width, tile_size)
    tiles = []
    for y0, y1 in zip(y_edges[:-1], y_edges[1:]):
        for x0, x1 in zip(x_edges[:-1], x_edges[1:]):
            core = (y0, y1, x0, x1)
            tiles.append(
                Tile(len(tiles), core, _outer_box(core, overlap, (height, width)), overlap, (height, width))
            )
    return tiles


def _edges(length: int, tile_size: int) -> list[int]:
    n = math.ceil(length / tile_size)
    return [round(i * length / n) for i in range(n + 1)]


def reaches_outer_edge(tile: Tile, boxes: np.ndarray, guard: int = EDGE_GUARD) -> bool:
    """Whether any box comes within ``guard`` pixels of an edge of the outer box that is not the field's edge.

    Parameters
    ----------
    tile : Tile
        The tile.
    boxes : numpy.ndarray
        ``(N, 4)`` ``(ymin, ymax, xmin, xmax)`` in *field* pixels, exclusive maxima
        (may run past the field: stamps padded at its edge).
    guard : int
        Margin, pixels.

    Returns
    -------
    bool
        True if something the tile owns may be cut by the tile edge: grow the halo.
    """
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    if not len(boxes):
        return False
    ymin, ymax, xmin, xmax = tile.outer
    height, width = tile.field_shape
    cut = np.zeros(len(boxes), bool)
    if ymin > 0:
        cut |= boxes[:, 0] < ymin + guard
    if ymax < height:
        cut |= boxes[:, 1] > ymax - guard
    if xmin > 0:
        cut |= boxes[:, 2] < xmin + guard
    if xmax < width:
        cut |= boxes[:, 3] > xmax - guard
    return bool(cut.any())
