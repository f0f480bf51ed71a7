"""Prunability analysis: which conv outputs may lose channels, and which move together.

Every tensor in the graph is described as a concatenation of *segments*, each a channel
range of some *space*: the output channels of one conv (its index), the image (-1) or
the output of a section the analysis does not understand (opaque). `[route]` concatenates
segments, `[route] groups` slices them, `[upsample]` and `[maxpool]` pass them through.
`[shortcut]` adds tensors, so the spaces it adds are *coupled*: they must keep the same
channels. A depthwise conv couples its input space with its output space the same way.
Coupled spaces form groups (union-find). Everything not understood blocks the spaces it
touches, with a reason; nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Literal, NamedTuple

from ir import Conv, Graph, Layer, MaxPool, Route, Section, Shortcut, Upsample, Yolo
from ir.shapes import verify
from passes.errors import PruneError

Mode = Literal["regular", "shortcut"]
IMAGE = -1


class Segment(NamedTuple):
    """Channels ``start:stop`` of ``space`` (a conv index, IMAGE, or opaque < -1)."""

    space: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


Segments = tuple[Segment, ...]


def _opaque(index: int) -> int:
    return -2 - index


def _slice(segments: Segments, start: int, stop: int) -> Segments:
    """Channels ``start:stop`` of a tensor given as segments."""
    out, offset = [], 0
    for seg in segments:
        lo, hi = max(start, offset), min(stop, offset + seg.size)
        if lo < hi:
            out.append(Segment(seg.space, seg.start + lo - offset, seg.start + hi - offset))
        offset += seg.size
    return tuple(out)


def channel_segments(graph: Graph) -> tuple[Segments, ...]:
    """For every layer's output tensor, the segments its channels come from."""
    shapes = verify(graph)
    image = (Segment(IMAGE, 0, graph.channels),)
    result: list[Segments] = []

    def of(j: int) -> Segments:
        return image if j < 0 else result[j]

    for i, layer in enumerate(graph.layers):
        if isinstance(layer, Conv):
            segs: Segments = (Segment(i, 0, layer.filters),)
        elif isinstance(layer, Shortcut):
            segs = of(layer.inputs[0])
        elif isinstance(layer, Route):
            parts: list[Segment] = []
            for j in layer.inputs:
                c = shapes[j].c if j >= 0 else graph.channels
                step = c // layer.groups
                parts += _slice(of(j), layer.group_id * step, (layer.group_id + 1) * step)
            segs = tuple(parts)
        elif isinstance(layer, (Upsample, MaxPool, Yolo)):
            segs = of(i - 1)
        else:
            segs = (Segment(_opaque(i), 0, shapes[i].c),)
        result.append(segs)
    return tuple(result)


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
    """

    mode: Mode
    units: tuple[tuple[int, ...], ...]
    groups: tuple[tuple[int, ...], ...]
    reasons: tuple[tuple[int, str], ...]

    @property
    def prunable(self) -> tuple[int, ...]:
        """Conv indices whose γ are ranked (and penalised by sparse training)."""
        return tuple(sorted(i for unit in self.units for i in unit))

    def reason(self, index: int) -> str | None:
        return dict(self.reasons).get(index)

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
    segments = channel_segments(graph)
    shapes = verify(graph)
    uf = _UnionFind()
    blocked: dict[int, str] = {}

    def block(segs: Iterable[Segment], why: str) -> None:
        for seg in segs:
            if seg.space >= 0:
                blocked.setdefault(seg.space, why)

    def whole(segs: Segments) -> int | None:
        """The conv space if ``segs`` is exactly one whole conv output, else None."""
        if len(segs) == 1 and segs[0].space >= 0 and segs[0].start == 0:
            space = graph.layers[segs[0].space]
            if isinstance(space, Conv) and segs[0].stop == space.filters:
                return segs[0].space
        return None

    for i, layer in enumerate(graph.layers):
        where = f"layer {i} (cfg line {layer.line})"
        if isinstance(layer, Shortcut):
            ins = [segments[j] if j >= 0 else () for j in layer.inputs]
            spaces = [whole(s) for s in ins]
            sizes = {shapes[j].c for j in layer.inputs}
            if None in spaces or len(sizes) > 1:
                for s in ins:
                    block(s, f"added by [shortcut] {where} over a partial or "
                             "concatenated channel range")
            else:
                for s in spaces[1:]:
                    uf.union(spaces[0], s)
        elif isinstance(layer, Conv):
            if not layer.batch_normalize:
                blocked.setdefault(i, "no BatchNorm: no γ to rank its channels by")
            if layer.groups > 1:
                src = whole(segments[i - 1]) if i > 0 else None
                c_in = shapes[i - 1].c if i > 0 else graph.channels
                if src is not None and layer.groups == c_in == layer.filters:
                    uf.union(src, i)  # depthwise: input channel c feeds output c only
                else:
                    why = f"grouped conv {where} (groups={layer.groups}) is not depthwise"
                    blocked.setdefault(i, why)
                    block(segments[i - 1] if i > 0 else (), why)
        elif isinstance(layer, Yolo):
            block(segments[i - 1], f"feeds [yolo] {where}")
        elif isinstance(layer, Route) and layer.groups > 1:
            block(_concat(segments, layer.inputs),
                  f"sliced by [route] {where} groups={layer.groups}: pruning would "
                  "shift its group boundaries")
        elif isinstance(layer, Section):
            reads = [i - 1, *layer.inputs]
            block(_concat(segments, reads),
                  f"read by [{layer.type}] {where}, which the analysis does not understand")

    for i in _ignored(graph, ignore):
        blocked.setdefault(i, "ignored by the user")

    convs = [i for i, layer in enumerate(graph.layers) if isinstance(layer, Conv)]
    components: dict[int, list[int]] = {}
    for i in convs:
        components.setdefault(uf.find(i), []).append(i)
    groups = tuple(tuple(m) for m in components.values() if len(m) > 1)

    reasons: dict[int, str] = {}
    units: list[tuple[int, ...]] = []
    for members in components.values():
        first_blocked = next((m for m in members if m in blocked), None)
        if first_blocked is not None:
            for m in members:
                reasons[m] = (blocked[m] if m in blocked else
                              f"coupled with layer {first_blocked}: {blocked[first_blocked]}")
        elif len(members) > 1 and mode == "regular":
            for m in members:
                reasons[m] = (f"coupled with layers {', '.join(map(str, members))} through "
                              "[shortcut]/depthwise: regular mode keeps coupled groups whole "
                              "(mode=shortcut prunes them with one mask)")
        else:
            units.append(tuple(members))
    return Prunability(mode=mode, units=tuple(sorted(units)), groups=groups,
                       reasons=tuple(sorted(reasons.items())))


def _concat(segments: tuple[Segments, ...], indices: Iterable[int]) -> Segments:
    return tuple(seg for j in indices if j >= 0 for seg in segments[j])
