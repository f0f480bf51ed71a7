"""`darkslim synth` (not implemented yet)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("synth", help="not implemented yet")
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("darkslim synth is not implemented yet")
