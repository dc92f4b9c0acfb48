"""``napari-deblend evaluate-field``: judge runs of a simulated field against its truth, galaxy by galaxy.

Examples::

    napari-deblend evaluate-field runs/peeling --truth field_truth.ecsv --out eval/
    napari-deblend evaluate-field runs/peeling runs/sextractor --truth field_truth.ecsv --out eval/
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate-field`` sub-command."""
    from ..field_evaluation import BLEND_DISTANCE

    p = subparsers.add_parser(
        "evaluate-field",
        help="completeness and flux errors of runs of a simulated field, against its truth",
        description="For every true galaxy: found or not by a primary row of each run's catalogue (one-to-one "
        "within 3 px), blended or isolated (a neighbour within --blend-distance), its flux error "
        "(FLUX_BEST against the truth). Writes summary.md and summary.ecsv (one column per run), "
        "galaxies_<run>.ecsv and the figures found_fraction.png and flux_error.png to --out.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output directories of napari-deblend run "
                   "(or field directories, or catalog.ecsv files)")  # fmt: skip
    p.add_argument("--truth", required=True, metavar="TRUTH.ecsv", help="the field's truth catalogue")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    p.add_argument("--blend-distance", type=float, default=BLEND_DISTANCE, metavar="ARCSEC",
                   help=f"a galaxy with a neighbour closer than this is blended (default {BLEND_DISTANCE:g})")  # fmt: skip
    p.add_argument("--field", default=None, help="the field, when a run directory holds several")
    p.add_argument("--names", nargs="+", default=None, help="names of the runs in the outputs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; print the summary table; 0."""
    from ..field_evaluation import evaluate_field, summary_markdown

    evaluation = evaluate_field(args.runs, args.truth, args.out, blend_distance=args.blend_distance,
                                field_name=args.field, names=args.names)  # fmt: skip
    print(summary_markdown(evaluation))
    print(f"-> {args.out}: {', '.join(sorted(evaluation.outputs))}")
    return 0
