"""Flax ``.msgpack`` files: the variables pytree as `flax.serialization` writes it.

``flax.serialization.to_bytes(variables)`` on the way out and
``flax.serialization.msgpack_restore`` on the way in, so the files open in any Flax
code; what is read is checked against the cfg's expected shapes. Flax is imported
inside the functions only.

Variables read from a Darknet ``.weights`` file keep its header (version and ``seen``,
which Darknet's learning-rate schedule reads when training resumes) as the extra
top-level entry ``darknet_header`` (``{"major", "minor", "revision", "seen"}``), so
``.weights -> .msgpack -> .weights`` is byte exact. Flax's ``from_bytes`` with a
variables target ignores it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

import ir
from frontends._atomic import write_chunks
from frontends.darknet import DarknetHeader
from frontends.errors import WeightsError
from frontends.variables import LoadedWeights, Variables, as_float32, check_variables

__all__ = ["read_msgpack", "write_msgpack"]


def _map_leaves(tree, fn):
    return {k: _map_leaves(v, fn) if isinstance(v, Mapping) else fn(v)
            for k, v in tree.items()}


def read_msgpack(graph: ir.Graph, path: str | os.PathLike) -> LoadedWeights:
    """Read a Flax ``.msgpack`` variables file for ``graph``.

    Returns:
        `LoadedWeights` with ``header`` the `DarknetHeader` the file carries, or None.

    Raises:
        WeightsError: not a msgpack file, or variables that do not fit ``graph``
            (the first few listed with layer, cfg line, expected and found shape).
    """
    import msgpack
    from flax import serialization

    source = str(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        tree = serialization.msgpack_restore(data)
    except (ValueError, msgpack.UnpackException) as exc:
        raise WeightsError(f"{source}: not a Flax msgpack file ({type(exc).__name__}: "
                           f"{exc})") from None
    if not isinstance(tree, dict):
        raise WeightsError(f"{source}: holds a {type(tree).__name__}: expected the "
                           "variables dict {'params': ..., 'batch_stats': ...}")
    header = None
    if "darknet_header" in tree:
        tree = dict(tree)
        header = DarknetHeader.from_stored(tree.pop("darknet_header"), source)
    check_variables(graph, tree, source)
    dtypes: set[str] = set()

    def to_f32(leaf):
        array = np.asarray(leaf)
        if array.dtype != np.float32:
            dtypes.add(str(array.dtype))
        return as_float32(array)

    variables = _map_leaves(tree, to_f32)
    variables.setdefault("batch_stats", {})
    warnings = ((f"{source}: arrays stored as {', '.join(sorted(dtypes))} were converted "
                 "to float32",) if dtypes else ())
    n = len(graph.conv_indices())
    return LoadedWeights(variables=variables, format="msgpack", loaded_convs=n,
                         total_convs=n, header=header, warnings=warnings)


def write_msgpack(graph: ir.Graph, variables: Variables, path: str | os.PathLike, *,
                  header: DarknetHeader | None = None) -> None:
    """Write ``variables`` (numpy or jax arrays) as a Flax ``.msgpack`` file, atomically.

    Args:
        header: the header of the ``.weights`` file the variables came from, kept as
            the entry ``darknet_header`` for a byte-exact way back.

    Raises:
        WeightsError: variables that do not fit ``graph``.
    """
    from flax import serialization

    check_variables(graph, variables, str(path))
    tree = _map_leaves(variables, as_float32)
    if header is not None:
        tree["darknet_header"] = header.as_dict()
    write_chunks(path, [serialization.to_bytes(tree)])
