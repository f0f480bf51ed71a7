"""Prunability analysis: which conv outputs may lose channels, and which move together.

Every tensor in the graph is described as a concatenation of *segments*, each a channel
range of some *space*: the output channels of one conv (its index), the image (-1) or
an opaque tensor. Each layer kind's channel rule (`passes.rules.PASS_RULES`)
says how: `[route]` concatenates segments, `[route] groups` slices them (and asks for
group-balanced masks), `[upsample]` and `[maxpool]` pass them through. Element-wise
combinations (`[shortcut]`, `[sam]`, `[scale_channels]`, a depthwise conv) *couple* the
spaces they combine: they must keep the same channels. Coupled spaces form groups
(union-find). A layer whose kind or keys are not fully described blocks everything it
reads, with a reason; nothing is guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Literal, NamedTuple

from ir import Conv, Graph, Layer, layer_inputs, unsupported_reason
from ir.shapes import input_shape, verify
from passes.errors import PruneError
from passes.rules import IMAGE, Flow, FlowContext, Segment, Segments, pass_rule

Mode = Literal["regular", "shortcut"]


class BlockReason(Enum):
    """Why a conv is not prunable, as a code beside the reason's text: what a program
    reads (`Prunability.code`) instead of parsing the text. The values are the codes
    the kinds' channel rules give (``Flow.code``, `ir.kinds`)."""

    HEAD = "head"                         # feeds a detection head ([yolo], [region], ...)
    NO_BN = "no_bn"                       # no BatchNorm: no γ to rank its channels by
    ACROSS_CHANNELS = "across_channels"   # read by an op that mixes channels (softmax, ...)
    MAXPOOL_DEPTH = "maxpool_depth"       # a max across channels
    REORDER = "reorder"                   # [reorg], [reorg3d]: channels move to positions
    PER_PIXEL_SCALE = "per_pixel_scale"   # [scale_channels] scale_wh=1
    SHARED_WEIGHTS = "shared_weights"     # share_index: two convs, one kernel
    GROUPED_CONV = "grouped_conv"         # groups > 1, not depthwise
    UNSUPPORTED = "unsupported"           # read by a layer darkslim does not execute
    READ_BY = "read_by"                   # read by a kind that keeps its inputs whole
    PARTIAL = "partial"                   # an element-wise op over a partial channel range
    ROUTE_GROUPS = "route_groups"         # [route] groups= slices it unevenly
    SHORTCUT_REGULAR = "shortcut_regular"  # coupled group, kept whole in regular mode
    IGNORED = "ignored"                   # the user's ignore=


class Blocker(NamedTuple):
    """What keeps a conv whole: the reason's code and the kind of the layer it comes
    from (the head, the reader, the element-wise op, or the conv itself)."""

    code: BlockReason
    kind: str


def _flows(graph: Graph) -> tuple[tuple[Segments, ...], tuple[Flow, ...]]:
    """Every layer's channel flow (its kind's rule), and its output's segments."""
    shapes = verify(graph)
    image = (Segment(IMAGE, 0, graph.channels),)
    segments: list[Segments] = []
    flows: list[Flow] = []
    for i, layer in enumerate(graph.layers):
        inputs = layer_inputs(graph, i)
        ctx = FlowContext(
            index=i, inputs=inputs,
            in_segments=tuple(image if j < 0 else segments[j] for j in inputs),
            in_shapes=tuple(input_shape(graph) if j < 0 else shapes[j] for j in inputs),
            out_shape=shapes[i], where=f"layer {i} (cfg line {layer.line})",
            earlier=tuple(segments))
        flow = pass_rule(layer).channels(layer, ctx)
        reason = unsupported_reason(layer)
        if reason is not None:  # fail closed: nothing flows through what is not described
            why = f"read by [{layer.kind}] {ctx.where}, " + (
                f"which darkslim does not execute: {reason}" if reason
                else "which darkslim does not execute")
            owns = flow.segments == ctx.own(shapes[i].c)
            flow = Flow(flow.segments if owns else ctx.opaque(),
                        block=((ctx.all_inputs(), why),), own=why if owns else None,
                        code=BlockReason.UNSUPPORTED.value)
        flows.append(flow)
        segments.append(flow.segments)
    return tuple(segments), tuple(flows)


