"""``[avgpool]`` (``[avg]``): global average pooling to 1×1.

Darknet: ``forward_avgpool_layer``: the mean of each channel over h·w. A dropped
channel's constant stays the same constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ir.kinds.base import (
    KindSpec,
    Options,
    Shape,
    no_cost,
    no_variables,
    previous_input,
    same_layer,
)
from ir.options import SectionReader


@dataclass(frozen=True, slots=True, kw_only=True)
class AvgPool:
    """``[avgpool]``: global average pooling (no keys)."""

    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "avgpool"


def _parse(r: SectionReader, index: int) -> AvgPool:
    return AvgPool(extra=r.extra(), **r.loc)


SPEC = KindSpec(
    layer=AvgPool, sections=("avgpool", "avg"), parse=_parse,
    write=lambda layer, index: [], keys={},
    inputs=previous_input, renumber=same_layer,
    shape=lambda layer, ins: Shape(ins[0].c, 1, 1), cost=no_cost, variables=no_variables,
    forward=lambda layer, tools, inputs: inputs[0].mean(axis=(1, 2), keepdims=True),
    describe=lambda layer: "global")
