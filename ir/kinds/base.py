"""`KindSpec`: everything darkslim knows about one Darknet layer kind, in one value.

A spec is to a layer kind what a JAX primitive's registered rules are to the
primitive: its dataclass, cfg parse and write, inputs and their renumbering, output
shape, cost, variables, how channels flow through it for pruning, the constant a
dropped channel becomes after it, the runtime rule, the numpy reference rule and its
row in ``info``. `ir.kinds` checks at import that every registered kind has every rule.

Rules that compute take their array library as an argument (``xp``: numpy or
``jax.numpy``) or a toolbox object from the caller (the Flax runtime, the numpy
reference), so ``import ir`` stays numpy-only and one rule serves every backend.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

from ir.options import Options, SectionReader


class Shape(NamedTuple):
    """A CHW tensor shape (batch excluded)."""

    c: int
    h: int
    w: int


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


class ShapeError(ValueError):
    """Raised by a shape rule; `ir.verify` adds the file, line and layer index."""


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
            prunability analysis reads (`passes.analysis.BlockReason` values:
            ``"no_bn"``, ``"head"``, ...); the default is a generic "read by".
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


def pass_through(layer, ctx: FlowContext) -> Flow:
    """Channel c of the output is channel c of the (first) input."""
    return Flow(ctx.in_segments[0])


@dataclass(frozen=True, slots=True)
class DropContext:
    """For the dropped-constant rule: the per-channel constant each input tensor
    carries where its channels were dropped (0 where kept), and which were dropped."""

    xp: Any
    consts: tuple[Any, ...]
    dropped: tuple[Any, ...]   # boolean arrays, True where the channel was dropped
    out_shape: Shape
    own_keep: Any | None       # this layer's own output mask, if it was pruned
    params: Mapping[tuple[str, str, str], Any]  # this layer's variables by leaf: {BETA: ...}

    def zeros(self):
        return self.xp.zeros(self.out_shape.c, self.xp.float32)


def no_drops(layer, ctx: DropContext):
    """For kinds whose inputs the channel rule blocks: nothing dropped reaches them."""
    return ctx.zeros()


def first_input_const(layer, ctx: DropContext):
    """For channel-wise pass-through kinds: the constant passes unchanged."""
    return ctx.consts[0]


class KeyRule(NamedTuple):
    """A key a kind keeps in ``extra``: inert for inference, or accepted only with
    values that leave the computation as darkslim implements it."""

    accepts: Callable[[Any, str], bool]
    expected: str


def inert(expected: str = "any value") -> KeyRule:
    return KeyRule(lambda layer, value: True, expected)


def equals(*allowed: float) -> KeyRule:
    def test(layer, value: str) -> bool:
        try:
            return float(value) in allowed
        except ValueError:
            return False
    return KeyRule(test, " or ".join(f"{a:g}" for a in allowed))


#: Keys `parse_network_cfg_custom` reads for every layer; none changes inference.
COMMON_KEYS: Mapping[str, KeyRule] = {
    key: inert("(training only)") for key in (
        "burnin_update", "clip", "dont_update", "dontload", "dontloadscales",
        "learning_rate", "onlyforward", "show_receptive_field", "stopbackward",
        "train_only_bn")}


def variables_owner(layer, index: int) -> int:
    """The layer whose variables layer ``index`` runs with: itself, or the conv it
    shares its weights with (``share_index``)."""
    share = getattr(layer, "share", None)
    return index if share is None else share


def previous_input(layer, index: int) -> tuple[int, ...]:
    return (index - 1,)


def same_layer(layer, renumber: Callable[[int], int]):
    return layer


def renumber_inputs(layer, renumber: Callable[[int], int]):
    return dataclasses.replace(layer, inputs=tuple(renumber(j) for j in layer.inputs))


def no_fold(layer, xp, leaves, const_in, in_keep, own_keep, zero_inputs) -> dict:
    return {}


def no_slice(layer, xp, leaves, in_keep, out_keep):
    return layer, {}


def no_cost(layer, in_shapes, out_shape) -> tuple[int, int]:
    return (0, 0)


def no_variables(layer, in_shapes) -> dict:
    return {}


def rel(refs: tuple[int, ...], index: int) -> str:
    return ",".join(str(r - index) for r in refs)


def fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True, slots=True)
class KindSpec:
    """All rules of one layer kind. See the module docstring; every field is required.

    Attributes:
        layer: the frozen dataclass of the kind.
        sections: cfg section names, the canonical one first (``convolutional``,
            ``conv``). Darknet matches them case-sensitively.
        parse: ``(reader, index) -> layer``.
        write: ``(layer, index) -> lines`` after the header, without ``extra``.
        keys: with the fields, every key Darknet's parser reads for the kind; those
            kept in ``extra`` are inert for inference or accepted only with some values
            (a rejected value makes the layer unsupported: it blocks pruning and refuses
            to run). A key outside them is one Darknet ignores too.
        inputs: ``(layer, index) -> absolute indices`` of the tensors it reads.
        renumber: ``(layer, old -> new index) -> layer`` when layers are removed.
        shape: ``(layer, input shapes) -> Shape``; raises `ShapeError`.
        cost: ``(layer, input shapes, output shape) -> (params, flops)``.
        variables: ``(layer, input shapes) -> {collection: {part: {name: shape}}}``.
        channels: ``(layer, FlowContext) -> Flow``.
        dropped: ``(layer, DropContext) -> per-channel constant`` of the output.
        fold: for kinds with variables, ``(layer, xp, leaves, const_in, in_keep,
            own_keep, zero_inputs) -> updated leaves``: absorb what dropped input
            channels emitted, zero the BN of dropped outputs (`no_fold` otherwise).
        slice: ``(layer, xp, leaves, in_keep, out_keep) -> (layer, updated leaves)``:
            the compact layer (`no_slice` for kinds without variables).
        forward: ``(layer, tools, inputs) -> output`` (NHWC). The Flax runtime and the
            float64 numpy reference each run it with their own ``tools`` (``xp``,
            ``conv``, ``batch_norm``, ``dense``, ``activate``): the primitives are
            written twice, independently, the composition once.
        describe: ``layer -> str``, the details column of ``darkslim info``.
        decode: for detection layers, ``(layer, xp, head, input_hw) -> boxes``
            ``(N, boxes, 5 + classes)`` from the raw NHWC map it reads; else None.
        boxes: for detection layers, ``(layer, shape) -> int``: how many boxes
            ``decode`` returns per image for the layer's output shape (the ONNX
            ``detections`` output is declared with it); else None.
        onnx: the ONNX emit rule ``(layer, builder, index, inputs) -> output name``
            over NCHW tensor names (builder calls and numpy only, no ``onnx`` import;
            shared pieces in `ir.kinds.onnx_ops`), or None while the kind has none
            (export then refuses it, naming the cfg line).
        refuse: ``layer -> reason`` when a value of a field is outside what darkslim
            executes (``""``: the whole kind), else None.
        weights_file: ``layer -> ((leaf, layout), ...)``: the layer's variables in the
            order Darknet's ``load_weights`` reads them, each stored ``"vector"``,
            ``"oihw"`` (a conv kernel, HWIO here) or ``"dense"`` (``(out, in)`` in the
            file, ``(in, out)`` here); empty for kinds without weights.
    """

    layer: type
    sections: tuple[str, ...]
    parse: Callable[[SectionReader, int], Any]
    write: Callable[[Any, int], list[str]]
    keys: Mapping[str, KeyRule]
    inputs: Callable[[Any, int], tuple[int, ...]]
    renumber: Callable[[Any, Callable[[int], int]], Any]
    shape: Callable[[Any, tuple[Shape, ...]], Shape]
    cost: Callable[[Any, tuple[Shape, ...], Shape], tuple[int, int]]
    variables: Callable[[Any, tuple[Shape, ...]], dict]
    channels: Callable[[Any, FlowContext], Flow]
    dropped: Callable[[Any, DropContext], Any]
    fold: Callable[..., dict]
    slice: Callable[..., tuple[Any, dict]]
    forward: Callable[..., Any]
    describe: Callable[[Any], str]
    decode: Callable[..., Any] | None = None
    boxes: Callable[[Any, Shape], int] | None = None
    onnx: Callable[..., Any] | None = None
    refuse: Callable[[Any], str | None] = lambda layer: None
    weights_file: Callable[[Any], tuple[tuple[tuple[str, str, str], str], ...]] = \
        lambda layer: ()

    @property
    def name(self) -> str:
        return self.sections[0]

    @property
    def is_head(self) -> bool:
        return self.decode is not None

    def unsupported(self, layer) -> str | None:
        """None when darkslim executes ``layer`` as Darknet does, else what it does not
        (``""``: the whole kind). Every key left in ``extra`` must be one the spec
        knows to be inert, or have a value it accepts."""
        refused = self.refuse(layer)
        if refused is not None:
            return refused
        for key, value in getattr(layer, "extra", ()):
            rule = self.keys.get(key) or COMMON_KEYS.get(key)
            if rule is None:
                # The spec's fields and `keys` cover every key Darknet's parser reads
                # for the kind: Darknet ignores this one too ("Unused field").
                continue
            if not rule.accepts(layer, value):
                return f"{key}={value} (supported: {rule.expected})"
        return None


__all__ = ["COMMON_KEYS", "DropContext", "Flow", "FlowContext", "IMAGE", "KeyRule",
           "KindSpec", "Options", "Segment", "Segments", "Shape", "ShapeError",
           "equals", "first_input_const", "fmt", "inert", "no_cost", "no_drops",
           "no_fold", "no_slice", "no_variables", "opaque", "pass_through", "previous_input", "rel",
           "renumber_inputs", "same_layer", "slice_segments"]
