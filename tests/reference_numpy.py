"""An independent, plainly written NCHW reference executor for Darknet graphs (numpy).

One module over 400 lines on purpose: one interpreter, one function per Darknet forward.

Written from Darknet's C code (forward_*_layer in src/*.c), not from darkslim's
runtime: it shares nothing with `runtime/` but the parsed IR. Everything is float64
and NCHW; weights come in Darknet's own form (OIHW kernels, per-conv BN vectors), so
the tests also exercise the OIHW -> HWIO conversion they do on the way to Flax.

weights: ``{layer_index: {"kernel": OIHW, "bias": (O,)}}`` for a plain conv,
``{layer_index: {"kernel": OIHW, "gamma", "beta", "mean", "var": (O,)}}`` with BN; a
``[connected]`` has ``"weights": (outputs, inputs)`` (Darknet's row-major layout, inputs
in NCHW order) instead of ``"kernel"``.

Activations follow Darknet's code paths (``activations.c``): the conv forward has the
special cases swish, mish, hard_mish and normalize_channels*, the shortcut forward swish
and mish, and ``activate_array`` ([sam], [scale_channels], [connected]) none of them.
``relu6`` is the CUDA kernel's clamp to [0, 6] (the CPU ``activate()`` has no case for it
and returns 0; darkslim follows the GPU build there).
"""

from __future__ import annotations

import numpy as np

import ir


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def _tanh_activate(x):
    return 2.0 / (1.0 + np.exp(-2.0 * x)) - 1.0  # tanh_activate, not tanhf


def _softplus(x, threshold=20.0):
    return np.where(x > threshold, x, np.where(x < -threshold, np.exp(np.minimum(x, 0.0)),
                                               np.log1p(np.exp(np.minimum(x, threshold)))))


def _stair(x):
    n = np.floor(x)
    odd = np.array([int(v) % 2 != 0 for v in n.ravel()]).reshape(x.shape)  # C's n % 2
    return np.where(odd, (x - n) + np.floor(x / 2.0), np.floor(x / 2.0))


#: activate(x, a) of activations.h, element by element.
_ELEMENTWISE = {
    "linear": lambda x: x,
    "logistic": _logistic,
    "loggy": lambda x: 2.0 / (1.0 + np.exp(-x)) - 1.0,
    "relu": lambda x: x * (x > 0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0.0), 6.0),  # the CUDA kernel's relu6
    "elu": lambda x: (x >= 0) * x + (x < 0) * (np.exp(np.minimum(x, 0.0)) - 1.0),
    "selu": lambda x: (x >= 0) * 1.0507 * x
    + (x < 0) * 1.0507 * 1.6732 * (np.exp(np.minimum(x, 0.0)) - 1.0),
    "gelu": lambda x: 0.5 * x * (1.0 + np.tanh(0.797885 * x + 0.035677 * x ** 3)),
    "relie": lambda x: np.where(x > 0, x, 0.01 * x),
    "ramp": lambda x: x * (x > 0) + 0.1 * x,
    "leaky": lambda x: np.where(x > 0, x, 0.1 * x),
    "revleaky": lambda x: np.where(x > 0, x, 0.1 * x),  # activate(): `case REVLEAKY:` = leaky
    "tanh": _tanh_activate,
    "plse": lambda x: np.where(x < -4, 0.01 * (x + 4),
                               np.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5)),
    "stair": _stair,
    "hardtan": lambda x: np.clip(x, -1.0, 1.0),
    "lhtan": lambda x: np.where(x < 0, 0.001 * x, np.where(x > 1, 0.001 * (x - 1) + 1, x)),
}


def normalize_channels(x: np.ndarray) -> np.ndarray:
    """activate_array_normalize_channels, NCHW: at each pixel, over channels k,
    ``sum = 0.0001 + Σ max(v, 0)``; ``v / sum`` where ``v > 0``, else 0."""
    out = np.zeros_like(x)
    n, c, h, w = x.shape
    for b in range(n):
        for y in range(h):
            for xx in range(w):
                v = x[b, :, y, xx]
                total = 0.0001 + v[v > 0].sum()
                out[b, :, y, xx] = np.where(v > 0, v / total, 0.0)
    return out


