"""What a run is asked to do (:class:`RunSettings`), one field's share of it (:class:`FieldJob`),
and where everything of a field lives in the output directory (:class:`FieldPaths`).

Output directory layout::

    DIR/run.json                    parameters of the run, versions, per-field status and errors
    DIR/run.lock                    while a run writes here: its owner (process, host, start); see .lock
    DIR/<stem>/catalog.ecsv         detections (SExtractor columns) and neural components
    DIR/<stem>/components.fits      one extension per blend: its component stamps, origin and WCS
    DIR/<stem>/residual.fits        the field minus every neural component
    DIR/<stem>/run.json             parameters, versions, counts, timings; written last (= field done)
    DIR/<stem>/work/                scratch of an unfinished field (removed when it is done):
        field.json                  shape, calibration, background rms, WCS
        subtracted.npy, mask.npy    background-subtracted bands and bad-pixel mask (memory-mapped by tiles)
        parts/tile_0003.fits        one finished tile: its detections, components and stamps
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..candidates import DEFAULT_CANDIDATES
from ..field import FITS_SUFFIXES
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE


@dataclass(frozen=True)
class RunSettings:
    """Parameters of a headless run (everything that changes the results, plus the device).

    Attributes
    ----------
    model : str
        Deblender name (see :func:`~napari_deblend.available_deblenders`).
    device : str
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``, resolved on each worker.
    detection_preset : str
        ``"sextractor"`` or ``"des"``.
    detection_overrides : dict
        Detection parameters replacing the preset's (``thresh``, ``minarea``, ...).
    survey : str
        Survey preset for the calibration the headers do not give.
    tile_size : int
        Largest side of a tile's core, pixels.
    overlap : int
        Halo around each core, pixels; grown automatically for a tile owning a larger blend.
    keep_work : bool
        Keep the scratch directory (tiles, background-subtracted field) of finished fields.
    candidates : str
        Which detections the deblender sees besides sep's blends: ``"extended"`` (those larger
        than a point source), ``"all"`` or ``"blends"`` (none); see :mod:`napari_deblend.candidates`.
    read : dict
        How fields are read (:func:`~napari_deblend.read_field`): ``hdu``, ``bands``,
        ``weight_type`` for every field, and ``weight`` / ``mask``: field path -> file.
    give_back_pieces : float or None
        ``peeling`` only: components whose galaxy probability (the split verifier's
        ``P_GALAXY``) is below this go back to their host, unless they lie on a detection;
        None (default): the probabilities are reported and nothing is merged.
    """

    model: str = "peeling"
    device: str = "auto"
    detection_preset: str = "sextractor"
    detection_overrides: dict[str, Any] = field(default_factory=dict)
    survey: str = "lsst-i"
    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_OVERLAP
    keep_work: bool = False
    candidates: str = DEFAULT_CANDIDATES
    read: dict[str, Any] = field(default_factory=dict)
    give_back_pieces: float | None = None

    def identity(self) -> dict[str, Any]:
        """The parameters that make two runs' results comparable (what an output directory is checked against).

        The device and ``keep_work`` are left out: they do not change the catalogue.
        """
        out = asdict(self)
        out.pop("device")
        out.pop("keep_work")
        out["detection_overrides"] = {
            k: v for k, v in sorted(self.detection_overrides.items()) if v is not None
        }
        if self.give_back_pieces is None:  # runs written before the option compare equal
            out.pop("give_back_pieces")
        out["napari_deblend"] = __version__
        return out


def field_stem(path: str | Path) -> str:
    """Name of a field's output directory: the file name without its FITS suffix (``a.fits.fz`` -> ``a``)."""
    name = Path(path).name
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return Path(name).stem or name


@dataclass(frozen=True)
class FieldPaths:
    """Files of one field in the output directory (see the module docstring)."""

    root: Path

    @property
    def catalog(self) -> Path:
        """Final catalogue (ECSV)."""
        return self.root / "catalog.ecsv"

    @property
    def components(self) -> Path:
        """Component stamps (FITS, one extension per blend)."""
        return self.root / "components.fits"

    @property
    def residual(self) -> Path:
        """Field minus all components (FITS)."""
        return self.root / "residual.fits"

    @property
    def run_json(self) -> Path:
        """Per-field record; its presence with ``status: done`` means the field is finished."""
        return self.root / "run.json"

    @property
    def work(self) -> Path:
        """Scratch directory of an unfinished field."""
        return self.root / "work"

    @property
    def field_json(self) -> Path:
        """Shape, calibration, background rms and WCS of the prepared field."""
        return self.work / "field.json"

    @property
    def subtracted(self) -> Path:
        """Background-subtracted bands ``(C, H, W)`` float32, ``.npy`` (memory-mapped by tiles)."""
        return self.work / "subtracted.npy"

    @property
    def mask(self) -> Path:
        """Bad-pixel mask ``(H, W)`` bool, ``.npy``."""
        return self.work / "mask.npy"

    @property
    def parts(self) -> Path:
        """Directory of finished tiles."""
        return self.work / "parts"

    def part(self, tile_index: int) -> Path:
        """The record of one finished tile."""
        return self.parts / f"tile_{tile_index:04d}.fits"


@dataclass(frozen=True)
class FieldJob:
    """One field of a run: its input file, output directory and the run's settings (sent to workers)."""

    path: str
    out_dir: Path
    settings: RunSettings

    @property
    def paths(self) -> FieldPaths:
        """Where this field's files go."""
        return FieldPaths(self.out_dir)

    @property
    def name(self) -> str:
        """The input file's name, for messages."""
        return Path(self.path).name
