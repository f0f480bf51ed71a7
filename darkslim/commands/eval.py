"""`darkslim eval` (not implemented yet)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="not implemented yet")
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("darkslim eval is not implemented yet")
