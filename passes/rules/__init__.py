"""The passes' rule table: how channels flow through each layer kind, the constant a
dropped channel becomes after it, and how its variables fold and slice.

`PASS_RULES` maps every kind of `ir.KINDS` to a `PassRule` (`passes.rules.weighted`
for the kinds with variables, the rest below) or to an `ir.Refusal`; `ir.check_table`
raises at import when a kind is missing. A refused kind blocks every channel it reads
(fail closed: `pass_rule` turns the refusal into `passes.rules.flow.blocking`), so an
unknown layer can never be pruned through. The prunability analysis
(`passes.analysis`) and the masks' transforms (`passes.fold`) dispatch through
`pass_rule`.

Products: ``[sam]`` couples its two channel spaces (they must drop the same channels)
and a dropped channel emits ``act(k_prev · k_from)``; ``[scale_channels]`` couples the
feature and the scale spaces, but a per-pixel scale (``scale_wh=1``) makes a dropped
channel's output vary over the image, so the feature space is kept whole.
"""

from __future__ import annotations

from typing import Any

import ir
from ir.activations import activate_xp
from ir.kinds.crop import adjust
from ir.kinds.route import take_group
from passes.rules.flow import (
    IMAGE,
    DropContext,
    Flow,
    FlowContext,
    PassRule,
    Segment,
    Segments,
    blocking,
    first_input_const,
    no_drops,
    opaque,
    pass_through,
    slice_segments,
)
from passes.rules.weighted import CONNECTED, CONV


def _shortcut_channels(layer: ir.Shortcut, ctx: FlowContext) -> Flow:
    if layer.activation.across_channels:
        return ctx.blocked("shortcut", f"activation={layer.activation.value} "
                           "normalises across channels", "across_channels")
    return Flow(ctx.in_segments[0], couple=(tuple(ctx.in_segments),))


def _shortcut_dropped(layer: ir.Shortcut, ctx: DropContext) -> Any:
    if not any(bool(d.any()) for d in ctx.dropped):
        return ctx.zeros()
    # Coupled inputs drop the same channels, each emitting its constant there.
    return activate_xp(ctx.xp, layer.activation, sum(ctx.consts))


def _route_channels(layer: ir.Route, ctx: FlowContext) -> Flow:
    parts: list[Segment] = []
    for segs, shape in zip(ctx.in_segments, ctx.in_shapes):
        step = shape.c // layer.groups
        parts += slice_segments(segs, layer.group_id * step, (layer.group_id + 1) * step)
    balanced = (tuple((segs, layer.groups) for segs in ctx.in_segments)
                if layer.groups > 1 else ())
    return Flow(tuple(parts), balanced=balanced)


def _route_dropped(layer: ir.Route, ctx: DropContext) -> Any:
    return ctx.xp.concatenate([take_group(ctx.xp, c, layer) for c in ctx.consts])


def _maxpool_channels(layer: ir.MaxPool, ctx: FlowContext) -> Flow:
    if layer.depth:
        return ctx.blocked("maxpool", "maxpool_depth=1 takes a max across channels",
                           "maxpool_depth")
    return Flow(ctx.in_segments[0])


def _maxpool_dropped(layer: ir.MaxPool, ctx: DropContext) -> Any:
    return ctx.zeros() if layer.depth else ctx.consts[0]


def _head_channels(layer: ir.Layer, ctx: FlowContext) -> Flow:
    return Flow(ctx.in_segments[0], block=((ctx.in_segments[0],
                                            f"feeds [{layer.kind}] {ctx.where}"),),
                code="head")


def _product_channels(layer: ir.Sam, ctx: FlowContext) -> Flow:
    return Flow(ctx.in_segments[0], couple=(tuple(ctx.in_segments),))


def _product_dropped(layer: ir.Sam | ir.ScaleChannels, ctx: DropContext) -> Any:
    if not any(bool(d.any()) for d in ctx.dropped):
        return ctx.zeros()
    return activate_xp(ctx.xp, layer.activation, ctx.consts[0] * ctx.consts[1])


def _scale_channels_channels(layer: ir.ScaleChannels, ctx: FlowContext) -> Flow:
    scale, feature = ctx.in_segments
    if layer.scale_wh:
        why = f"scaled per pixel by [scale_channels] {ctx.where} (scale_wh=1)"
        return Flow(feature, block=((feature + scale, why),), code="per_pixel_scale")
    return Flow(feature, couple=((feature, scale),))


_PASS_THROUGH = PassRule(channels=pass_through, dropped=first_input_const)
_HEAD = PassRule(channels=_head_channels, dropped=no_drops)

PASS_RULES: ir.RuleTable[PassRule] = ir.check_table("passes", {
    ir.Conv: CONV,
    ir.Shortcut: PassRule(channels=_shortcut_channels, dropped=_shortcut_dropped),
    ir.Route: PassRule(channels=_route_channels, dropped=_route_dropped),
    ir.Upsample: PassRule(channels=pass_through,
                          dropped=lambda layer, ctx: ctx.consts[0] * layer.scale),
    ir.MaxPool: PassRule(channels=_maxpool_channels, dropped=_maxpool_dropped),
    ir.Yolo: _HEAD,
    ir.GaussianYolo: _HEAD,
    ir.Region: _HEAD,
    ir.Sam: PassRule(channels=_product_channels, dropped=_product_dropped),
    ir.ScaleChannels: PassRule(channels=_scale_channels_channels, dropped=_product_dropped),
    ir.Reorg3d: blocking("moves channels across positions", "reorder"),
    ir.Reorg: blocking("moves channels across positions", "reorder"),
    ir.AvgPool: _PASS_THROUGH,
    ir.LocalAvgPool: _PASS_THROUGH,
    ir.Dropout: _PASS_THROUGH,
    ir.Softmax: blocking("normalises across channels", "across_channels"),
    ir.Connected: CONNECTED,
    ir.Cost: _PASS_THROUGH,
    ir.Crop: PassRule(channels=pass_through,
                      dropped=lambda layer, ctx: adjust(layer, ctx.consts[0])),
    ir.Detection: _HEAD,
    ir.Section: ir.Refusal("which darkslim does not execute"),
})


def pass_rule(layer: ir.Layer) -> PassRule:
    """The passes' rule for ``layer``'s kind; a refused kind blocks what it reads."""
    entry = PASS_RULES.of(layer)
    return blocking(entry.reason, "unsupported") if isinstance(entry, ir.Refusal) else entry


__all__ = ["IMAGE", "PASS_RULES", "DropContext", "Flow", "FlowContext", "PassRule",
           "Segment", "Segments", "opaque", "pass_rule", "slice_segments"]
