"""The vocabulary of the passes' per-kind rules: segments, channel flows, dropped
constants, and the `PassRule` bundle each kind has in `passes.rules.PASS_RULES`.

A tensor's channels are a concatenation of *segments*, each a channel range of some
*space*: the output channels of a prunable layer (its index), the image (`IMAGE`) or an
opaque tensor (`opaque`). A kind's channel rule says how its output's segments come
from its inputs' (`Flow`); its dropped rule, what constant a dropped channel becomes
after it (`DropContext`); its fold and slice rules, how its variables absorb dropped
inputs and lose dropped channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ir.kinds.base import Shape
from ir.layers import Layer
from ir.variables import Leaf


class Segment(NamedTuple):
    """Channels ``start:stop`` of ``space``: a layer whose output channels can be
    pruned (its index), the image (-1) or an opaque tensor (< -1)."""

    space: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


Segments = tuple[Segment, ...]
IMAGE = -1


def opaque(index: int) -> int:
    """The space id of layer ``index``'s output when its channels are not a prunable
    space of their own (kept whole, whatever happens around it)."""
    return -2 - index


def slice_segments(segments: Segments, start: int, stop: int) -> Segments:
    """Channels ``start:stop`` of a tensor given as segments."""
    out, offset = [], 0
    for seg in segments:
        lo, hi = max(start, offset), min(stop, offset + seg.size)
        if lo < hi:
            out.append(Segment(seg.space, seg.start + lo - offset, seg.start + hi - offset))
        offset += seg.size
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Flow:
    """How channels flow through one layer, for the prunability analysis.

    Attributes:
        segments: where the output's channels come from.
        couple: groups of input tensors (as segments) that must keep the same channels:
            the tensors an element-wise op combines. The analysis unions them when each
            is exactly one whole prunable space, and blocks them otherwise.
        block: ``(segments, reason)``: channels that must all be kept.
        balanced: ``(segments, groups)``: a tensor read in ``groups`` equal slices;
            its pruned space must keep the same number of channels in every slice.
        own: for a layer with its own output space (``segments`` is
            ``ctx.own(...)``), why that space cannot lose channels, or None.
        code: the kind of reason ``own`` and ``block`` give, as a short code the
            analysis reads (a `passes.analysis.BlockReason` value).
    """

    segments: Segments
    couple: tuple[tuple[Segments, ...], ...] = ()
    block: tuple[tuple[Segments, str], ...] = ()
    balanced: tuple[tuple[Segments, int], ...] = ()
    own: str | None = None
    code: str = "read_by"


@dataclass(frozen=True, slots=True)
class FlowContext:
    """What a channel rule may ask about the graph around layer ``index``."""

    index: int
    inputs: tuple[int, ...]
    in_segments: tuple[Segments, ...]
    in_shapes: tuple[Shape, ...]
    out_shape: Shape
    where: str
    earlier: tuple[Segments, ...] = ()  # every earlier layer's output segments

    def own(self, channels: int) -> Segments:
        return (Segment(self.index, 0, channels),)

    def opaque(self) -> Segments:
        return (Segment(opaque(self.index), 0, self.out_shape.c),)

    def all_inputs(self) -> Segments:
        return tuple(seg for segs in self.in_segments for seg in segs)

    def blocked(self, kind: str, why: str = "", code: str = "read_by") -> Flow:
        """Fail closed: every input channel kept, the output opaque. The reason reads
        ``read by [kind] layer i (cfg line n): why``; ``code`` names its kind."""
        reason = f"read by [{kind}] {self.where}" + (f": {why}" if why else "")
        return Flow(self.opaque(), block=((self.all_inputs(), reason),), code=code)


@dataclass(frozen=True, slots=True)
class DropContext:
    """For the dropped-constant rule: the per-channel constant each input tensor
    carries where its channels were dropped (0 where kept), and which were dropped."""

    xp: Any
    consts: tuple[Any, ...]
    dropped: tuple[Any, ...]   # boolean arrays, True where the channel was dropped
    out_shape: Shape
    own_keep: Any | None       # this layer's own output mask, if it was pruned
    params: Mapping[Leaf, Any]  # this layer's variables, flat: {("params", "bn", "bias"): ...}

    def zeros(self) -> Any:
        return self.xp.zeros(self.out_shape.c, self.xp.float32)


def pass_through(layer: Layer, ctx: FlowContext) -> Flow:
    """Channel c of the output is channel c of the (first) input."""
    return Flow(ctx.in_segments[0])


def no_drops(layer: Layer, ctx: DropContext) -> Any:
    """For kinds whose inputs the channel rule blocks: nothing dropped reaches them."""
    return ctx.zeros()


def first_input_const(layer: Layer, ctx: DropContext) -> Any:
    """For channel-wise pass-through kinds: the constant passes unchanged."""
    return ctx.consts[0]


def no_fold(layer: Layer, xp: Any, leaves: Mapping[Leaf, Any], const_in: Any, in_keep: Any,
            own_keep: Any, zero_inputs: bool) -> dict[Leaf, Any]:
    return {}


def no_slice(layer: Layer, xp: Any, leaves: Mapping[Leaf, Any], in_keep: Any, out_keep: Any
             ) -> tuple[Layer, dict[Leaf, Any]]:
    return layer, {}


@dataclass(frozen=True, slots=True)
class PassRule:
    """The passes' rules for one layer kind.

    Attributes:
        channels: ``(layer, FlowContext) -> Flow``.
        dropped: ``(layer, DropContext) -> per-channel constant`` of the output.
        fold: for kinds with variables, ``(layer, xp, leaves, const_in, in_keep,
            own_keep, zero_inputs) -> updated leaves``: absorb what dropped input
            channels emitted, zero the BN of dropped outputs (`no_fold` otherwise).
        slice: ``(layer, xp, leaves, in_keep, out_keep) -> (layer, updated leaves)``:
            the compact layer (`no_slice` for kinds without variables).
    """

    channels: Callable[[Any, FlowContext], Flow]
    dropped: Callable[[Any, DropContext], Any]
    fold: Callable[..., dict[Leaf, Any]] = no_fold
    slice: Callable[..., tuple[Any, dict[Leaf, Any]]] = no_slice


def blocking(reason: str, code: str = "read_by") -> PassRule:
    """The rule of a kind that keeps every channel it reads (``read by [kind] layer i
    (cfg line n): reason``), so nothing dropped reaches it and it has nothing to fold
    or slice: a kind the passes refuse, or one that mixes channels."""
    def blocked(layer: Layer, ctx: FlowContext) -> Flow:
        return ctx.blocked(layer.kind, reason, code)
    return PassRule(channels=blocked, dropped=no_drops)


__all__ = [
    "IMAGE",
    "DropContext",
    "Flow",
    "FlowContext",
    "PassRule",
    "Segment",
    "Segments",
    "blocking",
    "first_input_const",
    "no_drops",
    "no_fold",
    "no_slice",
    "opaque",
    "pass_through",
    "slice_segments",
]
