"""Every other Darknet section: parsed, written back verbatim and given a shape where
Darknet's rule is simple, but not executed and not pruned through (fail closed).

Recurrent layers (``[rnn]``, ``[crnn]``, ``[lstm]``, ``[gru]``, ``[conv_lstm]``),
``[contrastive]``, ``[local]``, ``[deconvolutional]``,
``[implicit]``, ``[lrn]``, ``[batchnorm]``, ``[activation]``, ``[history]``,
``[empty]``/``[silence]`` land here: running one is a clear error naming its cfg line,
and the prunability analysis keeps every channel it reads.
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
    no_cost,
    no_variables,
    rel,
    renumber_inputs,
)
from ir.options import SectionReader

#: Darknet's `string_to_layer_type` names without a spec of their own.
OTHER_SECTIONS = frozenset({
    "activation", "batchnorm", "contrastive", "conv_lstm", "crnn", "deconv",
    "deconvolutional", "empty", "gru", "history", "implicit", "implicit_add",
    "implicit_mul", "local", "logistic", "lrn", "lstm", "normalization", "rnn", "silence",
})
_SAME_SHAPE = frozenset({"activation", "batchnorm", "empty", "implicit_add",
                         "implicit_mul", "logistic", "lrn", "normalization", "silence",
                         "contrastive"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    """A Darknet section darkslim keeps but does not execute (see module docstring).

    ``inputs`` holds the resolved ``from=`` references of sections that have one.
    """

    type: str
    options: Options = ()
    inputs: tuple[int, ...] = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    @property
    def kind(self) -> str:
        return self.type

    @property
    def extra(self) -> Options:
        return self.options

    def option(self, key: str, default: str) -> str:
        return dict(self.options).get(key, default)


def parse_section(r: SectionReader, index: int, kind: str) -> Section:
    return Section(type=kind, options=r.extra(), **r.loc)


def _write(layer: Section, index: int) -> list[str]:
    lines = [f"from={rel(layer.inputs, index)}"] if layer.inputs else []
    return lines + [f"{k}={v}" for k, v in layer.options]


def _inputs(layer: Section, index: int) -> tuple[int, ...]:
    return (index - 1, *layer.inputs)


def _shape(layer: Section, ins: tuple[Shape, ...]) -> Shape:
    x = ins[0]
    if layer.type in _SAME_SHAPE:
        return x
    if layer.type in ("rnn", "gru", "lstm", "conv_lstm", "crnn"):
        output = int(layer.option("output", "1"))
        spatial = layer.type in ("conv_lstm", "crnn")
        return Shape(output, x.h, x.w) if spatial else Shape(output, 1, 1)
    raise ShapeError(f"[{layer.type}] has no shape rule in darkslim")


def _forward(layer: Section, tools: Any, inputs: Sequence[Any]) -> Any:
    raise NotImplementedError(f"[{layer.type}] has no runtime rule")


SPEC = KindSpec(
    layer=Section, sections=("section",),
    parse=lambda r, index: parse_section(r, index, r.raw.type), write=_write, keys={},
    inputs=_inputs, renumber=lambda layer, fn: renumber_inputs(layer, fn) if layer.inputs
    else layer, shape=_shape, cost=no_cost, variables=no_variables, forward=_forward,
    describe=lambda layer: "", refuse=lambda layer: "")
