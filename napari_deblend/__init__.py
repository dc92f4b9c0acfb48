"""napari-deblend: galaxy deblending in napari and from Python.

Public API::

    from napari_deblend import read_field, detect, find_blends
    field = read_field("field.fits", preset="lsst-i")
    cat, seg = detect(field, preset="sextractor")
    blends = find_blends(cat, seg)
    result = deblend(field, blends[0], model="peeling", device="auto")
    table = measure(result)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Field",
    "read_field",
    "write_field",
    "detect",
    "find_blends",
    "Blend",
    "get_preset",
    "deblend",
    "measure",
    "available_deblenders",
    "DeblendResult",
]


def __getattr__(name: str):
    # Lazy imports keep `import napari_deblend` (and napari's plugin discovery) fast.
    if name in {"Field", "read_field", "write_field"}:
        from . import field

        return getattr(field, name)
    if name == "detect":
        from .detection import detect

        return detect
    if name in {"find_blends", "Blend"}:
        from . import blends

        return getattr(blends, name)
    if name == "deblend":
        from .deblending import deblend

        return deblend
    if name == "measure":
        from .measurements import measure

        return measure
    if name in {"available_deblenders", "DeblendResult"}:
        from .deblenders import base

        return getattr(base, name)
    if name == "get_preset":
        from .presets import get_preset

        return get_preset
    raise AttributeError(f"module 'napari_deblend' has no attribute {name!r}")
