"""ONNX building blocks the emit rules (`export.rules`) share.

The emit rules (``(layer, b, index, inputs) -> output name``) never import ``onnx``:
they call the methods of the builder ``b`` the exporter passes in
(``export.builder.OnnxBuilder``: ``node``, ``const``, ``ints``, ``slice``, ``params``,
``shape``, ``add_detections``) and numpy. Everything here is such calls too. Tensors
are NCHW, channels on axis 1.

`emit_activation` writes each of Darknet's activations exactly as `ir.activations`
computes it (the ``normalize_channels`` family over the channel axis); `head_boxes`
writes the grid decode every detection head shares (`ir.kinds.yolo.grid_boxes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from export.builder import OnnxBuilder
from ir.activations import Activation

# ------------------------------------------------------------------- small helpers

def mul(b: OnnxBuilder, x: str, k: float) -> str:
    return b.node("Mul", [x, b.const(k, name="k")])


def add(b: OnnxBuilder, x: str, k: float) -> str:
    return b.node("Add", [x, b.const(k, name="k")])


def where(b: OnnxBuilder, cond: str, a: str, other: str) -> str:
    return b.node("Where", [cond, a, other])


def compare(b: OnnxBuilder, op: str, x: str, k: float) -> str:
    """``x <op> k`` for ``op`` in Greater, Less, GreaterOrEqual."""
    return b.node(op, [x, b.const(k, name="k")])


def reduce(b: OnnxBuilder, op: str, x: str, axes: Sequence[int], keepdims: int = 1) -> str:
    """``ReduceSum``/``ReduceMax`` over ``axes``: axes are an input from opset 13
    (ReduceSum) or 18 (the others), an attribute before."""
    since = 13 if op == "ReduceSum" else 18
    if b.opset >= since:
        return b.node(op, [x, b.ints(list(axes), "axes")], keepdims=keepdims)
    return b.node(op, [x], axes=list(axes), keepdims=keepdims)


def sigmoid(b: OnnxBuilder, x: str) -> str:
    return b.node("Sigmoid", [x])


# --------------------------------------------------------------------- activations

Emit = Callable[[OnnxBuilder, str], str]  # an activation's rule: (b, x) -> output name


def _mish(b: OnnxBuilder, x: str) -> str:
    # Mish is an operator from opset 18 on; x · tanh(softplus(x)) is the same function
    # (the runtime's thresholded softplus differs from log(1 + e^x) below float32's ulp).
    return b.node("Mul", [x, b.node("Tanh", [b.node("Softplus", [x])])])


def _hard_mish(b: OnnxBuilder, x: str) -> str:
    quad = b.node("Add", [mul(b, b.node("Mul", [x, x]), 0.5), x])
    inner = where(b, compare(b, "Greater", x, -2.0), quad, b.const(0.0, name="zero"))
    return where(b, compare(b, "Greater", x, 0.0), x, inner)


def _normalize_channels(b: OnnxBuilder, x: str) -> str:
    pos = b.node("Relu", [x])
    return b.node("Div", [pos, add(b, reduce(b, "ReduceSum", pos, [1]), 1e-4)])


def _normalize_channels_softmax(b: OnnxBuilder, x: str, use_max: bool = False) -> str:
    if use_max:
        x = b.node("Sub", [x, reduce(b, "ReduceMax", x, [1])])
    e = b.node("Exp", [x])
    return b.node("Div", [e, add(b, reduce(b, "ReduceSum", e, [1]), 1e-11)])


def _gelu(b: OnnxBuilder, x: str) -> str:
    cube = b.node("Mul", [b.node("Mul", [x, x]), x])
    inner = b.node("Add", [mul(b, x, 0.797885), mul(b, cube, 0.035677)])
    return b.node("Mul", [mul(b, x, 0.5), add(b, b.node("Tanh", [inner]), 1.0)])


def _plse(b: OnnxBuilder, x: str) -> str:
    high = add(b, mul(b, add(b, x, -4.0), 0.01), 1.0)
    mid = add(b, mul(b, x, 0.125), 0.5)
    inner = where(b, compare(b, "Greater", x, 4.0), high, mid)
    return where(b, compare(b, "Less", x, -4.0), mul(b, add(b, x, 4.0), 0.01), inner)


def _lhtan(b: OnnxBuilder, x: str) -> str:
    high = add(b, mul(b, add(b, x, -1.0), 0.001), 1.0)
    inner = where(b, compare(b, "Greater", x, 1.0), high, x)
    return where(b, compare(b, "Less", x, 0.0), mul(b, x, 0.001), inner)


def _stair(b: OnnxBuilder, x: str) -> str:
    n = b.node("Floor", [x])
    half = b.node("Floor", [mul(b, x, 0.5)])
    # Only "n is odd" matters, so fmod's sign (that of n) is as good as numpy's mod.
    odd = b.node("Not", [b.node("Equal", [b.node("Mod", [n, b.const(2.0, name="two")],
                                                 fmod=1), b.const(0.0, name="zero")])])
    return where(b, odd, b.node("Add", [b.node("Sub", [x, n]), half]), half)


def _clip(lo: float, hi: float) -> Emit:
    return lambda b, x: b.node("Clip", [x, b.const(lo, name="min"), b.const(hi, name="max")])


ACTIVATIONS: dict[Activation, Emit] = {
    Activation.LOGISTIC: sigmoid,
    Activation.SWISH: lambda b, x: b.node("Mul", [x, sigmoid(b, x)]),
    Activation.MISH: _mish,
    Activation.HARD_MISH: _hard_mish,
    Activation.NORMALIZE_CHANNELS: _normalize_channels,
    Activation.NORMALIZE_CHANNELS_SOFTMAX: _normalize_channels_softmax,
    Activation.NORMALIZE_CHANNELS_SOFTMAX_MAXVAL:
        lambda b, x: _normalize_channels_softmax(b, x, use_max=True),
    Activation.LOGGY: lambda b, x: add(b, mul(b, sigmoid(b, x), 2.0), -1.0),
    Activation.RELU: lambda b, x: b.node("Relu", [x]),
    Activation.RELU6: _clip(0.0, 6.0),
    Activation.ELU: lambda b, x: b.node("Elu", [x], alpha=1.0),
    Activation.SELU: lambda b, x: b.node("Selu", [x], alpha=1.6732, gamma=1.0507),
    Activation.GELU: _gelu,
    Activation.RELIE: lambda b, x: b.node("LeakyRelu", [x], alpha=0.01),
    Activation.PLSE: _plse,
    Activation.HARDTAN: _clip(-1.0, 1.0),
    Activation.LHTAN: _lhtan,
    Activation.LINEAR: lambda b, x: x,
    Activation.RAMP: lambda b, x: b.node("Add", [b.node("Relu", [x]), mul(b, x, 0.1)]),
    Activation.REVLEAKY: lambda b, x: b.node("LeakyRelu", [x], alpha=0.1),
    Activation.LEAKY: lambda b, x: b.node("LeakyRelu", [x], alpha=0.1),
    Activation.TANH: lambda b, x: b.node("Tanh", [x]),
    Activation.STAIR: _stair,
}

if set(ACTIVATIONS) != set(Activation):  # fail closed at import, like the registry
    raise TypeError("ONNX rule missing for activation(s) "
                    f"{sorted(a.value for a in set(Activation) - set(ACTIVATIONS))}")


def emit_activation(b: OnnxBuilder, activation: Activation, x: str) -> str:
    """Darknet ``activation=`` applied to the NCHW tensor ``x``."""
    return ACTIVATIONS[Activation(activation)](b, x)


# ------------------------------------------------------------------ detection heads

def per_anchor(b: OnnxBuilder, x: str, anchors: int) -> tuple[str, int, int, int]:
    """``x`` (N, C, H, W) viewed as ``(N, anchors, C / anchors, H, W)``: channel
    ``a · F + k`` is field k of anchor a, as in Darknet. Returns (view, F, H, W)."""
    c, h, w = b.shape(x)
    fields = c // anchors
    return b.node("Reshape", [x, b.ints([0, anchors, fields, h, w], "shape")]), fields, h, w


def fields(b: OnnxBuilder, p: str, start: int, stop: int) -> str:
    """Fields ``start:stop`` of a per-anchor view."""
    return b.slice(p, start, stop, axis=2)


def flat_map(b: OnnxBuilder, p: str, c: int, h: int, w: int) -> str:
    """A per-anchor view back to the (N, C, H, W) map."""
    return b.node("Reshape", [p, b.ints([0, c, h, w], "shape")])


def head_boxes(b: OnnxBuilder, xy: str, wh: str, rest: str, anchors: int, h: int, w: int) -> None:
    """Register ``(N, anchors·H·W, 4 + k)`` boxes with the builder, as
    `ir.kinds.yolo.grid_boxes` makes them: ``cx = (xy_x + col) / W · input_w`` (same
    for y), then ``wh`` (pixels) and ``rest`` (``k`` fields), ordered anchor, y, x.
    ``xy``, ``wh``: ``(N, anchors, 2, H, W)``; ``rest``: ``(N, anchors, k, H, W)``."""
    grid = np.zeros((1, 1, 2, h, w), np.float32)
    grid[0, 0, 0] = np.arange(w, dtype=np.float32)[None, :]
    grid[0, 0, 1] = np.arange(h, dtype=np.float32)[:, None]
    in_h, in_w = b.input_hw
    cells = np.array([w, h], np.float32).reshape(1, 1, 2, 1, 1)
    pixels = np.array([in_w, in_h], np.float32).reshape(1, 1, 2, 1, 1)
    centre = b.node("Div", [b.node("Add", [xy, b.const(grid, name="grid")]),
                            b.const(cells, name="cells")])
    centre = b.node("Mul", [centre, b.const(pixels, name="pixels")])
    boxes = b.node("Concat", [centre, wh, rest], axis=2)
    boxes = b.node("Transpose", [boxes], perm=[0, 1, 3, 4, 2])
    b.add_detections(b.node("Reshape", [boxes, b.ints([0, anchors * h * w, -1], "shape")]))


def anchor_const(b: OnnxBuilder, values: Sequence[tuple[float, float]], anchors: int) -> str:
    """Per-anchor (w, h) pairs as a ``(1, anchors, 2, 1, 1)`` constant."""
    return b.const(np.asarray(values, np.float32).reshape(1, anchors, 2, 1, 1),
                   name="anchors")


__all__ = ["ACTIVATIONS", "add", "anchor_const", "compare", "emit_activation", "fields",
           "flat_map", "head_boxes", "mul", "per_anchor", "reduce", "sigmoid", "where"]
