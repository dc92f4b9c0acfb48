"""Simulated galaxies, blends and survey fields with their truth.

The simulator draws a galaxy population (:mod:`.population`: number counts,
a size-magnitude relation, inclinations), gives each galaxy a morphology family
from a mix (:mod:`.morphologies`: bulge + disk, Sérsic, knotty, spiral, barred,
clumpy irregular, lopsided, edge-on dusty, tidal, compact, stars, and real
galaxies from a pool), draws it through the preset's PSF
(:mod:`.drawing`, :mod:`.parametric`, :mod:`.procedural`, :mod:`.real_family`),
and assembles blend stamps (:mod:`.blends`) or whole fields (:mod:`.fields`)
with noise and a truth table (:mod:`.catalog`, :mod:`.files`).  Images are
sky-subtracted, in electrons.

Coordinates are numpy's, 0-based: the centre of pixel ``(row, col)`` is at
``x = col, y = row``; the centre of a 48 x 48 stamp is ``(23.5, 23.5)``.
"""

from .blends import DEFAULT_SEPARATION, BlendSet, iter_blend_batches, simulate_blends
from .catalog import DRAWING_PARAMETERS, MORPHOLOGY_COLUMNS
from .drawing import add_noise, draw_galaxies
from .fields import DEFAULT_DENSITY, field_wcs, simulate_field
from .files import concatenate_blends, read_blends, write_blends, write_truth
from .morphologies import FAMILIES, MIXES, REALISTIC_MIX, parse_mix, sample_galaxies
from .population import COUNT_SLOPE, MAG_BRIGHT, sample_magnitudes
from .real_family import RealPool, resolve_pool

__all__ = [
    "BlendSet",
    "COUNT_SLOPE",
    "DEFAULT_DENSITY",
    "DEFAULT_SEPARATION",
    "DRAWING_PARAMETERS",
    "FAMILIES",
    "MAG_BRIGHT",
    "MIXES",
    "MORPHOLOGY_COLUMNS",
    "REALISTIC_MIX",
    "RealPool",
    "add_noise",
    "concatenate_blends",
    "draw_galaxies",
    "field_wcs",
    "iter_blend_batches",
    "parse_mix",
    "read_blends",
    "resolve_pool",
    "sample_galaxies",
    "sample_magnitudes",
    "simulate_blends",
    "simulate_field",
    "write_blends",
    "write_truth",
]
