"""Shared fixtures: small synthetic fields built with numpy (no simulator needed)."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

# Panels remember their settings (QSettings); keep the tests' settings away from the user's.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="napari-deblend-test-config-")

from napari_deblend.field import Field

NOISE = 446.0


def gaussian_field(sources, shape=(256, 256), noise=NOISE, seed=0, n_bands=1) -> Field:
    """A field of round Gaussian sources ``(y, x, flux, sigma)`` plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape, dtype=np.float64)
    for y, x, flux, sigma in sources:
        image += flux / (2 * np.pi * sigma**2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    bands = [image + rng.normal(0, noise, shape) for _ in range(n_bands)]
    return Field(np.stack(bands).astype(np.float32), noise=np.full(n_bands, noise))


@pytest.fixture
def blend_field() -> Field:
    """Three isolated sources and one close pair (blend) on a 256x256 field."""
    sources = [
        (40, 40, 4e5, 2.0),
        (200, 60, 3e5, 2.5),
        (60, 200, 2e5, 2.0),
        (150, 150, 6e5, 3.0),  # pair, 12 px apart
        (150, 162, 3e5, 2.5),
    ]
    return gaussian_field(sources)


def viewer_with_deblend_panel(make_napari_viewer, qtbot, path, model: str):
    """A viewer with the field at ``path`` detected, a blend browser and a Deblend panel on ``model`` (CPU).

    Returns ``(viewer, session, panel)``; the panel replaces earlier results (keep unchecked).
    """
    from napari_deblend._widgets import BlendBrowserWidget, DeblendWidget, DetectionWidget

    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-deblend")
    detection = DetectionWidget(viewer)
    BlendBrowserWidget(viewer)
    detection.run()
    qtbot.waitUntil(lambda: detection.session.detections is not None, timeout=30_000)
    panel = DeblendWidget(viewer)
    panel.keep_box.setChecked(False)
    panel.model_combo.setCurrentText(model)
    panel.device_combo.setCurrentText("cpu")
    return viewer, detection.session, panel
