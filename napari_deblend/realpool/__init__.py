"""A pool of real galaxies: clean isolated stamps cut from real images, at a survey preset.

``napari-deblend real-pool build`` (or :func:`build_real_pool`) turns the images
of the source table (:data:`DEFAULT_SOURCES`) into stamps of single galaxies at a
preset's pixel scale and PSF, split by galaxy into train / validation / test,
written outside the repository (default :func:`default_pool_dir`);
:func:`load_real_pool` reads one split back.

Modules: :mod:`.sources` (the table and the readers), :mod:`.detect` (sep
detection, stars), :mod:`.stamps` (selection, cut, resampling, PSF matching),
:mod:`.build` (images to stamps), :mod:`.pool` (split, write, read),
:mod:`.sheet` (contact sheets).
"""

from .pool import (
    SPLITS,
    RealPool,
    build_real_pool,
    check_outside_repository,
    default_pool_dir,
    default_source_dir,
    load_real_pool,
    pool_split_record,
    split_by_galaxy,
)
from .sources import DEFAULT_SOURCES, SourceSpec
from .stamps import BuildSettings

__all__ = [
    "DEFAULT_SOURCES",
    "SPLITS",
    "BuildSettings",
    "RealPool",
    "SourceSpec",
    "build_real_pool",
    "check_outside_repository",
    "default_pool_dir",
    "default_source_dir",
    "load_real_pool",
    "pool_split_record",
    "split_by_galaxy",
]
