"""`darkslim run` (not implemented yet)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="not implemented yet")
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("darkslim run is not implemented yet")
