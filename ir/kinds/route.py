"""``[route]``: channel concatenation of ``layers=``; with ``groups``, part
``group_id`` of each input's channels (CSP nets, yolov4-tiny).

Darknet: ``parse_route``, ``forward_route_layer``: every input is split into ``groups``
equal channel parts and part ``group_id`` of each is copied out, in order.
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
    rel,
    renumber_inputs,
)
from ir.options import SectionReader


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """``[route]``: channel concat of ``inputs``, optionally one of ``groups`` parts."""

    inputs: tuple[int, ...]
    groups: int = 1
    group_id: int = 0
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "route"


def _parse(r: SectionReader, index: int) -> Route:
    groups = r.int("groups", 1)
    group_id = r.int("group_id", 0)
    if groups < 1 or not 0 <= group_id < groups:
        raise r.error(f"groups={groups} group_id={group_id}: expected groups >= 1 and "
                      "0 <= group_id < groups", "group_id")
    return Route(inputs=r.refs("layers", index), groups=groups, group_id=group_id,
                 extra=r.extra(), **r.loc)


def _write(layer: Route, index: int) -> list[str]:
    lines = [f"layers={rel(layer.inputs, index)}"]
    if layer.groups != 1:
        lines += [f"groups={layer.groups}", f"group_id={layer.group_id}"]
    return lines


def _shape(layer: Route, ins: tuple[Shape, ...]) -> Shape:
    for j, s in zip(layer.inputs, ins):
        if (s.h, s.w) != (ins[0].h, ins[0].w):
            raise ShapeError(f"joins layer {layer.inputs[0]} ({ins[0].h}x{ins[0].w}) and "
                             f"layer {j} ({s.h}x{s.w}): spatial sizes differ")
        if s.c % layer.groups:
            raise ShapeError(f"groups={layer.groups} does not divide the {s.c} channels "
                             f"of layer {j}")
    return Shape(sum(s.c // layer.groups for s in ins), ins[0].h, ins[0].w)


def take_group(xp: Any, x: Any, layer: Route) -> Any:
    """Group ``group_id`` of one input's channels (NHWC)."""
    size = x.shape[-1] // layer.groups
    return x[..., layer.group_id * size:(layer.group_id + 1) * size]


def _forward(layer: Route, tools: Any, inputs: Sequence[Any]) -> Any:
    parts = [take_group(tools.xp, x, layer) for x in inputs]
    return parts[0] if len(parts) == 1 else tools.xp.concatenate(parts, axis=-1)


def _describe(layer: Route) -> str:
    text = ",".join(map(str, layer.inputs))
    return text + (f" g{layer.group_id}/{layer.groups}" if layer.groups > 1 else "")


SPEC = KindSpec(
    layer=Route, sections=("route",), parse=_parse, write=_write,
    keys={"stream": inert("(GPU streams)"), "wait_stream": inert("(GPU streams)")},
    inputs=lambda layer, index: layer.inputs, renumber=renumber_inputs, shape=_shape,
    cost=no_cost, variables=no_variables, forward=_forward, describe=_describe)
