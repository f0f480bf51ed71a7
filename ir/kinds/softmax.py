"""``[softmax]`` (``[soft]``): a classifier's softmax.

Darknet: ``parse_softmax``, ``forward_softmax_layer`` (CPU): ``softmax_cpu`` over the
image's flat NCHW buffer split into ``groups`` contiguous chunks, ``exp(v/T - max/T)``
normalised, ``T = temperature``. ``spatial`` is ignored by the CPU build but used by
the GPU one, so darkslim refuses it; ``tree`` (softmax_tree) is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ir.kinds.base import (
    KeyRule,
    KindSpec,
    Options,
    Shape,
    ShapeError,
    equals,
    inert,
    no_cost,
    no_variables,
    previous_input,
    same_layer,
)
from ir.options import SectionReader


@dataclass(frozen=True, slots=True, kw_only=True)
class Softmax:
    """``[softmax]``: softmax over ``groups`` chunks of the flat NCHW buffer."""

    groups: int = 1
    temperature: float = 1.0
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "softmax"


def _parse(r: SectionReader, index: int) -> Softmax:
    groups = r.int("groups", 1)
    if groups < 1:
        raise r.error(f"groups={groups}: expected a positive integer", "groups")
    return Softmax(groups=groups, temperature=r.float("temperature", 1.0), extra=r.extra(),
                   **r.loc)


def _write(layer: Softmax, index: int) -> list[str]:
    lines = [f"groups={layer.groups}"]
    return lines + ([f"temperature={layer.temperature:g}"] if layer.temperature != 1 else [])


def _shape(layer: Softmax, ins: tuple[Shape, ...]) -> Shape:
    x = ins[0]
    if (x.c * x.h * x.w) % layer.groups:
        raise ShapeError(f"groups={layer.groups} does not divide the {x.c * x.h * x.w} "
                         "inputs")
    return x


def _forward(layer: Softmax, tools: Any, inputs: Sequence[Any]) -> Any:
    xp = tools.xp
    x = inputs[0]
    n, h, w, c = x.shape
    flat = x.transpose(0, 3, 1, 2).reshape(n, layer.groups, -1) / layer.temperature
    e = xp.exp(flat - flat.max(axis=-1, keepdims=True))
    y = e / e.sum(axis=-1, keepdims=True)
    return y.reshape(n, c, h, w).transpose(0, 2, 3, 1)


SPEC = KindSpec(
    layer=Softmax, sections=("softmax", "soft"), parse=_parse, write=_write,
    keys={"noloss": inert("(training only)"), "spatial": equals(0),
          "tree": KeyRule(lambda layer, value: False, "no softmax tree")},
    inputs=previous_input, renumber=same_layer, shape=_shape, cost=no_cost,
    variables=no_variables, forward=_forward,
    describe=lambda layer: f"groups {layer.groups}" + (
        f", T={layer.temperature:g}" if layer.temperature != 1 else ""))
