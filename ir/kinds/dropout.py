"""``[dropout]``: the identity at inference.

Darknet: ``parse_dropout``, ``forward_dropout_layer`` returns at once when not
training, and ``parse_network_cfg`` aliases the layer's output to the previous one's.
``probability`` and the ``dropblock*`` keys only matter in training.
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
class Dropout:
    """``[dropout]``: identity at inference (``probability`` kept for training)."""

    probability: float = 0.2
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "dropout"


def _parse(r: SectionReader, index: int) -> Dropout:
    return Dropout(probability=r.float("probability", 0.2), extra=r.extra(), **r.loc)


def _write(layer: Dropout, index: int) -> list[str]:
    return [f"probability={layer.probability:g}"]


SPEC = KindSpec(
    layer=Dropout, sections=("dropout",), parse=_parse, write=_write,
    keys={k: inert("(training only)") for k in ("dropblock", "dropblock_size_abs",
                                                  "dropblock_size_rel")},
    inputs=previous_input, renumber=same_layer, shape=lambda layer, ins: ins[0],
    cost=no_cost, variables=no_variables, forward=lambda layer, tools, inputs: inputs[0],
    describe=lambda layer: f"p={layer.probability:g}")
