"""Field: a multi-band, sky-subtracted image with its noise and mask planes, WCS and photometric calibration.

Reading FITS files (:func:`read_field`) and writing them (:func:`write_field`)
live here too, so that a Field round-trips through FITS. One module per job:

- :mod:`.model`: the :class:`Field` itself and the robust noise estimate;
- :mod:`.files`: opening FITS files (plain, gzip, bzip2, tile-compressed) and messages;
- :mod:`.hdus`: which HDUs are bands, which are noise or mask planes, band names and grids;
- :mod:`.planes`: noise and mask planes (in the file or separate files) into variance and mask;
- :mod:`.calibration`: zero points from headers, and the one :func:`magnitude` function;
- :mod:`.reading`: :func:`read_field`; :mod:`.writing`: :func:`write_field`.

Reading rules (see :func:`read_field` for the details):

- a file's science image is one band (a cube ``(C, H, W)`` gives C); several
  image HDUs are bands only when each names a distinct band; noise and mask
  planes (``MASK``, ``VARIANCE``, ``MSK``, ``WGT``, ``WHT``, ``ERR``, ``DQ``,
  ``CTX``, ``CON``, ``VAR_*``, ...) are never bands but give the variance and mask;
- several files given together are the bands of one field, in order, and must
  share one pixel grid (shape and WCS);
- pixels are copied once, in row chunks, into one native-byte-order float32
  ``(C, H, W)`` array; NaN/inf and flagged pixels become 0 and True in ``Field.mask``;
- anything unusable raises one :class:`~napari_deblend.errors.FieldReadError`
  naming the file (and HDU) and what was expected.
"""

from __future__ import annotations

from .calibration import magnitude
from .files import FITS_SUFFIXES, FieldReadWarning, has_fits_suffix, is_fits_file
from .model import Field, estimate_noise
from .planes import WEIGHT_TYPES
from .reading import read_field
from .writing import write_field

__all__ = [
    "FITS_SUFFIXES",
    "WEIGHT_TYPES",
    "Field",
    "FieldReadWarning",
    "estimate_noise",
    "has_fits_suffix",
    "is_fits_file",
    "magnitude",
    "read_field",
    "write_field",
]
