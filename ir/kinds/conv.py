"""``[convolutional]`` (``[conv]``): convolution, optional BatchNorm, activation.

Darknet: ``parse_convolutional`` (parser.c), ``make_convolutional_layer`` and
``forward_convolutional_layer`` (convolutional_layer.c). ``pad=1`` means
``padding = size // 2``; ``dilation`` pads ``padding * dilation`` while the output size
is computed without it, so darkslim accepts dilation only where both agree (odd size,
``pad=1``); Darknet resets dilation to 1 for 1×1 convs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir.activations import Activation
from ir.kinds import onnx_ops as ops
from ir.kinds.base import (
    DropContext,
    Flow,
    FlowContext,
    KeyRule,
    KindSpec,
    Options,
    Segment,
    Shape,
    ShapeError,
    equals,
    inert,
    previous_input,
    variables_owner,
)
from ir.options import SectionReader

KERNEL = ("params", "conv", "kernel")
BIAS = ("params", "conv", "bias")
GAMMA = ("params", "bn", "scale")
BETA = ("params", "bn", "bias")
MEAN = ("batch_stats", "bn", "mean")
VAR = ("batch_stats", "bn", "var")


@dataclass(frozen=True, slots=True, kw_only=True)
class Conv:
    """``[convolutional]``: conv, optional BatchNorm, activation."""

    filters: int
    size: int = 1
    stride: int = 1
    pad: bool = False
    padding: int = 0
    groups: int = 1
    dilation: int = 1
    share: int | None = None
    batch_normalize: bool = False
    activation: Activation = Activation.LOGISTIC
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "convolutional"

    @property
    def pad_pixels(self) -> int:
        """Zero padding on each side, as Darknet computes it (``pad=1`` wins)."""
        return self.size // 2 if self.pad else self.padding


def _parse(r: SectionReader, index: int) -> Conv:
    conv: dict[str, Any]
    conv = dict(filters=r.int("filters", 1), size=r.int("size", 1),
                stride=r.int("stride", 1), pad=r.bool("pad"), padding=r.int("padding", 0),
                groups=r.int("groups", 1), dilation=r.int("dilation", 1),
                batch_normalize=r.bool("batch_normalize"),
                activation=r.activation(Activation.LOGISTIC))
    for key in ("filters", "size", "stride", "groups", "dilation"):
        if conv[key] < 1:
            raise r.error(f"{key}={conv[key]}: expected a positive integer", key)
    if conv["size"] == 1:
        conv["dilation"] = 1  # parse_convolutional: `if (size == 1) dilation = 1;`
    if "share_index" in r.first:
        # parse_convolutional: >= 0 is absolute, negative relative to this layer.
        share = r.int("share_index")
        share = share if share >= 0 else index + share
        if not 0 <= share < index:
            raise r.error(f"share_index={r.first['share_index'][0]}: layer {share} is not "
                          f"before this layer ({index})", "share_index")
        conv["share"] = share
    layer = Conv(**conv, extra=r.extra(), **r.loc)
    if layer.dilation > 1 and 2 * layer.pad_pixels != layer.size - 1:
        raise r.error(f"dilation={layer.dilation} with size={layer.size} and "
                      f"padding={layer.pad_pixels}: Darknet pads padding*dilation but sizes "
                      "the output without dilation; supported only with pad=1 and odd size",
                      "dilation")
    return layer


def _write(layer: Conv, index: int) -> list[str]:
    lines = ["batch_normalize=1"] if layer.batch_normalize else []
    lines += [f"filters={layer.filters}", f"size={layer.size}", f"stride={layer.stride}"]
    if layer.pad:
        lines.append("pad=1")
    if layer.padding:
        lines.append(f"padding={layer.padding}")
    if layer.groups != 1:
        lines.append(f"groups={layer.groups}")
    if layer.dilation != 1:
        lines.append(f"dilation={layer.dilation}")
    if layer.share is not None:
        lines.append(f"share_index={layer.share}")
    return lines + [f"activation={layer.activation.value}"]


def _same_stride(layer, value: str) -> bool:
    return value in ("-1", str(layer.stride))


_KEYS: dict[str, KeyRule] = {
    "stride_x": KeyRule(_same_stride, "the value of stride="),
    "stride_y": KeyRule(_same_stride, "the value of stride="),
    "antialiasing": equals(0), "binary": equals(0), "xnor": equals(0),
    "bin_output": equals(0), "sway": equals(0), "rotate": equals(0), "stretch": equals(0),
    "stretch_sway": equals(0), "coordconv": equals(0), "cbn": equals(0),
    "assisted_excitation": inert("(training only)"), "flipped": inert("(training only)"),
    "dot": inert("(training only)"), "angle": inert("(training only)"),
    "grad_centr": inert("(training only)"), "reverse": inert("(training only)"),
    "stream": inert("(GPU streams)"), "wait_stream": inert("(GPU streams)"),
    "deform": equals(0),
}


def _shape(layer: Conv, ins: tuple[Shape, ...]) -> Shape:
    x = ins[0]
    if x.c % layer.groups or layer.filters % layer.groups:
        raise ShapeError(f"groups={layer.groups} must divide both the input channels "
                         f"({x.c}) and filters ({layer.filters})")
    p = layer.pad_pixels
    h = (x.h + 2 * p - layer.size) // layer.stride + 1
    w = (x.w + 2 * p - layer.size) // layer.stride + 1
    if h < 1 or w < 1:
        raise ShapeError(f"size={layer.size} does not fit the {x.h}x{x.w} input")
    return Shape(layer.filters, h, w)


def _cost(layer: Conv, ins, out: Shape) -> tuple[int, int]:
    weights = layer.filters * (ins[0].c // layer.groups) * layer.size * layer.size
    extra = 2 * layer.filters if layer.batch_normalize else layer.filters
    params = 0 if layer.share is not None else weights + extra  # shared: counted once
    return params, 2 * weights * out.h * out.w


def _variables(layer: Conv, ins) -> dict:
    if layer.share is not None:
        return {}  # it runs with the variables of the conv it shares
    k, f = layer.size, layer.filters
    kernel = (k, k, ins[0].c // layer.groups, f)
    if layer.batch_normalize:
        return {"params": {"conv": {"kernel": kernel}, "bn": {"scale": (f,), "bias": (f,)}},
                "batch_stats": {"bn": {"mean": (f,), "var": (f,)}}}
    return {"params": {"conv": {"kernel": kernel, "bias": (f,)}}}


def _channels(layer: Conv, ctx: FlowContext) -> Flow:
    own = ctx.own(layer.filters)
    if layer.share is not None:
        # One kernel serves both convs: neither may lose input or output channels.
        shared = f"shares its weights with layer {layer.share} ({ctx.where}: share_index)"
        owner = (Segment(layer.share, 0, layer.filters),)
        owner_in = ctx.earlier[layer.share - 1] if layer.share > 0 else ()
        return Flow(own, block=((ctx.in_segments[0] + owner + owner_in, shared),),
                    own=shared, code="shared_weights")
    why = None if layer.batch_normalize else "no BatchNorm: no γ to rank its channels by"
    code = "no_bn"
    if layer.activation.across_channels:
        why = f"activation={layer.activation.value} normalises across channels"
        code = "across_channels"
    if layer.groups == 1:
        return Flow(own, own=why, code=code)
    source = ctx.in_segments[0]
    if layer.groups == ctx.in_shapes[0].c == layer.filters:
        # Depthwise: input channel c feeds output c only, so the two move together.
        return Flow(own, couple=((source, own),), own=why, code=code)
    why = f"grouped conv {ctx.where} (groups={layer.groups}) is not depthwise"
    return Flow(own, block=((source, why),), own=why, code="grouped_conv")


def _dropped(layer: Conv, ctx: DropContext):
    if ctx.own_keep is None or not layer.batch_normalize:
        return ctx.zeros()
    from ir.activations import activate_xp
    return activate_xp(ctx.xp, layer.activation, ctx.params[BETA])


def _grouped_offset(xp, kernel, const, groups: int):
    """``Σ_{kh,kw,c} W[kh, kw, c, o] · const[c]`` for a (grouped) HWIO kernel."""
    per_group_in, out = kernel.shape[2], kernel.shape[3]
    oihw = kernel.transpose(3, 2, 0, 1)
    if xp is np and groups == 1 and oihw.flags.c_contiguous:
        # A file's OIHW buffer: one matrix-vector product reads it once, in memory
        # order (yolov3: 0.15 s for the reductions below, 0.03 s this way).
        taps = kernel.shape[0] * kernel.shape[1]
        return oihw.reshape(out, -1) @ np.repeat(np.asarray(const, kernel.dtype), taps)
    summed = kernel.sum(axis=(0, 1)).reshape(per_group_in, groups, out // groups)
    const = xp.asarray(const, summed.dtype).reshape(groups, per_group_in)
    return xp.einsum("jgo,gj->go", summed, const).reshape(out)


def fold_consumer(xp, leaves, offset, batch_normalize: bool) -> dict:
    """A consumer absorbs ``offset`` (what dropped inputs added to each output): into
    its BN running mean (subtracted) or its bias (added)."""
    if batch_normalize:
        return {MEAN: leaves[MEAN] - offset}
    bias = BIAS if BIAS in leaves else ("params", "dense", "bias")
    return {bias: leaves[bias] + offset}


def zero_dropped_outputs(xp, leaves, own_keep) -> dict:
    """γ and β of dropped output channels set to 0 (their BN then emits exactly 0)."""
    keep = xp.asarray(own_keep)
    return {leaf: xp.where(keep, leaves[leaf], 0.0) for leaf in (GAMMA, BETA)}


def _fold(layer: Conv, xp, leaves, const_in, in_keep, own_keep, zero_inputs: bool) -> dict:
    updates = {}
    if own_keep is not None and not own_keep.all():
        updates.update(zero_dropped_outputs(xp, leaves, own_keep))
    if in_keep is None or in_keep.all():
        return updates
    kernel = leaves[KERNEL]
    offset = _grouped_offset(xp, kernel, const_in, layer.groups)
    updates.update(fold_consumer(xp, leaves, offset, layer.batch_normalize))
    if layer.groups == 1 and zero_inputs:
        updates[KERNEL] = kernel * xp.asarray(in_keep, kernel.dtype)[:, None]
    return updates


def _gather_kernel(kernel, in_idx: np.ndarray, out_idx: np.ndarray, xp):
    """``kernel[:, :, in_idx][..., out_idx]`` for an HWIO kernel, in memory order.

    Kernels read from Darknet or torch files are HWIO views of OIHW buffers; gathering
    along the OIHW axes reads memory in order (yolov3: 0.07 s instead of 0.8 s) and
    leaves an OIHW-contiguous result that writes back without a copy.
    """
    if xp is np and kernel.transpose(3, 2, 0, 1).flags.c_contiguous:
        oihw = np.take(kernel.transpose(3, 2, 0, 1), out_idx, axis=0)
        return np.take(oihw, in_idx, axis=1).transpose(2, 3, 1, 0)
    return kernel[:, :, xp.asarray(in_idx)[:, None], xp.asarray(out_idx)[None, :]]


def slice_outputs(xp, leaves, out_idx, leaves_to_slice) -> dict:
    return {leaf: xp.take(leaves[leaf], xp.asarray(out_idx)) for leaf in leaves_to_slice
            if leaf in leaves}


def _slice(layer: Conv, xp, leaves, in_keep, out_keep):
    kernel = leaves[KERNEL]
    out_idx = np.flatnonzero(out_keep)
    in_idx = np.flatnonzero(in_keep)
    updates = {}
    if layer.groups > 1:  # depthwise (coupled): each group keeps one input
        new = dataclasses.replace(layer, filters=len(out_idx), groups=len(out_idx))
        if len(out_idx) < layer.filters:
            updates[KERNEL] = kernel[..., xp.asarray(out_idx)]
    else:
        new = dataclasses.replace(layer, filters=len(out_idx))
        if len(in_idx) < kernel.shape[2] or len(out_idx) < layer.filters:
            updates[KERNEL] = _gather_kernel(kernel, in_idx, out_idx, xp)
    if len(out_idx) < layer.filters:
        updates.update(slice_outputs(xp, leaves, out_idx, (GAMMA, BETA, MEAN, VAR, BIAS)))
        return new, updates
    return layer, updates


def _forward(layer: Conv, tools, inputs):
    p = layer.pad_pixels
    y = tools.conv(inputs[0], features=layer.filters, size=layer.size, stride=layer.stride,
                   padding=p * layer.dilation, groups=layer.groups, dilation=layer.dilation,
                   bias=not layer.batch_normalize)
    if layer.batch_normalize:
        y = tools.batch_norm(y)
    return tools.activate(layer.activation, y)


def _onnx(layer: Conv, b, index: int, inputs) -> str:
    """Conv (OIHW kernel, symmetric zero padding ``pad · dilation``, groups,
    dilations), BatchNormalization when the layer still has BN (the exporter folds it
    by default), then the activation."""
    p = b.params(variables_owner(layer, index))
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


def _describe(layer: Conv) -> str:
    text = f"{layer.filters} {layer.size}x{layer.size}/{layer.stride}"
    if layer.groups > 1:
        text += f" g{layer.groups}"
    if layer.dilation > 1:
        text += f" d{layer.dilation}"
    return text + (" bn " if layer.batch_normalize else " ") + layer.activation.value


def _renumber(layer: Conv, renumber):
    if layer.share is None:
        return layer
    return dataclasses.replace(layer, share=renumber(layer.share))


def _weights_file(layer: Conv):
    if layer.share is not None:
        return ()  # load_weights skips a conv with a share_layer
    # load_convolutional_weights: biases (β with BN), [scales, mean, variance], weights.
    if layer.batch_normalize:
        return ((BETA, "vector"), (GAMMA, "vector"), (MEAN, "vector"), (VAR, "vector"),
                (KERNEL, "oihw"))
    return ((BIAS, "vector"), (KERNEL, "oihw"))


SPEC = KindSpec(
    layer=Conv, sections=("convolutional", "conv"), parse=_parse, write=_write, keys=_KEYS,
    inputs=previous_input, renumber=_renumber, shape=_shape, cost=_cost,
    variables=_variables, channels=_channels, dropped=_dropped, fold=_fold, slice=_slice,
    forward=_forward, describe=_describe, weights_file=_weights_file, onnx=_onnx)
