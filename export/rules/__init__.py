"""The ONNX exporter's rule table: one emit rule per layer kind, checked at import.

An emit rule is ``(layer, b, index, inputs) -> output name``: ``b`` is the
`export.builder.OnnxBuilder` (``node``, ``const``, ``ints``, ``slice``, ``params``,
``shape``, ``add_detections``), ``inputs`` the NCHW tensor names the layer reads.
`ONNX_RULES` maps every kind of `ir.KINDS` to its rule (`export.rules.layers`,
`export.rules.heads`, shared pieces in `export.rules.ops`) or to an `ir.Refusal` with
its reason; `ir.check_table` raises at import when a kind is missing, so a new kind
cannot reach the exporter without an explicit entry. A refused kind is an
`export.ExportError` naming its cfg line.
"""

from __future__ import annotations

from collections.abc import Callable

import ir
from export.rules import heads, layers

EmitRule = Callable[..., str]

ONNX_RULES: ir.RuleTable[EmitRule] = ir.check_table("onnx export", {
    ir.Conv: layers.conv,
    ir.Shortcut: layers.shortcut,
    ir.Route: layers.route,
    ir.Upsample: layers.upsample,
    ir.MaxPool: layers.maxpool,
    ir.Yolo: heads.yolo,
    ir.GaussianYolo: heads.gaussian_yolo,
    ir.Region: heads.region,
    ir.Sam: layers.product,
    ir.ScaleChannels: layers.product,
    ir.Reorg3d: layers.reorg,
    ir.Reorg: layers.reorg,
    ir.AvgPool: layers.global_avgpool,
    ir.LocalAvgPool: layers.local_avgpool,
    ir.Dropout: layers.identity,
    ir.Softmax: layers.softmax,
    ir.Connected: layers.connected,
    ir.Cost: layers.identity,
    ir.Crop: layers.crop,
    ir.Detection: heads.detection,
    ir.Section: ir.Refusal("darkslim does not execute it"),
})

__all__ = ["ONNX_RULES", "EmitRule"]
