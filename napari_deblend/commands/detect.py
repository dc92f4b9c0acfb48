"""``napari-deblend detect``: detect sources in a FITS field and write the catalogue."""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from pathlib import Path

from ..errors import DeblendInputError
from ._read_options import add_read_options, read_kwargs


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``detect`` sub-command."""
    p = subparsers.add_parser(
        "detect",
        help="detect sources with sep and write an ECSV catalogue (+ DS9 regions)",
        description="Detect sources in a FITS field with sep (SExtractor), group them into blends "
        "and write an ECSV catalogue with SExtractor-like columns.",
    )
    p.add_argument("fields", nargs="+", metavar="FIELD.fits", help="FITS file; several files = bands of one field")
    p.add_argument("-o", "--output", required=True, help="catalogue to write (.ecsv)")
    p.add_argument("--preset", default="sextractor", help="detection preset: sextractor or des")
    p.add_argument("--survey", default="lsst-i", help="survey preset for calibration defaults")
    p.add_argument("--regions", default=None, help="also write a DS9 region file of Kron ellipses")
    p.add_argument("--segmentation", default=None, help="also write the segmentation map (FITS)")
    for name, kind in (("thresh", float), ("minarea", int), ("deblend-nthresh", int), ("deblend-cont", float),
                       ("back-size", int), ("back-filter-size", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help=f"override the preset's {name.replace('-', '_')}")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_read_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read, detect, group into blends, write; print a one-line summary."""
    from astropy.io import fits

    from ..blends import find_blends
    from ..catalog_io import to_sextractor_table, write_ds9_regions
    from ..checks import check_output_file, writing
    from ..detection import detect, get_detection_preset
    from ..field import read_field
    from ..pipeline.outputs import atomic_path

    output = Path(args.output)
    named = [("-o", args.output), ("--regions", args.regions), ("--segmentation", args.segmentation)]
    named = [(option, Path(path)) for option, path in named if path]
    for option, path in named:  # before reading anything: a bad output never costs a detection
        check_output_file(path, option, overwrite=args.overwrite)
    resolved = [path.resolve() for _, path in named]
    if len(set(resolved)) < len(resolved):
        raise DeblendInputError("-o, --regions and --segmentation name the same file: expected one file each")
    overrides = {
        "thresh": args.thresh,
        "minarea": args.minarea,
        "deblend_nthresh": args.deblend_nthresh,
        "deblend_cont": args.deblend_cont,
        "back_size": args.back_size,
        "back_filter_size": args.back_filter_size,
    }
    get_detection_preset(args.preset, **overrides)  # option values checked before reading
    start = time.perf_counter()
    paths = args.fields[0] if len(args.fields) == 1 else args.fields
    field = read_field(paths, preset=args.survey, **read_kwargs(args))
    cat, seg = detect(field, preset=args.preset, **overrides)
    blends = find_blends(cat, seg)
    with ExitStack() as stack:  # every output under a temporary name; all renamed only once all are written
        with writing(output, "-o"):
            to_sextractor_table(cat).write(stack.enter_context(atomic_path(output)), format="ascii.ecsv")
        if args.regions:
            with writing(args.regions, "--regions"):
                write_ds9_regions(cat, stack.enter_context(atomic_path(args.regions)))
        if args.segmentation:
            header = field.wcs.to_header() if field.wcs is not None else None
            with writing(args.segmentation, "--segmentation"):
                fits.PrimaryHDU(seg, header=header).writeto(stack.enter_context(atomic_path(args.segmentation)))
    elapsed = time.perf_counter() - start
    masked = int(field.mask.any(axis=0).sum())
    noise = "per-pixel noise plane" if field.variance is not None else "global noise"
    print(
        f"{field.name}: {len(cat)} detections, {len(blends)} blends "
        f"({sum(b.n_members for b in blends)} sources in blends), {noise}, {masked} masked pixels, "
        f"zero point {field.zero_point:.3f} ({field.zero_point_source}) -> {output} [{elapsed:.2f} s]"
    )
    return 0
