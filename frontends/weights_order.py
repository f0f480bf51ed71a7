"""The ``.weights`` file's rule table: per layer kind, its variables in file order.

Each entry is ``layer -> ((leaf, layout), ...)``: the layer's variables in the order
Darknet's ``load_weights`` reads them, each stored ``"vector"``, ``"oihw"`` (a conv
kernel, HWIO here) or ``"dense"`` (``(out, in)`` in the file, ``(in, out)`` here);
empty for kinds without weights. The table is checked against `ir.KINDS` at import
(`ir.check_table`). `ir.Section` is a refusal: darkslim has no variables for the
sections it does not execute, and the weighted ones among them are refused by
`frontends.variables.unsupported_weighted_layers` before any byte is read or written.
"""

from __future__ import annotations

from collections.abc import Callable

import ir
from ir.kinds.connected import BIAS as DENSE_BIAS
from ir.kinds.connected import KERNEL as DENSE_KERNEL
from ir.kinds.conv import BETA, BIAS, GAMMA, KERNEL, MEAN, VAR

Leaf = tuple[str, str, str]
Order = tuple[tuple[Leaf, str], ...]


def _conv(layer: ir.Conv) -> Order:
    if layer.share is not None:
        return ()  # load_weights skips a conv with a share_layer
    # load_convolutional_weights: biases (β with BN), [scales, mean, variance], weights.
    if layer.batch_normalize:
        return ((BETA, "vector"), (GAMMA, "vector"), (MEAN, "vector"), (VAR, "vector"),
                (KERNEL, "oihw"))
    return ((BIAS, "vector"), (KERNEL, "oihw"))


def _connected(layer: ir.Connected) -> Order:
    # load_connected_weights: biases (β with BN), weights, then [scales, mean, variance].
    if layer.batch_normalize:
        return ((BETA, "vector"), (DENSE_KERNEL, "dense"), (GAMMA, "vector"),
                (MEAN, "vector"), (VAR, "vector"))
    return ((DENSE_BIAS, "vector"), (DENSE_KERNEL, "dense"))


def _none(layer: ir.Layer) -> Order:
    return ()


WEIGHTS_ORDER: ir.RuleTable[Callable[..., Order]] = ir.check_table(".weights order", {
    ir.Conv: _conv, ir.Connected: _connected,
    **{kind: _none for kind in (ir.Shortcut, ir.Route, ir.Upsample, ir.MaxPool, ir.Yolo,
                                ir.GaussianYolo, ir.Region, ir.Sam, ir.ScaleChannels,
                                ir.Reorg3d, ir.Reorg, ir.AvgPool, ir.LocalAvgPool,
                                ir.Dropout, ir.Softmax, ir.Cost, ir.Crop, ir.Detection)},
    ir.Section: ir.Refusal("no variables here: a weighted section is refused before "
                           "its weights are read or written"),
})


def file_order(layer: ir.Layer) -> Order:
    """``layer``'s variables in ``.weights`` order (empty: none in the file). A refused
    kind holds none here (see the module docstring)."""
    rule = WEIGHTS_ORDER.of(layer)
    return () if isinstance(rule, ir.Refusal) else rule(layer)


__all__ = ["WEIGHTS_ORDER", "file_order"]
