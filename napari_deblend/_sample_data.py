"""The shipped sample field, for napari's File > Open Sample and ``napari-deblend demo``."""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).parent / "sample_data"
SAMPLE_FIELD = SAMPLE_DIR / "sample_field.fits"
SAMPLE_TRUTH = SAMPLE_DIR / "sample_field_truth.ecsv"


def sample_field() -> list[tuple]:
    """Layer data of the simulated LSST i-band sample field (read by the plugin's FITS reader)."""
    from ._reader import get_reader

    reader = get_reader(str(SAMPLE_FIELD))
    if reader is None:
        raise FileNotFoundError(f"sample field {SAMPLE_FIELD} is missing from the installation")
    return reader(str(SAMPLE_FIELD))
