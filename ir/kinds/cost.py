"""``[cost]``: the training loss of a classifier; the identity at inference.

Darknet: ``forward_cost_layer`` returns at once without truth, and
``get_network_output`` skips trailing ``[cost]`` layers, so a network's output is what
the layer before it computes. ``type``, ``scale`` and ``ratio`` only matter in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ir.kinds.base import (
    KindSpec,
    Options,
    inert,
    no_cost,
    no_variables,
    previous_input,
    same_layer,
)
from ir.options import SectionReader


@dataclass(frozen=True, slots=True, kw_only=True)
class Cost:
    """``[cost]``: identity at inference (``type`` kept for training)."""

    type: str = "sse"
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "cost"


def _parse(r: SectionReader, index: int) -> Cost:
    return Cost(type=r.str("type", "sse"), extra=r.extra(), **r.loc)


SPEC = KindSpec(
    layer=Cost, sections=("cost",), parse=_parse,
    write=lambda layer, index: [f"type={layer.type}"],
    keys={k: inert("(training only)") for k in ("scale", "ratio", "noobject_scale", "thresh")},
    inputs=previous_input, renumber=same_layer, shape=lambda layer, ins: ins[0],
    cost=no_cost, variables=no_variables, forward=lambda layer, tools, inputs: inputs[0],
    describe=lambda layer: layer.type)
