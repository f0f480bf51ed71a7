"""Execute a Darknet `ir.Graph` as a Flax (linen) module, NHWC.

`DarknetModule` is an interpreter: it walks ``graph.layers`` in order, keeps every
layer's output in an environment keyed by layer index (``-1`` is the image) and
dispatches each layer through ``_RULES``, a table ``{layer type: rule}``. A new layer
kind means one rule here (and one dataclass in ``ir``).

Layout: images come in NHWC, heads go out NHWC (``(N, H, W, anchors * (5 + classes))``).
Darknet and torch lay the same maps out NCHW; only the frontends and the CLI transpose.

Variables follow the project layout, ``layer_{i}`` with ``i`` the absolute layer index::

    {"params": {"layer_0": {"conv": {"kernel": HWIO}, "bn": {"scale", "bias"}}, ...},
     "batch_stats": {"layer_0": {"bn": {"mean", "var"}}, ...}}

A conv without ``batch_normalize`` has ``conv.bias`` and no ``bn``.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import ir
from ir import Activation, CfgError, Conv, MaxPool, Route, Section, Shortcut, Upsample, Yolo
from passes.arrays import ACTIVATIONS as XP_ACTIVATIONS


class ForwardOut(NamedTuple):
    """What a forward pass returns.

    Attributes:
        heads: the raw NHWC map feeding each ``[yolo]`` layer, in cfg order, shape
            ``(N, H, W, len(mask) * (5 + classes))``.
        detections: ``(N, boxes, 5 + classes)`` decoded as Darknet does at inference,
            columns ``(cx, cy, w, h, objectness, class scores...)`` with the box in
            input pixels; boxes ordered head, anchor, y, x (see `decode_yolo`).
    """

    heads: tuple[jax.Array, ...]
    detections: jax.Array


class UnsupportedLayerError(CfgError):
    """A layer (or a key of one) the runtime cannot execute yet.

    ``model.cfg:42: [sam] (layer 12) not supported yet by the runtime``
    """


# ----------------------------------------------------------------------------- checks

# Keys Darknet reads that change what a layer computes, each with a test for the
# values that leave it unchanged; any other value makes the layer unsupported. Keys not
# listed (learning rates, ``stopbackward``, ``dontload``, ...) only matter in training
# or weight loading and are ignored here.
def _equals(*allowed: float) -> Callable[[object, str], bool]:
    def test(layer, value: str) -> bool:
        try:
            return float(value) in allowed
        except ValueError:
            return False
    return test


def _same_stride(layer, value: str) -> bool:
    return value in ("-1", str(layer.stride))


def _never(layer, value: str) -> bool:
    return False


def _is(*allowed: str) -> Callable[[object, str], bool]:
    return lambda layer, value: value in allowed


_NOOP_KEYS: dict[type, dict[str, Callable[[object, str], bool]]] = {
    Conv: {"dilation": _equals(1), "stride_x": _same_stride, "stride_y": _same_stride,
           "binary": _equals(0), "xnor": _equals(0), "antialiasing": _equals(0),
           "share_index": _never, "deform": _equals(0), "sway": _equals(0),
           "rotate": _equals(0), "stretch": _equals(0), "stretch_sway": _equals(0),
           "coordconv": _equals(0), "assisted_excitation": _equals(0)},
    Shortcut: {"weights_type": _is("none"), "alpha": _equals(1), "beta": _equals(1)},
    Route: {},
    Upsample: {},
    MaxPool: {"stride_x": _same_stride, "stride_y": _same_stride,
              "maxpool_depth": _equals(0), "antialiasing": _equals(0),
              "out_channels": _never},
    Yolo: {"new_coords": _equals(0)},
}


def _unsupported_reason(layer: ir.Layer) -> str | None:
    """None when the runtime executes ``layer``, else what it cannot do ("" = all)."""
    if isinstance(layer, Section):
        return ""
    if isinstance(layer, Upsample) and layer.stride < 0:
        return f"stride={layer.stride} (reverse upsample, i.e. sum-pooling)"
    rules = _NOOP_KEYS[type(layer)]
    for key, value in layer.extra:
        if key in rules and not rules[key](layer, value):
            return f"{key}={value}"
    return None


def check_supported(graph: ir.Graph) -> None:
    """Raise `UnsupportedLayerError` for the first layer the runtime cannot execute.

    Every `ir.Section` is unsupported, and so is a known layer with a key that changes
    its meaning (a dilated conv, a weighted shortcut, ``new_coords`` yolo, ...).
    """
    for index, layer in enumerate(graph.layers):
        reason = _unsupported_reason(layer)
        if reason is not None:
            what = f" {reason}" if reason else ""
            raise UnsupportedLayerError(
                f"(layer {index}){what} not supported yet by the runtime",
                path=layer.path or graph.path, line=layer.line, section=layer.kind)


# ------------------------------------------------------------------------------ rules

# One definition of Darknet's activations for the passes (numpy or jax) and here.
ACTIVATIONS: dict[Activation, Callable[[jax.Array], jax.Array]] = {
    activation: functools.partial(fn, jnp) for activation, fn in XP_ACTIVATIONS.items()}


# Darknet's make_convolutional_layer: weights ~ U(-sqrt(2 / fan_in), +sqrt(2 / fan_in)),
# fan_in = size * size * in_channels / groups; U(-a, a) has variance a^2 / 3.
darknet_kernel_init = nn.initializers.variance_scaling(2.0 / 3.0, "fan_in", "uniform")


class _ConvBlock(nn.Module):
    """``[convolutional]``: conv, then BatchNorm if ``batch_normalize``, then activation."""

    layer: Conv
    bn_eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layer = self.layer
        p = layer.pad_pixels
        y = nn.Conv(layer.filters, (layer.size, layer.size),
                    strides=(layer.stride, layer.stride), padding=((p, p), (p, p)),
                    feature_group_count=layer.groups, use_bias=not layer.batch_normalize,
                    kernel_init=darknet_kernel_init, name="conv")(x)
        if layer.batch_normalize:
            # Darknet: (x - mean) / sqrt(var + eps) * γ + β, and in training the
            # rolling statistics move by .99 / .01 -- Flax's momentum=0.99.
            y = nn.BatchNorm(use_running_average=not train, momentum=0.99,
                             epsilon=self.bn_eps, name="bn")(y)
        return ACTIVATIONS[layer.activation](y)


def _conv(module, index: int, layer: Conv, inputs, train: bool):
    return _ConvBlock(layer, bn_eps=module.bn_eps, name=f"layer_{index}")(inputs[0], train)


def _shortcut(module, index: int, layer: Shortcut, inputs, train: bool):
    # Darknet adds over the common channels and keeps the previous layer's count:
    # extra channels of inputs[0] pass through, extra channels of the others are dropped.
    out = inputs[0]
    channels = out.shape[-1]
    for x in inputs[1:]:
        x = x[..., :channels]
        missing = channels - x.shape[-1]
        if missing:
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, missing)))
        out = out + x
    return ACTIVATIONS[layer.activation](out)


def _route(module, index: int, layer: Route, inputs, train: bool):
    # With groups, Darknet splits each input into `groups` equal channel slices and
    # takes slice `group_id` of each (CSP / yolov4-tiny).
    parts = []
    for x in inputs:
        size = x.shape[-1] // layer.groups
        parts.append(x[..., layer.group_id * size:(layer.group_id + 1) * size])
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def _upsample(module, index: int, layer: Upsample, inputs, train: bool):
    x = jnp.repeat(jnp.repeat(inputs[0], layer.stride, axis=1), layer.stride, axis=2)
    scale = float(dict(layer.extra).get("scale", "1"))
    return x if scale == 1.0 else x * scale


def _maxpool(module, index: int, layer: MaxPool, inputs, train: bool):
    # Darknet: out = (h + pad - size) // stride + 1, the window starts pad // 2 above
    # and left of the image, and cells outside it never win (-inf padding). With the
    # default pad = size - 1, tiny's size=2 stride=1 pool pads right and bottom only.
    # Max is separable: rows, then columns, each the max of `size` strided slices.
    # Same values as nn.max_pool, and its gradient is ~20x cheaper on the CPU than
    # XLA's select-and-scatter (the demo's train step: 194 -> 140 ms).
    lo = layer.pad_total // 2
    hi = layer.pad_total - lo
    x = jnp.pad(inputs[0], ((0, 0), (lo, hi), (lo, hi), (0, 0)), constant_values=-jnp.inf)
    for axis in (1, 2):
        out = (x.shape[axis] - layer.size) // layer.stride + 1
        parts = [jax.lax.slice_in_dim(x, d, d + layer.stride * (out - 1) + 1,
                                      layer.stride, axis) for d in range(layer.size)]
        x = functools.reduce(jnp.maximum, parts)
    return x


def _yolo(module, index: int, layer: Yolo, inputs, train: bool):
    # The layer's own output, as Darknet's forward_yolo_layer leaves it at inference:
    # logistic on x, y (then scale_x_y), objectness and classes; w, h stay raw.
    x = inputs[0]
    n, h, w, c = x.shape
    p = x.reshape(n, h, w, len(layer.mask), c // len(layer.mask))
    s = layer.scale_x_y
    xy = jax.nn.sigmoid(p[..., :2]) * s - (s - 1) / 2
    p = jnp.concatenate([xy, p[..., 2:4], jax.nn.sigmoid(p[..., 4:])], axis=-1)
    return p.reshape(n, h, w, c)


_RULES: dict[type, Callable] = {
    Conv: _conv,
    Shortcut: _shortcut,
    Route: _route,
    Upsample: _upsample,
    MaxPool: _maxpool,
    Yolo: _yolo,
}


def decode_yolo(head: jax.Array, layer: Yolo, input_hw: tuple[int, int]) -> jax.Array:
    """Decode one raw NHWC head into boxes the way Darknet does at inference.

    ``x = (sigmoid(tx) * s - (s - 1) / 2 + grid_x) / grid_w * input_w`` (same for y),
    ``w = exp(tw) * anchor_w``, ``h = exp(th) * anchor_h`` (anchors in input pixels),
    objectness and class scores through the logistic. Darknet multiplies objectness
    into the class scores only when thresholding; here they stay apart.

    Args:
        head: ``(N, H, W, len(mask) * (5 + classes))`` raw conv output.
        layer: the `ir.Yolo` it feeds.
        input_hw: the network input's (height, width) in pixels.

    Returns:
        ``(N, len(mask) * H * W, 5 + classes)``, boxes ordered anchor, y, x.
    """
    n, h, w, c = head.shape
    anchors = len(layer.mask)
    p = head.reshape(n, h, w, anchors, c // anchors).transpose(0, 3, 1, 2, 4)
    s = layer.scale_x_y
    xy = jax.nn.sigmoid(p[..., :2]) * s - (s - 1) / 2
    cx = (xy[..., 0] + jnp.arange(w, dtype=p.dtype)) / w * input_hw[1]
    cy = (xy[..., 1] + jnp.arange(h, dtype=p.dtype)[:, None]) / h * input_hw[0]
    anchor_wh = jnp.asarray(layer.head_anchors, dtype=p.dtype)[None, :, None, None, :]
    wh = jnp.exp(p[..., 2:4]) * anchor_wh
    boxes = jnp.concatenate([cx[..., None], cy[..., None], wh,
                             jax.nn.sigmoid(p[..., 4:])], axis=-1)
    return boxes.reshape(n, anchors * h * w, c // anchors)


class DarknetModule(nn.Module):
    """A Darknet network as a Flax module (NHWC in, NHWC heads out).

    Attributes:
        graph: the network; it must verify at the input's spatial size.
        bn_eps: BatchNorm epsilon, Darknet's 1e-5 by default (inside the sqrt).

    Call it as ``module.apply(variables, x_nhwc)`` with ``x_nhwc`` float of shape
    ``(N, H, W, graph.channels)``; ``train=True`` normalises with batch statistics
    and updates ``batch_stats`` (pass ``mutable=["batch_stats"]``).
    """

    graph: ir.Graph
    bn_eps: float = 1e-5

    @nn.compact
    def __call__(self, x_nhwc: jax.Array, train: bool = False) -> ForwardOut:
        graph = self.graph
        check_supported(graph)
        if x_nhwc.ndim != 4 or x_nhwc.shape[-1] != graph.channels:
            raise ValueError(f"{graph.path}: input of shape {tuple(x_nhwc.shape)}: "
                             f"expected NHWC (N, H, W, {graph.channels})")
        input_hw = (x_nhwc.shape[1], x_nhwc.shape[2])
        ir.verify(ir.with_input_size(graph, *input_hw))  # shape errors name the cfg line
        env: dict[int, jax.Array] = {-1: x_nhwc}
        for index, layer in enumerate(graph.layers):
            inputs = tuple(env[j] for j in ir.layer_inputs(graph, index))
            env[index] = _RULES[type(layer)](self, index, layer, inputs, train)
        yolos = graph.yolo_indices()
        heads = tuple(env[i - 1] for i in yolos)
        decoded = [decode_yolo(env[i - 1], graph.layers[i], input_hw) for i in yolos]
        if decoded:
            detections = jnp.concatenate(decoded, axis=1)
        else:
            detections = jnp.zeros((x_nhwc.shape[0], 0, 5), x_nhwc.dtype)
        return ForwardOut(heads=heads, detections=detections)


def init_variables(graph: ir.Graph, seed: int = 0) -> dict:
    """Freshly initialised variables for ``graph``, in the module's own layout.

    The tree is what ``DarknetModule(graph).init`` builds; the values are
    `ir.init_variables`' ``"darknet"`` ones (kernels uniform in ±sqrt(2 / fan_in), BN
    γ=1, β=0, mean=0, var=1, conv biases 0), drawn with numpy from ``seed``. Running
    Flax's init under jit would compile one random generator per kernel shape: ~20 s
    for yolov3 on a 2-core CPU, against ~1 s here.

    >>> g = ir.parse_cfg("[net]\\nwidth=8\\nheight=8\\n[convolutional]\\nfilters=4\\n")
    >>> init_variables(g)["params"]["layer_0"]["conv"]["kernel"].shape
    (1, 1, 3, 4)
    """
    check_supported(graph)
    return jax.tree.map(jnp.asarray, ir.init_variables(graph, "darknet", seed))


@functools.partial(jax.jit, static_argnames=("graph", "bn_eps"))
def forward(graph: ir.Graph, variables: dict, x_nhwc: jax.Array,
            bn_eps: float = 1e-5) -> ForwardOut:
    """Inference forward pass (running BN statistics), jit-compiled per graph and shape.

    Args:
        graph: static; graphs are hashable, equal graphs share the compiled function.
        variables: ``{"params": ..., "batch_stats": ...}`` in the project layout.
        x_nhwc: ``(N, H, W, C)`` float images in [0, 1], any batch size.
        bn_eps: static BatchNorm epsilon.

    Returns:
        `ForwardOut` with NHWC heads and ``(N, boxes, 5 + classes)`` detections.
    """
    return DarknetModule(graph, bn_eps=bn_eps).apply(variables, x_nhwc)
