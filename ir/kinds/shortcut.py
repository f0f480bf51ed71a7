"""``[shortcut]``: element-wise sum of the previous layer and ``from=`` layers.

Darknet (``forward_shortcut_layer``, ``shortcut_multilayer_cpu``): the output keeps the
previous layer's channel count; where another input has fewer channels only the common
ones add, where it has more, its extra channels are dropped. Then the activation.
Weighted shortcuts (``weights_type``) are not supported. The forward has special cases
for swish and mish only; hard_mish and the normalize_channels family fall into
``activate()``, which returns 0 for them, so darkslim refuses them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ir.activations import Activation
from ir.kinds.base import (
    KeyRule,
    KindSpec,
    Options,
    Shape,
    ShapeError,
    equals,
    no_cost,
    no_variables,
    rel,
    renumber_inputs,
)
from ir.options import SectionReader


@dataclass(frozen=True, slots=True, kw_only=True)
class Shortcut:
    """``[shortcut]``: element-wise sum of the previous layer and ``inputs[1:]``."""

    inputs: tuple[int, ...]
    activation: Activation = Activation.LINEAR
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "shortcut"


def _parse(r: SectionReader, index: int) -> Shortcut:
    return Shortcut(inputs=(index - 1, *r.refs("from", index)),
                    activation=r.activation(Activation.LINEAR), extra=r.extra(), **r.loc)


def _write(layer: Shortcut, index: int) -> list[str]:
    return [f"from={rel(layer.inputs[1:], index)}", f"activation={layer.activation.value}"]


_KEYS = {"weights_type": KeyRule(lambda layer, value: value == "none", "none"),
         "weights_normalization": KeyRule(lambda layer, value: value == "none", "none"),
         "alpha": equals(1), "beta": equals(1)}


def _shape(layer: Shortcut, ins: tuple[Shape, ...]) -> Shape:
    for j, s in zip(layer.inputs[1:], ins[1:]):
        if (s.h, s.w) != (ins[0].h, ins[0].w):
            raise ShapeError(f"adds layer {j} ({s.h}x{s.w}) to layer {layer.inputs[0]} "
                             f"({ins[0].h}x{ins[0].w}): spatial sizes differ")
    return ins[0]


#: Activations forward_shortcut_layer does not handle: CPU Darknet outputs 0 after them.
_NOT_IN_SHORTCUT = frozenset({Activation.HARD_MISH, Activation.NORMALIZE_CHANNELS,
                              Activation.NORMALIZE_CHANNELS_SOFTMAX,
                              Activation.NORMALIZE_CHANNELS_SOFTMAX_MAXVAL})


def _refuse(layer: Shortcut) -> str | None:
    if layer.activation in _NOT_IN_SHORTCUT:
        return (f"activation={layer.activation.value} (Darknet's [shortcut] has no such "
                "case and outputs 0)")
    return None


def _forward(layer: Shortcut, tools: Any, inputs: Sequence[Any]) -> Any:
    xp = tools.xp
    out = inputs[0]
    channels = out.shape[-1]
    for x in inputs[1:]:
        x = x[..., :channels]
        missing = channels - x.shape[-1]
        if missing:
            x = xp.concatenate([x, xp.zeros((*x.shape[:-1], missing), x.dtype)], axis=-1)
        out = out + x
    return tools.activate(layer.activation, out)


SPEC = KindSpec(
    layer=Shortcut, sections=("shortcut",), parse=_parse, write=_write, keys=_KEYS,
    inputs=lambda layer, index: layer.inputs, renumber=renumber_inputs, shape=_shape,
    cost=no_cost, variables=no_variables, forward=_forward,
    describe=lambda layer: ",".join(map(str, layer.inputs)), refuse=_refuse)
