"""Optional dependencies, imported when first needed: the ``[sim]`` and ``[batch]`` extras.

The core install (reading fields, detection, deblending, measuring, the viewer's
panels, headless runs on one machine) needs neither. A feature that does calls
:func:`import_extra`, which returns the module or raises
:class:`MissingExtraError`: one sentence naming the feature and the ``pip``
command that adds it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import DeblendInputError

#: Importable name -> (extra that installs it, package name, what needs it).
EXTRAS: dict[str, tuple[str, str, str]] = {
    "galsim": ("sim", "GalSim", "simulating galaxies (simulate, train, evaluate, truth rows of simulated fields)"),
    "distributed": ("batch", "Dask's distributed", "runs on a Dask cluster (--dask-cluster, --scheduler)"),
}


class MissingExtraError(DeblendInputError, ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""


def import_extra(name: str) -> ModuleType:
    """Import an optional dependency listed in :data:`EXTRAS`.

    Parameters
    ----------
    name : str
        Importable module name, e.g. ``"galsim"``.

    Returns
    -------
    module
        The imported module.

    Raises
    ------
    MissingExtraError
        When the module is not installed (or cannot be imported).
    """
    extra, package, needed_by = EXTRAS[name]
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingExtraError(
            f"{needed_by} needs {package}, which cannot be imported ({exc}): "
            f"pip install \"napari-deblend[{extra}]\""
        ) from None