def channel_segments(graph: Graph) -> tuple[Segments, ...]:
    """For every layer's output tensor, the segments its channels come from."""
    return _flows(graph)[0]


@dataclass(frozen=True, slots=True)
class Prunability:
    """The analysis result: frozen data, nothing written into the graph.

    Attributes:
        mode: ``regular`` (coupled groups keep every channel, the seed's behaviour)
            or ``shortcut`` (each coupled group is pruned with one shared mask).
        units: the prunable units; each is a tuple of conv indices sharing one mask
            (a single conv, or a whole coupled group in ``shortcut`` mode).
        groups: every coupled group (size >= 2) found, prunable or not.
        reasons: ``(conv index, why it is not prunable)`` for every other conv.
        codes: ``(conv index, Blocker)`` for the same convs: the reason as a code and
            the kind it comes from. A conv blocked through its coupled group carries
            the code of the member that blocks the group.
        balanced: ``(unit, groups)`` for units read in ``groups`` equal slices by a
            ``[route] groups=``: their masks keep the same count in every slice.
    """

    mode: Mode
    units: tuple[tuple[int, ...], ...]
    groups: tuple[tuple[int, ...], ...]
    reasons: tuple[tuple[int, str], ...]
    balanced: tuple[tuple[tuple[int, ...], int], ...] = ()
    codes: tuple[tuple[int, Blocker], ...] = ()

    @property
    def prunable(self) -> tuple[int, ...]:
        """Conv indices whose γ are ranked (and penalised by sparse training)."""
        return tuple(sorted(i for unit in self.units for i in unit))

    def reason(self, index: int) -> str | None:
        return dict(self.reasons).get(index)

    def code(self, index: int) -> Blocker | None:
        """Why conv ``index`` is not prunable, as a code (None when it is)."""
        return dict(self.codes).get(index)

    def unit_of(self, index: int) -> tuple[int, ...] | None:
        for unit in self.units:
            if index in unit:
                return unit
        return None


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


Ignore = Iterable[int] | Callable[[int, Layer], bool]


def _ignored(graph: Graph, ignore: Ignore) -> set[int]:
    if callable(ignore):
        return {i for i, layer in enumerate(graph.layers) if ignore(i, layer)}
    chosen = set()
    for i in ignore:
        if not 0 <= i < len(graph.layers) or not isinstance(graph.layers[i], Conv):
            what = (f"a [{graph.layers[i].kind}] (cfg line {graph.layers[i].line})"
                    if 0 <= i < len(graph.layers) else f"out of range (0..{len(graph) - 1})")
            raise PruneError(f"ignore={i}: layer {i} is {what}; expected a "
                             "[convolutional] layer index", argument="ignore")
        chosen.add(i)
    return chosen


