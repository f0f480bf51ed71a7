"""Small whole-graph edits: input size and width."""

from __future__ import annotations

import dataclasses

from ir.layers import Conv, Graph


def with_input_size(graph: Graph, height: int, width: int | None = None) -> Graph:
    """``graph`` with ``[net]`` height/width set (``width`` defaults to ``height``);
    ``graph`` itself when they already match."""
    width = height if width is None else width
    if (graph.height, graph.width) == (height, width):
        return graph
    net = tuple((k, v) for k, v in graph.net if k not in ("width", "height"))
    return dataclasses.replace(graph, net=(("width", str(width)), ("height", str(height)),
                                           *net))


def narrow(graph: Graph, divisor: int, min_filters: int = 1) -> Graph:
    """Every conv's filters divided by ``divisor`` (at least ``min_filters``), except
    the convs feeding a ``[yolo]``, whose count the head fixes. A width-reduced variant
    of a real cfg for tests, benchmarks and quick runs."""
    feeds = {i - 1 for i in graph.yolo_indices()}
    return graph.replace_layers({
        i: dataclasses.replace(layer, filters=max(min_filters, layer.filters // divisor))
        for i, layer in enumerate(graph.layers)
        if isinstance(layer, Conv) and i not in feeds})
