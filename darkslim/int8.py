"""`export --int8`: a QDQ INT8 model and the certificate that says what it costs.

The library (`export.int8`) quantizes given calibration arrays; this module brings the
data: it reads DATA.data with the runtime's dataset code, letterboxes the images as
`runtime.metrics.evaluate` does (`runtime.iterate_batches` without augmentation),
computes mAP@0.5 of the float and INT8 models, each run by onnxruntime, through
`runtime.metrics.evaluate_heads` (the runtime's decode rules and NMS), compares the
raw heads (relative difference, SNR in dB) on the calibration images, and times both
models interleaved (`darkslim.latency.measure_onnx_latency`).

`int8_export` returns the model and the certificate (``int8_report.json``), or raises
`Int8Refused` (carrying the certificate) when the mAP drop exceeds the limit. Library
code: writes nothing, never prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

import ir

REPORT_FORMAT = "darkslim.int8_report/1"
# --keep-float auto keeps the first and head convs float only when that raises mAP@0.5
# by at least this much: below it, on a few dozen images, it is noise.
AUTO_MARGIN = 0.005


class Int8Refused(ValueError):
    """The INT8 model loses more mAP than allowed; ``report`` is the certificate."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True, slots=True)
class Int8Export:
    """`int8_export`'s result: the INT8 ``onnx.ModelProto`` and its certificate."""

    model: Any
    report: dict


def calibration_images(dataset, graph: ir.Graph, count: int) -> np.ndarray:
    """The first ``count`` images of ``dataset`` as ``(n, C, H, W)`` float32 in [0, 1],
    letterboxed to the network size exactly as `runtime.metrics.evaluate` feeds them."""
    from runtime.data import NO_AUGMENT, iterate_batches

    if count < 1:
        raise ValueError(f"calib_images={count}: expected a positive number of images")
    chosen = min(count, len(dataset))
    batch = next(iterate_batches(dataset, (graph.height, graph.width), chosen,
                                 shuffle=False, drop_last=False, augment=NO_AUGMENT))
    return np.ascontiguousarray(np.transpose(batch.images, (0, 3, 1, 2)))


def head_runner(model) -> Callable[[np.ndarray], list[np.ndarray]]:
    """``run(images_nchw) -> [head_0, head_1, ...]`` through one onnxruntime session,
    in chunks of the model's batch size (the last one zero-padded)."""
    from export.runtimes import ort_session

    session = ort_session(model)
    names = [o.name for o in session.get_outputs() if o.name.startswith("head_")]
    names.sort(key=lambda n: int(n.split("_")[1]))
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else 16

    def run(images: np.ndarray) -> list[np.ndarray]:
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            count = len(chunk)
            if isinstance(fixed, int) and fixed > 0 and count < fixed:
                chunk = np.concatenate([chunk, np.zeros((fixed - count, *chunk.shape[1:]),
                                                        chunk.dtype)])
            for k, out in enumerate(session.run(names, {"images": np.ascontiguousarray(
                    chunk, np.float32)})):
                parts[k].append(out[:count])
        return [np.concatenate(p) for p in parts]

    return run


