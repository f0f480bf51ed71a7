"""Layer dataclasses and the `Graph` that holds them.

Layer kinds live in `ir.kinds`, one module each (dataclass and what the kind is); they are
re-exported here. Every layer is a frozen, slotted, keyword-only dataclass of ints, floats, strings,
enums and tuples, so graphs are hashable and can be static arguments of `jax.jit`.
References to other layers are absolute indices, resolved once at parse time.
Keys darkslim does not interpret are kept verbatim in ``extra`` so writing a parsed
cfg loses nothing. ``path`` and ``line`` point at the cfg section and take no part
in equality, like a jaxpr equation's ``source_info``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Union

from ir.kinds import spec_of
from ir.kinds.avgpool import AvgPool
from ir.kinds.connected import Connected
from ir.kinds.conv import Conv
from ir.kinds.cost import Cost
from ir.kinds.crop import Crop
from ir.kinds.detection import Detection
from ir.kinds.dropout import Dropout
from ir.kinds.gaussian_yolo import GaussianYolo
from ir.kinds.local_avgpool import LocalAvgPool
from ir.kinds.maxpool import MaxPool
from ir.kinds.region import Region
from ir.kinds.reorg import Reorg, Reorg3d
from ir.kinds.route import Route
from ir.kinds.sam import Sam
from ir.kinds.scale_channels import ScaleChannels
from ir.kinds.section import Section
from ir.kinds.shortcut import Shortcut
from ir.kinds.softmax import Softmax
from ir.kinds.upsample import Upsample
from ir.kinds.yolo import Yolo
from ir.options import Options

Layer = Union[Conv, Shortcut, Route, Upsample, MaxPool, Yolo, GaussianYolo, Region, Sam,
              ScaleChannels, Reorg3d, Reorg, AvgPool, LocalAvgPool, Dropout, Softmax,
              Connected, Cost, Crop, Detection, Section]


@dataclass(frozen=True, slots=True, kw_only=True)
class Graph:
    """A Darknet network: the ``[net]`` options (every key, in order) and its layers."""

    net: Options
    layers: tuple[Layer, ...]
    path: str = field(default="<text>", compare=False, hash=False, repr=False)

    def net_option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.net).get(key, default)

    def _net_int(self, key: str, default: int) -> int:
        value = self.net_option(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            from ir.errors import CfgError

            raise CfgError(f"{key}={value!r}: expected an integer", path=self.path,
                           section="net") from None

    @property
    def width(self) -> int:
        return self._net_int("width", 416)

    @property
    def height(self) -> int:
        return self._net_int("height", 416)

    @property
    def channels(self) -> int:
        return self._net_int("channels", 3)

    def __len__(self) -> int:
        return len(self.layers)

    def replace_layers(self, updates: dict[int, Layer]) -> "Graph":
        """A new graph with ``layers[i]`` replaced by ``updates[i]``; ``self`` if nothing
        changes."""
        if all(self.layers[i] == layer for i, layer in updates.items()):
            return self
        layers = tuple(updates.get(i, layer) for i, layer in enumerate(self.layers))
        return dataclasses.replace(self, layers=layers)

    def conv_indices(self) -> tuple[int, ...]:
        return tuple(i for i, layer in enumerate(self.layers) if isinstance(layer, Conv))

    def yolo_indices(self) -> tuple[int, ...]:
        return tuple(i for i, layer in enumerate(self.layers) if isinstance(layer, Yolo))

    def head_indices(self) -> tuple[int, ...]:
        """Every detection layer (``[yolo]``, ``[Gaussian_yolo]``, ``[region]``)."""
        return tuple(i for i, layer in enumerate(self.layers) if spec_of(layer).is_head)


def layer_inputs(graph: Graph, index: int) -> tuple[int, ...]:
    """Absolute indices of the tensors layer ``index`` reads; ``-1`` is the image."""
    layer = graph.layers[index]
    return spec_of(layer).inputs(layer, index)


def layer_refs(graph: Graph, index: int) -> tuple[int, ...]:
    """Every layer index layer ``index`` depends on: the tensors it reads (``-1`` is the
    image) and the other layers it names, such as the conv whose weights a
    ``share_index`` conv runs with; each once, inputs first."""
    layer = graph.layers[index]
    spec = spec_of(layer)
    return tuple(dict.fromkeys((*spec.inputs(layer, index), *spec.refs(layer))))


def consumers(graph: Graph) -> tuple[tuple[int, ...], ...]:
    """For each layer, the layers that read its output (in order)."""
    readers: list[list[int]] = [[] for _ in graph.layers]
    for i in range(len(graph.layers)):
        for j in layer_inputs(graph, i):
            if j >= 0 and i not in readers[j]:
                readers[j].append(i)
    return tuple(tuple(r) for r in readers)


__all__ = ["AvgPool", "Connected", "Conv", "Cost", "Crop", "Detection", "Dropout", "GaussianYolo",
           "Graph", "Layer", "LocalAvgPool", "MaxPool", "Options", "Region", "Reorg", "Reorg3d",
           "Route", "Sam", "ScaleChannels", "Section", "Shortcut", "Softmax", "Upsample", "Yolo",
           "consumers", "layer_inputs", "layer_refs"]
