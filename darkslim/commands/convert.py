"""`darkslim convert` (not implemented yet)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="not implemented yet")
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("darkslim convert is not implemented yet")
