"""Shape inference and verification: every tensor's channels and spatial size.

`verify` is the IR's typechecker. It runs after parsing and after every pass, and
returns the shapes as data rather than storing them in the graph.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from ir.errors import CfgError
from ir.kinds import spec_of
from ir.kinds.base import Shape, ShapeError, variables_owner
from ir.layers import Graph, Layer, layer_inputs, layer_refs
from ir.resize import with_input_size


def _err(graph: Graph, layer: Layer, index: int, message: str) -> CfgError:
    return CfgError(f"(layer {index}) {message}", path=layer.path or graph.path,
                    line=layer.line, section=layer.kind)


def _input(shapes: list[Shape], j: int, graph: Graph) -> Shape:
    if j < 0:
        return Shape(graph.channels, graph.height, graph.width)
    return shapes[j]


def _check_owner(graph: Graph, layer: Layer, index: int, ins: tuple[Shape, ...],
                 in_shapes: list[tuple[Shape, ...]]) -> None:
    """A layer running with another's variables (a conv's ``share_index``) needs an
    owner of its kind with variables of its own, shaped as its own would be."""
    owner = variables_owner(layer, index)
    if owner == index:
        return
    target = graph.layers[owner]
    spec = spec_of(layer)
    if type(target) is not type(layer) or variables_owner(target, owner) != owner:
        what = (f"shares layer {variables_owner(target, owner)}'s"
                if type(target) is type(layer) else "has none")
        raise _err(graph, layer, index, f"share_index={owner}: layer {owner} is a "
                   f"[{target.kind}] (cfg line {target.line}) that {what} weights: "
                   f"expected a [{layer.kind}] with weights of its own")
    # Only a kind with a ``share`` field gets here (`variables_owner` reads it); mypy
    # checks the field against every kind of the `Layer` union.
    mine = spec.variables(dataclasses.replace(cast(Any, layer), share=None), ins)
    theirs = spec.variables(target, in_shapes[owner])
    if mine != theirs:
        raise _err(graph, layer, index, f"share_index={owner}: would run with layer "
                   f"{owner}'s variables {theirs} (cfg line {target.line}): expected "
                   f"{mine}, the shapes of its own")


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
    in_shapes: list[tuple[Shape, ...]] = []
    for index, layer in enumerate(graph.layers):
        inputs = layer_inputs(graph, index)
        for j in layer_refs(graph, index):
            if j in inputs and not -1 <= j < index:
                raise _err(graph, layer, index, f"reads layer {j}, which is not before it")
            if j not in inputs and not 0 <= j < index:
                raise _err(graph, layer, index, f"refers to layer {j}, which is not a "
                           "layer before it")
        ins = tuple(_input(shapes, j, graph) for j in inputs)
        _check_owner(graph, layer, index, ins, in_shapes)
        in_shapes.append(ins)
        try:
            shape = spec_of(layer).shape(layer, ins)
        except ShapeError as exc:
            raise _err(graph, layer, index, str(exc)) from None
        if min(shape.c, shape.h, shape.w) < 1:
            raise _err(graph, layer, index, f"its output would be {shape.c}x{shape.h}x"
                       f"{shape.w} (CxHxW): expected at least one channel and pixel")
        shapes.append(shape)
    return tuple(shapes)


def input_shape(graph: Graph) -> Shape:
    return Shape(graph.channels, graph.height, graph.width)


def total_stride(graph: Graph) -> int:
    """The network's total downsampling: the largest ratio of the input size to the
    spatial size of any tensor whose size follows the input's.

    Read off shape inference, not multiplied layer by layer: parallel branches that
    each downsample by 2 (yolov7's maxpool and strided-conv pairs, reorg beside a
    strided conv) downsample the network by 2, not 4. A tensor follows the input when
    it grows with it (verified again at twice the size); a global pool's, a
    ``[connected]``'s or a ``[crop]``'s output does not, and is left out. Ratios are
    read at the doubled size when the graph verifies there (fewer rounded odd sizes),
    else at the cfg's; 1 when no tensor is smaller than the input.

    Example: yolov3 at 416 (smallest head 13x13) -> 32; yolov7x -> 32.
    """
    base = verify(graph)
    probe, shapes = graph, base
    try:
        doubled = with_input_size(graph, 2 * graph.height, 2 * graph.width)
        grown = verify(doubled)
    except CfgError:
        grown = None
    if grown is not None:
        probe, shapes = doubled, grown
    stride = 1
    for i, shape in enumerate(shapes):
        if grown is not None and (grown[i].h, grown[i].w) == (base[i].h, base[i].w):
            continue  # its size does not follow the input's
        stride = max(stride, round(probe.height / shape.h), round(probe.width / shape.w))
    return stride


__all__ = ["Shape", "ShapeError", "input_shape", "total_stride", "verify"]
