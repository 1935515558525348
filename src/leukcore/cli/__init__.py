"""The ``leuk`` command line.

Each subcommand lives in its own module ``leukcore.cli.<name>`` exposing
``register(subparsers)`` (adds its parser and sets ``func``); modules are
imported only to build the parser, and heavy libraries only inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._version import __version__

#: subcommand modules, in help order
SUBCOMMANDS = [
    "info",
    "detect",
    "train_detector",
    "classify",
    "train",
    "eval",
    "explain",
    "analyze",
    "batch",
    "report",
    "demo",
    "models",
    "serve",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``leuk`` parser with every built subcommand of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="leuk",
        description="Find and classify white blood cells in whole blood-smear slides.",
    )
    parser.add_argument("--version", action="version", version=f"leuk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # subcommand not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``leuk`` with ``argv`` (default: the command line); the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `leuk info x | head`: quietly stop writing
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:  # one clear line for known error families
        from ..io.errors import SlideError

        known = (SlideError, FileNotFoundError, ValueError)
        try:
            from ..models.registry import ModelError

            known = known + (ModelError,)
        except ImportError:  # pragma: no cover
            pass
        if isinstance(e, known) and not getattr(args, "debug", False):
            print(f"leuk {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
