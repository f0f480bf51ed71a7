"""``[crop]``: a classifier's input crop; at inference a centre crop, rescaled to [-1, 1].

Darknet: ``parse_crop``, ``forward_crop_layer``: when not training the window is
centred (``dh = (h - crop_height) // 2``), no flip, and every value becomes
``2·x - 1`` (``x`` with ``noadjust=1``). ``flip``, ``angle``, ``saturation``,
``exposure`` and ``shift`` only matter in training.
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
    inert,
    no_cost,
    no_variables,
    previous_input,
    same_layer,
)
from ir.options import SectionReader


@dataclass(frozen=True, slots=True, kw_only=True)
class Crop:
    """``[crop]``: centre crop to ``crop_height``×``crop_width``, then ``2x - 1``."""

    crop_height: int = 1
    crop_width: int = 1
    noadjust: bool = False
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "crop"


def _parse(r: SectionReader, index: int) -> Crop:
    return Crop(crop_height=r.int("crop_height", 1), crop_width=r.int("crop_width", 1),
                noadjust=r.bool("noadjust"), extra=r.extra(), **r.loc)


def _write(layer: Crop, index: int) -> list[str]:
    lines = [f"crop_height={layer.crop_height}", f"crop_width={layer.crop_width}"]
    return lines + (["noadjust=1"] if layer.noadjust else [])


def _shape(layer: Crop, ins: tuple[Shape, ...]) -> Shape:
    x = ins[0]
    if not (1 <= layer.crop_height <= x.h and 1 <= layer.crop_width <= x.w):
        raise ShapeError(f"crop {layer.crop_height}x{layer.crop_width} does not fit the "
                         f"{x.h}x{x.w} input")
    return Shape(x.c, layer.crop_height, layer.crop_width)


def adjust(layer: Crop, x: Any) -> Any:
    """``2x - 1`` (``x`` with ``noadjust=1``)."""
    return x if layer.noadjust else x * 2.0 - 1.0


def _forward(layer: Crop, tools: Any, inputs: Sequence[Any]) -> Any:
    x = inputs[0]
    dh = (x.shape[1] - layer.crop_height) // 2
    dw = (x.shape[2] - layer.crop_width) // 2
    return adjust(layer, x[:, dh:dh + layer.crop_height, dw:dw + layer.crop_width])


SPEC = KindSpec(
    layer=Crop, sections=("crop",), parse=_parse, write=_write,
    keys={k: inert("(training only)") for k in ("flip", "angle", "saturation", "exposure",
                                                  "shift")},
    inputs=previous_input, renumber=same_layer, shape=_shape, cost=no_cost,
    variables=no_variables, forward=_forward,
    describe=lambda layer: f"{layer.crop_height}x{layer.crop_width}")
