"""A slow, plain-numpy reference interpreter of Darknet graphs: a test oracle.

`reference_forward` computes what `runtime.forward` computes (same heads, same
detections, same order), in float64 numpy, one layer at a time, with no compilation.
It exists for two reasons:

* **Differential testing.** The runtime (Flax, jit) and this file are written
  independently; a property that they agree on random graphs tests both.
* **Fast shrinking.** `runtime.forward` compiles once per graph (a few tenths of a
  second), and a hypothesis search that shrinks a counterexample runs hundreds of
  different graphs. On the kit's small graphs this interpreter takes milliseconds,
  so ``assert_equivalent(..., forward=reference_forward)`` keeps such searches fast.

It follows Darknet's inference semantics: BatchNorm with running statistics,
``[shortcut]`` over the common channels, ``[route] groups``, ``[maxpool]`` padding
``size - 1`` split top-left/bottom-right with ``-inf``, nearest ``[upsample]``, and
the ``[yolo]`` decode of `runtime.decode_yolo` (boxes ordered head, anchor, y, x).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import ir
from ir import Activation, Conv, MaxPool, Route, Shortcut, Upsample, Yolo, layer_key
from runtime import ForwardOut

__all__ = ["reference_forward"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


_ACT: dict[Activation, Callable[[np.ndarray], np.ndarray]] = {
    Activation.LEAKY: lambda x: np.where(x > 0, x, 0.1 * x),
    Activation.LINEAR: lambda x: x,
    Activation.MISH: lambda x: x * np.tanh(_softplus(x)),
    Activation.SWISH: lambda x: x * _sigmoid(x),
    Activation.LOGISTIC: _sigmoid,
    Activation.RELU: lambda x: np.maximum(x, 0.0),
}


def _leaf(variables, index: int, part: str, name: str, collection: str = "params"):
    return np.asarray(variables[collection][layer_key(index)][part][name], np.float64)


def _conv(x: np.ndarray, layer: Conv, variables, index: int, eps: float) -> np.ndarray:
    kernel = _leaf(variables, index, "conv", "kernel")  # (k, k, cin/g, out)
    k, s, p, g = layer.size, layer.stride, layer.pad_pixels, layer.groups
    n, h, w, c = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    xg = xp.reshape(n, h + 2 * p, w + 2 * p, g, c // g)
    kg = kernel.reshape(k, k, c // g, g, layer.filters // g)
    y = np.zeros((n, ho, wo, g, layer.filters // g))
    for dy in range(k):
        for dx in range(k):
            patch = xg[:, dy:dy + s * (ho - 1) + 1:s, dx:dx + s * (wo - 1) + 1:s]
            y += np.einsum("nhwgc,cgo->nhwgo", patch, kg[dy, dx])
    y = y.reshape(n, ho, wo, layer.filters)
    if layer.batch_normalize:
        mean = _leaf(variables, index, "bn", "mean", "batch_stats")
        var = _leaf(variables, index, "bn", "var", "batch_stats")
        y = ((y - mean) / np.sqrt(var + eps) * _leaf(variables, index, "bn", "scale")
             + _leaf(variables, index, "bn", "bias"))
    else:
        y = y + _leaf(variables, index, "conv", "bias")
    return _ACT[layer.activation](y)


def _shortcut(inputs, layer: Shortcut) -> np.ndarray:
    out = inputs[0]
    c = out.shape[-1]
    for x in inputs[1:]:  # Darknet: the common channels add, inputs[0] keeps its count
        m = min(c, x.shape[-1])
        out = np.concatenate([out[..., :m] + x[..., :m], out[..., m:]], axis=-1)
    return _ACT[layer.activation](out)


def _route(inputs, layer: Route) -> np.ndarray:
    parts = []
    for x in inputs:
        size = x.shape[-1] // layer.groups
        parts.append(x[..., layer.group_id * size:(layer.group_id + 1) * size])
    return np.concatenate(parts, axis=-1)


def _maxpool(x: np.ndarray, layer: MaxPool) -> np.ndarray:
    lo = layer.pad_total // 2
    hi = layer.pad_total - lo
    n, h, w, c = x.shape
    k, s = layer.size, layer.stride
    ho, wo = (h + lo + hi - k) // s + 1, (w + lo + hi - k) // s + 1
    xp = np.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)), constant_values=-np.inf)
    out = np.full((n, ho, wo, c), -np.inf)
    for dy in range(k):
        for dx in range(k):
            out = np.maximum(out, xp[:, dy:dy + s * (ho - 1) + 1:s,
                                     dx:dx + s * (wo - 1) + 1:s])
    return out


def _upsample(x: np.ndarray, layer: Upsample) -> np.ndarray:
    y = x.repeat(layer.stride, axis=1).repeat(layer.stride, axis=2)
    return y * float(dict(layer.extra).get("scale", "1"))


def _yolo_output(x: np.ndarray, layer: Yolo) -> np.ndarray:
    n, h, w, c = x.shape
    a = len(layer.mask)
    p = x.reshape(n, h, w, a, c // a).copy()
    s = layer.scale_x_y
    p[..., :2] = _sigmoid(p[..., :2]) * s - (s - 1) / 2
    p[..., 4:] = _sigmoid(p[..., 4:])
    return p.reshape(n, h, w, c)


def _decode(head: np.ndarray, layer: Yolo, input_hw: tuple[int, int]) -> np.ndarray:
    n, h, w, c = head.shape
    a = len(layer.mask)
    p = head.reshape(n, h, w, a, c // a).transpose(0, 3, 1, 2, 4)
    s = layer.scale_x_y
    xy = _sigmoid(p[..., :2]) * s - (s - 1) / 2
    cx = (xy[..., 0] + np.arange(w)) / w * input_hw[1]
    cy = (xy[..., 1] + np.arange(h)[:, None]) / h * input_hw[0]
    anchor_wh = np.asarray(layer.head_anchors, np.float64)[None, :, None, None, :]
    boxes = np.concatenate([cx[..., None], cy[..., None], np.exp(p[..., 2:4]) * anchor_wh,
                            _sigmoid(p[..., 4:])], axis=-1)
    return boxes.reshape(n, a * h * w, c // a)


_RULES: dict[type, Callable] = {
    Conv: lambda layer, ins, v, i, eps: _conv(ins[0], layer, v, i, eps),
    Shortcut: lambda layer, ins, v, i, eps: _shortcut(ins, layer),
    Route: lambda layer, ins, v, i, eps: _route(ins, layer),
    MaxPool: lambda layer, ins, v, i, eps: _maxpool(ins[0], layer),
    Upsample: lambda layer, ins, v, i, eps: _upsample(ins[0], layer),
    Yolo: lambda layer, ins, v, i, eps: _yolo_output(ins[0], layer),
}


def reference_forward(graph: ir.Graph, variables, x_nhwc, bn_eps: float = 1e-5
                      ) -> ForwardOut:
    """`runtime.forward`'s result computed in float64 numpy (heads and detections).

    Args:
        graph: a graph of the layer kinds the runtime executes (no `ir.Section`).
        variables: the project's variables pytree (numpy or jax arrays).
        x_nhwc: ``(N, H, W, C)`` images at the graph's input size.

    Returns:
        A `runtime.ForwardOut` holding float64 numpy arrays.
    """
    x = np.asarray(x_nhwc, np.float64)
    env: dict[int, np.ndarray] = {-1: x}
    for index, layer in enumerate(graph.layers):
        rule = _RULES.get(type(layer))
        if rule is None:
            raise ValueError(f"reference_forward: layer {index} is a [{layer.kind}], "
                             "which the runtime does not execute either")
        ins = [env[j] for j in ir.layer_inputs(graph, index)]
        env[index] = rule(layer, ins, variables, index, bn_eps)
    yolos = graph.yolo_indices()
    heads = tuple(env[i - 1] for i in yolos)
    hw = (x.shape[1], x.shape[2])
    decoded = [_decode(env[i - 1], graph.layers[i], hw) for i in yolos]
    detections = (np.concatenate(decoded, axis=1) if decoded
                  else np.zeros((x.shape[0], 0, 5)))
    return ForwardOut(heads=heads, detections=detections)
