"""The prune's equivalence check, on a small input, in float32 numpy.

`darkslim prune` checks its work by running three networks on one seeded random image
and comparing their raw ``[yolo]`` heads:

- keep-size (`passes.PruneResult.keep_size`: masks applied, constants folded, shapes
  unchanged) against compact: the identity the prune rests on, float32 rounding;
- γ-zeroed (the seed's check network) against compact: the border effect of folding a
  dropped channel's constant into a k×k consumer, where its window reads zero padding.

Neither needs the cfg's resolution. Folding is exact for every output cell whose
receptive field stays off the padding, at any input size, so the keep-size identity
holds at a small size exactly as at 416; the border effect lives in the cells near the
edge and is reported per distance from the edge (ring 0 is the outermost row and
column of a head), so it reads the same way at any size. At 64×64 (the default for
yolov3's stride of 32) the three forwards cost ~1/40 of the FLOPs they cost at 416,
and run here in numpy without importing or compiling jax: for yolov3 this takes a
fraction of a second where the compiled check at 416 took ~6 s and ~1 GB.

Memory: the keep-size network is not materialised. Its kernels differ from the
original's only by zeroed input channels (`passes.FoldPrunedBias`'s
``zero_dropped_inputs``), and ``W·(x·keep) = (W·keep)·x``: the forward zeroes those
channels of the (small) activation instead of copying every kernel. Kernels are read
in their OIHW memory order when they are views of a weights file (no copy), and each
activation is dropped once its last reader has run.

Threads: the products are small (a 2×2 head gives a 4-row matrix), where a
multi-threaded BLAS spends its time waking and waiting for threads, catastrophically
so when other processes share the cores (yolov3 on 2 busy cores: 5.5 s with OpenBLAS's
threads, 0.45 s with one). The check runs BLAS on one thread (threadpoolctl).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import ir
from ir import Conv, MaxPool, Route, Shortcut, Upsample, Yolo
from passes import FoldPrunedBias, PruneResult, ZeroPrunedGamma, tensor_keeps
from passes.arrays import activate
from passes.tree import BETA, CONV_BIAS, GAMMA, KERNEL, MEAN, VAR, get


def check_size(graph: ir.Graph, minimum: int = 64) -> int:
    """The smallest multiple of the network's total stride that is at least
    ``minimum`` (a size every layer verifies at, with a head at least 2 cells wide)."""
    stride = 1
    for layer in graph.layers:
        if isinstance(layer, (Conv, MaxPool)):
            stride *= layer.stride
    return max(1, -(-minimum // stride)) * stride


def _matrix(kernel, groups: int, group: int) -> tuple[np.ndarray, str]:
    """Group ``group``'s weights as a matrix, read without copying when the kernel is
    C-contiguous HWIO (``"hwc"``: rows ordered kh, kw, c) or a view of a weights
    file's OIHW buffer (``"chw"``: the transpose, rows ordered c, kh, kw)."""
    kernel = np.asarray(kernel)
    k, _, cg, out = kernel.shape
    og = out // groups
    oihw = kernel.transpose(3, 2, 0, 1)
    if oihw.flags.c_contiguous:
        return oihw[group * og:(group + 1) * og].reshape(og, cg * k * k).T, "chw"
    if not kernel.flags.c_contiguous:
        kernel = np.ascontiguousarray(kernel)
    return kernel[..., group * og:(group + 1) * og].reshape(k * k * cg, og), "hwc"


