"""``[convolutional]`` (``[conv]``): convolution, optional BatchNorm, activation.

Darknet: ``parse_convolutional`` (parser.c), ``make_convolutional_layer`` and
``forward_convolutional_layer`` (convolutional_layer.c). ``pad=1`` means
``padding = size // 2``; ``dilation`` pads ``padding * dilation`` while the output size
is computed without it, so darkslim accepts dilation only where both agree (odd size,
``pad=1``); Darknet resets dilation to 1 for 1×1 convs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ir.activations import Activation
from ir.kinds.base import (
    KeyRule,
    KindSpec,
    Options,
    Shape,
    ShapeError,
    VariableShapes,
    equals,
    inert,
    previous_input,
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


def _same_stride(layer: Conv, value: str) -> bool:
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


def _cost(layer: Conv, ins: tuple[Shape, ...], out: Shape) -> tuple[int, int]:
    weights = layer.filters * (ins[0].c // layer.groups) * layer.size * layer.size
    extra = 2 * layer.filters if layer.batch_normalize else layer.filters
    params = 0 if layer.share is not None else weights + extra  # shared: counted once
    return params, 2 * weights * out.h * out.w


def _variables(layer: Conv, ins: tuple[Shape, ...]) -> VariableShapes:
    if layer.share is not None:
        return {}  # it runs with the variables of the conv it shares
    k, f = layer.size, layer.filters
    kernel = (k, k, ins[0].c // layer.groups, f)
    if layer.batch_normalize:
        return {"params": {"conv": {"kernel": kernel}, "bn": {"scale": (f,), "bias": (f,)}},
                "batch_stats": {"bn": {"mean": (f,), "var": (f,)}}}
    return {"params": {"conv": {"kernel": kernel, "bias": (f,)}}}


def _forward(layer: Conv, tools: Any, inputs: Sequence[Any]) -> Any:
    p = layer.pad_pixels
    y = tools.conv(inputs[0], features=layer.filters, size=layer.size, stride=layer.stride,
                   padding=p * layer.dilation, groups=layer.groups, dilation=layer.dilation,
                   bias=not layer.batch_normalize)
    if layer.batch_normalize:
        y = tools.batch_norm(y)
    return tools.activate(layer.activation, y)


def _describe(layer: Conv) -> str:
    text = f"{layer.filters} {layer.size}x{layer.size}/{layer.stride}"
    if layer.groups > 1:
        text += f" g{layer.groups}"
    if layer.dilation > 1:
        text += f" d{layer.dilation}"
    return text + (" bn " if layer.batch_normalize else " ") + layer.activation.value


def _renumber(layer: Conv, renumber: Callable[[int], int]) -> Conv:
    if layer.share is None:
        return layer
    return dataclasses.replace(layer, share=renumber(layer.share))


SPEC = KindSpec(
    layer=Conv, sections=("convolutional", "conv"), parse=_parse, write=_write, keys=_KEYS,
    inputs=previous_input, renumber=_renumber, shape=_shape, cost=_cost,
    variables=_variables, forward=_forward, describe=_describe)
