"""An independent, plainly written NCHW reference executor for Darknet graphs (numpy).

Written from Darknet's C code (forward_*_layer in src/*.c), not from darkslim's
runtime: it shares nothing with `runtime/` but the parsed IR. Everything is float64
and NCHW; weights come in Darknet's own form (OIHW kernels, per-conv BN vectors), so
the tests also exercise the OIHW -> HWIO conversion they do on the way to Flax.

weights: ``{layer_index: {"kernel": OIHW, "bias": (O,)}}`` for a plain conv,
``{layer_index: {"kernel": OIHW, "gamma", "beta", "mean", "var": (O,)}}`` with BN.
"""

from __future__ import annotations

import numpy as np

import ir


def activate(x: np.ndarray, name: str) -> np.ndarray:
    """Darknet's activate() for the activations darkslim executes."""
    if name == "linear":
        return x
    if name == "leaky":
        return np.where(x > 0, x, 0.1 * x)
    if name == "relu":
        return x * (x > 0)
    if name == "logistic":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "swish":
        return x / (1.0 + np.exp(-x))
    if name == "mish":
        softplus = np.logaddexp(0.0, x)  # log(1 + e^x) without overflow
        return x * np.tanh(softplus)
    raise ValueError(f"reference has no activation {name!r}")


def conv2d(x: np.ndarray, kernel: np.ndarray, stride: int, pad: int,
           groups: int) -> np.ndarray:
    """Zero-padded grouped convolution, NCHW input, OIHW kernel (im2col by shifts)."""
    n, c, h, w = x.shape
    out_c, c_per_group, k, _ = kernel.shape
    out_h = (h + 2 * pad - k) // stride + 1
    out_w = (w + 2 * pad - k) // stride + 1
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    xp[:, :, pad:pad + h, pad:pad + w] = x
    out = np.zeros((n, out_c, out_h, out_w))
    o_per_group = out_c // groups
    for g in range(groups):
        xs = xp[:, g * c_per_group:(g + 1) * c_per_group]
        ks = kernel[g * o_per_group:(g + 1) * o_per_group]
        for ky in range(k):
            for kx in range(k):
                patch = xs[:, :, ky:ky + stride * (out_h - 1) + 1:stride,
                           kx:kx + stride * (out_w - 1) + 1:stride]
                out[:, g * o_per_group:(g + 1) * o_per_group] += np.einsum(
                    "ncij,oc->noij", patch, ks[:, :, ky, kx], optimize=True)
    return out


def maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """forward_maxpool_layer: offsets -padding/2, out-of-image cells skipped."""
    n, c, h, w = x.shape
    out_h = (h + padding - size) // stride + 1
    out_w = (w + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.full((n, c, out_h, out_w), -np.inf)
    for i in range(out_h):
        for j in range(out_w):
            for m in range(size):
                for k in range(size):
                    y = offset + i * stride + m
                    xx = offset + j * stride + k
                    if 0 <= y < h and 0 <= xx < w:
                        out[:, :, i, j] = np.maximum(out[:, :, i, j], x[:, :, y, xx])
    return out


def yolo_boxes(head: np.ndarray, layer: ir.Yolo, net_h: int, net_w: int) -> np.ndarray:
    """get_yolo_box for every anchor, row, column, in that order; box in net pixels."""
    n, _, h, w = head.shape
    entries = 5 + layer.classes
    rows = []
    for a, mask_index in enumerate(layer.mask):
        anchor_w, anchor_h = layer.anchors[mask_index]
        block = head[:, a * entries:(a + 1) * entries]  # n, entries, h, w
        s = layer.scale_x_y
        for i in range(h):
            for j in range(w):
                t = block[:, :, i, j]
                sx = 1 / (1 + np.exp(-t[:, 0])) * s - 0.5 * (s - 1)
                sy = 1 / (1 + np.exp(-t[:, 1])) * s - 0.5 * (s - 1)
                box = np.empty((n, entries))
                box[:, 0] = (j + sx) / w * net_w
                box[:, 1] = (i + sy) / h * net_h
                box[:, 2] = np.exp(t[:, 2]) * anchor_w
                box[:, 3] = np.exp(t[:, 3]) * anchor_h
                box[:, 4:] = 1 / (1 + np.exp(-t[:, 4:]))
                rows.append(box)
    return np.stack(rows, axis=1)


def run_reference(graph: ir.Graph, weights: dict, x_nchw: np.ndarray, bn_eps: float = 1e-5
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """Execute ``graph`` on ``x_nchw``. Returns (NCHW heads, detections)."""
    x = np.asarray(x_nchw, dtype=np.float64)
    net_h, net_w = x.shape[2], x.shape[3]
    outputs: list[np.ndarray] = []
    heads, boxes = [], []
    for index, layer in enumerate(graph.layers):
        prev = outputs[index - 1] if index else x
        if isinstance(layer, ir.Conv):
            wt = weights[index]
            pad = layer.size // 2 if layer.pad else layer.padding
            y = conv2d(prev, np.asarray(wt["kernel"], np.float64), layer.stride, pad,
                       layer.groups)
            if layer.batch_normalize:
                def col(v):
                    return np.asarray(v, np.float64)[None, :, None, None]
                y = (y - col(wt["mean"])) / np.sqrt(col(wt["var"]) + bn_eps)
                y = y * col(wt["gamma"]) + col(wt["beta"])
            else:
                y = y + np.asarray(wt["bias"], np.float64)[None, :, None, None]
            out = activate(y, layer.activation.value)
        elif isinstance(layer, ir.Shortcut):
            out = outputs[layer.inputs[0]].copy()
            for j in layer.inputs[1:]:
                add = outputs[j]
                common = min(out.shape[1], add.shape[1])
                out[:, :common] += add[:, :common]
            out = activate(out, layer.activation.value)
        elif isinstance(layer, ir.Route):
            parts = []
            for j in layer.inputs:
                part = outputs[j].shape[1] // layer.groups
                start = layer.group_id * part
                parts.append(outputs[j][:, start:start + part])
            out = np.concatenate(parts, axis=1)
        elif isinstance(layer, ir.Upsample):
            out = prev.repeat(layer.stride, axis=2).repeat(layer.stride, axis=3)
        elif isinstance(layer, ir.MaxPool):
            padding = layer.size - 1 if layer.padding is None else layer.padding
            out = maxpool(prev, layer.size, layer.stride, padding)
        elif isinstance(layer, ir.Yolo):
            heads.append(prev)
            boxes.append(yolo_boxes(prev, layer, net_h, net_w))
            # forward_yolo_layer's own output at inference: logistic on x, y (then
            # scale_x_y) and on objectness and classes; w, h raw.
            out = prev.copy()
            entries = 5 + layer.classes
            s = layer.scale_x_y
            for a in range(len(layer.mask)):
                base = a * entries
                out[:, base:base + 2] = 1 / (1 + np.exp(-prev[:, base:base + 2])) * s - (
                    0.5 * (s - 1))
                out[:, base + 4:base + entries] = 1 / (1 + np.exp(
                    -prev[:, base + 4:base + entries]))
        else:
            raise ValueError(f"reference cannot run layer {index} ({layer.kind})")
        outputs.append(out)
    return heads, np.concatenate(boxes, axis=1)
