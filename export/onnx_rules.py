"""ONNX emit rules, one per Darknet layer kind the runtime executes.

Each rule is ``emit_<kind>(b, index, layer, inputs) -> output name``: ``b`` is an
`export.builder.OnnxBuilder`, ``inputs`` the names of the tensors the layer reads
(``ir.layer_inputs`` order), all NCHW. A rule only calls ``b``'s methods and numpy,
so it can move into its kind's spec unchanged. The semantics are Darknet's, as
`runtime.model` executes them; each rule says where ONNX needs care to match.

`RULES` maps layer classes to rules; a class missing from it cannot be exported.
"""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------- activations

def _mish(b, x):
    # Mish is an operator from opset 18 on; x · tanh(softplus(x)) is the same function
    # (the runtime's softplus is logaddexp(0, x), ONNX's Softplus is log(1 + e^x)).
    return b.node("Mul", [x, b.node("Tanh", [b.node("Softplus", [x])])])


_ACTIVATIONS = {
    "linear": lambda b, x: x,
    "leaky": lambda b, x: b.node("LeakyRelu", [x], alpha=0.1),
    "relu": lambda b, x: b.node("Relu", [x]),
    "logistic": lambda b, x: b.node("Sigmoid", [x]),
    "swish": lambda b, x: b.node("Mul", [x, b.node("Sigmoid", [x])]),
    "mish": _mish,
}


def emit_activation(b, activation: str, x: str) -> str:
    """Darknet ``activation=`` (an `ir.Activation`, a str enum) applied to ``x``."""
    return _ACTIVATIONS[str(getattr(activation, "value", activation))](b, x)


# ---------------------------------------------------------------------------- rules

def emit_convolutional(b, index: int, layer, inputs) -> str:
    """Conv (OIHW kernel, Darknet's symmetric zero padding, groups), then
    BatchNormalization when the layer still has BN (the driver folds it by default),
    then the activation."""
    p = b.params(index)
    kernel = np.transpose(p["kernel"], (3, 2, 0, 1))  # HWIO -> OIHW
    args = [inputs[0], b.const(kernel, name="weight")]
    if "bias" in p:
        args.append(b.const(p["bias"], name="bias"))
    pad = layer.pad_pixels
    y = b.node("Conv", args, kernel_shape=[layer.size, layer.size],
               strides=[layer.stride, layer.stride], pads=[pad] * 4, group=layer.groups)
    if layer.batch_normalize:
        y = b.node("BatchNormalization",
                   [y, b.const(p["scale"], name="scale"), b.const(p["beta"], name="beta"),
                    b.const(p["mean"], name="mean"), b.const(p["var"], name="var")],
                   epsilon=b.bn_eps)
    return emit_activation(b, layer.activation, y)


def emit_shortcut(b, index: int, layer, inputs) -> str:
    """Darknet's sum over the common channels, keeping the first input's count: a
    wider addend is sliced, a narrower one zero-padded on the channel axis."""
    out = inputs[0]
    channels = b.shape(inputs[0])[0]
    for x in inputs[1:]:
        c = b.shape(x)[0]
        if c > channels:
            x = b.slice(x, 0, channels, axis=1)
        elif c < channels:
            x = b.node("Pad", [x, b.ints([0, 0, 0, 0, 0, channels - c, 0, 0], "pads")])
        out = b.node("Add", [out, x])
    return emit_activation(b, layer.activation, out)


def emit_route(b, index: int, layer, inputs) -> str:
    """Concat on channels; with ``groups``, slice ``group_id`` of each input first
    (CSP / yolov4-tiny). A single whole input is an Identity, so the layer still
    has its named node."""
    parts = []
    for x in inputs:
        if layer.groups > 1:
            size = b.shape(x)[0] // layer.groups
            x = b.slice(x, layer.group_id * size, (layer.group_id + 1) * size, axis=1)
        parts.append(x)
    if len(parts) > 1:
        return b.node("Concat", parts, axis=1)
    return parts[0] if parts[0] != inputs[0] else b.node("Identity", parts)


