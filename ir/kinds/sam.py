"""``[sam]``: spatial attention, the element-wise product of the previous layer and
the ``from=`` layer (YOLOv4's modified SAM).

Darknet: ``parse_sam``, ``forward_sam_layer``: ``out = prev · from`` (same shapes),
then ``activate_array`` (no case for swish, mish, ...: Darknet outputs 0, darkslim
refuses them). The sigmoid of SAM is the conv before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ir.activations import Activation
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

if TYPE_CHECKING:
    from ir.kinds.scale_channels import ScaleChannels

#: Activations `activate_array` has no case for: Darknet outputs 0 after them.
NOT_IN_ACTIVATE_ARRAY = frozenset({
    Activation.SWISH, Activation.MISH, Activation.HARD_MISH, Activation.RELU6,
    Activation.NORMALIZE_CHANNELS, Activation.NORMALIZE_CHANNELS_SOFTMAX,
    Activation.NORMALIZE_CHANNELS_SOFTMAX_MAXVAL})


def refuse_special(layer: Sam | ScaleChannels) -> str | None:
    if layer.activation in NOT_IN_ACTIVATE_ARRAY:
        return (f"activation={layer.activation.value} (Darknet's [{layer.kind}] has no such "
                "case and outputs 0)")
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sam:
    """``[sam]``: ``inputs[0] · inputs[1]`` element-wise, then the activation."""

    inputs: tuple[int, ...]
    activation: Activation = Activation.LINEAR
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "sam"


def _parse(r: SectionReader, index: int) -> Sam:
    refs = r.refs("from", index)
    if len(refs) != 1:
        raise r.error(f"from= names {len(refs)} layers: expected one", "from")
    return Sam(inputs=(index - 1, refs[0]), activation=r.activation(Activation.LINEAR),
               extra=r.extra(), **r.loc)


def _write(layer: Sam, index: int) -> list[str]:
    return [f"from={rel(layer.inputs[1:], index)}", f"activation={layer.activation.value}"]


def _shape(layer: Sam, ins: tuple[Shape, ...]) -> Shape:
    if ins[0] != ins[1]:
        raise ShapeError(f"multiplies layer {layer.inputs[0]} {tuple(ins[0])} by layer "
                         f"{layer.inputs[1]} {tuple(ins[1])}: shapes differ")
    return ins[0]


def _forward(layer: Sam, tools: Any, inputs: Sequence[Any]) -> Any:
    return tools.activate(layer.activation, inputs[0] * inputs[1])


SPEC = KindSpec(
    layer=Sam, sections=("sam",), parse=_parse, write=_write, keys={},
    inputs=lambda layer, index: layer.inputs, renumber=renumber_inputs, shape=_shape,
    cost=no_cost, variables=no_variables, forward=_forward,
    describe=lambda layer: ",".join(map(str, layer.inputs)), refuse=refuse_special)
