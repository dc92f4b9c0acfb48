"""``napari-deblend demo``: napari with the sample field, its detections and the blend browser."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ._read_options import add_read_options, read_kwargs


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo",
        help="open napari on the shipped sample field with detections and the blend browser",
        description="Open napari on the shipped simulated field, run detection and show the blend browser.",
    )
    p.add_argument("--field", default=None, help="FITS field to open instead of the shipped sample")
    p.add_argument("--preset", default="sextractor", help="detection preset: sextractor or des")
    p.add_argument("--survey", default="lsst-i", help="survey preset for calibration defaults")
    p.add_argument(
        "--screenshot", default=None, metavar="PNG",
        help="save a screenshot of the window to PNG and exit (no event loop; for docs and checks)",
    )
    add_read_options(p)
    p.set_defaults(func=run)


DEMO_FLUX_RATIO = 5.0  # the demo pair: members within this factor of each other in flux


def build_demo(viewer, field_path: str | Path | None = None, preset: str = "sextractor",
               read: dict[str, Any] | None = None):
    """Open the field in ``viewer``, dock the panels, detect, then deblend one blend (off the UI thread).

    The blend is :func:`demo_blend`'s choice: a clear pair of overlapping galaxies.

    ``read`` holds :func:`~napari_deblend.read_field` options (``survey``
    preset, ``hdu``, ``bands``, ``weight``, ``weight_type``, ``mask``); with
    them the field is read here and its layers (bands and mask) added.

    Returns
    -------
    tuple
        ``(detection_widget, blend_browser, deblend_panel, comparison_panel)``.
    """
    from .._sample_data import SAMPLE_FIELD
    from .._widgets import BlendBrowserWidget, ComparisonWidget, DeblendWidget, DetectionWidget

    path = Path(field_path) if field_path else SAMPLE_FIELD
    if read:
        from .. import _viewer_hooks
        from .._reader import layer_data
        from ..field import read_field

        field = read_field(str(path), **read)
        _viewer_hooks.install(viewer)
        for data, kwargs, kind in layer_data(field):
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    else:
        viewer.open(str(path), plugin="napari-deblend")
    detection = DetectionWidget(viewer)
    browser = BlendBrowserWidget(viewer)
    panel = DeblendWidget(viewer)
    comparison = ComparisonWidget(viewer)
    viewer.window.add_dock_widget(detection, name="Detection", area="left")
    viewer.window.add_dock_widget(browser, name="Blend browser", area="left", tabify=True)
    panel_dock = viewer.window.add_dock_widget(panel, name="Deblend", area="right")
    comparison_dock = viewer.window.add_dock_widget(comparison, name="Comparison", area="right")
    from qtpy.QtCore import Qt

    viewer.window._qt_window.resizeDocks([panel_dock, comparison_dock], [180, 700], Qt.Vertical)
    detection.preset_combo.setCurrentText(preset)
    if panel.model_combo.findText("peeling") >= 0:
        panel.model_combo.setCurrentText("peeling")  # the demo shows the neural deblender first

    def first_blend(session) -> None:
        session.select(demo_blend(session.blends))  # select and zoom to it
        panel.deblend_selected()

    detection.session.detected.connect(first_blend)
    detection.run()
    return detection, browser, panel, comparison


def demo_blend(blends) -> int:
    """Id of the blend the demo opens on: the brightest pair of comparable galaxies that overlap.

    Two members whose light overlaps (blendedness at least 0.1) and whose sep fluxes are
    within a factor :data:`DEMO_FLUX_RATIO` of each other is the case the neural deblenders
    are made for; the brightest blends of a field are often a large galaxy with faint
    neighbours in its wings, a hard case better shown later. Without such a pair, the
    brightest overlapping pair, else the brightest blend.
    """
    pairs = [b for b in blends if b.n_members == 2 and b.blendedness >= 0.1]
    comparable = [b for b in pairs if _flux_ratio(b) <= DEMO_FLUX_RATIO]
    chosen = (comparable or pairs or list(blends) or [None])[0]
    return chosen.id if chosen is not None else 0


def _flux_ratio(blend) -> float:
    """Brighter over fainter member flux (inf when the fainter has none)."""
    fluxes = np.sort(np.asarray(blend.fluxes, dtype=float))
    return float(fluxes[-1] / fluxes[0]) if fluxes[0] > 0 else float("inf")


def run(args: argparse.Namespace) -> int:
    """Start napari (blocking) with the demo, or save a screenshot and exit."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-deblend demo")
    viewer.window.resize(1600, 1000)
    read = {"preset": args.survey, **read_kwargs(args)}
    default = read == {"preset": "lsst-i", "weight_type": "weight"}
    detection, browser, panel, comparison = build_demo(viewer, args.field, args.preset, None if default else read)
    if args.screenshot:
        _wait_for(detection)
        _wait_for_deblend(panel)
        QApplication.processEvents()
        viewer.screenshot(args.screenshot, canvas_only=False)
        print(f"screenshot written to {args.screenshot}")
        viewer.close()
        return 0
    napari.run()
    return 0


def _process_events_until(done, timeout: float = 120.0, poll_ms: int = 10) -> None:
    """Run the Qt event loop until ``done()`` is true (checked every ``poll_ms``) or the timeout passes.

    A local ``QEventLoop`` rather than ``processEvents()`` and ``sleep`` in a loop: between events
    the loop waits in Qt with the GIL released, as the application's own loop does. Calling
    ``processEvents()`` every millisecond instead takes the GIL from the worker threads so often
    that a deblend in a worker ran at a third of its speed.
    """
    import time

    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    QApplication.processEvents()
    if not done():
        loop = QEventLoop()
        timer = QTimer()
        timer.timeout.connect(lambda: (done() or time.monotonic() > deadline) and loop.quit())
        timer.start(poll_ms)
        loop.exec_()
        timer.stop()
    QApplication.processEvents()


def _wait_for(detection, timeout: float = 120.0) -> None:
    """Wait until the detection worker has delivered its layers."""
    _process_events_until(lambda: detection.session.detections is not None, timeout)


def _wait_for_deblend(panel, timeout: float = 120.0) -> None:
    """Wait until the deblend panel's run (if any) is done and its layers are shown."""
    _process_events_until(lambda: not panel.busy, timeout)
