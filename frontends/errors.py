"""The error types of the frontend domain.

Both subclass `ValueError` (the CLI reports every ValueError as a user error) and their
messages always start with the file that was read or written.
"""

from __future__ import annotations


class WeightsError(ValueError):
    """A weights file (``.weights``, ``.msgpack``) or a variables pytree that does not fit
    the cfg: the message names the file, the layer and cfg line or byte offset, what was
    found and what was expected."""


class CheckpointError(ValueError):
    """A torch checkpoint that cannot be read safely or does not fit the cfg: the message
    names the file, the offending keys with their layer and cfg line, and the expected
    vs found shapes."""
