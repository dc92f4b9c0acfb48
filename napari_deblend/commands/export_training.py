"""``napari-deblend export-training``: clean labelled galaxies and blends as FITS cut-outs + an ECSV index."""

from __future__ import annotations

import argparse
import warnings

from ..errors import DeblendInputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export-training`` sub-command."""
    p = subparsers.add_parser(
        "export-training",
        help="export clean labelled galaxies and blends as a training set",
        description="Cut the clean isolated galaxies and the clean blends of labelled fields out as FITS cubes "
        "(every band, WCS of the cut-out, MASK extension) and write OUT/index.ecsv (field, position, "
        "label, model, accepted components). `napari-deblend train MODEL --real-galaxies OUT` reads it back.",
    )
    p.add_argument("--labels", required=True, metavar="DB", help="label database (SQLite) of the Label panel")
    p.add_argument(
        "--fields",
        nargs="+",
        metavar="FITS",
        help="labelled field files (default: the files recorded in the database that still exist)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--margin", type=int, default=8, help="pixels around each bounding box (default 8)")
    p.add_argument("--preset", default="lsst-i", help="survey preset for reading the fields (default lsst-i)")
    p.add_argument("--only", choices=("isolated", "blends"), default=None, help="export only one kind")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export; print one line per field and a summary."""
    from pathlib import Path

    from ..labels.export import LabelExportWarning, export_training

    if args.margin < 0:
        raise DeblendInputError(f"--margin={args.margin}: expected a non-negative number of pixels")
    if not Path(args.labels).exists():
        raise DeblendInputError(f"--labels {args.labels}: no such file")
    kinds = {"isolated": ("isolated",), "blends": ("blend",), None: ("isolated", "blend")}[args.only]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LabelExportWarning)  # printed by log() below
        result = export_training(
            args.labels, args.fields, args.out, margin=args.margin, preset=args.preset, kinds=kinds, log=print
        )
    print(
        f"wrote {result.n_isolated} isolated galaxies and {result.n_blends} blends to {result.out_dir} "
        f"(index: {result.out_dir / 'index.ecsv'})"
    )
    return 0
