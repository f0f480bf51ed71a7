"""`export_onnx`: an ONNX model out of ``(graph, variables)``, one node group per layer.

The driver is an interpreter like the runtime's: it walks the layers in order, keeps
each layer's output tensor name in an environment keyed by layer index (``-1`` is the
image) and dispatches each layer to its kind's emit rule in `export.rules.ONNX_RULES`.
Then it names the outputs, as `runtime.model.collect_outputs` defines them:

- ``head_0``, ``head_1``, ...: the raw NCHW map feeding each detection layer
  (``[yolo]``, ``[Gaussian_yolo]``, ``[region]``; what ``darkslim run`` writes), or
  ``output`` (the last layer) without detection layers;
- ``detections`` ``(N, boxes, 5 + classes)`` with ``decode``: cx, cy, w, h in input
  pixels, objectness, class scores, exactly as each head kind's ``decode`` rule (heads
  with fewer classes zero-padded to the widest, as the runtime does);
- ``selected_indices`` ``(K, 3)`` with ``nms``: ONNX ``NonMaxSuppression`` over the
  decoded boxes, per class, with score = objectness × class score; each row is
  (image, class, box index into ``detections``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import ir
import passes
from export.builder import OnnxBuilder, live_nodes, tensor_type
from export.rules import ONNX_RULES
from ir.variables import Variables

if TYPE_CHECKING:
    import onnx


class ExportError(ir.CfgError):
    """A network that cannot be written as ONNX, naming the cfg line:

    ``model.cfg:42: [rnn] (layer 12): no ONNX emit rule for this layer kind``
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportOptions:
    """What `export_onnx` writes.

    Attributes:
        opset: default-domain opset (17; 13 and later work).
        decode: add the ``detections`` output.
        nms: add ``selected_indices`` (implies ``decode``).
        dynamic_batch: a symbolic batch axis ``N`` instead of ``batch``.
        batch: the fixed batch size when not dynamic.
        fold_bn: fold BatchNorm into the convs (`passes.FoldBatchNorm`).
        bn_eps: the BatchNorm epsilon of the weights (Darknet: 1e-5).
        iou_threshold, score_threshold, max_per_class: the NMS settings.
        metadata: ``(key, value)`` pairs for the model's ``metadata_props``.
    """

    opset: int = 17
    decode: bool = False
    nms: bool = False
    dynamic_batch: bool = False
    batch: int = 1
    fold_bn: bool = True
    bn_eps: float = 1e-5
    iou_threshold: float = 0.45
    score_threshold: float = 0.25
    max_per_class: int = 100
    metadata: tuple[tuple[str, str], ...] = ()


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def check_exportable(graph: ir.Graph) -> None:
    """Raise `ExportError` for the first layer that cannot be exported: a kind
    without an emit rule, or a layer (a key of one) darkslim does not execute as
    Darknet does (`ir.unsupported_reason`: exporting it would be a silently wrong
    graph)."""
    for index, layer in enumerate(graph.layers):
        where: dict[str, Any] = dict(path=layer.path or graph.path, line=layer.line,
                                     section=layer.kind)
        reason = ir.unsupported_reason(layer)
        if reason is not None:
            what = f" {reason}" if reason else ""
            raise ExportError(f"(layer {index}){what} not supported: cannot export it",
                              **where)
        refused = ONNX_RULES.refusal(layer)
        if refused is not None:
            exportable = sorted(s.name for s in ONNX_RULES.handled())
            raise ExportError(f"(layer {index}): no ONNX emit rule for this layer kind, "
                              f"{refused} (exportable: {', '.join(exportable)})", **where)


