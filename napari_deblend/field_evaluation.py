"""Field evaluation: a run's catalogue against the truth of a simulated field, galaxy by galaxy.

::

    from napari_deblend.field_evaluation import evaluate_field
    report = evaluate_field(["runs/peeling", "runs/sextractor"], "field_truth.ecsv", "eval/")

Any run of ``napari-deblend run`` (any model) is judged by its *primary* rows
(``IS_PRIMARY``: one answer per galaxy, see :mod:`napari_deblend.pipeline.catalog`)
and their ``FLUX_BEST``. Definitions:

- **matched**: true galaxies and primary rows are paired one to one within
  :data:`~napari_deblend.measurements.MATCH_RADIUS` (3) pixels (Hungarian
  assignment within each group of mutually close positions); a true galaxy so
  paired is *found*;
- **blended**: a true galaxy with another true galaxy within
  ``blend_distance`` (default :data:`BLEND_DISTANCE` = 3 arcsec, the largest
  separation the deblenders were trained on); **isolated** otherwise;
- **Δf/f**: ``(FLUX_BEST - f_true) / f_true`` of a found galaxy, ``f_true`` the
  truth's ``flux_drawn`` (the light actually in the image) when it has that
  column, else ``flux``; **bias** its median, **scatter** half the 16-84
  percentile range (68 %). ``sep`` columns: the same for sep's ``FLUX_AUTO``
  where the primary row carries it (a detection, or a component whose
  detection had no other child);
- **spurious**: primary rows paired with no true galaxy (over-split galaxies,
  noise, artefacts), counted as a fraction of the true galaxies; the part of
  them that are sep's detections answering for themselves (``KIND``
  detection: noise peaks and pieces of galaxies that sep split off, which
  every run of the same field shares for the most part) is reported beside it;
  a spurious row whose nearest true galaxy is isolated and within
  ``blend_distance`` is *beside an isolated galaxy* (most often a piece of
  it taken for a galaxy), counted per isolated galaxy and, in
  ``galaxies_<run>.ecsv``, per galaxy (``spurious_beside``, with the truth's
  ``family`` when it has one);
- **by a component**: found galaxies answered by a deblender's component
  rather than by a sep detection.

Outputs in ``out_dir``: ``summary.md`` and ``summary.ecsv`` (one column per
run), ``galaxies_<run>.ecsv`` (one row per true galaxy), and the figures
``found_fraction.png`` (found fraction against magnitude and nearest-neighbour
distance) and ``flux_error.png`` (Δf/f median and 68 % band, same axes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .errors import DeblendInputError
from .measurements import MATCH_RADIUS, match_positions

#: A true galaxy is blended when another lies within this many arcseconds (the training separations' upper end).
BLEND_DISTANCE = 3.0
#: Columns a truth catalogue needs here.
TRUTH_COLUMNS = ("x", "y", "flux")
#: Metrics of the summary, in order: key -> description.
METRICS: dict[str, str] = {
    "galaxies": "true galaxies",
    "primary_rows": "primary rows of the catalogue",
    "found_isolated": "isolated galaxies found",
    "found_blended": "blended galaxies found",
    "near_row_blended": "blended galaxies with some catalogue row within the match radius (any row, not one-to-one)",
    "by_component_blended": "found blended galaxies answered by a component",
    "bias_isolated": "isolated: median Δf/f",
    "scatter_isolated": "isolated: Δf/f 68% scatter",
    "sep_scatter_isolated": "isolated: sep FLUX_AUTO Δf/f 68% scatter (where the row has it)",
    "bias_blended": "blended: median Δf/f",
    "scatter_blended": "blended: Δf/f 68% scatter",
    "sep_scatter_blended": "blended: sep FLUX_AUTO Δf/f 68% scatter (where the row has it)",
    "spurious": "spurious primary rows / true galaxies",
    "spurious_detections": "spurious primary rows that are sep detections / true galaxies",
    "spurious_isolated": "spurious primary rows beside an isolated galaxy / isolated galaxies",
    "unrecognised_blends": "detections split by the deblender (unrecognised blends)",
}
MAG_BINS = np.arange(18.0, 27.01, 0.5)


@dataclass
class RunResult:
    """One run judged against the truth."""

    name: str
    catalog_path: Path
    model: str
    galaxies: Table  # one row per true galaxy
    summary: dict[str, float]
    spurious_rows: Table = field(default_factory=Table)


@dataclass
class FieldEvaluation:
    """What :func:`evaluate_field` made."""

    runs: list[RunResult]
    blend_distance: float  # arcsec
    pixel_scale: float
    outputs: dict[str, Path]

    def table(self) -> Table:
        """The summary: one row per metric, one column per run."""
        out = Table()
        out["metric"] = list(METRICS)
        out["description"] = list(METRICS.values())
        for run in self.runs:
            out[run.name] = [run.summary.get(key, np.nan) for key in METRICS]
        return out


def find_catalog(path: str | Path, field_name: str | None = None) -> Path:
    """The ``catalog.ecsv`` of a run: given itself, a field's directory, or a run directory (one field, or ``field_name``).

    Raises
    ------
    DeblendInputError
        When none is there, or a run directory holds several fields and none was named.
    """
    path = Path(path)
    if path.is_file():
        return path
    if (path / "catalog.ecsv").is_file():
        return path / "catalog.ecsv"
    if not path.is_dir():
        raise DeblendInputError(f"run directory {path} does not exist: expected the --out of napari-deblend run")
    found = sorted(p for p in path.glob("*/catalog.ecsv"))
    if field_name is not None:
        found = [p for p in found if p.parent.name == field_name]
    if len(found) == 1:
        return found[0]
    if not found:
        named = f" for field {field_name!r}" if field_name else ""
        raise DeblendInputError(f"{path} holds no catalog.ecsv{named}: expected the --out of a finished napari-deblend run")
    raise DeblendInputError(f"{path} holds several fields ({', '.join(p.parent.name for p in found)}): "
                            "expected --field NAME")


def read_truth(path: str | Path) -> Table:
    """A truth catalogue with ``x``, ``y`` (0-based pixels) and ``flux`` (``flux_drawn`` used when present)."""
    from .truth import read_truth_catalog

    return read_truth_catalog(path, required=TRUTH_COLUMNS)


def nearest_neighbour(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance of each position to its nearest other position (inf when alone)."""
    points = np.c_[np.asarray(x, float), np.asarray(y, float)]
    if len(points) < 2:
        return np.full(len(points), np.inf)
    distance, _ = cKDTree(points).query(points, k=2)
    return distance[:, 1]


