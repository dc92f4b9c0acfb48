"""The shipped sample field, for napari's File > Open Sample and ``napari-deblend demo``.

The files live in the repository's top-level ``sample_data/`` folder; an
installed package carries them as ``napari_deblend/sample_data/`` (see
``pyproject.toml``). :func:`sample_data_dir` is the one place that looks for them.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_FIELD_NAME = "sample_field.fits"
SAMPLE_TRUTH_NAME = "sample_field_truth.ecsv"


def sample_data_dir() -> Path:
    """The folder holding the sample field.

    Returns
    -------
    pathlib.Path
        ``napari_deblend/sample_data`` in an installed package (a wheel), else the
        repository's ``sample_data/`` (a source checkout or an editable install); the
        first of the two when neither holds the field (:func:`sample_field` then says so).
    """
    package = Path(__file__).resolve().parent
    candidates = (package / "sample_data", package.parent / "sample_data")
    for folder in candidates:
        if (folder / SAMPLE_FIELD_NAME).is_file():
            return folder
    return candidates[0]


SAMPLE_DIR = sample_data_dir()
SAMPLE_FIELD = SAMPLE_DIR / SAMPLE_FIELD_NAME
SAMPLE_TRUTH = SAMPLE_DIR / SAMPLE_TRUTH_NAME


def sample_field() -> list[tuple]:
    """Layer data of the simulated LSST i-band sample field (read by the plugin's FITS reader)."""
    from ._reader import get_reader

    reader = get_reader(str(SAMPLE_FIELD)) if SAMPLE_FIELD.is_file() else None
    if reader is None:
        raise FileNotFoundError(f"sample field {SAMPLE_FIELD} is missing from the installation: reinstall "
                                "napari-deblend (the wheel carries it as napari_deblend/sample_data)")
    return reader(str(SAMPLE_FIELD))
