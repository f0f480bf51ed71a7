"""The ``darkslim`` command line. Each subcommand lives in `darkslim.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from darkslim.cli_errors import describe_error
from darkslim.ui import error

COMMANDS = ("info", "run", "convert", "prune", "train", "eval", "synth", "demo")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand's module is imported (each
    pulls in its own heavy libraries, and a prune should not pay for flax)."""
    parser = argparse.ArgumentParser(
        prog="darkslim", description="Network slimming for Darknet YOLO networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        module = importlib.import_module(f"darkslim.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    # soft_wrap: an error is one logical line the terminal wraps, so a long path is
    # never split by an inserted newline (and copies back whole)
    console = Console(stderr=True, soft_wrap=True)
    try:
        return args.func(args) or 0
    except (ValueError, OSError) as exc:
        # Every domain error (CfgError, WeightsError, CheckpointError, PruneError,
        # DataError) is a ValueError whose message names the file, line or layer;
        # describe_error words it for the command line (flags, OS errors, swaps).
        error(console, describe_error(exc, args, argv))
        return 2


if __name__ == "__main__":
    sys.exit(main())
