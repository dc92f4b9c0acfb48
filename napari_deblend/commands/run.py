"""``napari-deblend run``: the whole pipeline without the viewer, over many fields, here or on Dask.

Examples::

    napari-deblend run tile1.fits tile2.fits --model peeling --out results/
    napari-deblend run survey/*.fits --out results/ --dask-cluster local:4
    napari-deblend run survey/*.fits --out results/ --scheduler tcp://head-node:8786
"""

from __future__ import annotations

import argparse
import sys

from ..candidates import CANDIDATE_MODES, DEFAULT_CANDIDATES
from ..pipeline.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from ._read_options import add_read_options, per_field, read_kwargs

_DETECTION_OPTIONS = (("thresh", float), ("minarea", int), ("deblend-nthresh", int), ("deblend-cont", float),
                      ("back-size", int), ("back-filter-size", int))  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` sub-command."""
    p = subparsers.add_parser(
        "run",
        help="detect, deblend and measure every blend of whole fields, headless (local or Dask)",
        description="Read -> detect -> blends -> deblend -> measure, for every field given, in tiles. "
        "Per field, DIR/<name>/ gets catalog.ecsv (detections with SExtractor columns and neural "
        "components), components.fits (component stamps with origin and WCS), residual.fits (the field "
        "minus all components) and run.json (parameters, versions, timings). An interrupted run "
        "resumes; a field that fails is reported and the others go on (exit code 1 at the end).",
    )
    p.add_argument("fields", nargs="+", metavar="FIELD.fits", help="FITS files, one field each")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--model", default="peeling", help="deblender (default peeling; sextractor is the baseline)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cuda, mps or cpu")
    p.add_argument("--preset", default="sextractor", help="detection preset: sextractor (default) or des")
    p.add_argument("--survey", default="lsst-i", help="survey preset for calibration defaults")
    p.add_argument("--candidates", default=DEFAULT_CANDIDATES, choices=list(CANDIDATE_MODES),
                   help="detections the deblender sees besides sep's blends: extended (default: every detection "
                   "larger than a point source of its S/N), all, or blends (sep's blends only)")  # fmt: skip
    for name, kind in _DETECTION_OPTIONS:
        p.add_argument(
            f"--{name}", type=kind, default=None, help=f"override the preset's {name.replace('-', '_')}"
        )
    p.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE,
                   help=f"largest side of a tile's core, pixels (default {DEFAULT_TILE_SIZE})")  # fmt: skip
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help=f"halo around each tile, pixels (default {DEFAULT_OVERLAP}; grown for larger blends)")  # fmt: skip
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="Dask scheduler to run on, e.g. tcp://host:8786")  # fmt: skip
    where.add_argument("--dask-cluster", default=None, metavar="local:N",
                       help="start a local Dask cluster of N worker processes for this run")  # fmt: skip
    p.add_argument("--retries", type=int, default=2, help="Dask retries of a failed task (default 2)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a previous run in DIR instead of resuming"
    )
    p.add_argument(
        "--keep-work", action="store_true", help="keep the per-tile scratch files of finished fields"
    )
    p.add_argument("--give-back-pieces", type=float, default=None, metavar="P",
                   help="peeling: give components whose galaxy probability (P_GALAXY) is below P back to their "
                        "host, unless they lie on a detection (default: report P_GALAXY, merge nothing)")
    p.add_argument("--quiet", action="store_true", help="no progress, only the summary")
    add_read_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the pipeline; print a per-field summary; 0 if every field is done, 1 otherwise."""
    from ..pipeline import RunSettings, run_fields

    overrides = {
        name.replace("-", "_"): getattr(args, name.replace("-", "_")) for name, _ in _DETECTION_OPTIONS
    }
    settings = RunSettings(
        model=args.model,
        device=args.device,
        detection_preset=args.preset,
        detection_overrides={k: v for k, v in overrides.items() if v is not None},
        survey=args.survey,
        tile_size=args.tile_size,
        overlap=args.overlap,
        keep_work=args.keep_work,
        candidates=args.candidates,
        read=_run_read_options(args),
        give_back_pieces=args.give_back_pieces,
    )
    summary = run_fields(
        args.fields,
        args.out,
        settings,
        overwrite=args.overwrite,
        scheduler=args.scheduler,
        dask_cluster=args.dask_cluster,
        retries=args.retries,
        progress=not args.quiet,
    )
    totals = summary.totals()
    done = len(summary.fields) - len(summary.failed)
    print(
        f"{done}/{len(summary.fields)} field(s) done: {int(totals['detections'])} detections, "
        f"{int(totals['blends'])} blends, {int(totals['singles'])} single detections, "
        f"{int(totals['components'])} components, "
        f"{totals['megapixels']:.1f} Mpix in {summary.seconds:.1f} s ({summary.backend}, {summary.workers} worker(s)) "
        f"-> {summary.out_dir}"
    )
    for report in summary.failed:
        print(f"FAILED {report.path}: {report.error}", file=sys.stderr)
    return summary.exit_code


def _run_read_options(args: argparse.Namespace) -> dict:
    """``RunSettings.read``: the same HDU, bands and weight type for every field; weight / mask files per field."""
    options = {k: v for k, v in read_kwargs(args).items() if k not in ("weight", "mask")}
    options.update(per_field(args, list(args.fields)))
    return options