def export_onnx(graph: ir.Graph, variables: Variables, options: ExportOptions = ExportOptions()
                ) -> onnx.ModelProto:
    """The network as an ``onnx.ModelProto`` that passes ``onnx.checker`` (full check).

    Args:
        graph: the network, exported at its ``[net]`` width and height.
        variables: ``{"params", "batch_stats"}`` in the project layout (numpy or JAX).
        options: `ExportOptions`.

    Raises:
        ExportError: a layer kind without an emit rule, or a layer darkslim does not
            execute (names its cfg line).
    """
    import onnx
    import onnx.helper as oh
    import onnx.numpy_helper

    check_exportable(graph)
    shapes = ir.verify(graph)
    source_cfg = ir.write_cfg(graph)
    variables = _to_numpy(variables)
    if options.fold_bn:
        graph, variables = passes.FoldBatchNorm(eps=options.bn_eps)(graph, variables)
    decode = options.decode or options.nms
    b = OnnxBuilder(variables=variables, opset=options.opset, bn_eps=options.bn_eps,
                    decode=decode, input_hw=(graph.height, graph.width),
                    fold_bn=options.fold_bn)
    image = ir.input_shape(graph)
    b.set_shape("images", image)
    env: dict[int, str] = {-1: "images"}
    for index, layer in enumerate(graph.layers):
        b.begin(index, layer.kind)
        inputs = [env[j] for j in ir.layer_inputs(graph, index)]
        rule = ONNX_RULES.of(layer)
        assert not isinstance(rule, ir.Refusal)  # check_exportable raised for those
        env[index] = rule(layer, b, index, inputs)
        b.set_shape(env[index], shapes[index])

    batch = "N" if options.dynamic_batch else options.batch
    outputs: list[tuple[str, str, list[int | str]]] = []  # (output name, tensor, shape)
    heads = graph.head_indices()
    for k, y in enumerate(heads):
        outputs.append((f"head_{k}", env[y - 1], [batch, *shapes[y - 1]]))
    if not heads:
        outputs.append(("output", env[len(graph.layers) - 1], [batch, *shapes[-1]]))
    if decode and heads:
        b.begin(len(graph.layers), "detections")
        widths = [5 + _head(graph, y).classes for y in heads]
        fields = max(widths)
        parts = [d if width == fields else b.node(
            "Pad", [d, b.ints([0, 0, 0, 0, 0, fields - width], "pads")])
            for d, width in zip(b.detections, widths, strict=True)]
        det = parts[0] if len(parts) == 1 else b.node("Concat", parts, axis=1)
        boxes = sum(_boxes(graph, y, shapes[y]) for y in heads)
        outputs.append(("detections", det, [batch, boxes, fields]))
        if options.nms:
            outputs.append(("selected_indices", _emit_nms(b, det, fields, options),
                            ["K", 3]))

    nodes = b.nodes()
    for name, tensor, _ in outputs:
        nodes.append(oh.make_node("Identity", [tensor], [name], name=f"outputs/{name}"))
    nodes = live_nodes(nodes, [name for name, _, _ in outputs])
    used = {i for node in nodes for i in node.input}
    initializers = [onnx.numpy_helper.from_array(a, name)
                    for name, a in b.initializers().items() if name in used]
    float32 = tensor_type(np.float32)
    graph_proto = oh.make_graph(
        nodes, name=graph.path.rsplit("/", 1)[-1] or "darknet",
        inputs=[oh.make_tensor_value_info("images", float32, [batch, *image])],
        outputs=[oh.make_tensor_value_info(
            name, tensor_type(np.int64) if name == "selected_indices" else float32, shape)
            for name, _, shape in outputs],
        initializer=initializers)
    opsets = [oh.make_opsetid("", options.opset)]
    model = oh.make_model(graph_proto, opset_imports=opsets, producer_name="darkslim",
                          ir_version=oh.find_min_ir_version_for(opsets),
                          doc_string="Darknet network exported by darkslim: input "
                          "`images` NCHW float32 in [0, 1]; outputs " +
                          ", ".join(name for name, _, _ in outputs))
    meta = {"darkslim.bn_folded": str(options.fold_bn).lower(),
            "darkslim.cfg": source_cfg, **dict(options.metadata)}
    oh.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


HEAD_KINDS = (ir.Yolo, ir.GaussianYolo, ir.Region, ir.Detection)
"""The layer classes of the kinds whose spec ``is_head`` (a test keeps them in step)."""


def _head(graph: ir.Graph, index: int
          ) -> ir.Yolo | ir.GaussianYolo | ir.Region | ir.Detection:
    head = graph.layers[index]
    assert isinstance(head, HEAD_KINDS)  # a head_indices() layer
    return head


def _boxes(graph: ir.Graph, index: int, shape: ir.Shape) -> int:
    """How many boxes the detection layer ``index`` decodes (its kind's ``boxes`` rule)."""
    boxes = ir.spec_of(graph.layers[index]).boxes
    assert boxes is not None  # every head kind has one
    return boxes(graph.layers[index], shape)


def _emit_nms(b: OnnxBuilder, det: str, fields: int, options: ExportOptions) -> str:
    """ONNX NonMaxSuppression over ``det`` with centre-form boxes, scores per class."""
    boxes = b.slice(det, 0, 4, axis=2)
    objectness = b.slice(det, 4, 5, axis=2)
    scores = objectness if fields == 5 else b.node(
        "Mul", [objectness, b.slice(det, 5, fields, axis=2)])
    scores = b.node("Transpose", [scores], perm=[0, 2, 1])  # (N, classes, boxes)
    return b.node("NonMaxSuppression",
                  [boxes, scores, b.ints([options.max_per_class], "max_per_class"),
                   b.const([options.iou_threshold], name="iou_threshold"),
                   b.const([options.score_threshold], name="score_threshold")],
                  center_point_box=1)
