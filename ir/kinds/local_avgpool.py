"""``[local_avgpool]`` (``[local_avg]``): windowed average pooling.

Darknet: ``parse_local_avgpool`` and ``forward_local_avgpool_layer`` (maxpool_layer.c):
the maxpool's geometry (``padding`` is the total padding, default ``size - 1``, the
window starting ``padding // 2`` above and left), averaging only the taps inside the
image. A dropped channel's constant stays the same constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ir.kinds.base import (
    KeyRule,
    KindSpec,
    Options,
    Shape,
    ShapeError,
    no_cost,
    no_variables,
    previous_input,
    same_layer,
)
from ir.options import SectionReader


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalAvgPool:
    """``[local_avgpool]``: ``size``×``size`` average over in-image taps."""

    size: int
    stride: int = 1
    padding: int | None = None
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "local_avgpool"

    @property
    def pad_total(self) -> int:
        return self.size - 1 if self.padding is None else self.padding


def _parse(r: SectionReader, index: int) -> LocalAvgPool:
    stride = r.int("stride", 1)
    size = r.int("size", stride)
    padding = r.int("padding") if "padding" in r.first else None
    if size < 1 or stride < 1:
        raise r.error(f"size={size} stride={stride}: expected positive integers")
    return LocalAvgPool(size=size, stride=stride, padding=padding, extra=r.extra(), **r.loc)


def _write(layer: LocalAvgPool, index: int) -> list[str]:
    lines = [f"size={layer.size}", f"stride={layer.stride}"]
    return lines + ([f"padding={layer.padding}"] if layer.padding is not None else [])


def _shape(layer: LocalAvgPool, ins: tuple[Shape, ...]) -> Shape:
    x = ins[0]
    h = (x.h + layer.pad_total - layer.size) // layer.stride + 1
    w = (x.w + layer.pad_total - layer.size) // layer.stride + 1
    if h < 1 or w < 1:
        raise ShapeError(f"size={layer.size} does not fit the {x.h}x{x.w} input")
    return Shape(x.c, h, w)


def windows(xp: Any, x: Any, layer: LocalAvgPool) -> Any:
    lo = layer.pad_total // 2
    hi = layer.pad_total - lo
    x = xp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    ho = (x.shape[1] - layer.size) // layer.stride + 1
    wo = (x.shape[2] - layer.size) // layer.stride + 1
    total = None
    for dy in range(layer.size):
        for dx in range(layer.size):
            part = x[:, dy:dy + layer.stride * (ho - 1) + 1:layer.stride,
                     dx:dx + layer.stride * (wo - 1) + 1:layer.stride]
            total = part if total is None else total + part
    return total


def _forward(layer: LocalAvgPool, tools: Any, inputs: Sequence[Any]) -> Any:
    xp = tools.xp
    x = inputs[0]
    ones = xp.ones((1, *x.shape[1:3], 1), x.dtype)
    return windows(xp, x, layer) / windows(xp, ones, layer)


def _same_stride(layer: LocalAvgPool, value: str) -> bool:
    return value == str(layer.stride)


SPEC = KindSpec(
    layer=LocalAvgPool, sections=("local_avgpool", "local_avg"), parse=_parse, write=_write,
    keys={"stride_x": KeyRule(_same_stride, "the value of stride="),
          "stride_y": KeyRule(_same_stride, "the value of stride=")},
    inputs=previous_input, renumber=same_layer, shape=_shape, cost=no_cost,
    variables=no_variables, forward=_forward,
    describe=lambda layer: f"{layer.size}x{layer.size}/{layer.stride}")