def normalize_channels_softmax(x: np.ndarray, use_max_val: bool) -> np.ndarray:
    """activate_array_normalize_channels_softmax: ``exp(v - m) / (0.0001 + Σ exp(v - m))``
    over channels, ``m`` the max only with ``use_max_val`` (else 0)."""
    out = np.zeros_like(x)
    n, c, h, w = x.shape
    for b in range(n):
        for y in range(h):
            for xx in range(w):
                v = x[b, :, y, xx]
                m = v.max() if use_max_val else 0.0
                e = np.exp(v - m)
                out[b, :, y, xx] = e / (0.0001 + e.sum())
    return out


_SPECIAL = {
    "swish": lambda x: x * _logistic(x),
    "mish": lambda x: x * _tanh_activate(_softplus(x)),
    "hard_mish": lambda x: np.where(x > 0, x, np.where(x > -2, x * x / 2 + x, 0.0)),
    "normalize_channels": normalize_channels,
    "normalize_channels_softmax": lambda x: normalize_channels_softmax(x, False),
    "normalize_channels_softmax_maxval": lambda x: normalize_channels_softmax(x, True),
}

#: Which special activations each forward function handles itself.
_PATHS = {"convolutional": frozenset(_SPECIAL), "shortcut": frozenset({"swish", "mish"}),
          "activate_array": frozenset()}


def activate(x: np.ndarray, name: str, path: str = "convolutional") -> np.ndarray:
    """The activation as the layer's forward applies it (see the module docstring);
    a special one its path does not handle falls into activate() and gives 0."""
    if name in _SPECIAL:
        return _SPECIAL[name](x) if name in _PATHS[path] else np.zeros_like(x)
    if name not in _ELEMENTWISE:
        raise ValueError(f"reference has no activation {name!r}")
    return _ELEMENTWISE[name](x)


def conv2d(x: np.ndarray, kernel: np.ndarray, stride: int, pad: int,
           groups: int, dilation: int = 1) -> np.ndarray:
    """Zero-padded grouped convolution, NCHW input, OIHW kernel (im2col by shifts).

    Dilation as im2col_cpu_ext: tap ``(ky, kx)`` reads ``(y·stride - pad·dilation +
    ky·dilation)``, while the output is sized without dilation (convolutional_layer.c).
    """
    n, c, h, w = x.shape
    out_c, c_per_group, k, _ = kernel.shape
    out_h = (h + 2 * pad - k) // stride + 1
    out_w = (w + 2 * pad - k) // stride + 1
    d = dilation
    pad = pad * d
    span = d * (k - 1)
    xp = np.zeros((n, c, max(h + 2 * pad, stride * (out_h - 1) + span + 1),
                   max(w + 2 * pad, stride * (out_w - 1) + span + 1)))
    xp[:, :, pad:pad + h, pad:pad + w] = x
    out = np.zeros((n, out_c, out_h, out_w))
    o_per_group = out_c // groups
    for g in range(groups):
        xs = xp[:, g * c_per_group:(g + 1) * c_per_group]
        ks = kernel[g * o_per_group:(g + 1) * o_per_group]
        for ky in range(k):
            for kx in range(k):
                patch = xs[:, :, d * ky:d * ky + stride * (out_h - 1) + 1:stride,
                           d * kx:d * kx + stride * (out_w - 1) + 1:stride]
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


def maxpool_depth(x: np.ndarray, out_channels: int) -> np.ndarray:
    """forward_maxpool_layer with maxpool_depth=1: output channel g is the max over input
    channels g, g + out_channels, g + 2·out_channels, ... at each pixel."""
    n, c, h, w = x.shape
    out = np.full((n, out_channels, h, w), -np.inf)
    for g in range(out_channels):
        for k in range(g, c, out_channels):
            out[:, g] = np.maximum(out[:, g], x[:, k])
    return out


