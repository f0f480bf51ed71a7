"""The error type of the pruning domain."""

from __future__ import annotations


class PruneError(ValueError):
    """A pruning request that cannot be carried out.

    The message names the layer (index and cfg line) or the argument at fault and what
    was expected, e.g. ``percent=1.2: expected 0 <= percent < 1``. Library messages
    speak of arguments, never of CLI flags; an application maps them back through:

    Attributes:
        argument: the argument at fault (``"percent"``, ``"ignore"``, ``"n"``), if any.
        pass_name: the pass that raised it (``"slim-channels"``), once a pipeline knows.
    """

    def __init__(self, message: str, *, argument: str | None = None,
                 pass_name: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument
        self.pass_name = pass_name