def _conv(x: np.ndarray, layer: Conv, variables, index: int, eps: float) -> np.ndarray:
    k, s, p, g = layer.size, layer.stride, layer.pad_pixels, layer.groups
    n, h, w, c = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    if p:
        x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    # (n, ho, wo, c, kh, kw) windows, flattened in the order of the weights' rows.
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    windows = windows[:, ::s, ::s][:, :ho, :wo]
    kernel = get(variables, index, KERNEL)
    cg = c // g
    outs = []
    for j in range(g):
        weights, order = _matrix(kernel, g, j)
        part = windows[..., j * cg:(j + 1) * cg, :, :]
        if order == "hwc":
            part = part.transpose(0, 1, 2, 4, 5, 3)
        outs.append(part.reshape(n * ho * wo, cg * k * k) @ weights)
    y = (outs[0] if g == 1 else np.concatenate(outs, axis=1)).reshape(n, ho, wo, -1)
    if layer.batch_normalize:
        scale = np.asarray(get(variables, index, GAMMA), np.float32) / np.sqrt(
            np.asarray(get(variables, index, VAR), np.float32) + np.float32(eps))
        y = (y - np.asarray(get(variables, index, MEAN), np.float32)) * scale \
            + np.asarray(get(variables, index, BETA), np.float32)
    else:
        y = y + np.asarray(get(variables, index, CONV_BIAS), np.float32)
    return activate(layer.activation, y).astype(np.float32, copy=False)


def _shortcut(inputs, layer: Shortcut) -> np.ndarray:
    out = inputs[0]
    c = out.shape[-1]
    for x in inputs[1:]:  # Darknet: the common channels add, inputs[0] keeps its count
        m = min(c, x.shape[-1])
        out = np.concatenate([out[..., :m] + x[..., :m], out[..., m:]], axis=-1)
    return activate(layer.activation, out)