def local_avgpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """forward_local_avgpool_layer: maxpool's window, mean over the in-image taps."""
    n, c, h, w = x.shape
    out_h = (h + padding - size) // stride + 1
    out_w = (w + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            total, count = np.zeros((n, c)), 0
            for m in range(size):
                for k in range(size):
                    y, xx = offset + i * stride + m, offset + j * stride + k
                    if 0 <= y < h and 0 <= xx < w:
                        total += x[:, :, y, xx]
                        count += 1
            out[:, :, i, j] = total / count
    return out


def reorg_cpu(x: np.ndarray, w: int, h: int, c: int, stride: int, forward: bool
              ) -> np.ndarray:
    """blas.c reorg_cpu on each image's flat NCHW buffer, loop for loop."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    out = np.zeros_like(flat)
    in_c = c // (stride * stride)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                in_index = i + w * (j + h * k)
                c2, offset = k % in_c, k // in_c
                w2 = i * stride + offset % stride
                h2 = j * stride + offset // stride
                out_index = w2 + w * stride * (h2 + h * stride * c2)
                if forward:
                    out[:, out_index] = flat[:, in_index]
                else:
                    out[:, in_index] = flat[:, out_index]
    return out


def softmax_cpu(x: np.ndarray, groups: int, temperature: float) -> np.ndarray:
    """forward_softmax_layer: softmax_cpu over each image's flat buffer in ``groups``
    contiguous chunks."""
    n = x.shape[0]
    flat = x.reshape(n, groups, -1)
    largest = flat.max(axis=-1, keepdims=True)
    e = np.exp(flat / temperature - largest / temperature)
    return (e / e.sum(axis=-1, keepdims=True)).reshape(x.shape)


def connected(x: np.ndarray, wt: dict, layer, bn_eps: float) -> np.ndarray:
    """forward_connected_layer: ``W · flat(x)`` over the NCHW-flattened input, then BN
    (running statistics) or the bias, then activate_array."""
    n = x.shape[0]
    y = x.reshape(n, -1) @ np.asarray(wt["weights"], np.float64).T
    if layer.batch_normalize:
        y = (y - wt["mean"]) / np.sqrt(np.asarray(wt["var"], np.float64) + bn_eps)
        y = y * wt["gamma"] + wt["beta"]
    else:
        y = y + wt["bias"]
    return activate(y, layer.activation.value, "activate_array").reshape(n, -1, 1, 1)


def crop(x: np.ndarray, layer) -> np.ndarray:
    """forward_crop_layer at inference: centred window, no flip, ``2x - 1`` unless
    noadjust."""
    n, c, h, w = x.shape
    dh, dw = (h - layer.crop_height) // 2, (w - layer.crop_width) // 2
    out = x[:, :, dh:dh + layer.crop_height, dw:dw + layer.crop_width]
    return out if layer.noadjust else out * 2.0 - 1.0


def _grid_box(t, i, j, h, w, net_h, net_w, sx, sy, bw, bh, rest) -> np.ndarray:
    box = np.empty((t.shape[0], 4 + rest.shape[1]))
    box[:, 0] = (j + sx) / w * net_w
    box[:, 1] = (i + sy) / h * net_h
    box[:, 2], box[:, 3] = bw, bh
    box[:, 4:] = rest
    return box


def yolo_boxes(head: np.ndarray, layer: ir.Yolo, net_h: int, net_w: int) -> np.ndarray:
    """get_yolo_box for every anchor, row, column, in that order; box in net pixels.
    With new_coords=1 nothing is activated (the conv before ends in a logistic) and
    ``w = (2·tw)²·anchor_w``."""
    n, _, h, w = head.shape
    entries = 5 + layer.classes
    rows = []
    s = layer.scale_x_y
    act = (lambda v: v) if layer.new_coords else _logistic
    for a, mask_index in enumerate(layer.mask):
        anchor_w, anchor_h = layer.anchors[mask_index]
        block = head[:, a * entries:(a + 1) * entries]  # n, entries, h, w
        for i in range(h):
            for j in range(w):
                t = block[:, :, i, j]
                sx = act(t[:, 0]) * s - 0.5 * (s - 1)
                sy = act(t[:, 1]) * s - 0.5 * (s - 1)
                if layer.new_coords:
                    bw = t[:, 2] * t[:, 2] * 4 * anchor_w
                    bh = t[:, 3] * t[:, 3] * 4 * anchor_h
                else:
                    bw, bh = np.exp(t[:, 2]) * anchor_w, np.exp(t[:, 3]) * anchor_h
                rows.append(_grid_box(t, i, j, h, w, net_h, net_w, sx, sy, bw, bh,
                                      act(t[:, 4:])))
    return np.stack(rows, axis=1)


def yolo_output(prev: np.ndarray, layer: ir.Yolo) -> np.ndarray:
    """forward_yolo_layer's own output at inference: logistic on x, y (then scale_x_y)
    and on objectness and classes, w, h raw; new_coords=1: only the scale_x_y."""
    out = prev.copy()
    entries = 5 + layer.classes
    s = layer.scale_x_y
    act = (lambda v: v) if layer.new_coords else _logistic
    for a in range(len(layer.mask)):
        base = a * entries
        out[:, base:base + 2] = act(prev[:, base:base + 2]) * s - 0.5 * (s - 1)
        out[:, base + 4:base + entries] = act(prev[:, base + 4:base + entries])
    return out


def gaussian_output(prev: np.ndarray, layer) -> np.ndarray:
    """forward_gaussian_yolo_layer: per anchor μx σx μy σy μw σw μh σh obj classes;
    the logistic on all but μw and μh, scale_x_y on μx and μy."""
    out = prev.copy()
    entries = 9 + layer.classes
    s = layer.scale_x_y
    for a in range(len(layer.mask)):
        base = a * entries
        for e in range(entries):
            if e not in (4, 6):
                out[:, base + e] = _logistic(prev[:, base + e])
        for e in (0, 2):
            out[:, base + e] = out[:, base + e] * s - 0.5 * (s - 1)
    return out


def gaussian_boxes(out: np.ndarray, layer, net_h: int, net_w: int) -> np.ndarray:
    """get_gaussian_yolo_box on the layer's output; class columns carry
    ``class · (1 - mean σ)`` so that objectness times them is Darknet's score."""
    n, _, h, w = out.shape
    entries = 9 + layer.classes
    rows = []
    for a, mask_index in enumerate(layer.mask):
        anchor_w, anchor_h = layer.anchors[mask_index]
        for i in range(h):
            for j in range(w):
                t = out[:, a * entries:(a + 1) * entries, i, j]
                bw, bh = np.exp(t[:, 4]) * anchor_w, np.exp(t[:, 6]) * anchor_h
                box = _grid_box(t, i, j, h, w, net_h, net_w, t[:, 0], t[:, 2], bw, bh,
                                t[:, 8:])
                if layer.yolo_point == "left_top":
                    box[:, 0] += bw / 2
                    box[:, 1] += bh / 2
                elif layer.yolo_point == "right_bottom":
                    box[:, 0] -= bw / 2
                    box[:, 1] -= bh / 2
                uncertainty = (t[:, 1] + t[:, 3] + t[:, 5] + t[:, 7]) / 4
                box[:, 5:] *= (1 - uncertainty)[:, None]
                rows.append(box)
    return np.stack(rows, axis=1)


def region_flat(prev: np.ndarray, layer) -> np.ndarray:
    """forward_region_layer's l.output per image: flatten() the NCHW buffer to
    (h·w, n·(coords + 1 + classes)), then per (location, anchor) the logistic on entry 4
    and, with softmax=1, a softmax over entries 5..5 + classes."""
    n, c, h, w = prev.shape
    size = layer.coords + 1 + layer.classes
    flat = np.empty((n, h * w, c))
    for k in range(c):  # flatten(): out[loc * c + k] = in[k * h·w + loc]
        flat[:, :, k] = prev[:, k].reshape(n, h * w)
    for a in range(layer.num):
        base = a * size
        flat[:, :, base + 4] = _logistic(flat[:, :, base + 4])
        if layer.softmax:
            cls = flat[:, :, base + 5:base + 5 + layer.classes]
            e = np.exp(cls - cls.max(axis=-1, keepdims=True))
            flat[:, :, base + 5:base + 5 + layer.classes] = e / e.sum(axis=-1, keepdims=True)
    return flat.reshape(n, -1)


def region_boxes(flat: np.ndarray, layer, h: int, w: int, net_h: int, net_w: int
                 ) -> np.ndarray:
    """get_region_box on the layer's flat output, rows anchor, y, x; anchors in grid
    cells, boxes in net pixels."""
    n = flat.shape[0]
    size = layer.coords + 1 + layer.classes
    out = flat.reshape(n, h * w, layer.num, size)
    rows = []
    for a in range(layer.num):
        anchor_w, anchor_h = layer.anchors[a]
        for i in range(h):
            for j in range(w):
                t = out[:, i * w + j, a]
                bw = np.exp(t[:, 2]) * anchor_w / w * net_w
                bh = np.exp(t[:, 3]) * anchor_h / h * net_h
                rows.append(_grid_box(t, i, j, h, w, net_h, net_w, _logistic(t[:, 0]),
                                      _logistic(t[:, 1]), bw, bh, t[:, 4:5 + layer.classes]))
    return np.stack(rows, axis=1)


def run_reference(graph: ir.Graph, weights: dict, x_nchw: np.ndarray, bn_eps: float = 1e-5
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """Execute ``graph`` on ``x_nchw``. Returns (NCHW heads, detections)."""
    heads, detections, _ = run_reference_all(graph, weights, x_nchw, bn_eps)
    return heads, detections


def _bn(y: np.ndarray, wt: dict, eps: float) -> np.ndarray:
    def col(v):
        return np.asarray(v, np.float64)[None, :, None, None]
    y = (y - col(wt["mean"])) / np.sqrt(col(wt["var"]) + eps)
    return y * col(wt["gamma"]) + col(wt["beta"])


def run_reference_all(graph: ir.Graph, weights: dict, x_nchw: np.ndarray,
                      bn_eps: float = 1e-5) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Execute ``graph`` on ``x_nchw``. Returns (NCHW heads, detections, output): the
    network's output as Darknet's flat ``l.output`` per image, ``(N, outputs)``, of the
    last layer that is not a [cost] (``get_network_output`` skips them)."""
    x = np.asarray(x_nchw, dtype=np.float64)
    net_h, net_w = x.shape[2], x.shape[3]
    outputs: list[np.ndarray] = []
    flats: list[np.ndarray] = []   # Darknet's l.output, where it is not NCHW ([region])
    heads, boxes = [], []
    for index, layer in enumerate(graph.layers):
        prev = outputs[index - 1] if index else x
        flat = None
        if isinstance(layer, ir.Conv):
            wt = weights[index]
            pad = layer.size // 2 if layer.pad else layer.padding
            y = conv2d(prev, np.asarray(wt["kernel"], np.float64), layer.stride, pad,
                       layer.groups, layer.dilation)
            if layer.batch_normalize:
                y = _bn(y, wt, bn_eps)
            else:
                y = y + np.asarray(wt["bias"], np.float64)[None, :, None, None]
            out = activate(y, layer.activation.value, "convolutional")
        elif isinstance(layer, ir.Shortcut):
            out = outputs[layer.inputs[0]].copy()
            for j in layer.inputs[1:]:
                add = outputs[j]
                common = min(out.shape[1], add.shape[1])
                out[:, :common] += add[:, :common]
            out = activate(out, layer.activation.value, "shortcut")
        elif isinstance(layer, ir.Route):
            parts = []
            for j in layer.inputs:
                part = outputs[j].shape[1] // layer.groups
                start = layer.group_id * part
                parts.append(outputs[j][:, start:start + part])
            out = np.concatenate(parts, axis=1)
        elif isinstance(layer, ir.Upsample):
            out = prev.repeat(layer.stride, axis=2).repeat(layer.stride, axis=3)
        elif isinstance(layer, ir.MaxPool) and layer.depth:
            out = maxpool_depth(prev, layer.out_channels)
        elif isinstance(layer, ir.MaxPool):
            padding = layer.size - 1 if layer.padding is None else layer.padding
            out = maxpool(prev, layer.size, layer.stride, padding)
        elif isinstance(layer, ir.LocalAvgPool):
            padding = layer.size - 1 if layer.padding is None else layer.padding
            out = local_avgpool(prev, layer.size, layer.stride, padding)
        elif isinstance(layer, ir.AvgPool):
            out = prev.mean(axis=(2, 3), keepdims=True)
        elif isinstance(layer, (ir.Dropout, ir.Cost)):
            out = prev  # identity at inference ([cost]'s own zeros are never read here)
        elif isinstance(layer, ir.Crop):
            out = crop(prev, layer)
        elif isinstance(layer, ir.Softmax):
            out = softmax_cpu(prev, layer.groups, layer.temperature)
        elif isinstance(layer, ir.Connected):
            out = connected(prev, weights[index], layer, bn_eps)
        elif isinstance(layer, ir.Sam):  # prev · from, then activate_array
            out = activate(outputs[layer.inputs[0]] * outputs[layer.inputs[1]],
                           layer.activation.value, "activate_array")
        elif isinstance(layer, ir.ScaleChannels):  # from · prev (1x1xC or HxWx1)
            out = activate(outputs[layer.inputs[1]] * outputs[layer.inputs[0]],
                           layer.activation.value, "activate_array")
        elif isinstance(layer, (ir.Reorg3d, ir.Reorg)):
            n, c, h, w = prev.shape
            s = layer.stride
            oc, oh, ow = ((c // (s * s), h * s, w * s) if layer.reverse
                          else (c * s * s, h // s, w // s))
            # [reorg3d] (reorg_layer.c) passes the output dims, [reorg]
            # (reorg_old_layer.c) the input dims; both forward = reverse.
            dims = (ow, oh, oc) if isinstance(layer, ir.Reorg3d) else (w, h, c)
            out = reorg_cpu(prev, *dims, s, layer.reverse).reshape(n, oc, oh, ow)
        elif isinstance(layer, ir.Yolo):
            heads.append(prev)
            boxes.append(yolo_boxes(prev, layer, net_h, net_w))
            out = yolo_output(prev, layer)
        elif isinstance(layer, ir.GaussianYolo):
            heads.append(prev)
            out = gaussian_output(prev, layer)
            boxes.append(gaussian_boxes(out, layer, net_h, net_w))
        elif isinstance(layer, ir.Region):
            heads.append(prev)
            flat = region_flat(prev, layer)
            boxes.append(region_boxes(flat, layer, prev.shape[2], prev.shape[3], net_h, net_w))
            out = prev  # its flat buffer is not NCHW; nothing in these tests reads it
        else:
            raise ValueError(f"reference cannot run layer {index} ({layer.kind})")
        outputs.append(out)
        flats.append(out.reshape(out.shape[0], -1) if flat is None else flat)
    last = max(i for i, layer in enumerate(graph.layers) if not isinstance(layer, ir.Cost))
    width = max((b.shape[-1] for b in boxes), default=5)
    boxes = [np.concatenate([b, np.zeros((*b.shape[:2], width - b.shape[-1]))], axis=-1)
             for b in boxes]
    detections = (np.concatenate(boxes, axis=1) if boxes
                  else np.zeros((x.shape[0], 0, 5)))
    return heads, detections, flats[last]
