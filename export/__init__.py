"""ONNX export: a backend of the IR, one emit rule per layer kind in its own checked
table (`export.rules.ONNX_RULES`, beside this code; `ir.check_table`).

`export_onnx(graph, variables, ExportOptions(...))` returns an ``onnx.ModelProto``;
`export.runtimes` runs one with onnxruntime or OpenVINO and times it. ``onnx``,
``onnxruntime`` and ``openvino`` are imported only when used, so ``import export``
stays light.
"""

from export.builder import OnnxBuilder
from export.driver import ExportError, ExportOptions, check_exportable, export_onnx

__all__ = ["ExportError", "ExportOptions", "OnnxBuilder", "check_exportable",
           "export_onnx"]
