"""``[upsample]``: nearest-neighbour upsampling by ``stride``, times ``scale``.

Darknet: ``parse_upsample``, ``forward_upsample_layer`` (``upsample_cpu``). A negative
stride is Darknet's reverse (sum-pooling) mode, which darkslim does not execute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ir.kinds.base import (
    KindSpec,
    Options,
    Shape,
    ShapeError,
    fmt,
    no_cost,
    no_variables,
    previous_input,
    same_layer,
)
from ir.options import SectionReader


@dataclass(frozen=True, slots=True, kw_only=True)
class Upsample:
    """``[upsample]``: nearest-neighbour upsampling by ``stride``, times ``scale``."""

    stride: int = 2
    scale: float = 1.0
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "upsample"


def _parse(r: SectionReader, index: int) -> Upsample:
    stride = r.int("stride", 2)
    if stride == 0:
        raise r.error("stride=0: expected a non-zero integer", "stride")
    return Upsample(stride=stride, scale=r.float("scale", 1.0), extra=r.extra(), **r.loc)


def _write(layer: Upsample, index: int) -> list[str]:
    lines = [f"stride={layer.stride}"]
    return lines + ([f"scale={fmt(layer.scale)}"] if layer.scale != 1.0 else [])


def _shape(layer: Upsample, ins: tuple[Shape, ...]) -> Shape:
    x = ins[0]
    if layer.stride > 0:
        return Shape(x.c, x.h * layer.stride, x.w * layer.stride)
    if x.h // -layer.stride < 1:
        raise ShapeError(f"stride={layer.stride} does not fit the {x.h}x{x.w} input")
    return Shape(x.c, x.h // -layer.stride, x.w // -layer.stride)


def _refuse(layer: Upsample) -> str | None:
    if layer.stride < 0:
        return f"stride={layer.stride} (reverse upsample, i.e. sum-pooling)"
    return None


def _forward(layer: Upsample, tools: Any, inputs: Sequence[Any]) -> Any:
    x = inputs[0].repeat(layer.stride, axis=1).repeat(layer.stride, axis=2)
    return x if layer.scale == 1.0 else x * layer.scale


SPEC = KindSpec(
    layer=Upsample, sections=("upsample",), parse=_parse, write=_write, keys={},
    inputs=previous_input, renumber=same_layer, shape=_shape, cost=no_cost,
    variables=no_variables, forward=_forward, describe=lambda layer: f"x{layer.stride}",
    refuse=_refuse)
