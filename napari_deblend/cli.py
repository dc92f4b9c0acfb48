"""The ``napari-deblend`` command.

Each sub-command lives in its own module under :mod:`napari_deblend.commands`
and exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments, returning an exit code).
Errors a user caused (:class:`~napari_deblend.errors.DeblendInputError`) are
printed as one line and give exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import DeblendInputError

COMMAND_MODULES = ["demo", "detect", "run", "simulate", "train", "evaluate", "evaluate_field", "export_training",
                   "labels"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="napari-deblend",
        description="Detect, deblend and compare galaxies in astronomical images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"napari_deblend.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except DeblendInputError as exc:
        print(f"napari-deblend {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-deblend {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
