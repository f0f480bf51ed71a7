"""The ``darkslim`` command line. Each subcommand lives in `darkslim.commands`.

The CLI answers at once: ``darkslim --help`` imports no subcommand module (their help
lines are listed here), and ``darkslim CMD ...`` imports only ``darkslim.commands.CMD``,
which imports its own heavy libraries (jax, flax, torch, matplotlib) only where it
needs them. ``tests/test_cli_imports.py`` checks both, and that the lines below match
the subcommands' own ``help=``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# The one-line help of every subcommand, as its module's add_parser gives it.
COMMANDS: dict[str, str] = {
    "info": "layer table: shapes, params, BFLOPs, prunable?",
    "run": "run a forward pass, save raw heads and detections",
    "detect": "draw a network's detections on photos",
    "convert": "convert weights between .weights, .pt/.pth and .msgpack",
    "export": "write the network as ONNX (opset 17)",
    "prune": "prune BN channels by |γ| (network slimming) and residual blocks",
    "anchors": "k-means anchors for a dataset (and a cfg that uses them)",
    "sweep": "prune at a grid of ratios; mAP, BFLOPs and latency of each, Pareto front",
    "train": "train or sparse-train a Darknet network (also fine-tuning)",
    "eval": "mAP of a network on a Darknet dataset",
    "bench": "forward latency and train-step time of a network on this machine",
    "data": "import VOC, COCO or YOLO annotations as a Darknet dataset",
    "synth": "write a synthetic Darknet dataset and a model.cfg",
    "demo": "the whole loop on the embedded synthetic dataset",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser. With ``only``, that subcommand's module is imported and its full
    parser built; without, every subcommand is listed with its help line and no
    module is imported (``darkslim --help``, a typo)."""
    parser = argparse.ArgumentParser(
        prog="darkslim", description="Network slimming for Darknet YOLO networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if only is not None:
        importlib.import_module(f"darkslim.commands.{only}").add_parser(sub)
    else:
        for name, text in COMMANDS.items():
            sub.add_parser(name, help=text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, OSError) as exc:
        # Every domain error (CfgError, WeightsError, CheckpointError, PruneError,
        # DataError) is a ValueError whose message names the file, line or layer;
        # describe_error words it for the command line (flags, OS errors, swaps).
        from rich.console import Console

        from darkslim.cli_errors import describe_error
        from darkslim.ui import error

        error(Console(stderr=True), describe_error(exc, args, argv))
        return 2


if __name__ == "__main__":
    sys.exit(main())
