"""``[route]``: channel concatenation of ``layers=``; with ``groups``, slice
``group_id`` of each input (CSP nets, yolov4-tiny).

Darknet: ``parse_route``, ``forward_route_layer``: every input is split into ``groups``
equal channel slices and slice ``group_id`` of each is copied out, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ir.kinds.base import (
    DropContext,
    Flow,
    FlowContext,
    KindSpec,
    Options,
    Segment,
    Shape,
    ShapeError,
    inert,
    no_cost,
    no_fold,
    no_slice,
    no_variables,
    rel,
    renumber_inputs,
    slice_segments,
)
from ir.options import SectionReader


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """``[route]``: channel concat of ``inputs``, optionally one of ``groups`` slices."""

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


def _channels(layer: Route, ctx: FlowContext) -> Flow:
    parts: list[Segment] = []
    for segs, shape in zip(ctx.in_segments, ctx.in_shapes):
        step = shape.c // layer.groups
        parts += slice_segments(segs, layer.group_id * step, (layer.group_id + 1) * step)
    balanced = (tuple((segs, layer.groups) for segs in ctx.in_segments)
                if layer.groups > 1 else ())
    return Flow(tuple(parts), balanced=balanced)


def _take(xp, x, layer: Route):
    size = x.shape[-1] // layer.groups
    return x[..., layer.group_id * size:(layer.group_id + 1) * size]


def _dropped(layer: Route, ctx: DropContext):
    return ctx.xp.concatenate([_take(ctx.xp, c, layer) for c in ctx.consts])


def _forward(layer: Route, tools, inputs):
    parts = [_take(tools.xp, x, layer) for x in inputs]
    return parts[0] if len(parts) == 1 else tools.xp.concatenate(parts, axis=-1)


def _describe(layer: Route) -> str:
    text = ",".join(map(str, layer.inputs))
    return text + (f" g{layer.group_id}/{layer.groups}" if layer.groups > 1 else "")


def _onnx(layer: Route, b, index: int, inputs) -> str:
    """Concat on channels; with ``groups``, slice ``group_id`` of each input first
    (CSP / yolov4-tiny). A single whole input is an Identity, so the layer still has
    its named node."""
    parts = []
    for x in inputs:
        if layer.groups > 1:
            size = b.shape(x)[0] // layer.groups
            x = b.slice(x, layer.group_id * size, (layer.group_id + 1) * size, axis=1)
        parts.append(x)
    if len(parts) > 1:
        return b.node("Concat", parts, axis=1)
    return parts[0] if parts[0] != inputs[0] else b.node("Identity", parts)


SPEC = KindSpec(
    layer=Route, sections=("route",), parse=_parse, write=_write,
    keys={"stream": inert("(GPU streams)"), "wait_stream": inert("(GPU streams)")},
    inputs=lambda layer, index: layer.inputs, renumber=renumber_inputs, shape=_shape,
    cost=no_cost, variables=no_variables, channels=_channels, dropped=_dropped,
    fold=no_fold, slice=no_slice, forward=_forward, describe=_describe, onnx=_onnx)
