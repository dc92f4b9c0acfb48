"""``napari-deblend labels``: summary, ECSV export and import of a label database."""

from __future__ import annotations

import argparse
from collections import Counter

from ..errors import DeblendInputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``labels`` sub-command."""
    p = subparsers.add_parser(
        "labels",
        help="summarise, export or import labels (ECSV)",
        description="Show what a label database holds, write its labels to ECSV, or add the labels of an "
        "ECSV file to it (labels already present are skipped).",
    )
    p.add_argument("action", choices=("summary", "export", "import"))
    p.add_argument("database", metavar="DB", help="label database (SQLite)")
    p.add_argument("ecsv", nargs="?", metavar="ECSV", help="file to write (export) or read (import)")
    p.add_argument("--overwrite", action="store_true", help="export: replace an existing ECSV file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action (reading never writes to the database; a failed import leaves it as it was)."""
    from ..checks import check_output_file, writing
    from ..labels.ecsv import export_labels_ecsv, read_labels_ecsv
    from ..labels.store import LabelStore

    if args.action != "summary" and not args.ecsv:
        raise DeblendInputError(f"labels {args.action}: give the ECSV file")
    if args.action == "import":
        labels = read_labels_ecsv(args.ecsv)  # first: a bad file creates no database
        with LabelStore(args.database) as store:
            n = store.import_labels(labels)
        print(f"added {n} labels to {args.database}")
        return 0
    if args.action == "export":
        check_output_file(args.ecsv, "ECSV", overwrite=args.overwrite)
    with LabelStore(args.database, read_only=True) as store:
        if args.action == "export":
            with writing(args.ecsv, "ECSV"):
                n = export_labels_ecsv(store, args.ecsv, overwrite=args.overwrite)
            print(f"wrote {n} labels to {args.ecsv}")
        else:
            labels = store.labels()
            verdicts = Counter((label.kind, label.verdict) for label in labels)
            print(f"{args.database}: {len(labels)} labels on {len(store.field_hashes())} field(s)")
            for (kind, verdict), n in sorted(verdicts.items()):
                print(f"  {kind:9s} {verdict:10s} {n}")
    return 0
