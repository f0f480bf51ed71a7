"""The prune's equivalence check, on a small input, in float32 numpy.

`darkslim prune` checks its work by running three networks on one seeded random image
and comparing their raw heads (the last layer's output for a network without one),
each layer run by its kind's ``forward`` rule (`ir.kinds`) over float32 numpy
primitives:

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

The size (`check_size`) follows the network's real downsampling (`ir.total_stride`,
read off shape inference), capped at the cfg's own size and `MAX_CHECK_SIZE`.
Multiplying every layer's stride counted parallel downsampling branches once each:
yolov7x (at 256) was checked at 4096x4096 (509 s, 18 GB, against 1.3 s without the
check) and yolov4-sam-mish-csp-reorg-bfm asked numpy for 27 GiB (issue 19); both are
checked at 64x64 now.

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
from ir import Variables
from ir.activations import activate_xp
from ir.variables import layer_shapes
from passes import FoldPrunedBias, PruneResult, ZeroPrunedGamma, tensor_keeps, tree

# The check never runs above this size, whatever the cfg's: its three forwards at the
# cfg's own 1280 (yolov4-p6) would take minutes and gigabytes for what 128 shows.
MAX_CHECK_SIZE = 640


class CheckSizeError(ValueError):
    """No input size up to `MAX_CHECK_SIZE` at which the check can run the network."""


def check_size(graph: ir.Graph, minimum: int = 64, maximum: int = MAX_CHECK_SIZE) -> int:
    """The input size of the check: the smallest multiple of the network's total stride
    (`ir.total_stride`) that is at least ``minimum`` and at which it verifies, with
    the finest detection head at least 2 cells wide (a border and an inside) and every
    variable the shape it has at the cfg's size (a ``[connected]`` over a spatial map
    pins the size). The coarsest head may be a single cell: cspx-p7-mish's stride-128
    head is 1x1 at 128, where asking 2x2 of it would run the check at 256 (4x the
    FLOPs, 2.4x the wall of the prune itself). Never above
    the cfg's own size (``max(height, width)``) and ``maximum``: below ``minimum`` when
    the cfg is smaller (cifar's 32), the cfg's size when nothing smaller fits.

    Raises:
        CheckSizeError: only the cfg's size fits and it is above ``maximum``.
    """
    stride = ir.total_stride(graph)
    own = max(graph.height, graph.width)
    full = layer_shapes(graph)
    size = max(1, -(-min(minimum, own) // stride)) * stride
    while size < own and size <= maximum:
        small = ir.with_input_size(graph, size)
        try:
            shapes = ir.verify(small)
            fits = layer_shapes(small) == full
        except ir.CfgError:
            shapes, fits = (), False
        heads = [shapes[i - 1] for i in graph.head_indices()] if fits else []
        if fits and (not heads or max(min(s.h, s.w) for s in heads) >= 2):
            return size
        size += stride
    if own > maximum:
        raise CheckSizeError(
            f"{graph.path}: the prune check fits no input size from {minimum} to "
            f"{maximum} (total stride {stride}); only the cfg's own {own} does: expected "
            f"a network that runs below {maximum + 1}x{maximum + 1} (rerun with "
            "--check-size N to force a size, or --no-check)")
    return own


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


class _Tools:
    """float32 numpy primitives for the kinds' ``forward`` rules: convs as one BLAS
    product per group over strided windows, kernels read in their memory order."""

    xp = np
    train = False

    def __init__(self, variables: Variables, index: int, eps: float, input_hw) -> None:
        self.leaves = tree.leaves_of(variables, index)
        self.eps, self.input_hw = np.float32(eps), input_hw

    def _leaf(self, collection: str, part: str, name: str) -> np.ndarray:
        return np.asarray(self.leaves[(collection, part, name)], np.float32)

    def conv(self, x, *, features: int, size: int, stride: int, padding: int, groups: int,
             dilation: int, bias: bool) -> np.ndarray:
        k, s, p, g, d = size, stride, padding, groups, dilation
        n, h, w, c = x.shape
        span = d * (k - 1) + 1
        ho, wo = (h + 2 * p - span) // s + 1, (w + 2 * p - span) // s + 1
        if p:
            x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        # (n, ho, wo, c, kh, kw) windows, flattened in the order of the weights' rows.
        windows = np.lib.stride_tricks.sliding_window_view(x, (span, span), axis=(1, 2))
        windows = windows[:, ::s, ::s][:, :ho, :wo, :, ::d, ::d]
        kernel = self.leaves[("params", "conv", "kernel")]
        cg = c // g
        outs = []
        for j in range(g):
            weights, order = _matrix(kernel, g, j)
            part = windows[..., j * cg:(j + 1) * cg, :, :]
            if order == "hwc":
                part = part.transpose(0, 1, 2, 4, 5, 3)
            outs.append(part.reshape(n * ho * wo, cg * k * k) @ weights)
        y = (outs[0] if g == 1 else np.concatenate(outs, axis=1)).reshape(n, ho, wo, -1)
        return y + self._leaf("params", "conv", "bias") if bias else y

    def batch_norm(self, y, axis: int = -1) -> np.ndarray:
        scale = self._leaf("params", "bn", "scale") / np.sqrt(
            self._leaf("batch_stats", "bn", "var") + self.eps)
        return (y - self._leaf("batch_stats", "bn", "mean")) * scale \
            + self._leaf("params", "bn", "bias")

    def dense(self, x, *, features: int, bias: bool) -> np.ndarray:
        y = x @ self._leaf("params", "dense", "kernel")
        return y + self._leaf("params", "dense", "bias") if bias else y

    def activate(self, activation, x) -> np.ndarray:
        return activate_xp(np, activation, x).astype(np.float32, copy=False)


def _compared(graph: ir.Graph) -> tuple[int, ...]:
    """The tensors the check compares: every detection layer's input, else the last
    layer's output."""
    heads = graph.head_indices()
    return tuple(i - 1 for i in heads) if heads else (len(graph.layers) - 1,)


def heads_numpy(graph: ir.Graph, variables: Variables, x_nhwc: np.ndarray, *,
                zero_inputs: tuple[np.ndarray, ...] | None = None, bn_eps: float = 1e-5
                ) -> tuple[np.ndarray, ...]:
    """The raw maps feeding each detection layer (NHWC; the last layer's output for a
    network without one), in float32 numpy, no compilation: each kind's ``forward``.

    Args:
        graph: the network; ``x_nhwc`` must match its channels (any size it verifies at).
        variables: the project's variables pytree (numpy arrays).
        zero_inputs: per layer, a boolean channel mask of its output; every layer with
            variables (but a grouped conv) then reads its input with the masked-out
            channels zeroed (the keep-size network's zeroed kernel slices, without
            copying the kernels).
        bn_eps: BatchNorm epsilon (inside the square root).
    """
    x = np.asarray(x_nhwc, np.float32)
    hw = (x.shape[1], x.shape[2])
    sources = [ir.layer_inputs(graph, i) for i in range(len(graph.layers))]
    wanted = _compared(graph)
    last_use = {j: i for i, srcs in enumerate(sources) for j in srcs}
    last_use.update({j: len(graph.layers) for j in wanted})  # compared maps live on
    env: dict[int, np.ndarray] = {-1: x}
    for i, layer in enumerate(graph.layers):
        reason = ir.unsupported_reason(layer)
        if reason is not None:
            raise ValueError(f"{graph.path}:{layer.line}: [{layer.kind}] (layer {i}): "
                             f"the prune check cannot run it ({reason or 'not executed'})")
        ins = [env[j] for j in sources[i]]
        tools = _Tools(variables, ir.variables_owner(layer, i), bn_eps, hw)
        if (zero_inputs is not None and tools.leaves and sources[i][0] >= 0
                and getattr(layer, "groups", 1) == 1):
            keep = zero_inputs[sources[i][0]]
            if not keep.all():
                ins[0] = ins[0] * keep.astype(np.float32)
        env[i] = np.asarray(ir.spec_of(layer).forward(layer, tools, ins), np.float32)
        for j in sources[i]:
            if last_use.get(j) == i:
                del env[j]
    return tuple(env[j] for j in wanted)


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
                          for i, d in zip(_compared(graph), diffs) if d.ndim == 4],
    }
