"""`KindSpec`: what one Darknet layer kind *is*, in one value.

A spec is to a layer kind what a JAX primitive's definition is to the primitive: its
dataclass, cfg parse and write (checked keys, refusals), inputs and their renumbering,
output shape, cost, variables layout, its row in ``info``, and its meaning as a
forward rule (and, for a detection head, its decode). `ir.kinds` checks at import that
every registered kind has every rule.

What a *consumer* of the IR does with a kind is not here: each consumer (the passes,
the exporter, the ``.weights`` reader and writer, ...) keeps its own table keyed by
kind beside its own code, checked against `ir.KINDS` by `ir.check_table`
(`ir.rules`); docs/extending.md lists them.

Rules that compute take their array library as an argument (``xp``: numpy or
``jax.numpy``) or a toolbox object from the caller (the Flax runtime, the numpy
reference), so ``import ir`` stays numpy-only and one rule serves every backend.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, TypeVar

from ir.options import Options, SectionReader

_L = TypeVar("_L")

VariableShapes = dict[str, dict[str, dict[str, tuple[int, ...]]]]
"""A kind's ``variables`` rule's answer: ``{collection: {part: {name: shape}}}``."""


class Shape(NamedTuple):
    """A CHW tensor shape (batch excluded)."""

    c: int
    h: int
    w: int


class ShapeError(ValueError):
    """Raised by a shape rule; `ir.verify` adds the file, line and layer index."""


class KeyRule(NamedTuple):
    """A key a kind keeps in ``extra``: inert for inference, or accepted only with
    values that leave the computation as darkslim implements it."""

    accepts: Callable[[Any, str], bool]
    expected: str


def inert(expected: str = "any value") -> KeyRule:
    return KeyRule(lambda layer, value: True, expected)


def equals(*allowed: float) -> KeyRule:
    def test(layer: Any, value: str) -> bool:
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


def variables_owner(layer: Any, index: int) -> int:
    """The layer whose variables layer ``index`` runs with: itself, or the conv it
    shares its weights with (``share_index``)."""
    share: int | None = getattr(layer, "share", None)
    return index if share is None else share


def previous_input(layer: Any, index: int) -> tuple[int, ...]:
    return (index - 1,)


def same_layer(layer: _L, renumber: Callable[[int], int]) -> _L:
    return layer


def renumber_inputs(layer: Any, renumber: Callable[[int], int]) -> Any:
    return dataclasses.replace(layer, inputs=tuple(renumber(j) for j in layer.inputs))


def no_cost(layer: Any, in_shapes: tuple[Shape, ...], out_shape: Shape) -> tuple[int, int]:
    return (0, 0)


def no_variables(layer: Any, in_shapes: tuple[Shape, ...]) -> VariableShapes:
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
        renumber: ``(layer, old -> new index) -> layer`` when layers are removed: every
            layer index the layer holds (explicit inputs, a conv's ``share``) goes
            through the function; `KindSpec.refs` is read off it.
        shape: ``(layer, input shapes) -> Shape``; raises `ShapeError`.
        cost: ``(layer, input shapes, output shape) -> (params, flops)``.
        variables: ``(layer, input shapes) -> {collection: {part: {name: shape}}}``.
        forward: ``(layer, tools, inputs) -> output`` (NHWC). The Flax runtime and the
            float64 numpy reference each run it with their own ``tools`` (``xp``,
            ``conv``, ``batch_norm``, ``dense``, ``activate``): the primitives are
            written twice, independently, the composition once.
        describe: ``layer -> str``, the details column of ``darkslim info``.
        decode: for detection layers, ``(layer, xp, head, input_hw) -> boxes``
            ``(N, boxes, 5 + classes)`` from the raw NHWC map it reads; else None.
        boxes: for detection layers, ``(layer, shape) -> int``: how many boxes
            ``decode`` returns per image for the layer's output shape; else None.
        refuse: ``layer -> reason`` when a value of a field is outside what darkslim
            executes (``""``: the whole kind), else None.
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
    variables: Callable[[Any, tuple[Shape, ...]], VariableShapes]
    forward: Callable[..., Any]
    describe: Callable[[Any], str]
    decode: Callable[..., Any] | None = None
    boxes: Callable[[Any, Shape], int] | None = None
    refuse: Callable[[Any], str | None] = lambda layer: None

    @property
    def name(self) -> str:
        return self.sections[0]

    @property
    def is_head(self) -> bool:
        return self.decode is not None

    def refs(self, layer: Any) -> tuple[int, ...]:
        """Every layer index ``layer`` holds, in field order: what its ``renumber`` rule
        rewrites (explicit inputs, a conv's ``share_index``), not the implicit previous
        layer of kinds that read it. Derived from ``renumber`` so the indices `ir.verify`
        checks and the ones a pass renumbers can never disagree."""
        held: list[int] = []

        def hold(j: int) -> int:
            held.append(j)
            return j

        self.renumber(layer, hold)
        return tuple(held)

    def unsupported(self, layer: Any) -> str | None:
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


__all__ = ["COMMON_KEYS", "KeyRule", "KindSpec", "Options", "Shape", "ShapeError",
           "equals", "fmt", "inert", "no_cost", "no_variables", "previous_input", "rel",
           "renumber_inputs", "same_layer", "variables_owner", "VariableShapes"]
