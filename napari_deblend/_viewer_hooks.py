"""Astronomers' defaults for a napari viewer: north up, and an RA/Dec readout of the cursor.

``install(viewer)`` is idempotent; the FITS reader and the widgets call it.
The readout uses the WCS of the top visible layer whose metadata carries a
napari-deblend Field (``layer.metadata["napari_deblend"]["field"]``).
"""

from __future__ import annotations

import weakref
from typing import Any

from astropy.coordinates import Angle

_installed: weakref.WeakSet = weakref.WeakSet()


def field_of_layer(layer: Any):
    """The napari-deblend Field a layer was read from, or None."""
    info = getattr(layer, "metadata", {}).get("napari_deblend") or {}
    return info.get("field")


def format_sky_position(ra: float, dec: float) -> str:
    """``RA 10:00:00.00  Dec +02:00:00.0`` (sexagesimal) followed by degrees."""
    ra_s = Angle(ra, unit="deg").to_string(unit="hour", sep=":", precision=2, pad=True)
    dec_s = Angle(dec, unit="deg").to_string(unit="deg", sep=":", precision=1, alwayssign=True, pad=True)
    return f"RA {ra_s}  Dec {dec_s}  ({ra:.5f}°, {dec:+.5f}°)"


def sky_readout(viewer: Any, world_position) -> str:
    """Text for the cursor at ``world_position``: pixel and, with a WCS, RA/Dec."""
    for layer in reversed(list(viewer.layers)):
        field = field_of_layer(layer)
        if field is None or not layer.visible:
            continue
        y, x = layer.world_to_data(world_position)[-2:]
        text = f"x {x:.1f}  y {y:.1f}"
        if field.wcs is not None:
            ra, dec = field.wcs.all_pix2world([[x, y]], 0)[0]
            text = f"{format_sky_position(float(ra), float(dec))}   {text}"
        return text
    return ""


def install(viewer: Any) -> None:
    """Set north up (y axis pointing up) and show an RA/Dec readout that follows the cursor."""
    if viewer is None or viewer in _installed:
        return
    _installed.add(viewer)
    try:
        viewer.camera.orientation2d = ("up", "right")
    except (AttributeError, ValueError):  # napari < 0.6 has no camera orientation
        pass
    overlay = viewer.text_overlay
    overlay.position = "bottom_left"
    overlay.font_size = 9
    overlay.color = "yellow"

    def _on_cursor(event=None) -> None:
        text = sky_readout(viewer, viewer.cursor.position)
        overlay.text = text
        overlay.visible = bool(text)

    viewer.cursor.events.position.connect(_on_cursor)
