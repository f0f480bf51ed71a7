"""Execute a Darknet `ir.Graph` as a Flax (linen) module, NHWC.

`DarknetModule` is an interpreter: it walks ``graph.layers`` in order, keeps every
layer's output in an environment keyed by layer index (``-1`` is the image) and runs
each layer's kind ``forward`` rule (`ir.kinds`) with this module's primitives
(`_Tools`: Flax conv, BatchNorm, dense). A new layer kind is one module in
``ir/kinds``; nothing here changes.

Layout: images come in NHWC, heads go out NHWC (``(N, H, W, anchors * (5 + classes))``).
Darknet and torch lay the same maps out NCHW; only the frontends and the CLI transpose.

Variables follow the project layout, ``layer_{i}`` with ``i`` the absolute layer index::

    {"params": {"layer_0": {"conv": {"kernel": HWIO}, "bn": {"scale", "bias"}}, ...},
     "batch_stats": {"layer_0": {"bn": {"mean", "var"}}, ...}}

A conv without ``batch_normalize`` has ``conv.bias`` and no ``bn``.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

import ir
from ir import Activation, CfgError, Variables
from ir.activations import ACTIVATIONS as XP_ACTIVATIONS
from runtime.xla_options import compiler_options


class ForwardOut(NamedTuple):
    """What a forward pass returns.

    Attributes:
        heads: the raw NHWC map feeding each detection layer (``[yolo]``,
            ``[Gaussian_yolo]``, ``[region]``), in cfg order, shape
            ``(N, H, W, anchors * values per anchor)``.
        detections: ``(N, boxes, 5 + classes)`` decoded as Darknet does at inference,
            columns ``(cx, cy, w, h, objectness, class scores...)`` with the box in
            input pixels; boxes ordered head, anchor, y, x (see `decode_yolo`).
        output: the last layer's output, NHWC (a classifier's softmax).
    """

    heads: tuple[jax.Array, ...]
    detections: jax.Array
    output: jax.Array | None = None


def _decode(layer: ir.Layer, xp, head, input_hw: tuple[int, int]):
    decode = ir.spec_of(layer).decode
    if decode is None:
        raise UnsupportedLayerError(f"[{layer.kind}] has no decode rule: it is not a head")
    return decode(layer, xp, head, input_hw)


def collect_outputs(graph: ir.Graph, env, input_hw: tuple[int, int], xp) -> ForwardOut:
    """`ForwardOut` from the environment of every layer's output (any array library)."""
    heads = tuple(env[i - 1] for i in graph.head_indices())
    batch = env[-1].shape[0]
    detections = (decode_heads(graph, heads, input_hw, xp) if heads else
                  xp.zeros((batch, 0, 5), env[-1].dtype))
    return ForwardOut(heads=heads, detections=detections, output=env[len(graph.layers) - 1])


def decode_heads(graph: ir.Graph, heads, input_hw: tuple[int, int], xp):
    """``(N, boxes, 5 + classes)`` detections from the raw NHWC ``heads`` (one per
    detection layer, in cfg order), each decoded by its layer kind's rule and
    zero-padded to the widest; any array library ``xp`` (numpy for heads computed
    elsewhere, e.g. by onnxruntime)."""
    decoded = []
    for i, head in zip(graph.head_indices(), heads, strict=True):
        decode = ir.spec_of(graph.layers[i]).decode
        assert decode is not None  # every detection layer's kind has one (ir.kinds checks)
        decoded.append(decode(graph.layers[i], xp, head, input_hw))
    width = max(d.shape[-1] for d in decoded)
    if any(d.shape[-1] != width for d in decoded):  # heads with different classes
        decoded = [xp.concatenate([d, xp.zeros((*d.shape[:2], width - d.shape[-1]),
                                               d.dtype)], axis=-1) for d in decoded]
    return xp.concatenate(decoded, axis=1)


