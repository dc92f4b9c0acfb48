"""Contact sheets and counts of a pool of real galaxy stamps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .pool import SPLITS, load_real_pool

SOFTENING = 0.03  # asinh stretch softening, in units of each stamp's brightest pixel


def pool_counts(path: str | Path | None = None, preset: str = "lsst-i") -> dict[str, dict[str, tuple[int, int]]]:
    """``{split: {origin: (stamps, galaxies)}}`` of a pool, read from its ``.npz`` files."""
    counts: dict[str, dict[str, tuple[int, int]]] = {}
    for split in SPLITS:
        pool = load_real_pool(path, split, preset)
        counts[split] = {}
        for origin in sorted(set(pool.origin.tolist())):
            chosen = pool.origin == origin
            counts[split][origin] = (int(chosen.sum()), int(len(np.unique(pool.galaxy_id[chosen]))))
    return counts


def contact_sheet(path: str | Path | None, out: str | Path, preset: str = "lsst-i", n: int = 16,
                  seed: int = 0, columns: int = 8, splits: tuple[str, ...] = SPLITS,
                  origin: str | None = None) -> Path:
    """Write a PNG of ``n`` random stamps of each split (asinh stretch, one block of rows per split).

    Each stamp is titled with its galaxy id, source, magnification, band and
    half-light radius.  ``origin`` restricts the choice to one source table entry.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rng = np.random.default_rng(seed)
    columns = max(1, min(columns, n))
    rows_per_split = math.ceil(n / columns)
    figure = Figure(figsize=(1.7 * columns, 1.95 * rows_per_split * len(splits) + 0.3 * len(splits)))
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(rows_per_split * len(splits), columns, hspace=0.45, wspace=0.08)
    for block, split in enumerate(splits):
        pool = load_real_pool(path, split, preset)
        candidates = np.flatnonzero(pool.origin == origin) if origin else np.arange(len(pool))
        picks = np.sort(rng.choice(candidates, size=min(n, len(candidates)), replace=False))
        for k in range(rows_per_split * columns):
            ax = figure.add_subplot(grid[block * rows_per_split + k // columns, k % columns])
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(picks):
                ax.axis("off")
                continue
            i = int(picks[k])
            image = pool.images[i]
            peak = float(image.max()) or 1.0
            ax.imshow(np.arcsinh(np.clip(image, 0, None) / (SOFTENING * peak)), origin="lower", cmap="gray",
                      interpolation="nearest")
            band = f" {pool.band[i]}" if pool.band[i] else ""
            ax.set_title(f"{pool.galaxy_id[i]} {Path(pool.source[i]).stem[:14]}\n"
                         f"×{pool.magnification[i]:g}{band} r½={pool.hlr[i]:.2f}″", fontsize=6)
            if k % columns == 0:
                ax.set_ylabel(split, fontsize=9)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    return out
