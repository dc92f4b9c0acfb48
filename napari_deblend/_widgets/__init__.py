"""napari dock widgets. Thin: they gather parameters, call the core off the UI thread, show results."""

from .blend_browser import BlendBrowserWidget
from .comparison import ComparisonWidget
from .deblend_panel import DeblendWidget
from .detection import DetectionWidget

__all__ = ["BlendBrowserWidget", "ComparisonWidget", "DeblendWidget", "DetectionWidget"]
