"""Flax ``.msgpack`` files: the variables pytree as `flax.serialization` writes it.

``flax.serialization.to_bytes(variables)`` on the way out and
``flax.serialization.msgpack_restore`` on the way in, so the files open in any Flax
code; what is read is checked against the cfg's expected shapes. Flax is imported
inside the functions only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

import ir
from frontends._atomic import write_chunks
from frontends.errors import WeightsError
from frontends.variables import LoadedWeights, Variables, as_float32, check_variables

__all__ = ["read_msgpack", "write_msgpack"]


def _map_leaves(tree, fn):
    return {k: _map_leaves(v, fn) if isinstance(v, Mapping) else fn(v)
            for k, v in tree.items()}


def read_msgpack(graph: ir.Graph, path: str | os.PathLike) -> LoadedWeights:
    """Read a Flax ``.msgpack`` variables file for ``graph``.

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
                         total_convs=n, header=None, warnings=warnings)


def write_msgpack(graph: ir.Graph, variables: Variables, path: str | os.PathLike) -> None:
    """Write ``variables`` (numpy or jax arrays) as a Flax ``.msgpack`` file, atomically.

    Raises:
        WeightsError: variables that do not fit ``graph``.
    """
    from flax import serialization

    check_variables(graph, variables, str(path))
    tree = _map_leaves(variables, as_float32)
    write_chunks(path, [serialization.to_bytes(tree)])
