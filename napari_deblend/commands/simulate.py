"""``napari-deblend simulate``: simulated survey fields and blend sets with truth.

Examples::

    napari-deblend simulate field --size 1024 -o field.fits          # + field_truth.ecsv
    napari-deblend simulate blends --n 1000 --galaxies 1 2 3 -o blends.fits
    napari-deblend simulate field --morphology parametric -o field.fits   # bulge + disk only
    napari-deblend simulate families -o families.png                      # a contact sheet of the families
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import DeblendInputError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``simulate`` command (with ``field`` and ``blends``) to ``subparsers``."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a survey field or a set of blend stamps (GalSim), with truth",
        description="Simulate galaxies with GalSim: a survey field (FITS + truth ECSV) "
        "or blend stamps with their noiseless components (FITS).",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    _register_field(kinds)
    _register_blends(kinds)
    _register_families(kinds)
    return parser


def _register_field(kinds: argparse._SubParsersAction) -> None:
    parser = kinds.add_parser("field", help="a square field with galaxies at random positions",
                              description="Simulate a square single-band field and its truth catalogue.")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024)")
    parser.add_argument("--density", type=float, default=None,
                        help="galaxies per square arcminute (default 40, the LSST gold sample)")
    _common_options(parser)
    parser.add_argument("--ra", type=float, default=150.0, help="RA of the image centre, deg (default 150)")
    parser.add_argument("--dec", type=float, default=2.0, help="Dec of the image centre, deg (default 2)")
    parser.add_argument("--truth", type=Path, default=None,
                        help="truth table (ECSV); default <output stem>_truth.ecsv")
    parser.set_defaults(func=run_field)


def _register_blends(kinds: argparse._SubParsersAction) -> None:
    parser = kinds.add_parser("blends", help="blend stamps with noiseless components and truth",
                              description="Simulate blend stamps: BLENDS, COMPONENTS and TRUTH in one FITS file.")
    parser.add_argument("--n", type=int, default=1000, help="number of stamps (default 1000)")
    parser.add_argument("--galaxies", type=int, nargs="+", default=[2], metavar="K",
                        help="galaxies per stamp, or several values to draw from (default 2)")
    parser.add_argument("--stamp-size", type=int, default=48, help="stamp side in pixels (default 48)")
    parser.add_argument("--separation", type=float, nargs=2, default=(0.4, 3.0), metavar=("MIN", "MAX"),
                        help="separation from the central galaxy, arcsec (default 0.4 3.0)")
    parser.add_argument("--mag-range", type=float, nargs=2, default=None, metavar=("BRIGHT", "FAINT"),
                        help="magnitude range (default 19.5 to the preset's limit)")
    parser.add_argument("--no-noise", action="store_true", help="noiseless images")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    _common_options(parser)
    parser.set_defaults(func=run_blends)


def _register_families(kinds: argparse._SubParsersAction) -> None:
    parser = kinds.add_parser("families", help="a contact sheet (PNG/PDF) of the morphology families",
                              description="Draw a few galaxies of every morphology family, noiseless and noisy.")
    parser.add_argument("--n", type=int, default=8, help="galaxies per family (default 8)")
    parser.add_argument("--families", nargs="+", default=None, metavar="FAMILY",
                        help="families to show (default all; 'real' needs --real-pool)")
    parser.add_argument("--preset", default="lsst-i", help="survey preset (default lsst-i)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _pool_options(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, help="output figure (.png or .pdf)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.set_defaults(func=run_families)


def _pool_options(parser: argparse.ArgumentParser, split: str = "train") -> None:
    parser.add_argument("--real-pool", default=None, metavar="DIR",
                        help="real-galaxy pool (from `napari-deblend real-pool build`) for the 'real' family")
    parser.add_argument("--real-split", default=split, choices=("train", "validation", "test"),
                        help=f"which split of the pool the real galaxies come from (default {split})")


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="lsst-i", help="survey preset (default lsst-i)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--morphology", default="realistic", metavar="MIX",
                        help="morphology mix: realistic (default: bulge+disk, Sersic, knots, spirals, bars, "
                        "irregulars, lopsided, edge-on, tidal, compact, stars), parametric (bulge+disk only), "
                        "or weights such as 'knots=0.3,spiral=0.2,real=0.5'")
    _pool_options(parser, split="test")
    parser.add_argument("--engine", choices=("fft", "galsim"), default="fft",
                        help="rendering: batched FFT (default) or GalSim drawImage (reference, slower)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output FITS file")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _check_output(path: Path, overwrite: bool, option: str) -> None:
    if path.exists() and not overwrite:
        raise DeblendInputError(f"{option} {path} exists: expected a new file name, or pass --overwrite")
    if not path.parent.exists():
        raise DeblendInputError(f"{option} {path}: directory {path.parent} does not exist")


def _truth_path(output: Path) -> Path:
    name = output.name
    for suffix in (".fits.fz", ".fits.gz", ".fits", ".fit", ".fz"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(f"{name}_truth.ecsv")


def run_field(args: argparse.Namespace) -> int:
    """Simulate a field and write it (FITS) and its truth (ECSV)."""
    from ..field import write_field
    from ..simulate import simulate_field, write_truth

    truth_path = args.truth or _truth_path(args.output)
    if args.size <= 0:
        raise DeblendInputError(f"--size must be a positive number of pixels, got {args.size}")
    _check_output(args.output, args.overwrite, "--output")
    _check_output(truth_path, args.overwrite, "--truth")
    start = time.perf_counter()
    field, truth = simulate_field(size=args.size, density=args.density, preset=args.preset, seed=args.seed,
                                  ra=args.ra, dec=args.dec, engine=args.engine, morphology=args.morphology,
                                  real_pool=args.real_pool, real_split=args.real_split)
    elapsed = time.perf_counter() - start
    write_field(field, args.output, overwrite=args.overwrite)
    print(f"wrote {args.output}: {args.size}x{args.size} {field.preset.name} field, "
          f"{len(truth)} galaxies in {elapsed:.2f} s ({len(truth) / max(elapsed, 1e-9):.0f} galaxies/s)")
    write_truth(truth, truth_path, overwrite=args.overwrite)
    print(f"wrote {truth_path}: truth of {len(truth)} galaxies")
    return 0


def run_blends(args: argparse.Namespace) -> int:
    """Simulate blend stamps and write them (FITS)."""
    from ..simulate import simulate_blends, write_blends

    if args.n <= 0:
        raise DeblendInputError(f"--n must be a positive number of stamps, got {args.n}")
    if args.workers <= 0:
        raise DeblendInputError(f"--workers must be a positive number of processes, got {args.workers}")
    _check_output(args.output, args.overwrite, "--output")
    galaxies = args.galaxies[0] if len(args.galaxies) == 1 else args.galaxies
    start = time.perf_counter()
    blends = simulate_blends(args.n, n_galaxies=galaxies, stamp_size=args.stamp_size, preset=args.preset,
                             seed=args.seed, separation=tuple(args.separation), mag_range=args.mag_range,
                             noise=not args.no_noise, n_workers=args.workers, engine=args.engine,
                             morphology=args.morphology, real_pool=args.real_pool, real_split=args.real_split)
    elapsed = time.perf_counter() - start
    write_blends(blends, args.output, overwrite=args.overwrite)
    print(f"wrote {args.output}: {len(blends)} stamps of {blends.stamp_size}x{blends.stamp_size}, "
          f"{len(blends.truth)} galaxies in {elapsed:.2f} s ({len(blends) / max(elapsed, 1e-9):.0f} stamps/s)")
    return 0


def run_families(args: argparse.Namespace) -> int:
    """Draw the contact sheet of the morphology families."""
    from ..simulate.contact_sheet import families_contact_sheet
    from ..simulate.morphologies import FAMILIES
    from ..simulate.real_family import resolve_pool

    if args.n <= 0:
        raise DeblendInputError(f"--n must be a positive number of galaxies, got {args.n}")
    unknown = [f for f in args.families or () if f not in FAMILIES]
    if unknown:
        raise DeblendInputError(f"--families {unknown[0]}: expected families among {', '.join(FAMILIES)}")
    if "real" in (args.families or ()) and not args.real_pool:
        raise DeblendInputError("--families real needs --real-pool DIR (a pool made by `napari-deblend real-pool build`)")
    _check_output(args.output, args.overwrite, "--output")
    pool = resolve_pool(args.real_pool, args.preset, args.real_split)
    figure = families_contact_sheet(args.families, n=args.n, preset=args.preset, seed=args.seed, real_pool=pool)
    figure.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0
