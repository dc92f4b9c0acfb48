"""A contact sheet of the morphology families: what each family of the simulator looks like."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..presets import get_preset
from .drawing import add_noise, draw_galaxies
from .morphologies import FAMILIES, sample_galaxies
from .real_family import RealPool

SHEET_MAGNITUDES = (20.0, 23.0)
"""Magnitude range of the galaxies shown (bright enough for their structure to be seen)."""


def families_contact_sheet(families: Sequence[str] | None = None, n: int = 8, preset: str = "lsst-i",
                           seed: int = 0, stamp_size: int = 64, noisy: bool = True,
                           real_pool: RealPool | None = None) -> Any:
    """A matplotlib figure: one row per family, ``n`` random galaxies each (noiseless and, below, noisy).

    Parameters
    ----------
    families : sequence of str, optional
        Families to show; default every family (``real`` only with a pool).
    n : int
        Galaxies per family.
    preset : str
        Survey preset.
    seed : int
        Random seed.
    stamp_size : int
        Side of each cut-out, pixels.
    noisy : bool
        Also show each galaxy with the preset's noise.
    real_pool : RealPool, optional
        Pool of the ``real`` family.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    p = get_preset(preset)
    names = [f for f in (families or FAMILIES) if f != "real" or real_pool is not None]
    rng = np.random.default_rng(seed)
    rows = 2 * len(names) if noisy else len(names)
    fig = Figure(figsize=(1.15 * n + 0.9, 1.15 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, n, squeeze=False)
    centre = np.full(n, (stamp_size - 1) / 2.0)
    for r, family in enumerate(names):
        gal = sample_galaxies(n, p, rng, mag_range=SHEET_MAGNITUDES, morphology={family: 1.0}, real_pool=real_pool)
        images = draw_galaxies(gal, centre, centre, stamp_size, p, real_pool=real_pool)
        shown = [("", images)] + ([("+ noise", np.stack([add_noise(im, p, rng) for im in images]))] if noisy else [])
        for k, (label, stack) in enumerate(shown):
            row = axes[r * len(shown) + k]
            for c, ax in enumerate(row):
                ax.imshow(np.arcsinh(stack[c] / (3.0 * p.background_sigma)), origin="lower", cmap="gray",
                          vmin=-0.5, vmax=float(np.arcsinh(stack[c].max() / (3.0 * p.background_sigma))))
                ax.set_xticks([])
                ax.set_yticks([])
                if k == 0:
                    ax.set_title(f"i={gal['mag'][c]:.1f}", fontsize=7, pad=2)
            row[0].set_ylabel(f"{family}\n{label}".strip(), fontsize=8)
    fig.suptitle(f"Simulated morphology families at {p.name} (asinh stretch)", fontsize=10)
    return fig
