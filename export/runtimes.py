"""Run an exported model with a real consumer (onnxruntime, OpenVINO) and time it.

Library code: returns arrays and timings, never prints. The consumers are imported
when called; OpenVINO is optional (``pip install darkslim[openvino]``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def _serialized(model) -> bytes:
    return model if isinstance(model, bytes) else model.SerializeToString()


def ort_session(model, threads: int | None = None):
    """An onnxruntime CPU session for a ``ModelProto`` or its bytes (full graph
    optimisation, as a deployment would run it)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(_serialized(model), so, providers=["CPUExecutionProvider"])


def run_onnxruntime(model, x_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``model`` on ``x_nchw`` (float32 NCHW), by name."""
    session = ort_session(model)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {"images": np.ascontiguousarray(x_nchw, np.float32)})
    return dict(zip(names, values))


def run_openvino(model, x_nchw: np.ndarray) -> dict[str, np.ndarray]:
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


@dataclass(frozen=True, slots=True)
class OrtLatency:
    """One model's onnxruntime timings (milliseconds)."""

    median_ms: float
    times_ms: tuple[float, ...]
    load_s: float
    batch: int


def measure_onnx_latency(models: Sequence, input_chw: Sequence[tuple[int, int, int]], *,
                         repeats: int = 5, warmup: int = 2, batch: int = 1,
                         threads: int | None = None, seed: int = 0) -> tuple[OrtLatency, ...]:
    """Median onnxruntime CPU latency of each model, runs interleaved (a, b, a, b, ...)
    so load from other processes falls on all of them alike.

    Args:
        models: ``ModelProto`` or bytes, each with a static or dynamic batch axis.
        input_chw: each model's input (C, H, W).
        repeats, warmup: timed and untimed runs per model.
    """
    rng = np.random.default_rng(seed)
    runs, loads = [], []
    for model, chw in zip(models, input_chw, strict=True):
        start = time.perf_counter()
        session = ort_session(model, threads)
        loads.append(time.perf_counter() - start)
        feed = {"images": rng.random((batch, *chw), dtype=np.float32)}

        def run(session=session, feed=feed):
            session.run(None, feed)

        for _ in range(warmup):
            run()
        runs.append(run)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for k, run in enumerate(runs):
            start = time.perf_counter()
            run()
            times[k].append((time.perf_counter() - start) * 1e3)
    return tuple(OrtLatency(statistics.median(t), tuple(t), load, batch)
                 for t, load in zip(times, loads))