class UnsupportedLayerError(CfgError):
    """A layer (or a key of one) the runtime cannot execute yet.

    ``model.cfg:42: [rnn] (layer 12) not supported yet by the runtime``
    """


def check_supported(graph: ir.Graph) -> None:
    """Raise `UnsupportedLayerError` for the first layer the runtime cannot execute.

    A layer is executed when its kind has a spec (`ir.kinds`) and every key it keeps
    in ``extra`` is one the spec knows to be inert or accepts the value of; anything
    else (an `ir.Section`, a dilated conv with odd padding, a weighted shortcut, ...)
    is refused here, naming its cfg line.
    """
    for index, layer in enumerate(graph.layers):
        reason = ir.unsupported_reason(layer)
        if reason is not None:
            what = f" {reason}" if reason else ""
            raise UnsupportedLayerError(
                f"(layer {index}){what} not supported yet by the runtime",
                path=layer.path or graph.path, line=layer.line, section=layer.kind)


# A conv whose window holds at most this many inputs (RGB 3x3: 27) runs as a sum of
# shifted inputs times kernel rows at inference (`thin_input_conv`).
THIN_WINDOW = 27


def thin_input_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                    dimension_numbers=None, feature_group_count=1, precision=None):
    """``lax.conv_general_dilated`` for NHWC x HWIO convs whose window holds at most
    `THIN_WINDOW` inputs (a detector's first conv, over RGB): one sum, over the window's
    (dy, dx, c), of the input shifted by (dy, dx) in channel c times that kernel row,
    which XLA fuses into a single loop. Its own convolution vectorises poorly over 3
    input channels: on 2 CPU cores a 3 -> 16 conv at 128² took 0.40 ms that way and
    0.23 ms this way (0.91 -> 0.57 ms for 3 -> 32 at 416², stride 2; within 7% either
    way at 416², stride 1). Any other conv goes to ``lax.conv_general_dilated``."""
    kh, kw, cin, cout = rhs.shape
    thin = (kh * kw * cin <= THIN_WINDOW and feature_group_count == 1
            and not isinstance(padding, str) and not any(d != 1 for d in (lhs_dilation or ()))
            and dimension_numbers == jax.lax.conv_dimension_numbers(
                lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))
    if not thin:
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision)
    (top, bottom), (left, right) = padding
    sy, sx = window_strides
    dy, dx = rhs_dilation or (1, 1)
    x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h = (x.shape[1] - (kh - 1) * dy - 1) // sy + 1
    out_w = (x.shape[2] - (kw - 1) * dx - 1) // sx + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            window = x[:, i * dy:i * dy + (out_h - 1) * sy + 1:sy,
                       j * dx:j * dx + (out_w - 1) * sx + 1:sx, :]
            for c in range(cin):
                term = window[..., c:c + 1] * rhs[i, j, c]
                out = term if out is None else out + term
    return out


# Darknet's make_convolutional_layer: weights ~ U(-sqrt(2 / fan_in), +sqrt(2 / fan_in)),
# fan_in = size * size * in_channels / groups; U(-a, a) has variance a^2 / 3.
darknet_kernel_init = nn.initializers.variance_scaling(2.0 / 3.0, "fan_in", "uniform")