def _route(inputs, layer: Route) -> np.ndarray:
    parts = [x[..., layer.group_id * (x.shape[-1] // layer.groups):
               (layer.group_id + 1) * (x.shape[-1] // layer.groups)] for x in inputs]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def _maxpool(x: np.ndarray, layer: MaxPool) -> np.ndarray:
    lo = layer.pad_total // 2
    x = np.pad(x, ((0, 0), (lo, layer.pad_total - lo), (lo, layer.pad_total - lo), (0, 0)),
               constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (layer.size, layer.size),
                                                       axis=(1, 2))
    return windows[:, ::layer.stride, ::layer.stride].max(axis=(-2, -1))


def _upsample(x: np.ndarray, layer: Upsample) -> np.ndarray:
    y = x.repeat(layer.stride, axis=1).repeat(layer.stride, axis=2)
    scale = float(dict(layer.extra).get("scale", "1"))
    return y if scale == 1.0 else y * np.float32(scale)


def heads_numpy(graph: ir.Graph, variables: Any, x_nhwc: np.ndarray, *,
                zero_inputs: tuple[np.ndarray, ...] | None = None, bn_eps: float = 1e-5
                ) -> tuple[np.ndarray, ...]:
    """The raw maps feeding each ``[yolo]`` (NHWC), in float32 numpy, no compilation.

    Args:
        graph: the network; ``x_nhwc`` must match its channels (any size it verifies at).
        variables: the project's variables pytree (numpy arrays).
        zero_inputs: per layer, a boolean channel mask of its output; every ungrouped
            conv then reads its input with the masked-out channels zeroed (the
            keep-size network's zeroed kernel slices, without copying the kernels).
        bn_eps: BatchNorm epsilon (inside the square root).
    """
    x = np.asarray(x_nhwc, np.float32)
    sources = [ir.layer_inputs(graph, i) for i in range(len(graph.layers))]
    yolos = graph.yolo_indices()
    last_use = {j: i for i, srcs in enumerate(sources) for j in srcs}
    last_use.update({i - 1: len(graph.layers) for i in yolos})  # heads live to the end
    env: dict[int, np.ndarray] = {-1: x}
    for i, layer in enumerate(graph.layers):
        ins = [env[j] for j in sources[i]]
        if isinstance(layer, Conv):
            a = ins[0]
            if zero_inputs is not None and layer.groups == 1 and i > 0:
                keep = zero_inputs[i - 1]
                if not keep.all():
                    a = a * keep.astype(np.float32)
            out = _conv(a, layer, variables, i, bn_eps)
        elif isinstance(layer, Shortcut):
            out = _shortcut(ins, layer)
        elif isinstance(layer, Route):
            out = _route(ins, layer)
        elif isinstance(layer, MaxPool):
            out = _maxpool(ins[0], layer)
        elif isinstance(layer, Upsample):
            out = _upsample(ins[0], layer)
        elif isinstance(layer, Yolo):
            out = ins[0]  # the head is its input; decoding is not compared
        else:
            raise ValueError(f"{graph.path}:{layer.line}: [{layer.kind}] (layer {i}): "
                             "the prune check cannot run this layer kind")
        env[i] = out
        for j in sources[i]:
            if last_use.get(j) == i:
                del env[j]
    return tuple(env[i - 1] for i in yolos)


def _rings(diff: np.ndarray) -> list[float]:
    """Max over batch and channels of ``diff`` (N, H, W, C), per distance from the
    edge: ring d holds the cells d rows or columns in from the nearest edge."""
    _, h, w, _ = diff.shape
    per_cell = diff.max(axis=(0, 3))
    dist = np.minimum.outer(np.minimum(np.arange(h), np.arange(h)[::-1]),
                            np.minimum(np.arange(w), np.arange(w)[::-1]))
    return [float(per_cell[dist == d].max()) for d in range(int(dist.max()) + 1)]


def measure_prune_diffs(graph: ir.Graph, result: PruneResult, *, size: int | None = None,
                        seed: int = 0, bn_eps: float = 1e-5) -> dict[str, Any]:
    """Keep-size vs compact and γ-zeroed vs compact on one seeded random image.

    Args:
        graph: the network that was pruned (``result.original``'s graph).
        result: the prune.
        size: input width and height; default `check_size` (64 for yolov3).
        seed: the random input.
        bn_eps: BatchNorm epsilon.

    Returns:
        ``check_size`` [h, w]; ``max_abs_diff_keepsize_vs_compact`` (float32
        rounding); ``max_abs_diff_gamma_zeroed_vs_compact`` (the border effect) and
        ``border_effect``: per head, its ``layer``, ``grid`` and
        ``max_abs_diff_by_ring`` (γ-zeroed vs compact, ring 0 = the outermost cells).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _measure(graph, result, size or check_size(graph), seed, bn_eps)


def _measure(graph: ir.Graph, result: PruneResult, size: int, seed: int, bn_eps: float
             ) -> dict[str, Any]:
    original, variables = result.original
    compact_graph, compact_vars = result.compact
    small = ir.with_input_size(original, size)
    rng = np.random.default_rng(seed)
    x = rng.random((1, size, size, graph.channels), dtype=np.float32)

    compact = heads_numpy(ir.with_input_size(compact_graph, size), compact_vars, x,
                          bn_eps=bn_eps)
    _, folded = FoldPrunedBias(result.masks, zero_dropped_inputs=False)(original, variables)
    keep = heads_numpy(small, folded, x, bn_eps=bn_eps,
                       zero_inputs=tensor_keeps(original, result.masks))
    del folded
    keep_diff = max(float(np.abs(a - b).max()) for a, b in zip(keep, compact))
    del keep
    zeroed = heads_numpy(small, ZeroPrunedGamma(result.masks)(original, variables)[1], x,
                         bn_eps=bn_eps)
    diffs = [np.abs(a - b) for a, b in zip(zeroed, compact)]
    return {
        "check_size": [size, size],
        "max_abs_diff_keepsize_vs_compact": keep_diff,
        "max_abs_diff_gamma_zeroed_vs_compact": max(float(d.max()) for d in diffs),
        "border_effect": [{"layer": i, "grid": [d.shape[1], d.shape[2]],
                           "max_abs_diff_by_ring": _rings(d)}
                          for i, d in zip(graph.yolo_indices(), diffs)],
    }
