"""ONNX emit rules of the detection heads: ``[yolo]``, ``[Gaussian_yolo]``,
``[region]`` and ``[detection]``.

Each writes the layer's own output (its kind's ``forward``) and, with ``b.decode``,
the boxes its kind's ``decode`` makes, registered with ``b.add_detections``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import ir
from export.builder import OnnxBuilder
from export.rules import ops


def yolo(layer: ir.Yolo, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """The layer's own output (its kind's ``forward``) and, with ``b.decode``, its
    boxes as its ``decode`` makes them, registered with ``b.add_detections``; the map
    is viewed per anchor (`ops.per_anchor`)."""
    a = len(layer.mask)
    c, _, _ = b.shape(inputs[0])
    p, f, h, w = ops.per_anchor(b, inputs[0], a)
    s = float(layer.scale_x_y)

    def xy_of(t: str) -> str:
        return t if s == 1.0 else ops.add(b, ops.mul(b, t, s), -(s - 1) / 2)

    raw_wh = ops.fields(b, p, 2, 4)
    if layer.new_coords:
        xy, rest = xy_of(ops.fields(b, p, 0, 2)), ops.fields(b, p, 4, f)
    else:
        xy = xy_of(ops.sigmoid(b, ops.fields(b, p, 0, 2)))
        rest = ops.sigmoid(b, ops.fields(b, p, 4, f))
    out = ops.flat_map(b, b.node("Concat", [xy, raw_wh, rest], axis=2), c, h, w)
    if b.decode:
        anchors = ops.anchor_const(b, layer.head_anchors, a)
        if layer.new_coords:
            wh = b.node("Mul", [ops.mul(b, raw_wh, 2.0), ops.mul(b, raw_wh, 2.0)])
            wh = b.node("Mul", [wh, anchors])
        else:
            wh = b.node("Mul", [b.node("Exp", [raw_wh]), anchors])
        ops.head_boxes(b, xy, wh, rest, a, h, w)
    return out


def gaussian_yolo(layer: ir.GaussianYolo, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """The kind's per-anchor entries (the layer's own output) and, with ``b.decode``,
    its ``decode``'s boxes registered with ``b.add_detections``."""
    a = len(layer.mask)
    c, _, _ = b.shape(inputs[0])
    p, f, h, w = ops.per_anchor(b, inputs[0], a)
    sig = ops.sigmoid(b, p)
    s = float(layer.scale_x_y)

    def mu(k: int) -> str:
        t = ops.fields(b, sig, k, k + 1)
        return t if s == 1.0 else ops.add(b, ops.mul(b, t, s), -(s - 1) / 2)

    mu_x, mu_y = mu(0), mu(2)
    sigmas = [ops.fields(b, sig, k, k + 1) for k in (1, 3, 5, 7)]
    mu_w, mu_h = ops.fields(b, p, 4, 5), ops.fields(b, p, 6, 7)
    objectness = ops.fields(b, sig, 8, 9)
    classes = ops.fields(b, sig, 9, f)
    out = ops.flat_map(b, b.node("Concat", [mu_x, sigmas[0], mu_y, sigmas[1], mu_w,
                                            sigmas[2], mu_h, sigmas[3], objectness, classes],
                                 axis=2), c, h, w)
    if b.decode:
        anchors = ops.anchor_const(b, layer.head_anchors, a)
        wh = b.node("Mul", [b.node("Exp", [b.node("Concat", [mu_w, mu_h], axis=2)]), anchors])
        xy = b.node("Concat", [mu_x, mu_y], axis=2)
        if layer.yolo_point != "center":
            in_h, in_w = b.input_hw
            cell = np.array([in_w / w, in_h / h], np.float32).reshape(1, 1, 2, 1, 1)
            shift = ops.mul(b, b.node("Div", [wh, b.const(cell, name="cell")]), 0.5)
            xy = b.node("Add" if layer.yolo_point == "left_top" else "Sub", [xy, shift])
        total = b.node("Add", [b.node("Add", [b.node("Add", sigmas[:2]), sigmas[2]]),
                               sigmas[3]])
        certainty = b.node("Sub", [b.const(1.0, name="one"), ops.mul(b, total, 0.25)])
        rest = b.node("Concat", [objectness, b.node("Mul", [classes, certainty])], axis=2)
        ops.head_boxes(b, xy, wh, rest, a, h, w)
    return out