def match_catalogues(truth_yx: np.ndarray, rows_yx: np.ndarray, radius: float = MATCH_RADIUS) -> np.ndarray:
    """One-to-one pairing of true positions with catalogue positions within ``radius`` pixels.

    The Hungarian assignment of :func:`~napari_deblend.measurements.match_positions`
    is solved within each connected group of positions closer than ``radius``
    (so that a field of thousands of galaxies costs little).

    Returns
    -------
    numpy.ndarray
        ``(N_truth,)`` index of the paired row, -1 for none.
    """
    truth_yx = np.asarray(truth_yx, float).reshape(-1, 2)
    rows_yx = np.asarray(rows_yx, float).reshape(-1, 2)
    out = np.full(len(truth_yx), -1, int)
    if not len(truth_yx) or not len(rows_yx):
        return out
    pairs = cKDTree(truth_yx).query_ball_tree(cKDTree(rows_yx), r=radius)
    i = np.array([t for t, near in enumerate(pairs) for _ in near], int)
    j = np.array([r for near in pairs for r in near], int)
    if not len(i):
        return out
    n_t = len(truth_yx)
    graph = coo_matrix((np.ones(len(i)), (i, n_t + j)), shape=(n_t + len(rows_yx),) * 2)
    _, label = connected_components(graph, directed=False)
    for group in np.unique(label[i]):
        t = np.unique(i[label[i] == group])
        r = np.unique(j[label[n_t + j] == group])
        for a, b in match_positions(truth_yx[t], rows_yx[r], radius):
            out[t[a]] = r[b]
    return out


