"""Headless deblending of whole fields and many files, in this process or on a Dask cluster.

::

    from napari_deblend.pipeline import RunSettings, run_fields
    summary = run_fields(["a.fits", "b.fits"], "out/", RunSettings(model="peeling"), dask_cluster="local:2")

Modules, one job each: :mod:`.tiling` (tiles and who owns what), :mod:`.prepare`
(read, subtract the background once), :mod:`.tiles` (detect, deblend, measure a
tile), :mod:`.assemble` (merge tiles into the outputs), :mod:`.outputs` (atomic
writes), :mod:`.dask_backend` (local or Dask execution), :mod:`.progress`,
:mod:`.layout` (settings and output paths) and :mod:`.run` (``run_fields``).
"""

from __future__ import annotations

from .layout import RunSettings
from .run import FieldReport, RunSummary, run_fields
from .tiling import Tile, plan_tiles

__all__ = ["FieldReport", "RunSettings", "RunSummary", "Tile", "plan_tiles", "run_fields"]
