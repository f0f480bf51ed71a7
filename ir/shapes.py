"""Shape inference and verification: every tensor's channels and spatial size.

`verify` is the IR's typechecker. It runs after parsing and after every pass, and
returns the shapes as data rather than storing them in the graph.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from ir.errors import CfgError
from ir.layers import (Conv, Graph, Layer, MaxPool, Route, Section, Shortcut, Upsample,
                       Yolo, layer_inputs)


class Shape(NamedTuple):
    """A CHW tensor shape (batch excluded)."""

    c: int
    h: int
    w: int


def _err(graph: Graph, layer: Layer, index: int, message: str) -> CfgError:
    return CfgError(f"(layer {index}) {message}", path=layer.path or graph.path,
                    line=layer.line, section=layer.kind)


def _conv(graph, layer: Conv, index, shapes):
    x = _input(shapes, index - 1, graph)
    if x.c % layer.groups or layer.filters % layer.groups:
        raise _err(graph, layer, index, f"groups={layer.groups} must divide both the "
                   f"input channels ({x.c}) and filters ({layer.filters})")
    p = layer.pad_pixels
    h = (x.h + 2 * p - layer.size) // layer.stride + 1
    w = (x.w + 2 * p - layer.size) // layer.stride + 1
    if h < 1 or w < 1:
        raise _err(graph, layer, index, f"size={layer.size} does not fit the "
                   f"{x.h}x{x.w} input")
    return Shape(layer.filters, h, w)


def _shortcut(graph, layer: Shortcut, index, shapes):
    ins = [_input(shapes, j, graph) for j in layer.inputs]
    for j, s in zip(layer.inputs[1:], ins[1:]):
        if (s.h, s.w) != (ins[0].h, ins[0].w):
            raise _err(graph, layer, index, f"adds layer {j} ({s.h}x{s.w}) to layer "
                       f"{layer.inputs[0]} ({ins[0].h}x{ins[0].w}): spatial sizes differ")
    return ins[0]  # Darknet keeps the previous layer's channel count.


def _route(graph, layer: Route, index, shapes):
    ins = [_input(shapes, j, graph) for j in layer.inputs]
    for j, s in zip(layer.inputs, ins):
        if (s.h, s.w) != (ins[0].h, ins[0].w):
            raise _err(graph, layer, index, f"joins layer {layer.inputs[0]} "
                       f"({ins[0].h}x{ins[0].w}) and layer {j} ({s.h}x{s.w}): "
                       "spatial sizes differ")
        if s.c % layer.groups:
            raise _err(graph, layer, index, f"groups={layer.groups} does not divide the "
                       f"{s.c} channels of layer {j}")
    return Shape(sum(s.c // layer.groups for s in ins), ins[0].h, ins[0].w)


def _upsample(graph, layer: Upsample, index, shapes):
    x = _input(shapes, index - 1, graph)
    if layer.stride > 0:
        return Shape(x.c, x.h * layer.stride, x.w * layer.stride)
    return Shape(x.c, x.h // -layer.stride, x.w // -layer.stride)


def _maxpool(graph, layer: MaxPool, index, shapes):
    x = _input(shapes, index - 1, graph)
    h = (x.h + layer.pad_total - layer.size) // layer.stride + 1
    w = (x.w + layer.pad_total - layer.size) // layer.stride + 1
    if h < 1 or w < 1:
        raise _err(graph, layer, index, f"size={layer.size} does not fit the "
                   f"{x.h}x{x.w} input")
    return Shape(x.c, h, w)


def _yolo(graph, layer: Yolo, index, shapes):
    x = _input(shapes, index - 1, graph)
    expected = len(layer.mask) * (layer.classes + 5)
    if x.c != expected:
        raise _err(graph, layer, index, f"reads {x.c} channels, expected "
                   f"{len(layer.mask)} anchors x ({layer.classes} classes + 5) = "
                   f"{expected}: set filters={expected} in the conv before it")
    return x


def _section(graph, layer: Section, index, shapes):
    x = _input(shapes, index - 1, graph)
    kind = layer.type
    if kind in _SAME_SHAPE:
        return x
    if kind in ("avgpool", "avg"):
        return Shape(x.c, 1, 1)
    def option(key: str, default: int, minimum: int = 1) -> int:
        text = layer.option(key, str(default))
        try:
            value = int(text)
        except ValueError:
            raise _err(graph, layer, index, f"{key}={text}: expected an integer") from None
        if value < minimum:
            raise _err(graph, layer, index, f"{key}={value}: expected an integer >= "
                       f"{minimum}")
        return value

    if kind in ("reorg", "reorg3d"):
        s = option("stride", 2)
        if option("reverse", 0, minimum=-2**63) != 0:
            return Shape(x.c // (s * s), x.h * s, x.w * s)
        return Shape(x.c * s * s, x.h // s, x.w // s)
    if kind == "local_avgpool":
        stride = option("stride", 1)
        size = option("size", stride)
        pad = option("padding", size - 1, minimum=0)
        return Shape(x.c, (x.h + pad - size) // stride + 1, (x.w + pad - size) // stride + 1)
    if kind in ("connected", "conn"):
        return Shape(option("output", 1), 1, 1)
    if kind == "sam":
        return x
    if kind == "scale_channels":
        return _input(shapes, layer.inputs[0], graph)
    raise _err(graph, layer, index, "no shape rule for this section yet")


_SAME_SHAPE = frozenset({"activation", "batchnorm", "cost", "detection", "dropout",
                         "empty", "gaussian_yolo", "implicit_add", "implicit_mul",
                         "logistic", "lrn", "normalization", "region", "silence", "soft",
                         "softmax", "contrastive"})

_RULES: dict[type, Callable] = {Conv: _conv, Shortcut: _shortcut, Route: _route,
                                Upsample: _upsample, MaxPool: _maxpool, Yolo: _yolo,
                                Section: _section}


def _input(shapes: list[Shape], j: int, graph: Graph) -> Shape:
    if j < 0:
        return Shape(graph.channels, graph.height, graph.width)
    return shapes[j]


def verify(graph: Graph) -> tuple[Shape, ...]:
    """Infer every layer's output shape, checking each layer against its inputs.

    Returns:
        One `Shape` per layer. Raises `CfgError` naming the layer's cfg line.
    """
    for key in ("width", "height", "channels"):
        value = getattr(graph, key)
        if value < 1:
            raise CfgError(f"{key}={value}: expected a positive integer",
                           path=graph.path, section="net")
    shapes: list[Shape] = []
    for index, layer in enumerate(graph.layers):
        for j in layer_inputs(graph, index):
            if not -1 <= j < index:
                raise _err(graph, layer, index, f"reads layer {j}, which is not before it")
        shape = _RULES[type(layer)](graph, layer, index, shapes)
        if min(shape.c, shape.h, shape.w) < 1:
            raise _err(graph, layer, index, f"its output would be {shape.c}x{shape.h}x"
                       f"{shape.w} (CxHxW): expected at least one channel and pixel")
        shapes.append(shape)
    return tuple(shapes)


def input_shape(graph: Graph) -> Shape:
    return Shape(graph.channels, graph.height, graph.width)
