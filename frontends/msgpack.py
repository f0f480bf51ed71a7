"""Flax ``.msgpack`` files: the variables pytree as `flax.serialization` writes it.

``flax.serialization.to_bytes(variables)`` on the way out and flax's decoding (with
every array checked) on the way in, so the files open in any Flax code; what is read is
checked against the cfg's expected shapes. Flax is imported inside the functions only.

Variables read from a Darknet ``.weights`` file keep its header (version and ``seen``,
which Darknet's learning-rate schedule reads when training resumes) as the extra
top-level entry ``darknet_header`` (``{"major", "minor", "revision", "seen"}``), so
``.weights -> .msgpack -> .weights`` is byte exact. Flax's ``from_bytes`` with a
variables target ignores it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import ir
from frontends._atomic import write_chunks
from frontends.darknet import DarknetHeader
from frontends.errors import WeightsError
from frontends.variables import LoadedWeights, Variables, as_float32, check_variables

__all__ = ["read_msgpack", "write_msgpack"]


def _map_leaves(tree: Mapping[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    return {k: _map_leaves(v, fn) if isinstance(v, Mapping) else fn(v)
            for k, v in tree.items()}


_ARRAY_EXT = 1  # flax.serialization's ext code for an ndarray: (shape, dtype name, bytes)
_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64", "int8", "int16",
                     "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"})


def _array_hook(source: str) -> Callable[[int, bytes], np.ndarray]:
    """An ``ext_hook`` that decodes flax's ndarrays and checks them first: the file is
    data from anywhere, and flax's own decoder lets numpy and ``complex()`` raise
    whatever they raise on malformed bytes."""
    import msgpack

    def hook(code: int, payload: bytes) -> np.ndarray:
        if code != _ARRAY_EXT:
            raise WeightsError(f"{source}: msgpack extension type {code}: expected only "
                               f"arrays (flax's type {_ARRAY_EXT})")
        try:
            shape, name, buffer = msgpack.unpackb(payload, raw=True)
        except (ValueError, TypeError, msgpack.UnpackException):
            shape = name = buffer = None
        name = name.decode("ascii", "replace") if isinstance(name, bytes) else None
        if (not isinstance(shape, (list, tuple)) or not isinstance(buffer, bytes)
                or not all(type(n) is int and 0 <= n < 2**31 for n in shape)
                or name not in _DTYPES):
            raise WeightsError(f"{source}: a malformed array (shape {shape!r:.40}, dtype "
                               f"{name!r:.20}): expected flax's (shape, dtype, bytes) "
                               f"with a numeric dtype ({', '.join(sorted(_DTYPES))})")
        dtype = np.dtype(_bfloat16() if name == "bfloat16" else name)
        count = int(np.prod(shape, dtype=np.int64))
        if len(buffer) != count * dtype.itemsize:
            raise WeightsError(f"{source}: an array of shape {tuple(shape)} {name} holds "
                               f"{len(buffer)} bytes: expected {count * dtype.itemsize}")
        return np.frombuffer(buffer, dtype=dtype).reshape(shape)

    return hook


def _check_leaves(tree: Mapping[str, Any], source: str, prefix: tuple[str, ...] = ()) -> None:
    """Every leaf is an array (dicts nest; a list, string or number is an error)."""
    for key, value in tree.items():
        path = (*prefix, str(key))
        if not isinstance(key, str):
            where = "/".join(prefix) or "the top level"
            raise WeightsError(f"{source}: key {key!r:.40} in {where}: expected string "
                               "keys (params, layer_N, ...)")
        if isinstance(value, Mapping):
            _check_leaves(value, source, path)
        elif not isinstance(value, np.ndarray):
            raise WeightsError(f"{source}: {'/'.join(path)} is a {type(value).__name__}: "
                               "expected an array (or a dict of them)")


def _bfloat16() -> Any:
    import ml_dtypes  # installed with jax

    return ml_dtypes.bfloat16


def read_msgpack(graph: ir.Graph, path: str | os.PathLike[str]) -> LoadedWeights:
    """Read a Flax ``.msgpack`` variables file for ``graph``.

    The bytes are decoded as `flax.serialization.msgpack_restore` does (arrays are
    flax's ext type 1), with every array checked; flax's chunked arrays (leaves over
    2 GiB) are not read.

    Returns:
        `LoadedWeights` with ``header`` the `DarknetHeader` the file carries, or None.

    Raises:
        WeightsError: not a msgpack file, or variables that do not fit ``graph``
            (the first few listed with layer, cfg line, expected and found shape).
    """
    import msgpack

    source = str(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        tree = msgpack.unpackb(data, ext_hook=_array_hook(source), raw=False,
                               strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"{source}: not a Flax msgpack file ({type(exc).__name__}: "
                           f"{str(exc)[:200]})") from None
    if not isinstance(tree, dict):
        raise WeightsError(f"{source}: holds a {type(tree).__name__}: expected the "
                           "variables dict {'params': ..., 'batch_stats': ...}")
    header = None
    if "darknet_header" in tree:
        tree = dict(tree)
        header = DarknetHeader.from_stored(tree.pop("darknet_header"), source)
    _check_leaves(tree, source)
    check_variables(graph, tree, source)
    dtypes: set[str] = set()

    def to_f32(leaf: Any) -> np.ndarray:
        if leaf.dtype != np.float32:
            dtypes.add(str(leaf.dtype))
        return as_float32(leaf)

    variables = _map_leaves(tree, to_f32)
    variables.setdefault("batch_stats", {})
    warnings = ((f"{source}: arrays stored as {', '.join(sorted(dtypes))} were converted "
                 "to float32",) if dtypes else ())
    n = len(graph.conv_indices())
    return LoadedWeights(variables=variables, format="msgpack", loaded_convs=n,
                         total_convs=n, header=header, warnings=warnings)


def write_msgpack(graph: ir.Graph, variables: Variables, path: str | os.PathLike[str], *,
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
