"""Shape inference and verification: every tensor's channels and spatial size.

`verify` is the IR's typechecker. It runs after parsing and after every pass, and
returns the shapes as data rather than storing them in the graph.
"""

from __future__ import annotations

from ir.errors import CfgError
from ir.kinds import spec_of
from ir.kinds.base import Shape, ShapeError
from ir.layers import Graph, Layer, layer_inputs


def _err(graph: Graph, layer: Layer, index: int, message: str) -> CfgError:
    return CfgError(f"(layer {index}) {message}", path=layer.path or graph.path,
                    line=layer.line, section=layer.kind)


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
        ins = tuple(_input(shapes, j, graph) for j in layer_inputs(graph, index))
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
