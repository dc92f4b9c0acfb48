"""``napari-deblend real-pool``: build and inspect the pool of real galaxy stamps.

Examples::

    napari-deblend real-pool build --source ../shared/real_galaxies --preset lsst-i
    napari-deblend real-pool show --sheet /tmp/real_pool.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPLIT_NAMES = ("train", "validation", "test")  # napari_deblend.realpool.SPLITS, without importing it at start-up


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``real-pool`` command (with ``build`` and ``show``) to ``subparsers``."""
    parser = subparsers.add_parser(
        "real-pool",
        help="build or inspect the pool of real galaxy stamps (outside the repository)",
        description="Turn real survey images into clean isolated galaxy stamps at a preset (detect, cut, mask "
        "neighbours, reject stars, match pixel scale and PSF), split by galaxy into train / validation / test.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="build the pool from a folder of real images",
                               description="Build OUT/<preset>/{train,validation,test}.npz and pool.json.")
    build.add_argument("--source", type=Path, default=None, metavar="DIR",
                       help="folder of the source table's folders (default $NAPARI_DEBLEND_REAL_GALAXIES, "
                       "else ../shared/real_galaxies)")
    build.add_argument("--preset", default="lsst-i", help="survey preset (default lsst-i)")
    build.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="output root, outside the repository (default $NAPARI_DEBLEND_REAL_POOL, "
                       "else ~/.cache/napari-deblend/real_pool)")
    build.add_argument("--stamp-size", type=int, default=64, help="stamp side in pixels (default 64)")
    build.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    build.add_argument("--split", type=float, nargs=3, default=(0.7, 0.15, 0.15),
                       metavar=("TRAIN", "VALIDATION", "TEST"),
                       help="fractions of galaxies per split (default 0.7 0.15 0.15)")
    build.add_argument("--min-snr", type=float, default=30.0,
                       help="minimum isophotal S/N of a galaxy in its image (default 30)")
    build.set_defaults(func=run_build)
    show = actions.add_parser("show", help="counts per split and source, and a contact sheet",
                              description="Print the counts of a pool; with --sheet, write a contact sheet PNG.")
    show.add_argument("directory", type=Path, nargs="?", default=None, metavar="DIR",
                      help="pool root (default $NAPARI_DEBLEND_REAL_POOL, else ~/.cache/napari-deblend/real_pool)")
    show.add_argument("--preset", default="lsst-i", help="survey preset (default lsst-i)")
    show.add_argument("--sheet", type=Path, default=None, metavar="FILE", help="write a contact sheet PNG")
    show.add_argument("--n", type=int, default=16, help="random stamps per split on the sheet (default 16)")
    show.add_argument("--seed", type=int, default=0, help="seed of the random choice (default 0)")
    show.add_argument("--split", choices=SPLIT_NAMES, default=None, help="only this split on the sheet (default all)")
    show.add_argument("--origin", default=None, metavar="SOURCE",
                      help="only stamps of this source on the sheet, e.g. hst_hxdf (default all)")
    show.set_defaults(func=run_show)
    return parser


def run_build(args: argparse.Namespace) -> int:
    """Build the pool; print one line per source image and a summary."""
    from ..realpool import build_real_pool

    target = build_real_pool(args.source, preset=args.preset, out=args.out, stamp_size=args.stamp_size,
                             seed=args.seed, split=args.split, min_snr=args.min_snr)
    manifest = json.loads((target / "pool.json").read_text())
    for split, entry in manifest["split"]["counts"].items():
        print(f"{split}: {entry['stamps']} stamps, {entry['galaxies']} galaxies")
    print(f"built in {manifest['build_seconds']} s")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print counts per split and source; write the contact sheet when asked."""
    from ..errors import DeblendInputError
    from ..realpool import pool_split_record
    from ..realpool.sheet import contact_sheet, pool_counts

    if args.n < 1:
        raise DeblendInputError(f"--n {args.n}: expected a positive number of stamps")
    counts = pool_counts(args.directory, args.preset)
    origins = sorted({origin for per_split in counts.values() for origin in per_split})
    print(f"{'source':16s}" + "".join(f"{split:>22s}" for split in counts))
    for origin in origins:
        cells = [counts[split].get(origin, (0, 0)) for split in counts]
        print(f"{origin:16s}" + "".join(f"{f'{s} stamps / {g} gal.':>22s}" for s, g in cells))
    totals = [tuple(map(sum, zip(*per_split.values()))) if per_split else (0, 0) for per_split in counts.values()]
    print(f"{'total':16s}" + "".join(f"{f'{s} stamps / {g} gal.':>22s}" for s, g in totals))
    record = pool_split_record(args.directory, args.preset)
    if record:
        registered = record["registered_galaxies"]
        print(f"splits: seed {record['seed']}, " + (f"{registered} galaxies in their registered split"
                                                   if registered is not None else "built without the split register"))
    if args.sheet is not None:
        if args.origin and not any(args.origin in per_split for per_split in counts.values()):
            raise DeblendInputError(f"--origin {args.origin}: no such source in the pool (sources: {', '.join(origins)})")
        path = contact_sheet(args.directory, args.sheet, preset=args.preset, n=args.n, seed=args.seed,
                             splits=(args.split,) if args.split else SPLIT_NAMES, origin=args.origin)
        print(f"contact sheet: {path}")
    return 0