class _Tools:
    """The primitives the kinds' ``forward`` rules compose, in Flax (see
    `ir.kinds.base.KindSpec`). Variables are created inside the calling `_Layer`, so
    they live under ``layer_{i}/conv``, ``layer_{i}/bn``, ``layer_{i}/dense``."""

    xp = jnp

    def __init__(self, module: nn.Module, train: bool, bn_eps: float,
                 input_hw: tuple[int, int]) -> None:
        self.module, self.train, self.bn_eps, self.input_hw = module, train, bn_eps, input_hw

    def conv(self, x, *, features: int, size: int, stride: int, padding: int, groups: int,
             dilation: int, bias: bool):
        # Training keeps XLA's convolution: its gradients are what the float64 and
        # multi-device checks of the train step were measured with.
        return nn.Conv(features, (size, size), strides=(stride, stride),
                       padding=((padding, padding), (padding, padding)),
                       kernel_dilation=(dilation, dilation), feature_group_count=groups,
                       use_bias=bias, kernel_init=darknet_kernel_init,
                       conv_general_dilated=None if self.train else thin_input_conv,
                       name="conv", parent=self.module)(x)

    def batch_norm(self, y, axis: int = -1):
        # Darknet: (x - mean) / sqrt(var + eps) * γ + β, and in training the rolling
        # statistics move by .99 / .01 -- Flax's momentum=0.99.
        return nn.BatchNorm(use_running_average=not self.train, momentum=0.99,
                            epsilon=self.bn_eps, axis=axis, name="bn", parent=self.module)(y)

    def dense(self, x, *, features: int, bias: bool):
        return nn.Dense(features, use_bias=bias, kernel_init=darknet_kernel_init,
                        name="dense", parent=self.module)(x)

    def activate(self, activation: Activation, x):
        return ACTIVATIONS[activation](x)


class _Layer(nn.Module):
    """One layer, scoped ``layer_{i}``: runs its kind's ``forward`` rule."""

    layer: ir.Layer
    bn_eps: float
    input_hw: tuple[int, int]

    @nn.compact
    def __call__(self, inputs, train: bool, layer: ir.Layer | None = None):
        # ``layer``: another layer run with this one's variables (``share_index``).
        layer = self.layer if layer is None else layer
        tools = _Tools(self, train, self.bn_eps, self.input_hw)
        return ir.spec_of(layer).forward(layer, tools, inputs)


# One definition of Darknet's activations (ir.activations) for the passes and here.
ACTIVATIONS: dict[Activation, Callable[[jax.Array], jax.Array]] = {
    activation: functools.partial(fn, jnp) for activation, fn in XP_ACTIVATIONS.items()}


def decode_yolo(head: jax.Array, layer, input_hw: tuple[int, int]) -> jax.Array:
    """Decode one raw NHWC head into boxes the way Darknet does at inference.

    The detection layer's kind decodes (`ir.kinds`, ``KindSpec.decode``): for
    ``[yolo]``, ``x = (sigmoid(tx) * s - (s - 1) / 2 + grid_x) / grid_w * input_w``
    (same for y), ``w = exp(tw) * anchor_w``, ``h = exp(th) * anchor_h`` (anchors in
    input pixels), objectness and class scores through the logistic. Darknet
    multiplies objectness into the class scores only when thresholding; here they
    stay apart.

    Args:
        head: ``(N, H, W, len(mask) * (5 + classes))`` raw conv output.
        layer: the detection layer it feeds.
        input_hw: the network input's (height, width) in pixels.

    Returns:
        ``(N, len(mask) * H * W, 5 + classes)``, boxes ordered anchor, y, x.
    """
    return _decode(layer, jnp, head, input_hw)


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
        modules: dict[int, _Layer] = {}
        for index, layer in enumerate(graph.layers):
            inputs = tuple(env[j] for j in ir.layer_inputs(graph, index))
            owner = ir.variables_owner(layer, index)
            if owner == index:
                modules[index] = _Layer(layer, self.bn_eps, input_hw,
                                        name=ir.layer_key(index))
                env[index] = modules[index](inputs, train)
            else:  # the same module, so the same variables (Darknet's share_layer)
                env[index] = modules[owner](inputs, train, layer)
        return collect_outputs(graph, env, input_hw, jnp)


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


@functools.partial(jax.jit, static_argnames=("graph", "bn_eps"),
                   compiler_options=compiler_options())
def forward(graph: ir.Graph, variables: Variables, x_nhwc: jax.Array,
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
    # apply's annotation covers mutable collections too; without them it returns __call__'s.
    return cast(ForwardOut, DarknetModule(graph, bn_eps=bn_eps).apply(variables, x_nhwc))
