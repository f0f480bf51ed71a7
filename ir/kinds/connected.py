"""``[connected]`` (``[conn]``): a fully connected layer, optional BatchNorm, activation.

Darknet: ``parse_connected``, ``forward_connected_layer``: the input is flattened in
Darknet's NCHW order (channel, row, column), ``y = W x``, then BatchNorm (running
statistics, eps 1e-5) or the bias, then ``activate_array`` (whose switch has no case for
swish, mish, hard_mish or the normalize_channels family: Darknet outputs 0 for them, so
darkslim refuses them here). The default activation is the logistic.

Variables: ``dense/kernel`` ``(C·H·W, output)`` with rows in NCHW order, ``dense/bias``
or ``bn``. In ``.weights``: biases, weights ``(output, inputs)``, then (BN) scales,
rolling mean, rolling variance -- the BN values come after the weights, unlike a conv.

Pruning: the input columns of a dropped input channel go (``H·W`` rows each), and what
the channel emitted is folded into the bias or BN mean; with BatchNorm its own outputs
are ranked by |γ| like a conv's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ir.activations import Activation, activate_xp
from ir.kinds import onnx_ops as ops
from ir.kinds.base import (
    DropContext,
    Flow,
    FlowContext,
    KindSpec,
    Options,
    Shape,
    previous_input,
    same_layer,
)
from ir.kinds.conv import BETA, GAMMA, MEAN, VAR, fold_consumer, slice_outputs, zero_dropped_outputs
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


def _cost(layer: Connected, ins, out: Shape) -> tuple[int, int]:
    weights = ins[0].c * ins[0].h * ins[0].w * layer.output
    extra = 2 * layer.output if layer.batch_normalize else layer.output
    return weights + extra, 2 * weights


def _variables(layer: Connected, ins) -> dict:
    f = layer.output
    kernel = (ins[0].c * ins[0].h * ins[0].w, f)
    if layer.batch_normalize:
        return {"params": {"dense": {"kernel": kernel}, "bn": {"scale": (f,), "bias": (f,)}},
                "batch_stats": {"bn": {"mean": (f,), "var": (f,)}}}
    return {"params": {"dense": {"kernel": kernel, "bias": (f,)}}}


def _channels(layer: Connected, ctx: FlowContext) -> Flow:
    why = None if layer.batch_normalize else "no BatchNorm: no γ to rank its outputs by"
    return Flow(ctx.own(layer.output), own=why, code="no_bn")


def _dropped(layer: Connected, ctx: DropContext):
    if ctx.own_keep is None or not layer.batch_normalize:
        return ctx.zeros()
    return activate_xp(ctx.xp, layer.activation, ctx.params[BETA])


def _rows(kernel, channels: int):
    """The kernel as ``(channels, H·W, output)``: rows are NCHW-flattened inputs."""
    return kernel.reshape(channels, kernel.shape[0] // channels, kernel.shape[1])


def _fold(layer: Connected, xp, leaves, const_in, in_keep, own_keep, zero_inputs: bool):
    updates = {}
    if own_keep is not None and not own_keep.all():
        updates.update(zero_dropped_outputs(xp, leaves, own_keep))
    if in_keep is None or in_keep.all():
        return updates
    rows = _rows(leaves[KERNEL], len(in_keep))
    offset = xp.einsum("cko,c->o", rows, xp.asarray(const_in, rows.dtype))
    updates.update(fold_consumer(xp, leaves, offset, layer.batch_normalize))
    if zero_inputs:
        keep = xp.asarray(in_keep, rows.dtype)[:, None, None]
        updates[KERNEL] = (rows * keep).reshape(leaves[KERNEL].shape)
    return updates


def _slice(layer: Connected, xp, leaves, in_keep, out_keep):
    kernel = leaves[KERNEL]
    in_idx, out_idx = np.flatnonzero(in_keep), np.flatnonzero(out_keep)
    updates = {}
    if len(in_idx) < len(in_keep) or len(out_idx) < layer.output:
        rows = _rows(kernel, len(in_keep))[xp.asarray(in_idx)][..., xp.asarray(out_idx)]
        updates[KERNEL] = rows.reshape(-1, len(out_idx))
    if len(out_idx) < layer.output:
        updates.update(slice_outputs(xp, leaves, out_idx, (GAMMA, BETA, MEAN, VAR, BIAS)))
        return dataclasses.replace(layer, output=len(out_idx)), updates
    return layer, updates


def _forward(layer: Connected, tools, inputs):
    x = inputs[0]
    flat = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
    y = tools.dense(flat, features=layer.output, bias=not layer.batch_normalize)
    if layer.batch_normalize:
        y = tools.batch_norm(y)
    return tools.activate(layer.activation, y).reshape(x.shape[0], 1, 1, layer.output)


def _onnx(layer: Connected, b, index: int, inputs) -> str:
    """Flatten (NCHW order, as the kernel's rows), Gemm with the ``(C·H·W, output)``
    kernel; BatchNorm folded into it when the exporter folds BN (``b.fold_bn``), else a
    BatchNormalization node; the activation; a ``(N, output, 1, 1)`` map."""
    p = b.params(index)
    kernel, bias = p["kernel"], p.get("bias")
    flat = b.node("Flatten", [inputs[0]], axis=1)
    if layer.batch_normalize and b.fold_bn:
        g = p["scale"] / np.sqrt(p["var"].astype(np.float64) + b.bn_eps)
        kernel = (kernel * g[None, :]).astype(np.float32)
        bias = (p["beta"] - p["mean"] * g).astype(np.float32)
    args = [flat, b.const(kernel, name="weight")]
    if bias is not None:
        args.append(b.const(bias, name="bias"))
    y = b.node("Gemm", args)
    if layer.batch_normalize and not b.fold_bn:
        y = b.node("BatchNormalization",
                   [y, b.const(p["scale"], name="scale"), b.const(p["beta"], name="beta"),
                    b.const(p["mean"], name="mean"), b.const(p["var"], name="var")],
                   epsilon=b.bn_eps)
    y = ops.emit_activation(b, layer.activation, y)
    return b.node("Reshape", [y, b.ints([0, layer.output, 1, 1], "shape")])


def _weights_file(layer: Connected):
    # load_connected_weights: biases (β with BN), weights, then [scales, mean, variance].
    if layer.batch_normalize:
        return ((BETA, "vector"), (KERNEL, "dense"), (GAMMA, "vector"), (MEAN, "vector"),
                (VAR, "vector"))
    return ((BIAS, "vector"), (KERNEL, "dense"))


SPEC = KindSpec(
    layer=Connected, sections=("connected", "conn"), parse=_parse, write=_write, keys={},
    inputs=previous_input, renumber=same_layer,
    shape=lambda layer, ins: Shape(layer.output, 1, 1), cost=_cost, variables=_variables,
    channels=_channels, dropped=_dropped, fold=_fold, slice=_slice, forward=_forward,
    describe=lambda layer: f"{layer.output}" + (" bn " if layer.batch_normalize else " ")
    + layer.activation.value, refuse=_refuse, weights_file=_weights_file,
    onnx=_onnx)