def emit_upsample(b, index: int, layer, inputs) -> str:
    """Nearest-neighbour repeat by ``stride``: Resize with ``asymmetric`` coordinates
    and ``floor`` rounding maps output pixel i to input pixel i // stride, exactly
    Darknet's repeat. The ``scale`` key multiplies the result."""
    s = float(layer.stride)
    y = b.node("Resize", [inputs[0], "", b.const([1.0, 1.0, s, s], name="scales")],
               mode="nearest", coordinate_transformation_mode="asymmetric",
               nearest_mode="floor")
    scale = float(dict(layer.extra).get("scale", "1"))
    return y if scale == 1.0 else b.node("Mul", [y, b.const(scale, name="scale")])


def emit_maxpool(b, index: int, layer, inputs) -> str:
    """Darknet's pool: ``pad_total`` split ``pad // 2`` before (top/left), the rest
    after, and padded cells never win. ONNX MaxPool's ``pads`` have that meaning;
    onnxruntime refuses pads as large as the kernel, so those are padded with -inf
    explicitly first."""
    lo = layer.pad_total // 2
    hi = layer.pad_total - lo
    k, s = layer.size, layer.stride
    x = inputs[0]
    if max(lo, hi) >= k:
        x = b.node("Pad", [x, b.ints([0, 0, lo, lo, 0, 0, hi, hi], "pads"),
                           b.const(-np.inf, name="neg_inf")])
        lo = hi = 0
    return b.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s],
                  pads=[lo, lo, hi, hi])


def emit_yolo(b, index: int, layer, inputs) -> str:
    """The layer's own output (logistic on x, y scaled by ``scale_x_y``, objectness and
    classes; w, h raw), and with ``b.decode`` its boxes decoded as
    `runtime.decode_yolo` does, registered with ``b.add_detections``.

    The map is viewed as ``(N, anchors, 5 + classes, H, W)``: channel
    ``a · (5 + classes) + k`` is field k of anchor a, as in Darknet.
    """
    x = inputs[0]
    c, h, w = b.shape(x)
    anchors = len(layer.mask)
    fields = c // anchors
    p = b.node("Reshape", [x, b.ints([0, anchors, fields, h, w], "shape")])
    s = float(layer.scale_x_y)
    xy = b.node("Sigmoid", [b.slice(p, 0, 2, axis=2)])
    if s != 1.0:
        xy = b.node("Sub", [b.node("Mul", [xy, b.const(s, name="scale_x_y")]),
                            b.const((s - 1) / 2, name="shift")])
    wh = b.slice(p, 2, 4, axis=2)
    scores = b.node("Sigmoid", [b.slice(p, 4, fields, axis=2)])
    own = b.node("Concat", [xy, wh, scores], axis=2)
    out = b.node("Reshape", [own, b.ints([0, c, h, w], "shape")])
    if b.decode:
        grid = np.zeros((1, 1, 2, h, w), np.float32)
        grid[0, 0, 0] = np.arange(w, dtype=np.float32)[None, :]
        grid[0, 0, 1] = np.arange(h, dtype=np.float32)[:, None]
        in_h, in_w = b.input_hw
        cell = np.array([in_w / w, in_h / h], np.float32).reshape(1, 1, 2, 1, 1)
        centre = b.node("Mul", [b.node("Add", [xy, b.const(grid, name="grid")]),
                                b.const(cell, name="cell")])
        anchor_wh = np.asarray(layer.head_anchors, np.float32).reshape(1, anchors, 2, 1, 1)
        size = b.node("Mul", [b.node("Exp", [wh]), b.const(anchor_wh, name="anchors")])
        boxes = b.node("Concat", [centre, size, scores], axis=2)
        boxes = b.node("Transpose", [boxes], perm=[0, 1, 3, 4, 2])  # anchor, y, x order
        b.add_detections(b.node("Reshape", [boxes, b.ints([0, anchors * h * w, fields],
                                                           "shape")]))
    return out


def _rules() -> dict[type, object]:
    from ir import Conv, MaxPool, Route, Shortcut, Upsample, Yolo

    return {Conv: emit_convolutional, Shortcut: emit_shortcut, Route: emit_route,
            Upsample: emit_upsample, MaxPool: emit_maxpool, Yolo: emit_yolo}


#: ``{layer class: emit rule}``; `ir.Section` (``[sam]``, ``[reorg]``, ...) has none.
RULES: dict[type, object] = _rules()
