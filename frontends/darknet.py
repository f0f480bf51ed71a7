"""Darknet ``.weights`` files: read into the variables pytree, write back byte for byte.

The format, as Darknet's ``load_weights``/``save_weights`` have it (little-endian):

- header: int32 ``major``, ``minor``, ``revision``; then ``seen`` (images trained on),
  an int64 when ``major * 10 + minor >= 2`` and both are below 1000, else an int32;
- then, for each ``[convolutional]`` in layer order, float32s: with BatchNorm β (the
  BN bias), γ (scale), running mean, running variance, then the kernel in OIHW order;
  without BatchNorm the conv bias, then the kernel. A grouped conv's kernel is
  ``(out, in/groups, kh, kw)``.

A file may stop after any whole conv: backbones such as ``darknet53.conv.74`` hold
the first N convs of a bigger network. The file is read with one ``read`` and viewed
with `numpy.frombuffer`; kernels come back as HWIO *views* of the OIHW buffer (no
copy), so reading then writing an unchanged network is two passes over memory.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ir
from frontends._atomic import write_chunks
from frontends.errors import WeightsError
from frontends.variables import (
    LoadedWeights,
    Variables,
    check_variables,
    default_variables,
    layer_key,
    unsupported_weighted_layers,
    where,
)
from frontends.weights_order import file_order
from ir.variables import layer_shapes

__all__ = ["PARTIAL_HEADER", "DarknetHeader", "WeightsError", "read_darknet",
           "write_darknet", "write_partial"]

_F32 = np.dtype("<f4")


@dataclass(frozen=True, slots=True)
class DarknetHeader:
    """The header of a ``.weights`` file. ``seen`` is int64 on disk when
    ``major * 10 + minor >= 2`` (and both < 1000), else int32 (`seen_bytes`)."""

    major: int = 0
    minor: int = 2
    revision: int = 0
    seen: int = 0

    @property
    def seen_bytes(self) -> int:
        wide = self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000
        return 8 if wide else 4

    @property
    def size(self) -> int:
        return 12 + self.seen_bytes

    def to_bytes(self) -> bytes:
        seen_format = "<q" if self.seen_bytes == 8 else "<i"
        return struct.pack("<iii", self.major, self.minor, self.revision) + struct.pack(
            seen_format, self.seen)

    def __str__(self) -> str:
        return f"version {self.major}.{self.minor}.{self.revision}, seen {self.seen}"

    def as_dict(self) -> dict[str, int]:
        """The four fields as plain ints: how `.msgpack` and torch files carry them."""
        return {name: int(getattr(self, name)) for name in _HEADER_FIELDS}

    @classmethod
    def from_stored(cls, value: object, source: str, error: type[ValueError] = WeightsError
                    ) -> "DarknetHeader":
        """The header another format stored (`as_dict`, or a 4-tuple in field order).

        Raises:
            ``error``: not four integers that fit the ``.weights`` header (int32
                version fields; ``seen`` int64, or int32 for versions before 0.2).
        """
        if isinstance(value, dict) and set(value) == set(_HEADER_FIELDS):
            value = tuple(value[name] for name in _HEADER_FIELDS)
        if (not isinstance(value, (tuple, list)) or len(value) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise error(f"{source}: darknet_header {_short(value)}: expected four "
                        f"integers {', '.join(_HEADER_FIELDS)}")
        header = cls(*value)
        seen_bits = 8 * header.seen_bytes
        for name, v, bits in zip(_HEADER_FIELDS, value, (32, 32, 32, seen_bits)):
            if not -(2 ** (bits - 1)) <= v < 2 ** (bits - 1):
                raise error(f"{source}: darknet_header {name}={v}: expected a signed "
                            f"{bits}-bit integer (the .weights header field)")
        return header


_HEADER_FIELDS = ("major", "minor", "revision", "seen")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_header(buf: bytes | bytearray, source: str) -> DarknetHeader:
    if len(buf) < 12:
        raise WeightsError(f"{source}: {len(buf)} bytes, too short for a .weights header "
                           "(expected at least 16: int32 major, minor, revision, then "
                           "seen)")
    major, minor, revision = struct.unpack_from("<iii", buf, 0)
    header = DarknetHeader(major, minor, revision)
    if len(buf) < header.size:
        raise WeightsError(f"{source}: {len(buf)} bytes, too short for the header of "
                           f"version {major}.{minor}.{revision} (expected {header.size} "
                           f"bytes: seen is {header.seen_bytes * 8}-bit)")
    seen = struct.unpack_from("<q" if header.seen_bytes == 8 else "<i", buf, 12)[0]
    return DarknetHeader(major, minor, revision, seen)


def read_darknet(graph: ir.Graph, path: str | os.PathLike[str], *, seed: int = 0,
                 upto: int | None = None) -> LoadedWeights:
    """Read a Darknet ``.weights`` file for ``graph``.

    Args:
        graph: the network the file was trained for.
        path: the ``.weights`` file.
        seed: seeds `default_variables` for convs a partial file does not hold.
        upto: read only the layers before this index and ignore the rest of the file,
            as Darknet's ``load_weights_upto`` does (``darknet partial``): the file
            may then hold more, or other, layers after them.

    Returns:
        `LoadedWeights` with ``header`` a `DarknetHeader`. A file that stops after
        conv N loads those N (``loaded_convs``) and says so in ``warnings``.

    Raises:
        WeightsError: a header too short, a file ending inside a conv (layer index,
            cfg line, byte offset), bytes left after the last conv, or a cfg with
            weighted layers darkslim cannot read.
    """
    source = str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf = f.read()  # read-only bytes: the arrays below are views of it, never written
    got = len(buf)
    if got != size:
        raise WeightsError(f"{source}: read {got} of {size} bytes (file changed while "
                           "reading?)")
    if buf[:4] == b"PK\x03\x04":
        raise WeightsError(f"{source}: a zip archive (a torch checkpoint?), not a Darknet "
                           ".weights file: name it .pt to read it as one")
    if b"\0" not in buf[:4096] and re.search(rb"^\s*\[(net|network)\]", buf[:65536], re.M):
        raise WeightsError(f"{source}: a Darknet cfg (text with a [net] section), not a "
                           ".weights file: expected binary weights")
    header = _read_header(buf, source)
    floats = np.frombuffer(buf, dtype=_F32, offset=header.size,
                           count=(size - header.size) // 4)
    weighted = weighted_layers(graph)
    noun = ("conv" if all(isinstance(graph.layers[i], ir.Conv) for i in weighted)
            else "weighted layer")
    shapes = layer_shapes(graph)
    unsupported = set(unsupported_weighted_layers(graph))
    params: dict[str, dict[str, Any]] = {}
    stats: dict[str, dict[str, Any]] = {}
    pos = 0  # in floats, after the header
    loaded: list[int] = []
    for index, layer in enumerate(graph.layers):
        remaining = size - header.size - 4 * pos
        if remaining == 0 or (upto is not None and index >= upto):
            break
        if index in unsupported:
            raise WeightsError(f"{source}: byte offset {header.size + 4 * pos}: "
                               f"{where(graph, index)} holds weights darkslim cannot read "
                               "yet")
        order = file_order(layer)
        if not order:
            continue
        leaf_shapes = shapes[index]
        count = sum(int(np.prod(leaf_shapes[leaf])) for leaf, _ in order)
        if 4 * count > remaining:
            raise WeightsError(
                f"{source}: ends inside {where(graph, index)}, {noun} {len(loaded) + 1} of "
                f"{len(weighted)}: its {count} floats ({4 * count} bytes) start at byte "
                f"offset {header.size + 4 * pos}, but only {remaining} bytes remain (file "
                f"size {size}). A truncated file, or a .weights file for another cfg?")
        key = layer_key(index)
        for (collection, part, name), layout in order:
            shape = leaf_shapes[(collection, part, name)]
            n = int(np.prod(shape))
            value = _from_file(floats[pos:pos + n], shape, layout)
            into = params if collection == "params" else stats
            into.setdefault(key, {}).setdefault(part, {})[name] = value
            pos += n
        loaded.append(index)
    end = header.size + 4 * pos
    if end < size and upto is None:
        left = size - end
        floats_left = f"{left // 4} floats" + (f" and {left % 4} bytes" if left % 4 else "")
        last = where(graph, loaded[-1]) if loaded else "the header"
        raise WeightsError(
            f"{source}: {left} bytes ({floats_left}) left after the last {noun}, "
            f"{last}, at byte offset {end} (file size {size}): expected the file to end "
            "there. A .weights file for another cfg?")
    warnings: tuple[str, ...] = ()
    if len(loaded) < len(weighted):
        missing = frozenset(weighted) - frozenset(loaded)
        rest = default_variables(graph, seed, layers=missing)
        params = {**params, **rest["params"]}
        stats = {**stats, **rest["batch_stats"]}
        last = f"up to {where(graph, loaded[-1])}" if loaded else "none"
        warnings = (f"{source} holds the first {len(loaded)} of {len(weighted)} {noun}s "
                    f"({last}); the other {len(missing)} are freshly initialised "
                    f"(seed {seed}).",)
    rank = {layer_key(i): n for n, i in enumerate(weighted)}
    variables = {"params": dict(sorted(params.items(), key=lambda kv: rank[kv[0]])),
                 "batch_stats": dict(sorted(stats.items(), key=lambda kv: rank[kv[0]]))}
    return LoadedWeights(variables=variables, format="darknet", loaded_convs=len(loaded),
                         total_convs=len(weighted), header=header, warnings=warnings)


def weighted_layers(graph: ir.Graph) -> tuple[int, ...]:
    """Indices of the layers that hold weights in a ``.weights`` file, in file order."""
    return tuple(i for i, layer in enumerate(graph.layers)
                 if file_order(layer))


def _from_file(flat: np.ndarray, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """A leaf from its floats in the file: views, no copies (writes go back byte-exact)."""
    if layout == "oihw":  # kernel HWIO here: a view of the OIHW buffer
        return flat.reshape(shape[3], shape[2], shape[0], shape[1]).transpose(2, 3, 1, 0)
    if layout == "dense":  # (out, in) in the file, (in, out) here
        return flat.reshape(shape[1], shape[0]).T
    return flat.reshape(shape)


def _to_file(value: Any, layout: str) -> np.ndarray:
    value = np.asarray(value)
    if layout == "oihw":
        return _f32(value.transpose(3, 2, 0, 1))
    if layout == "dense":
        return _f32(value.T)
    return _f32(value)


def _f32(value: Any) -> np.ndarray:
    return np.ascontiguousarray(value, dtype=_F32)


def darknet_chunks(graph: ir.Graph, variables: Variables, header: DarknetHeader,
                   upto: int | None = None) -> Iterator[np.ndarray | bytes]:
    """The bytes of a ``.weights`` file as contiguous buffers, one at a time (a kernel
    that needs an OIHW copy is held only while it is written); with ``upto``, only
    the layers before that index (Darknet's ``save_weights_upto``)."""
    yield header.to_bytes()
    for index in weighted_layers(graph):
        if upto is not None and index >= upto:
            break
        layer = graph.layers[index]
        key = layer_key(index)
        for (collection, part, name), layout in file_order(layer):
            # HWIO -> OIHW; for kernels read by `read_darknet` this is the original buffer.
            yield _to_file(variables[collection][key][part][name], layout)


def write_darknet(graph: ir.Graph, variables: Variables, path: str | os.PathLike[str], *,
                  header: DarknetHeader | None = None, upto: int | None = None) -> None:
    """Write ``variables`` as a Darknet ``.weights`` file, atomically.

    Args:
        header: the header to write (keep the one `read_darknet` returned for a byte
            exact round trip); default version 0.2.0, seen 0.
        upto: write only the layers before this index: a backbone file such as
            ``yolov3-tiny.conv.15`` (see `write_partial`).

    Raises:
        WeightsError: variables that do not fit ``graph`` (listing the first few), or a
            cfg with weighted layers other than ``[convolutional]``.
    """
    source = str(path)
    unsupported = unsupported_weighted_layers(graph)
    if unsupported:
        raise WeightsError(f"{source}: {where(graph, unsupported[0])} holds weights "
                           "darkslim cannot write yet")
    check_variables(graph, variables, source)
    write_chunks(Path(path), darknet_chunks(graph, variables, header or DarknetHeader(),
                                            upto))


PARTIAL_HEADER = DarknetHeader(0, 2, 5, 0)
"""The header ``darknet partial`` writes: the version of the Darknet build (AlexeyAB's
``src/version.h``: 0.2.5) and ``seen`` 0 (``partial`` zeroes ``seen`` and the
iteration before ``save_weights_upto``), whatever the input file said."""


def write_partial(graph: ir.Graph, variables: Variables, path: str | os.PathLike[str],
                  upto: int) -> None:
    """Write the first ``upto`` layers' weights of ``variables`` as Darknet's
    ``darknet partial cfg weights out upto`` does, byte for byte: `PARTIAL_HEADER`,
    then the weights of each weighted layer with index below ``upto``.

    Raises:
        WeightsError: ``upto`` outside ``1..len(graph.layers)``, or variables that
            do not fit ``graph``.
    """
    if not 1 <= upto <= len(graph.layers):
        raise WeightsError(f"{path}: partial upto={upto}: expected a layer count in 1.."
                           f"{len(graph.layers)} ({graph.path} has {len(graph.layers)} "
                           "layers)")
    write_darknet(graph, variables, path, header=PARTIAL_HEADER, upto=upto)