def analyze_prunability(graph: Graph, mode: Mode = "regular",
                        ignore: Ignore = ()) -> Prunability:
    """Decide, from the graph's edges alone, which convs may lose output channels.

    Args:
        graph: any verified Darknet graph.
        mode: ``regular`` or ``shortcut`` (see `Prunability`).
        ignore: conv indices to keep whole, or a predicate ``(index, layer) -> bool``,
            like Torch-Pruning's ``ignored_layers``.
    """
    if mode not in ("regular", "shortcut"):
        raise PruneError(f"mode={mode!r}: expected 'regular' or 'shortcut'",
                         argument="mode")
    segments, flows = _flows(graph)
    shapes = verify(graph)
    uf = _UnionFind()
    blocked: dict[int, str] = {}
    codes: dict[int, Blocker] = {}
    balance: dict[int, int] = {}

    def block(segs: Iterable[Segment], why: str, code: Blocker) -> None:
        for seg in segs:
            if seg.space >= 0 and seg.space not in blocked:
                blocked[seg.space], codes[seg.space] = why, code

    def whole(segs: Segments) -> int | None:
        """The space if ``segs`` is exactly one whole prunable output, else None."""
        if len(segs) == 1 and segs[0].space >= 0 and segs[0].start == 0:
            if segs[0].stop == shapes[segs[0].space].c:
                return segs[0].space
        return None

    for i, (layer, flow) in enumerate(zip(graph.layers, flows)):
        where = f"layer {i} (cfg line {layer.line})"
        code = Blocker(BlockReason(flow.code), layer.kind)
        if flow.own is not None and i not in blocked:
            blocked[i], codes[i] = flow.own, code
        for segs, why in flow.block:
            block(segs, why, code)
        for tensors in flow.couple:
            spaces = [whole(s) for s in tensors]
            if None in spaces or len({shapes[s].c for s in spaces if s is not None}) > 1:
                for s in tensors:
                    block(s, f"combined element-wise by [{layer.kind}] {where} over a "
                             "partial or concatenated channel range",
                          Blocker(BlockReason.PARTIAL, layer.kind))
            else:
                first, *rest = [space for space in spaces if space is not None]
                for other in rest:
                    uf.union(first, other)
        for segs, groups in flow.balanced:
            space = whole(segs)
            if space is None:
                block(segs, f"sliced by [{layer.kind}] {where} groups={groups} over a "
                            "partial or concatenated channel range",
                      Blocker(BlockReason.ROUTE_GROUPS, layer.kind))
            else:
                balance[space] = math.lcm(balance.get(space, 1), groups)

    for i in _ignored(graph, ignore):
        block((Segment(i, 0, shapes[i].c),), "ignored by the user",
              Blocker(BlockReason.IGNORED, graph.layers[i].kind))

    convs = [i for i, seg in enumerate(segments)
             if len(seg) == 1 and seg[0].space == i]  # layers with an output space
    components: dict[int, list[int]] = {}
    for i in convs:
        components.setdefault(uf.find(i), []).append(i)
    coupled = tuple(tuple(m) for m in components.values() if len(m) > 1)

    reasons: dict[int, str] = {}
    reason_codes: dict[int, Blocker] = {}
    units: list[tuple[int, ...]] = []
    balanced: list[tuple[tuple[int, ...], int]] = []
    for members in components.values():
        groups = math.lcm(*(balance.get(m, 1) for m in members))
        if groups > 1 and shapes[members[0]].c % groups:
            for m in members:
                block((Segment(m, 0, shapes[m].c),),
                      f"sliced into {groups} groups, which do not divide its "
                      f"{shapes[m].c} channels", Blocker(BlockReason.ROUTE_GROUPS, "route"))
        first_blocked = next((m for m in members if m in blocked), None)
        if first_blocked is not None:
            for m in members:
                reasons[m] = (blocked[m] if m in blocked else
                              f"coupled with layer {first_blocked}: {blocked[first_blocked]}")
                reason_codes[m] = codes[m if m in blocked else first_blocked]
        elif len(members) > 1 and mode == "regular":
            for m in members:
                reasons[m] = (f"coupled with layers {', '.join(map(str, members))} through "
                              "an element-wise op ([shortcut], [sam], [scale_channels], "
                              "depthwise): regular mode keeps coupled groups whole "
                              "(mode=shortcut prunes them with one mask)")
                reason_codes[m] = Blocker(BlockReason.SHORTCUT_REGULAR,
                                          graph.layers[m].kind)
        else:
            units.append(tuple(members))
            if groups > 1:
                balanced.append((tuple(members), groups))
    return Prunability(mode=mode, units=tuple(sorted(units)), groups=coupled,
                       reasons=tuple(sorted(reasons.items())),
                       balanced=tuple(sorted(balanced)),
                       codes=tuple(sorted(reason_codes.items())))
