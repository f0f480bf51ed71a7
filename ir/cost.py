"""Parameter and FLOP counts per layer, the way the field reports them.

Params count what torch's ``model.parameters()`` holds: conv weights plus BN γ and β
(or the conv bias); running statistics are buffers, not parameters. FLOPs follow
Darknet's BFLOPs: 2 × multiply-adds of each conv.
"""

from __future__ import annotations

from typing import NamedTuple

from ir.layers import Conv, Graph, Section
from ir.shapes import Shape, input_shape, verify


class LayerCost(NamedTuple):
    params: int
    flops: int


def layer_costs(graph: Graph, shapes: tuple[Shape, ...] | None = None
                ) -> tuple[LayerCost, ...]:
    """Params and FLOPs of every layer (zero for layers without weights)."""
    shapes = verify(graph) if shapes is None else shapes
    costs = []
    for index, layer in enumerate(graph.layers):
        x = shapes[index - 1] if index else input_shape(graph)
        out = shapes[index]
        if isinstance(layer, Conv):
            weights = layer.filters * (x.c // layer.groups) * layer.size * layer.size
            extra = 2 * layer.filters if layer.batch_normalize else layer.filters
            costs.append(LayerCost(weights + extra, 2 * weights * out.h * out.w))
        elif isinstance(layer, Section) and layer.type in ("connected", "conn"):
            weights = x.c * x.h * x.w * out.c
            costs.append(LayerCost(weights + out.c, 2 * weights))
        else:
            costs.append(LayerCost(0, 0))
    return tuple(costs)


def count_params(graph: Graph) -> int:
    return sum(c.params for c in layer_costs(graph))


def count_flops(graph: Graph) -> int:
    return sum(c.flops for c in layer_costs(graph))