def parse_keep_float(text: str, graph: ir.Graph) -> tuple[int, ...] | None:
    """``--keep-float``: ``auto`` (None: measure), ``none``, ``first``, ``last`` (the
    convs feeding the heads), ``first,last`` or layer indices, comma-separated."""
    from export.int8 import first_conv, head_convs

    text = text.strip().lower()
    if text == "auto":
        return None
    if text == "none":
        return ()
    chosen: set[int] = set()
    for word in (w.strip() for w in text.split(",")):
        if word == "first":
            index = first_conv(graph)
            chosen |= set() if index is None else {index}
        elif word == "last":
            chosen |= set(head_convs(graph))
        elif word.lstrip("-").isdigit():
            index = int(word)
            if not 0 <= index < len(graph.layers):
                raise ValueError(f"--keep-float {text}: layer {index} does not exist "
                                 f"(expected 0..{len(graph.layers) - 1})")
            chosen.add(index)
        else:
            raise ValueError(f"--keep-float {text}: {word!r} is not auto, none, first, "
                             f"last or a layer index")
    return tuple(sorted(chosen))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def int8_export(graph: ir.Graph, model, *, calibration: np.ndarray, valid,
                keep_float: tuple[int, ...] | None = None, method: str = "minmax",
                activations: str = "uint8", max_map_drop: float = 0.02,
                latency_repeats: int = 20, engine: str = "onnxruntime",
                batch_size: int = 16, settings: dict | None = None,
                on_stage: Callable[[str], None] = lambda s: None) -> Int8Export:
    """Quantize ``model`` (the float export of ``graph``) and certify it.

    Args:
        graph: the network exported (names the nodes, decodes the heads).
        model: the float ``onnx.ModelProto``.
        calibration: ``(n, C, H, W)`` images (`calibration_images`).
        valid: the `runtime.data.Dataset` mAP is measured on.
        keep_float: layers kept float; None measures ``()`` against the first conv
            plus the head convs and keeps the latter only if mAP@0.5 rises by
            `AUTO_MARGIN` or more.
        method, activations: `export.int8.Int8Options`.
        max_map_drop: the largest accepted ``float mAP − INT8 mAP``.
        latency_repeats: interleaved timed runs per model (0: not timed).
        settings: extra entries for the certificate's ``settings``.

    Raises:
        Int8Refused: the drop exceeds ``max_map_drop`` (the certificate attached).
    """
    import onnx
    import onnxruntime

    from darkslim.latency import measure_onnx_latency
    from export.int8 import (
        Int8Options,
        count_qdq,
        first_conv,
        head_convs,
        head_fidelity,
        quantize_int8,
    )
    from runtime.metrics import evaluate_heads

    if engine != "onnxruntime":
        raise ValueError(f"engine={engine!r}: INT8 is certified on onnxruntime only")

    def map50(m) -> float:
        return evaluate_heads(head_runner(m), graph, valid, batch_size=batch_size,
                              coco=False).map50

    on_stage("float mAP")
    float_map = map50(model)
    candidates = [keep_float] if keep_float is not None else [
        (), tuple(sorted({i for i in (first_conv(graph),) if i is not None}
                         | set(head_convs(graph))))]
    tried = []
    for keep in candidates:
        on_stage(f"quantizing (float layers: {', '.join(map(str, keep)) or 'none'})")
        options = Int8Options(method=method, activations=activations, keep_float=keep)
        quantized = quantize_int8(graph, model, calibration, options)
        on_stage("INT8 mAP")
        tried.append((keep, quantized, map50(quantized)))
    chosen = tried[0]
    if len(tried) == 2 and tried[1][2] - tried[0][2] >= AUTO_MARGIN:
        chosen = tried[1]
    keep, quantized, int8_map = chosen

    on_stage("head fidelity")
    float_heads = head_runner(model)(calibration)
    int8_heads = head_runner(quantized)(calibration)
    heads = head_fidelity(float_heads, int8_heads)
    latency = None
    if latency_repeats > 0:
        on_stage("latency")
        dim = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
        channels, height, width = ir.input_shape(graph)
        f, q = measure_onnx_latency([model, quantized], [(channels, height, width)] * 2,
                                    repeats=latency_repeats, warmup=3, batch=dim)
        latency = {"engine": engine, "batch": dim, "repeats": latency_repeats,
                   "float_ms": f.median_ms, "int8_ms": q.median_ms,
                   "ratio": q.median_ms / f.median_ms,
                   "statistic": "median of interleaved runs"}
    drop = float_map - int8_map
    report = {
        "format": REPORT_FORMAT,
        "accepted": drop <= max_map_drop,
        "map50": {"float": float_map, "int8": int8_map, "drop": drop,
                  "max_drop": max_map_drop, "valid_images": len(valid),
                  "engine": "onnxruntime"},
        "heads": [{"name": h.name, "relative_l2": h.relative_l2,
                   "snr_db": _finite(h.snr_db), "max_abs_diff": h.max_abs_diff}
                  for h in heads],
        "heads_measured_on": f"{len(calibration)} calibration images",
        "latency": latency,
        "settings": {
            "calibration_images": len(calibration), "method": method,
            "activations": activations, "weights": "int8, symmetric, per output channel",
            "format": "QDQ", "keep_float": list(keep),
            "keep_float_requested": "auto" if keep_float is None else list(keep_float),
            "keep_float_auto": None if keep_float is not None else {
                "margin": AUTO_MARGIN,
                "tried": [{"keep_float": list(k), "int8_map50": m} for k, _, m in tried]},
            "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            **(settings or {})},
        "qdq": count_qdq(quantized),
    }
    if not report["accepted"]:
        raise Int8Refused(f"INT8 mAP@0.5 {int8_map:.4f} vs float {float_map:.4f}: drop "
                          f"{drop:.4f} > max_map_drop {max_map_drop:g}; nothing written",
                          report)
    return Int8Export(quantized, report)


def check_engine(engine: str) -> None:
    """Refuse an engine ``export --int8`` cannot certify on, naming the fix."""
    if engine == "onnxruntime":
        return
    if engine == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise ValueError("--engine openvino: OpenVINO is not installed; install it "
                             "with `pip install darkslim[openvino]`") from None
        raise ValueError("--engine openvino: INT8 through OpenVINO (NNCF) is not "
                         "implemented; use --engine onnxruntime (OpenVINO reads the "
                         "QDQ model it writes)")
    raise ValueError(f"--engine {engine}: expected onnxruntime or openvino")


def file_record(name: str, data: bytes) -> dict:
    """The certificate's ``file`` entry: which bytes it certifies."""
    import hashlib

    return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def summary_lines(report: dict) -> Sequence[str]:
    """The certificate in a few lines for the terminal."""
    m = report["map50"]
    lines = [f"mAP@0.5 float {m['float']:.4f} → INT8 {m['int8']:.4f} (drop "
             f"{m['drop']:+.4f}, limit {m['max_drop']:g}, {m['valid_images']} images)"]
    lines.append("heads: " + ", ".join(
        f"{h['name']} SNR {h['snr_db']:.1f} dB (rel {h['relative_l2']:.3f})"
        if h["snr_db"] is not None else f"{h['name']} exact" for h in report["heads"]))
    lat = report["latency"]
    if lat:
        lines.append(f"{lat['engine']} latency (batch {lat['batch']}, median of "
                     f"{lat['repeats']} interleaved): float {lat['float_ms']:.2f} ms → "
                     f"INT8 {lat['int8_ms']:.2f} ms ({lat['ratio']:.2f}×)")
    s = report["settings"]
    auto = s["keep_float_auto"]
    chose = ", ".join(map(str, s["keep_float"])) or "none"
    lines.append(f"{s['calibration_images']} calibration images, {s['method']}, "
                 f"activations {s['activations']}; float layers: {chose}" +
                 ("" if auto is None else " (auto: " + ", ".join(
                     f"[{','.join(map(str, t['keep_float'])) or 'none'}] "
                     f"{t['int8_map50']:.4f}" for t in auto["tried"]) + ")"))
    return lines
