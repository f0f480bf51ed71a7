"""Layer dataclasses and the `Graph` that holds them.

Every layer is a frozen, slotted, keyword-only dataclass of ints, floats, strings,
enums and tuples, so graphs are hashable and can be static arguments of `jax.jit`.
References to other layers are absolute indices, resolved once at parse time.
Keys darkslim does not interpret are kept verbatim in ``extra`` so writing a parsed
cfg loses nothing. ``path`` and ``line`` point at the cfg section and take no part
in equality, like a jaxpr equation's ``source_info``.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Union

Options = tuple[tuple[str, str], ...]


class Activation(str, enum.Enum):
    """Darknet activations the runtime executes."""

    LEAKY = "leaky"
    LINEAR = "linear"
    MISH = "mish"
    SWISH = "swish"
    LOGISTIC = "logistic"
    RELU = "relu"


@dataclass(frozen=True, slots=True, kw_only=True)
class Conv:
    """``[convolutional]``: conv, optional BatchNorm, activation."""

    filters: int
    size: int = 1
    stride: int = 1
    pad: bool = False
    padding: int = 0
    groups: int = 1
    batch_normalize: bool = False
    activation: Activation = Activation.LOGISTIC
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "convolutional"

    @property
    def pad_pixels(self) -> int:
        """Zero padding on each side, as Darknet computes it (``pad=1`` wins)."""
        return self.size // 2 if self.pad else self.padding


@dataclass(frozen=True, slots=True, kw_only=True)
class Shortcut:
    """``[shortcut]``: element-wise sum of the previous layer and ``inputs[1:]``."""

    inputs: tuple[int, ...]
    activation: Activation = Activation.LINEAR
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "shortcut"


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """``[route]``: channel concat of ``inputs``, optionally one of ``groups`` slices."""

    inputs: tuple[int, ...]
    groups: int = 1
    group_id: int = 0
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "route"


@dataclass(frozen=True, slots=True, kw_only=True)
class Upsample:
    """``[upsample]``: nearest-neighbour upsampling by ``stride``."""

    stride: int = 2
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "upsample"


@dataclass(frozen=True, slots=True, kw_only=True)
class MaxPool:
    """``[maxpool]`` with Darknet's padding rule (default ``size - 1``, right/bottom
    get the larger half)."""

    size: int
    stride: int = 1
    padding: int | None = None
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "maxpool"

    @property
    def pad_total(self) -> int:
        return self.size - 1 if self.padding is None else self.padding


@dataclass(frozen=True, slots=True, kw_only=True)
class Yolo:
    """``[yolo]`` detection head. ``anchors`` holds all (w, h) pairs of the cfg,
    ``mask`` the indices this head uses."""

    mask: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]
    classes: int
    num: int
    scale_x_y: float = 1.0
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "yolo"

    @property
    def head_anchors(self) -> tuple[tuple[float, float], ...]:
        return tuple(self.anchors[m] for m in self.mask)

    def option(self, key: str, default: str) -> str:
        """A key kept verbatim (``ignore_thresh``, ``jitter``, ...)."""
        return dict(self.extra).get(key, default)


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    """Any other Darknet section (``[sam]``, ``[reorg]``, ``[avgpool]``, ...).

    It parses, round-trips and gets a shape; the runtime refuses to execute it.
    ``inputs`` holds the resolved ``from=`` references of sections that have one.
    """

    type: str
    options: Options = ()
    inputs: tuple[int, ...] = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    @property
    def kind(self) -> str:
        return self.type

    def option(self, key: str, default: str) -> str:
        return dict(self.options).get(key, default)


Layer = Union[Conv, Shortcut, Route, Upsample, MaxPool, Yolo, Section]


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


def layer_inputs(graph: Graph, index: int) -> tuple[int, ...]:
    """Absolute indices of the tensors layer ``index`` reads; ``-1`` is the image."""
    layer = graph.layers[index]
    if isinstance(layer, (Shortcut, Route)):
        return layer.inputs
    if isinstance(layer, Section) and layer.inputs:
        return (index - 1, *layer.inputs)
    return (index - 1,)


def consumers(graph: Graph) -> tuple[tuple[int, ...], ...]:
    """For each layer, the layers that read its output (in order)."""
    readers: list[list[int]] = [[] for _ in graph.layers]
    for i in range(len(graph.layers)):
        for j in layer_inputs(graph, i):
            if j >= 0 and i not in readers[j]:
                readers[j].append(i)
    return tuple(tuple(r) for r in readers)