def robust_stats(values: np.ndarray) -> tuple[float, float]:
    """Median and 68 % scatter (half the 16-84 percentile range) of the finite values (NaN when none)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    p16, p50, p84 = np.percentile(values, [16, 50, 84])
    return float(p50), float((p84 - p16) / 2)


def judge_run(catalog: Table, truth: Table, blend_distance_pixels: float, name: str = "run",
              radius: float = MATCH_RADIUS) -> RunResult:
    """Judge one run's catalogue against the truth (see the module docstring).

    Parameters
    ----------
    catalog : astropy.table.Table
        A run's ``catalog.ecsv`` (``IS_PRIMARY``, ``FLUX_BEST``, ``X_IMAGE``, ``Y_IMAGE``).
    truth : astropy.table.Table
        The field's truth (``x``, ``y`` 0-based, ``flux``; ``flux_drawn``, ``mag`` used when present).
    blend_distance_pixels : float
        The blended/isolated limit, pixels.
    name : str
        The run's name in the outputs.
    radius : float
        Matching radius, pixels.

    Returns
    -------
    RunResult
    """
    missing = [c for c in ("IS_PRIMARY", "FLUX_BEST", "X_IMAGE", "Y_IMAGE") if c not in catalog.colnames]
    if missing:
        raise DeblendInputError(f"run {name}: its catalogue lacks {', '.join(missing)}: expected the catalog.ecsv "
                                "of napari-deblend run (re-run it with this version)")
    primary = catalog[np.asarray(catalog["IS_PRIMARY"], bool)]
    rows_yx = np.c_[np.asarray(primary["Y_IMAGE"], float) - 1, np.asarray(primary["X_IMAGE"], float) - 1]
    tx, ty = np.asarray(truth["x"], float), np.asarray(truth["y"], float)
    true_flux = np.asarray(truth["flux_drawn"] if "flux_drawn" in truth.colnames else truth["flux"], float)
    paired = match_catalogues(np.c_[ty, tx], rows_yx, radius)
    found = paired >= 0
    safe = np.where(found, paired, 0)

    def pick(column: str, fill: float = np.nan) -> np.ndarray:
        if column not in primary.colnames or not len(primary):
            return np.full(len(truth), fill)
        values = np.ma.filled(np.ma.asarray(primary[column], dtype=float), np.nan)
        return np.where(found, values[safe], fill)

    with np.errstate(divide="ignore", invalid="ignore"):
        galaxies = Table()
        galaxies["truth_row"] = np.arange(len(truth))
        galaxies["x"], galaxies["y"] = tx, ty
        galaxies["mag"] = np.asarray(truth["mag"], float) if "mag" in truth.colnames else _magnitudes(true_flux, catalog)
        galaxies["flux_true"] = true_flux
        galaxies["nn_distance"] = nearest_neighbour(tx, ty)
        galaxies["blended"] = galaxies["nn_distance"] <= blend_distance_pixels
        galaxies["found"] = found
        kinds = np.asarray(primary["KIND"]) if "KIND" in primary.colnames and len(primary) else np.array([""])
        galaxies["by_component"] = found & (kinds[safe] == "component")
        galaxies["row_id"] = np.where(found, pick("ID", -1), -1).astype(np.int64)
        galaxies["flux_best"] = pick("FLUX_BEST")
        galaxies["dflux"] = (galaxies["flux_best"] - true_flux) / true_flux
        galaxies["dflux_sep"] = (pick("FLUX_AUTO") - true_flux) / true_flux
    all_yx = np.c_[np.asarray(catalog["Y_IMAGE"], float) - 1, np.asarray(catalog["X_IMAGE"], float) - 1]
    nearest_row = cKDTree(all_yx).query(np.c_[ty, tx])[0] if len(all_yx) else np.full(len(truth), np.inf)
    galaxies["near_row"] = nearest_row <= radius  # any row, primary or not, shared or not (a looser "found")
    unmatched = np.ones(len(primary), bool)
    unmatched[paired[found]] = False
    galaxies["spurious_beside"] = _spurious_beside(np.c_[ty, tx], rows_yx[unmatched], blend_distance_pixels)
    if "family" in truth.colnames:
        galaxies["family"] = np.asarray(truth["family"]).astype(str)
    summary = _summary(galaxies, len(primary), primary[unmatched], catalog)
    model = str(catalog.meta.get("model", ""))
    return RunResult(name, Path("."), model, galaxies, summary, primary[unmatched])


def _spurious_beside(truth_yx: np.ndarray, spurious_yx: np.ndarray, max_distance: float) -> np.ndarray:
    """How many spurious rows have each true galaxy as their nearest, within ``max_distance`` pixels."""
    counts = np.zeros(len(truth_yx), np.int64)
    if len(truth_yx) and len(spurious_yx):
        distance, nearest = cKDTree(truth_yx).query(spurious_yx)
        np.add.at(counts, nearest[distance <= max_distance], 1)
    return counts


def _magnitudes(flux: np.ndarray, catalog: Table) -> np.ndarray:
    zp, exposure = float(catalog.meta.get("zero_point", 27.78)), float(catalog.meta.get("exposure", 5520.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zp - 2.5 * np.log10(flux / exposure), np.nan)


def _summary(galaxies: Table, n_primary: int, spurious: Table, catalog: Table) -> dict[str, float]:
    blended = np.asarray(galaxies["blended"], bool)
    found = np.asarray(galaxies["found"], bool)
    out: dict[str, float] = {"galaxies": float(len(galaxies)), "primary_rows": float(n_primary)}
    for label, chosen in (("isolated", ~blended), ("blended", blended)):
        out[f"found_{label}"] = float(found[chosen].mean()) if chosen.any() else float("nan")
        bias, scatter = robust_stats(np.asarray(galaxies["dflux"])[chosen & found])
        out[f"bias_{label}"], out[f"scatter_{label}"] = bias, scatter
        out[f"sep_scatter_{label}"] = robust_stats(np.asarray(galaxies["dflux_sep"])[chosen & found])[1]
    near = np.asarray(galaxies["near_row"], bool)
    out["near_row_blended"] = float(near[blended].mean()) if blended.any() else float("nan")
    chosen = blended & found
    out["by_component_blended"] = float(np.asarray(galaxies["by_component"])[chosen].mean()) if chosen.any() else float("nan")
    out["spurious"] = len(spurious) / max(len(galaxies), 1)
    spurious_kinds = np.asarray(spurious["KIND"]) if "KIND" in spurious.colnames else np.zeros(0, str)
    out["spurious_detections"] = float(np.sum(spurious_kinds == "detection")) / max(len(galaxies), 1)
    beside = np.asarray(galaxies["spurious_beside"])[~blended]
    out["spurious_isolated"] = float(beside.sum() / len(beside)) if len(beside) else float("nan")
    flags = np.asarray(catalog["DEBLEND_FLAGS"]) if "DEBLEND_FLAGS" in catalog.colnames else np.zeros(0, int)
    kinds = np.asarray(catalog["KIND"]) if "KIND" in catalog.colnames else np.zeros(0, str)
    out["unrecognised_blends"] = float(np.sum((flags & 1 > 0) & (kinds == "detection")))
    return out


def evaluate_field(
    runs: Sequence[str | Path],
    truth: str | Path,
    out_dir: str | Path,
    *,
    blend_distance: float = BLEND_DISTANCE,
    pixel_scale: float | None = None,
    field_name: str | None = None,
    names: Sequence[str] | None = None,
) -> FieldEvaluation:
    """Judge one or several runs of the same field against its truth; write the table, per-galaxy tables and figures.

    Parameters
    ----------
    runs : sequence of str or Path
        Run directories (``--out`` of ``napari-deblend run``), field directories or ``catalog.ecsv`` files.
    truth : str or Path
        The field's truth catalogue (``napari-deblend simulate field`` writes ``<name>_truth.ecsv``).
    out_dir : str or Path
        Where the outputs go (created).
    blend_distance : float
        A galaxy with a neighbour closer than this (arcsec) is blended.
    pixel_scale : float, optional
        Arcsec per pixel (default: the run's ``run.json``, else the truth's preset, else 0.2).
    field_name : str, optional
        The field, when a run directory holds several.
    names : sequence of str, optional
        Names of the runs in the outputs (default: the run directories' names).

    Returns
    -------
    FieldEvaluation
    """
    if not runs:
        raise DeblendInputError("no run given: expected one or more run directories")
    if not (np.isfinite(blend_distance) and blend_distance > 0):
        raise DeblendInputError(f"--blend-distance {blend_distance!r}: expected a positive number of arcseconds")
    truth_table = read_truth(truth)
    paths = [find_catalog(run, field_name) for run in runs]
    names = list(names) if names else _run_names(runs, paths)
    if len(names) != len(paths) or len(set(names)) != len(names):
        raise DeblendInputError(f"run names {names}: expected one distinct name per run")
    scale = pixel_scale or _pixel_scale(paths[0], truth_table)
    results = []
    for name, path in zip(names, paths):
        try:
            catalog = Table.read(path, format="ascii.ecsv")
        except Exception as exc:
            raise DeblendInputError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
        result = judge_run(catalog, truth_table, blend_distance / scale, name=name)
        result.catalog_path = path
        results.append(result)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    evaluation = FieldEvaluation(results, float(blend_distance), float(scale), {})
    evaluation.outputs = _write_outputs(evaluation, out, Path(truth))
    return evaluation


def _run_names(runs: Sequence[str | Path], paths: list[Path]) -> list[str]:
    names = [Path(run).name if Path(run).is_dir() else path.parent.name for run, path in zip(runs, paths)]
    if len(set(names)) == len(names):
        return names
    return [f"{name}_{i + 1}" for i, name in enumerate(names)]


def _pixel_scale(catalog_path: Path, truth: Table) -> float:
    record = catalog_path.parent / "run.json"
    if record.is_file():
        try:
            scale = json.loads(record.read_text())["calibration"]["pixel_scale"]
            if scale and scale > 0:
                return float(scale)
        except (ValueError, KeyError, TypeError):
            pass
    from .presets import get_preset

    try:
        return float(get_preset(truth.meta.get("preset")).pixel_scale)
    except DeblendInputError:
        return 0.2


def _write_outputs(evaluation: FieldEvaluation, out: Path, truth_path: Path) -> dict[str, Path]:
    from .field_evaluation_plots import flux_error_figure, found_fraction_figure

    outputs: dict[str, Path] = {}
    table = evaluation.table()
    table.meta = {"truth": str(truth_path), "blend_distance_arcsec": evaluation.blend_distance,
                  "pixel_scale": evaluation.pixel_scale, "match_radius_pixels": MATCH_RADIUS,
                  "catalogs": {r.name: str(r.catalog_path) for r in evaluation.runs}}  # fmt: skip
    outputs["summary.ecsv"] = out / "summary.ecsv"
    table.write(outputs["summary.ecsv"], format="ascii.ecsv", overwrite=True)
    outputs["summary.md"] = out / "summary.md"
    outputs["summary.md"].write_text(summary_markdown(evaluation))
    for run in evaluation.runs:
        path = out / f"galaxies_{run.name}.ecsv"
        run.galaxies.write(path, format="ascii.ecsv", overwrite=True)
        outputs[path.name] = path
    for name, make in (("found_fraction.png", found_fraction_figure), ("flux_error.png", flux_error_figure)):
        figure = make(evaluation)
        figure.savefig(out / name, dpi=110)
        outputs[name] = out / name
    return outputs


def summary_markdown(evaluation: FieldEvaluation) -> str:
    """The summary as a Markdown table (fractions in per cent), with the definitions used."""
    names = [r.name for r in evaluation.runs]
    lines = [f"| metric | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for key, description in METRICS.items():
        cells = []
        for run in evaluation.runs:
            value = run.summary.get(key, np.nan)
            if key in ("galaxies", "primary_rows", "unrecognised_blends"):
                cells.append("—" if not np.isfinite(value) else f"{int(value)}")
            else:
                cells.append("—" if not np.isfinite(value) else f"{100 * value:.1f} %")
        lines.append(f"| {description} | {' | '.join(cells)} |")
    first = evaluation.runs[0].galaxies
    n_blended = int(np.sum(first["blended"]))
    lines += ["", f"{len(first)} true galaxies, {n_blended} blended (a neighbour within "
              f"{evaluation.blend_distance:g}″ = {evaluation.blend_distance / evaluation.pixel_scale:.1f} px); "
              f"one-to-one match of true galaxies with primary rows within {MATCH_RADIUS:g} px; "
              "Δf/f = (FLUX_BEST − true flux) / true flux; scatter = half the 16–84 percentile range.", ""]
    return "\n".join(lines)
