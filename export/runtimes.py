"""Run an exported model with a real consumer (onnxruntime, OpenVINO).

Library code: returns arrays, never prints (`darkslim.latency` times the sessions). The
consumers are imported when called; OpenVINO is optional (``pip install darkslim[openvino]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx


def _serialized(model: onnx.ModelProto | bytes) -> bytes:
    return model if isinstance(model, bytes) else model.SerializeToString()


def ort_session(model: onnx.ModelProto | bytes, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for a ``ModelProto`` or its bytes (full graph
    optimisation, as a deployment would run it)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(_serialized(model), so, providers=["CPUExecutionProvider"])


def run_onnxruntime(model: onnx.ModelProto | bytes, x_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``model`` on ``x_nchw`` (float32 NCHW), by name."""
    session = ort_session(model)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {"images": np.ascontiguousarray(x_nchw, np.float32)})
    return dict(zip(names, values))


def run_openvino(model: onnx.ModelProto | bytes, x_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``model`` on ``x_nchw`` through OpenVINO's CPU plugin.

    Raises ImportError when OpenVINO is not installed. (Importing ``openvino`` starts
    its usage telemetry unless opted out with ``opt_in_out --opt_out`` or ``CI=true``.)
    """
    import onnx
    import openvino as ov

    data = _serialized(model)
    names = [o.name for o in onnx.load_from_string(data).graph.output]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(data), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled({"images": np.ascontiguousarray(x_nchw, np.float32)})
    # OpenVINO may merge an output's name with its producer's: match by position.
    return {name: np.asarray(result[out]) for name, out in zip(names, compiled.outputs,
                                                               strict=True)}