def region(layer: ir.Region, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """The kind's per-anchor entries (softmax over the class fields) and, with
    ``b.decode``, its ``decode``'s boxes (anchors in grid cells, scaled to pixels)."""
    c, _, _ = b.shape(inputs[0])
    p, f, h, w = ops.per_anchor(b, inputs[0], layer.num)
    objectness = ops.sigmoid(b, ops.fields(b, p, 4, 5))
    classes = ops.fields(b, p, 5, f)
    if layer.softmax:
        classes = b.node("Softmax", [classes], axis=2)
    out = ops.flat_map(b, b.node("Concat", [ops.fields(b, p, 0, 4), objectness, classes],
                                 axis=2), c, h, w)
    if b.decode:
        in_h, in_w = b.input_hw
        cell = np.array([in_w / w, in_h / h], np.float32).reshape(1, 1, 2, 1, 1)
        wh = b.node("Mul", [b.node("Exp", [ops.fields(b, p, 2, 4)]),
                            ops.anchor_const(b, layer.anchors, layer.num)])
        wh = b.node("Mul", [wh, b.const(cell, name="cell")])
        xy = ops.sigmoid(b, ops.fields(b, p, 0, 2))
        rest = b.node("Concat", [objectness, classes], axis=2)
        ops.head_boxes(b, xy, wh, rest, layer.num, h, w)
    return out


def detection(layer: ir.Detection, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """The kind's ``forward`` and ``decode`` in ONNX: slices of the NCHW-flattened
    input."""
    c, h, w = b.shape(inputs[0])
    s, k, n_cls = layer.side, layer.num, layer.classes
    cells = s * s
    flat = b.node("Reshape", [inputs[0], b.ints([0, -1], "shape")])
    classes = b.node("Reshape", [b.slice(flat, 0, cells * n_cls, axis=1),
                                 b.ints([0, cells, n_cls], "shape")])
    if layer.softmax:
        classes = b.node("Softmax", [classes], axis=2)
    rest = b.slice(flat, cells * n_cls, c * h * w, axis=1)
    out = b.node("Reshape", [b.node("Concat", [b.node("Reshape", [classes, b.ints(
        [0, -1], "shape")]), rest], axis=1), b.ints([0, c, h, w], "shape")])
    if b.decode:
        start = cells * n_cls
        scale = b.node("Reshape", [b.slice(flat, start, start + cells * k, axis=1),
                                   b.ints([0, cells, k, 1], "shape")])
        boxes = b.node("Reshape", [b.slice(flat, start + cells * k, c * h * w, axis=1),
                                   b.ints([0, cells, k, 4], "shape")])
        in_h, in_w = b.input_hw
        grid = np.zeros((1, cells, 1, 2), np.float32)
        grid[0, :, 0, 0] = [i % s for i in range(cells)]
        grid[0, :, 0, 1] = [i // s for i in range(cells)]
        pixels = np.array([in_w, in_h], np.float32).reshape(1, 1, 1, 2)
        xy = b.node("Mul", [b.node("Add", [b.slice(boxes, 0, 2, axis=3),
                                           b.const(grid, name="grid")]),
                            b.const(pixels / s, name="cell_pixels")])
        wh = b.slice(boxes, 2, 4, axis=3)
        if layer.sqrt:
            wh = b.node("Mul", [wh, wh])
        wh = b.node("Mul", [wh, b.const(pixels, name="pixels")])
        spread = b.node("Mul", [b.node("Reshape", [classes, b.ints([0, cells, 1, n_cls],
                                                                   "shape")]),
                                b.const(np.ones((1, 1, k, 1), np.float32), name="ones")])
        det = b.node("Concat", [xy, wh, scale, spread], axis=3)
        b.add_detections(b.node("Reshape", [det, b.ints([0, cells * k, 5 + n_cls],
                                                        "shape")]))
    return out
