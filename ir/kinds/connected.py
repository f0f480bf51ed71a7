"""``[connected]`` (``[conn]``): a fully connected layer, optional BatchNorm, activation.

Darknet: ``parse_connected``, ``forward_connected_layer``: the input is flattened in
Darknet's NCHW order (channel, row, column), ``y = W x``, then BatchNorm (running
statistics, eps 1e-5) or the bias, then ``activate_array`` (whose switch has no case for
swish, mish, hard_mish or the normalize_channels family: Darknet outputs 0 for them, so
darkslim refuses them here). The default activation is the logistic.

Variables: ``dense/kernel`` ``(C·H·W, output)`` with rows in NCHW order, ``dense/bias``
or ``bn``. In ``.weights``: biases, weights ``(output, inputs)``, then (BN) scales,
rolling mean, rolling variance -- the BN values come after the weights, unlike a conv.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ir.activations import Activation
from ir.kinds.base import (
    KindSpec,
    Options,
    Shape,
    VariableShapes,
    previous_input,
    same_layer,
)
from ir.options import SectionReader

KERNEL = ("params", "dense", "kernel")
BIAS = ("params", "dense", "bias")
_SPECIAL = frozenset({Activation.SWISH, Activation.MISH, Activation.HARD_MISH,
                      Activation.NORMALIZE_CHANNELS, Activation.NORMALIZE_CHANNELS_SOFTMAX,
                      Activation.NORMALIZE_CHANNELS_SOFTMAX_MAXVAL, Activation.RELU6})


@dataclass(frozen=True, slots=True, kw_only=True)
class Connected:
    """``[connected]``: dense layer over the flattened (NCHW) input."""

    output: int
    batch_normalize: bool = False
    activation: Activation = Activation.LOGISTIC
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "connected"


def _parse(r: SectionReader, index: int) -> Connected:
    output = r.int("output", 1)
    if output < 1:
        raise r.error(f"output={output}: expected a positive integer", "output")
    return Connected(output=output, batch_normalize=r.bool("batch_normalize"),
                     activation=r.activation(Activation.LOGISTIC), extra=r.extra(), **r.loc)


def _write(layer: Connected, index: int) -> list[str]:
    lines = ["batch_normalize=1"] if layer.batch_normalize else []
    return lines + [f"output={layer.output}", f"activation={layer.activation.value}"]


def _refuse(layer: Connected) -> str | None:
    if layer.activation in _SPECIAL:
        return (f"activation={layer.activation.value} (Darknet's [connected] has no such "
                "case and outputs 0)")
    return None


def _cost(layer: Connected, ins: tuple[Shape, ...], out: Shape) -> tuple[int, int]:
    weights = ins[0].c * ins[0].h * ins[0].w * layer.output
    extra = 2 * layer.output if layer.batch_normalize else layer.output
    return weights + extra, 2 * weights


def _variables(layer: Connected, ins: tuple[Shape, ...]) -> VariableShapes:
    f = layer.output
    kernel = (ins[0].c * ins[0].h * ins[0].w, f)
    if layer.batch_normalize:
        return {"params": {"dense": {"kernel": kernel}, "bn": {"scale": (f,), "bias": (f,)}},
                "batch_stats": {"bn": {"mean": (f,), "var": (f,)}}}
    return {"params": {"dense": {"kernel": kernel, "bias": (f,)}}}


def _forward(layer: Connected, tools: Any, inputs: Sequence[Any]) -> Any:
    x = inputs[0]
    flat = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
    y = tools.dense(flat, features=layer.output, bias=not layer.batch_normalize)
    if layer.batch_normalize:
        y = tools.batch_norm(y)
    return tools.activate(layer.activation, y).reshape(x.shape[0], 1, 1, layer.output)


SPEC = KindSpec(
    layer=Connected, sections=("connected", "conn"), parse=_parse, write=_write, keys={},
    inputs=previous_input, renumber=same_layer,
    shape=lambda layer, ins: Shape(layer.output, 1, 1), cost=_cost, variables=_variables,
    forward=_forward,
    describe=lambda layer: f"{layer.output}" + (" bn " if layer.batch_normalize else " ")
    + layer.activation.value, refuse=_refuse)
