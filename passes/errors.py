"""The error type of the pruning domain."""

from __future__ import annotations


class PruneError(ValueError):
    """A pruning request that cannot be carried out.

    The message names the layer (index and cfg line) or the option at fault and what
    was expected, e.g. ``--percent 1.2: expected 0 <= percent < 1``.
    """
