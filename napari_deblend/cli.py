"""The ``napari-deblend`` command.

Each sub-command lives in its own module under :mod:`napari_deblend.commands`
and exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments, returning an exit code).
Errors a user caused (:class:`~napari_deblend.errors.DeblendInputError`) are
printed as one line and give exit code 2; no traceback.  So are the errors the
system gives about files (a full disk, a read-only folder) and memory.  SIGTERM
unwinds like Ctrl-C (exit 143), so temporary files and half-written outputs are
removed on the way out.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import warnings

from . import __version__
from .errors import DeblendInputError, Terminated

#: Commands whose warnings are shown as they come (an interactive viewer), not gathered into one-line reports.
STREAMED_WARNINGS = {"demo"}
COMMAND_MODULES = ["demo", "detect", "run", "simulate", "train", "evaluate", "evaluate_field", "export_training",
                   "labels", "real_pool"]


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
    previous = _terminate_on_sigterm()
    try:
        if args.command in STREAMED_WARNINGS:
            return _run(args, None)
        with warnings.catch_warnings(record=True) as caught:  # the filters in force decide what is recorded
            return _run(args, caught)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, caught: list | None) -> int:
    """Call the command; errors as one line (with the warnings that led to them), warnings one line each."""
    try:
        code = int(args.func(args) or 0)
    except DeblendInputError as exc:
        return _error(args.command, str(exc), caught)
    except BrokenPipeError:  # whoever read the output went away (`| head`): stop quietly, as Unix tools do
        _silence_stdout()
        return 141
    except OSError as exc:  # the system's word on a file: full disk, read-only folder, ...
        from .checks import describe_os_error

        return _error(args.command, describe_os_error(exc), caught)
    except MemoryError:
        return _error(args.command, "not enough memory for this input: expected a smaller field, stamp or batch",
                      caught)
    except KeyboardInterrupt:
        print(f"napari-deblend {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"napari-deblend {args.command}: terminated", file=sys.stderr)
        return 143
    for text in _warning_texts(caught):
        print(f"napari-deblend {args.command}: warning: {text}", file=sys.stderr)
    return code


def _silence_stdout() -> None:
    """Point standard output at the null device, so that flushing it at exit does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured in tests): nothing to flush
        pass
    finally:
        os.close(devnull)


def _warning_texts(caught: list | None) -> list[str]:
    """The distinct warnings recorded, each as one line (``Category: message``)."""
    texts = [f"{w.category.__name__}: {' '.join(str(w.message).split())}" for w in caught or []]
    return list(dict.fromkeys(texts))


def _error(command: str, message: str, caught: list | None = None) -> int:
    """Print one line (line breaks folded; the warnings met on the way appended) and return exit code 2."""
    texts = _warning_texts(caught)
    after = f" (after {len(texts)} warning(s): {'; '.join(t[:200] for t in texts[:3])})" if texts else ""
    print(f"napari-deblend {command}: error: {' '.join(message.split())}{after}", file=sys.stderr)
    return 2


def _terminate_on_sigterm():
    """Make SIGTERM raise :class:`Terminated` (so ``finally`` blocks and context managers clean up); returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        raise Terminated(signum)

    return signal.signal(signal.SIGTERM, terminate)


if __name__ == "__main__":
    sys.exit(main())
