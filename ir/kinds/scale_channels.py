"""``[scale_channels]``: the feature map of the ``from=`` layer scaled by the previous
layer (squeeze-and-excitation; with ``scale_wh=1``, a per-pixel scale).

Darknet: ``parse_scale_channels``, ``forward_scale_channels_layer``: with
``scale_wh=0`` the previous layer is ``C×1×1`` and ``out[c] = from[c] · prev[c]``; with
``scale_wh=1`` it is ``1×H×W`` and ``out[c, y, x] = from[c, y, x] · prev[y, x]``. Then
``activate_array``. The output has the ``from`` layer's shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ir.activations import Activation
from ir.kinds.base import (
    KindSpec,
    Options,
    Shape,
    ShapeError,
    no_cost,
    no_variables,
    rel,
    renumber_inputs,
)
from ir.kinds.sam import refuse_special
from ir.options import SectionReader


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleChannels:
    """``[scale_channels]``: ``inputs[1]`` (features) times ``inputs[0]`` (scales)."""

    inputs: tuple[int, ...]
    scale_wh: bool = False
    activation: Activation = Activation.LINEAR
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "scale_channels"


def _parse(r: SectionReader, index: int) -> ScaleChannels:
    refs = r.refs("from", index)
    if len(refs) != 1:
        raise r.error(f"from= names {len(refs)} layers: expected one", "from")
    return ScaleChannels(inputs=(index - 1, refs[0]), scale_wh=r.bool("scale_wh"),
                         activation=r.activation(Activation.LINEAR), extra=r.extra(), **r.loc)


def _write(layer: ScaleChannels, index: int) -> list[str]:
    lines = [f"from={rel(layer.inputs[1:], index)}"]
    if layer.scale_wh:
        lines.append("scale_wh=1")
    return lines + [f"activation={layer.activation.value}"]


def _shape(layer: ScaleChannels, ins: tuple[Shape, ...]) -> Shape:
    scale, feature = ins
    if layer.scale_wh:
        ok = scale.c == 1 and (scale.h, scale.w) == (feature.h, feature.w)
        want = f"1x{feature.h}x{feature.w}"
    else:
        ok = scale.c == feature.c and (scale.h, scale.w) == (1, 1)
        want = f"{feature.c}x1x1"
    if not ok:
        raise ShapeError(f"scales layer {layer.inputs[1]} {tuple(feature)} by layer "
                         f"{layer.inputs[0]} {tuple(scale)}: expected the scale to be {want} "
                         f"(scale_wh={int(layer.scale_wh)})")
    return feature


def _forward(layer: ScaleChannels, tools: Any, inputs: Sequence[Any]) -> Any:
    return tools.activate(layer.activation, inputs[1] * inputs[0])


SPEC = KindSpec(
    layer=ScaleChannels, sections=("scale_channels",), parse=_parse, write=_write, keys={},
    inputs=lambda layer, index: layer.inputs, renumber=renumber_inputs, shape=_shape,
    cost=no_cost, variables=no_variables, forward=_forward,
    describe=lambda layer: f"{layer.inputs[1]} x {layer.inputs[0]}"
    + (" per pixel" if layer.scale_wh else ""), refuse=refuse_special)
