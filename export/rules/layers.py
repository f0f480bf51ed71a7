"""ONNX emit rules of the layer kinds that compute a tensor (everything but the heads).

Each rule is ``(layer, b, index, inputs) -> output name`` over NCHW tensor names: it
calls the builder ``b`` (`export.builder.OnnxBuilder`) and numpy, never ``onnx``. The
table that maps kinds to these rules is `export.rules.ONNX_RULES`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import ir
from export.builder import OnnxBuilder
from export.rules import ops
from ir.kinds.base import Shape
from ir.kinds.local_avgpool import windows
from ir.kinds.reorg import reorg_index


def conv(layer: ir.Conv, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """Conv (OIHW kernel, symmetric zero padding ``pad · dilation``, groups,
    dilations), BatchNormalization when the layer still has BN (the exporter folds it
    by default), then the activation."""
    p = b.params(ir.variables_owner(layer, index))
    kernel = np.transpose(p["kernel"], (3, 2, 0, 1))  # HWIO -> OIHW
    args = [inputs[0], b.const(kernel, name="weight")]
    if "bias" in p:
        args.append(b.const(p["bias"], name="bias"))
    pad = layer.pad_pixels * layer.dilation
    d = layer.dilation
    y = b.node("Conv", args, kernel_shape=[layer.size, layer.size],
               strides=[layer.stride, layer.stride], pads=[pad] * 4, group=layer.groups,
               dilations=[d, d])
    if layer.batch_normalize:
        y = b.node("BatchNormalization",
                   [y, b.const(p["scale"], name="scale"), b.const(p["beta"], name="beta"),
                    b.const(p["mean"], name="mean"), b.const(p["var"], name="var")],
                   epsilon=b.bn_eps)
    return ops.emit_activation(b, layer.activation, y)


def connected(layer: ir.Connected, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """Flatten (NCHW order, as the kernel's rows), Gemm with the ``(C·H·W, output)``
    kernel; BatchNorm folded into it when the exporter folds BN (``b.fold_bn``), else a
    BatchNormalization node; the activation; a ``(N, output, 1, 1)`` map."""
    p = b.params(index)
    kernel, bias = p["kernel"], p.get("bias")
    flat = b.node("Flatten", [inputs[0]], axis=1)
    if layer.batch_normalize and b.fold_bn:
        g = p["scale"] / np.sqrt(p["var"].astype(np.float64) + b.bn_eps)
        kernel = (kernel * g[None, :]).astype(np.float32)
        bias = (p["beta"] - p["mean"] * g).astype(np.float32)
    args = [flat, b.const(kernel, name="weight")]
    if bias is not None:
        args.append(b.const(bias, name="bias"))
    y = b.node("Gemm", args)
    if layer.batch_normalize and not b.fold_bn:
        y = b.node("BatchNormalization",
                   [y, b.const(p["scale"], name="scale"), b.const(p["beta"], name="beta"),
                    b.const(p["mean"], name="mean"), b.const(p["var"], name="var")],
                   epsilon=b.bn_eps)
    y = ops.emit_activation(b, layer.activation, y)
    return b.node("Reshape", [y, b.ints([0, layer.output, 1, 1], "shape")])


def shortcut(layer: ir.Shortcut, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
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
    return ops.emit_activation(b, layer.activation, out)


def route(layer: ir.Route, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """Concat on channels; with ``groups``, slice ``group_id`` of each input first
    (CSP / yolov4-tiny). A single whole input is an Identity, so the layer still has
    its named node."""
    parts: list[str] = []
    for x in inputs:
        if layer.groups > 1:
            size = b.shape(x)[0] // layer.groups
            x = b.slice(x, layer.group_id * size, (layer.group_id + 1) * size, axis=1)
        parts.append(x)
    if len(parts) > 1:
        return b.node("Concat", parts, axis=1)
    return parts[0] if parts[0] != inputs[0] else b.node("Identity", parts)


def product(layer: ir.Sam | ir.ScaleChannels, b: OnnxBuilder, index: int,
            inputs: Sequence[str]) -> str:
    """``inputs[0] · inputs[1]`` (broadcast) then the activation."""
    return ops.emit_activation(b, layer.activation, b.node("Mul", [inputs[1], inputs[0]]))


def maxpool(layer: ir.MaxPool, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """Spatially: Darknet's pool, ``pad_total`` split ``pad // 2`` before (top/left),
    the rest after, padded cells never winning -- ONNX MaxPool's ``pads`` mean that;
    onnxruntime refuses pads as large as the kernel, so those are padded with -inf
    first. ``maxpool_depth``: channels padded with -inf to a multiple of
    ``out_channels``, viewed ``(N, k, out_channels, H, W)``, max over k (channel g is
    the max of ``g, g + out_channels, ...``)."""
    x = inputs[0]
    if layer.depth:
        c, h, w = b.shape(x)
        oc = layer.out_channels
        k = -(-c // oc)
        if k * oc != c:
            x = b.node("Pad", [x, b.ints([0, 0, 0, 0, 0, k * oc - c, 0, 0], "pads"),
                               b.const(-np.inf, name="neg_inf")])
        x = b.node("Reshape", [x, b.ints([0, k, oc, h, w], "shape")])
        return ops.reduce(b, "ReduceMax", x, [1], keepdims=0)
    lo = layer.pad_total // 2
    hi = layer.pad_total - lo
    k, s = layer.size, layer.stride
    if max(lo, hi) >= k:
        x = b.node("Pad", [x, b.ints([0, 0, lo, lo, 0, 0, hi, hi], "pads"),
                           b.const(-np.inf, name="neg_inf")])
        lo = hi = 0
    return b.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s],
                  pads=[lo, lo, hi, hi])


def local_avgpool(layer: ir.LocalAvgPool, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """Zero Pad, AveragePool (the window sum / size²), times size² / the number of
    in-image taps of each window (a constant map, the same
    `ir.kinds.local_avgpool.windows` on ones)."""
    _, h, w = b.shape(inputs[0])
    lo = layer.pad_total // 2
    hi = layer.pad_total - lo
    x = inputs[0]
    if lo or hi:
        x = b.node("Pad", [x, b.ints([0, 0, lo, lo, 0, 0, hi, hi], "pads")])
    k, s = layer.size, layer.stride
    mean = b.node("AveragePool", [x], kernel_shape=[k, k], strides=[s, s])
    count = windows(np, np.ones((1, h, w, 1), np.float64), layer)[0, :, :, 0]
    with np.errstate(divide="ignore"):
        factor = (k * k) / count  # a window wholly in the padding: 0 / 0 as the runtime
    return b.node("Mul", [mean, b.const(factor[None, None], name="taps")])


def upsample(layer: ir.Upsample, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """Nearest-neighbour repeat by ``stride``: Resize with ``asymmetric`` coordinates
    and ``floor`` rounding maps output pixel i to input pixel i // stride, exactly
    Darknet's repeat; then times ``scale``."""
    s = float(layer.stride)
    y = b.node("Resize", [inputs[0], "", b.const([1.0, 1.0, s, s], name="scales")],
               mode="nearest", coordinate_transformation_mode="asymmetric",
               nearest_mode="floor")
    return y if layer.scale == 1.0 else b.node("Mul", [y, b.const(layer.scale, name="scale")])


def crop(layer: ir.Crop, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """The centre window as one Slice on H and W, then ``2x - 1``."""
    _, h, w = b.shape(inputs[0])
    dh, dw = (h - layer.crop_height) // 2, (w - layer.crop_width) // 2
    y = b.node("Slice", [inputs[0], b.ints([dh, dw], "starts"),
                         b.ints([dh + layer.crop_height, dw + layer.crop_width], "ends"),
                         b.ints([2, 3], "axes")])
    return y if layer.noadjust else ops.add(b, ops.mul(b, y, 2.0), -1.0)


def reorg(layer: ir.Reorg | ir.Reorg3d, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """The same gather: Flatten (NCHW order), Gather with `reorg_index`, Reshape."""
    c, h, w = b.shape(inputs[0])
    out = ir.spec_of(layer).shape(layer, (Shape(c, h, w),))
    if isinstance(layer, ir.Reorg3d):
        index_ = reorg_index(out.w, out.h, out.c, layer.stride, layer.reverse)
    else:
        index_ = reorg_index(w, h, c, layer.stride, layer.reverse)
    flat = b.node("Flatten", [inputs[0]], axis=1)
    gathered = b.node("Gather", [flat, b.const(index_, np.int64, name="index")], axis=1)
    return b.node("Reshape", [gathered, b.ints([0, out.c, out.h, out.w], "shape")])


def softmax(layer: ir.Softmax, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """Softmax over ``groups`` chunks of the flat NCHW buffer, after ÷ temperature."""
    c, h, w = b.shape(inputs[0])
    flat = b.node("Reshape", [inputs[0], b.ints([0, layer.groups, -1], "shape")])
    if layer.temperature != 1:
        flat = b.node("Div", [flat, b.const(layer.temperature, name="temperature")])
    y = b.node("Softmax", [flat], axis=2)
    return b.node("Reshape", [y, b.ints([0, c, h, w], "shape")])


def global_avgpool(layer: ir.AvgPool, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    return b.node("GlobalAveragePool", inputs[:1])


def identity(layer: ir.Dropout | ir.Cost, b: OnnxBuilder, index: int, inputs: Sequence[str]) -> str:
    """``[dropout]`` and ``[cost]``: the identity at inference."""
    return b.node("Identity", inputs[:1])
