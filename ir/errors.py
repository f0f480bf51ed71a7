"""The error type of the IR domain."""

from __future__ import annotations


class CfgError(ValueError):
    """A Darknet cfg that cannot be parsed or verified.

    The message always starts with ``path:line:`` (or ``<text>:line:``) and the
    section, then says what was found and what was expected, e.g.
    ``yolov3.cfg:571: [route] layers=-1,61: layer 61 is not before this layer (86)``.
    """

    def __init__(self, message: str, *, path: str = "<text>", line: int = 0,
                 section: str = "") -> None:
        where = f"{path}:{line}:" if line else f"{path}:"
        head = f"{where} [{section}] " if section else f"{where} "
        super().__init__(head + message)
        self.path = path
        self.line = line
        self.section = section
        self.reason = message
