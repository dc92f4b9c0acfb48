"""Human labels on blends, components and isolated galaxies, and the clean training sets made from them.

- :mod:`.store`: the SQLite :class:`LabelStore` (one file per project folder, WAL, every label committed).
- :mod:`.ecsv`: labels to and from ECSV.
- :mod:`.export`: ``export-training``: FITS cut-outs of clean isolated galaxies and clean blends + an ECSV index.

No Qt here; the napari Label panel (:mod:`napari_deblend._widgets.label_panel`) calls these.
"""

from __future__ import annotations

from .store import (
    DEFAULT_DATABASE_NAME,
    FAILURE_TYPES,
    SCHEMA_VERSION,
    VERDICTS,
    FieldCheck,
    FieldKey,
    Label,
    LabelStore,
    TargetKey,
    field_content_hash,
    field_key,
    members_match,
)

#: Outline colours of labelled blends on the canvas (unlabelled blends stay orange).
VERDICT_COLORS = {"clean": "#3ddc5a", "bad": "#ff3b3b", "ambiguous": "#ffd23b", None: "orange"}

__all__ = [
    "DEFAULT_DATABASE_NAME",
    "FAILURE_TYPES",
    "SCHEMA_VERSION",
    "VERDICTS",
    "VERDICT_COLORS",
    "FieldCheck",
    "FieldKey",
    "Label",
    "LabelStore",
    "TargetKey",
    "field_content_hash",
    "field_key",
    "members_match",
]
