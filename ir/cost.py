"""Parameter and FLOP counts per layer, the way the field reports them.

Params count what torch's ``model.parameters()`` holds: conv weights plus BN γ and β
(or the conv bias); running statistics are buffers, not parameters. FLOPs follow
Darknet's BFLOPs: 2 × multiply-adds of each conv.
"""

from __future__ import annotations

from typing import NamedTuple

from ir.kinds import spec_of
from ir.layers import Graph, layer_inputs
from ir.shapes import Shape, input_shape, verify


class LayerCost(NamedTuple):
    params: int
    flops: int


def layer_costs(graph: Graph, shapes: tuple[Shape, ...] | None = None
                ) -> tuple[LayerCost, ...]:
    """Params and FLOPs of every layer (zero for layers without weights)."""
    shapes = verify(graph) if shapes is None else shapes
    costs = []
    image = input_shape(graph)
    for index, layer in enumerate(graph.layers):
        ins = tuple(shapes[j] if j >= 0 else image for j in layer_inputs(graph, index))
        costs.append(LayerCost(*spec_of(layer).cost(layer, ins, shapes[index])))
    return tuple(costs)


def count_params(graph: Graph) -> int:
    return sum(c.params for c in layer_costs(graph))


def count_flops(graph: Graph) -> int:
    return sum(c.flops for c in layer_costs(graph))
