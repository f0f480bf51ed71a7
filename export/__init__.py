"""ONNX export: a backend of the IR, one emit rule per layer kind in its own checked
table (`export.rules.ONNX_RULES`, beside this code; `ir.check_table`).

`export_onnx(graph, variables, ExportOptions(...))` returns an ``onnx.ModelProto``;
`export.runtimes` runs one with onnxruntime or OpenVINO and times it;
`quantize_int8` (``export.int8``) makes its QDQ INT8 version. ``onnx``,
``onnxruntime`` and ``openvino`` are imported only when used, so ``import export``
stays light.
"""

from export.builder import OnnxBuilder
from export.driver import ExportError, ExportOptions, check_exportable, export_onnx
from export.int8 import HeadFidelity, Int8Error, Int8Options, head_fidelity, quantize_int8

__all__ = ["ExportError", "ExportOptions", "HeadFidelity", "Int8Error", "Int8Options",
           "OnnxBuilder", "check_exportable", "export_onnx", "head_fidelity",
           "quantize_int8"]
