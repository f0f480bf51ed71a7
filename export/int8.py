"""INT8: static post-training quantization of an exported model, QDQ format.

The float ONNX model from `export.export_onnx` goes through onnxruntime's quantizer
(``onnxruntime.quantization.quantize_static``): weights int8 per output channel,
activations 8-bit per tensor with ranges calibrated on images the caller provides
(arrays, NCHW float32 in [0, 1]; the app reads and letterboxes them, this module
reads no file). The result is still an ONNX model: ``QuantizeLinear`` /
``DequantizeLinear`` pairs around the quantized ops, which onnxruntime's CPU provider
fuses into integer kernels (``QLinearConv``, ...).

What stays float, and why:

- the decode and NMS nodes (the detection layers' groups, ``layer_<i>_yolo/...``, and
  ``layer_<n>_detections/...``): boxes in input pixels and scores near the 0.25
  threshold need more than 256 levels; they are a few small ops;
- the layers the caller names (``Int8Options.keep_float``, darkslim layer indices):
  each layer's whole node group, ``layer_<i>_<kind>/...`` (the driver names nodes per
  layer), typically the first conv and the convs feeding the heads.

`head_fidelity` compares the raw heads of the float and INT8 models (relative L2
difference and signal-to-noise ratio in dB). Library code: returns data, never prints.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

import ir

if TYPE_CHECKING:
    import onnx

METHODS = ("minmax", "percentile", "entropy")
ACTIVATION_TYPES = ("uint8", "int8")


class Int8Error(ValueError):
    """Quantization options or inputs that cannot work, naming what was found and
    what was expected."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Int8Options:
    """How `quantize_int8` quantizes.

    Attributes:
        method: activation range calibration: ``minmax`` (the observed range),
            ``percentile`` (clip at the 99.999th percentile of |x|), ``entropy`` (KL).
        activations: ``uint8`` (U8S8, what x86 VNNI kernels take) or ``int8``.
        per_channel: one weight scale per output channel (else per tensor).
        keep_float: darkslim layer indices whose nodes stay float.
        op_types: the ONNX op types quantized (others run float between them).
    """

    method: str = "minmax"
    activations: str = "uint8"
    per_channel: bool = True
    keep_float: tuple[int, ...] = ()
    op_types: tuple[str, ...] = ("Conv", "Add", "Concat", "MaxPool", "Resize",
                                 "LeakyRelu", "Relu", "Clip", "Sigmoid", "Mul")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise Int8Error(f"method={self.method!r}: expected one of {', '.join(METHODS)}")
        if self.activations not in ACTIVATION_TYPES:
            raise Int8Error(f"activations={self.activations!r}: expected one of "
                            f"{', '.join(ACTIVATION_TYPES)}")


def layer_prefix(index: int, graph: ir.Graph) -> str:
    """The node-name prefix of layer ``index`` in an export of ``graph``:
    ``layer_7_convolutional/`` (`export.builder.OnnxBuilder.begin`)."""
    return f"layer_{index}_{graph.layers[index].kind}/"


def first_conv(graph: ir.Graph) -> int | None:
    """The index of the first ``[convolutional]`` layer, or None."""
    return next((i for i, layer in enumerate(graph.layers)
                 if layer.kind == "convolutional"), None)


def head_convs(graph: ir.Graph) -> tuple[int, ...]:
    """The ``[convolutional]`` layers feeding the detection layers (the raw heads)."""
    return tuple(sorted({y - 1 for y in graph.head_indices()
                         if graph.layers[y - 1].kind == "convolutional"}))


def float_only_nodes(graph: ir.Graph, model: onnx.ModelProto) -> tuple[str, ...]:
    """Names of the nodes of ``model`` (an export of ``graph``) that must stay float:
    the decode and NMS nodes, and the ``outputs/`` identities."""
    prefixes = tuple(layer_prefix(y, graph) for y in graph.head_indices())
    prefixes += (f"layer_{len(graph.layers)}_detections/", "outputs/")
    return tuple(n.name for n in model.graph.node if n.name.startswith(prefixes))


def layer_nodes(graph: ir.Graph, model: onnx.ModelProto, layers: Iterable[int]) -> tuple[str, ...]:
    """Names of the nodes of ``model`` that implement the given darkslim layers.

    Raises:
        Int8Error: an index out of range, or a layer with no node in the model.
    """
    names = []
    for index in layers:
        if not 0 <= index < len(graph.layers):
            raise Int8Error(f"layer {index}: expected an index in 0..{len(graph.layers) - 1}")
        prefix = layer_prefix(index, graph)
        mine = [n.name for n in model.graph.node if n.name.startswith(prefix)]
        if not mine:
            raise Int8Error(f"layer {index} ({graph.layers[index].kind}): no node named "
                            f"{prefix}... in the exported model")
        names += mine
    return tuple(names)


class _Images:
    """A ``CalibrationDataReader`` over NCHW images, one model-sized batch at a time."""

    def __init__(self, images: np.ndarray, batch: int) -> None:
        self._images = np.ascontiguousarray(images, np.float32)
        self._batch = batch
        self._at = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._at >= len(self._images):
            return None
        chunk = self._images[self._at:self._at + self._batch]
        self._at += self._batch
        return {"images": chunk}

    def rewind(self) -> None:  # onnxruntime's reader protocol for multi-pass methods
        self._at = 0


def _model_batch(model: onnx.ModelProto) -> int | None:
    """The model's fixed batch size, or None for a symbolic one."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value or None


def quantize_int8(graph: ir.Graph, model: onnx.ModelProto, images: np.ndarray,
                  options: Int8Options = Int8Options()) -> onnx.ModelProto:
    """The QDQ INT8 version of ``model``, an export of ``graph``.

    Args:
        graph: the network ``model`` was exported from (names its nodes).
        model: the float ``onnx.ModelProto`` (`export.export_onnx`), with or without
            decode/NMS (those nodes stay float).
        images: calibration images ``(n, C, H, W)`` float32 in [0, 1], letterboxed
            as the network sees them.
        options: `Int8Options`.

    Returns:
        An ``onnx.ModelProto`` that passes ``onnx.checker``; its metadata records
        the settings (``darkslim.int8.*``).

    Raises:
        Int8Error: no calibration image, images of the wrong shape, a
            ``keep_float`` layer that does not exist.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = np.asarray(images, np.float32)
    expected = tuple(ir.input_shape(graph))
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise Int8Error(f"calibration images of shape {tuple(images.shape)}: expected "
                        f"(n, {', '.join(map(str, expected))})")
    if not len(images):
        raise Int8Error("no calibration image: expected at least one")
    method = {"minmax": CalibrationMethod.MinMax,
              "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[options.method]
    act = QuantType.QUInt8 if options.activations == "uint8" else QuantType.QInt8
    batch = _model_batch(model) or min(len(images), 8)
    if len(images) < batch:
        raise Int8Error(f"{len(images)} calibration images for a model of batch {batch}: "
                        f"expected at least {batch}")
    images = images[:len(images) - len(images) % batch]  # whole batches only
    layer_nodes(graph, model, options.keep_float)  # a missing layer fails before the work
    with tempfile.TemporaryDirectory(prefix="darkslim-int8-") as tmp:
        source, prepared, target = (Path(tmp) / name for name in
                                    ("float.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save_model(model, source)
        # onnxruntime's own preparation (shape inference, basic graph optimisation: it
        # drops some Identity nodes and keeps every other node's name).
        quant_pre_process(str(source), str(prepared))
        prepared_model = onnx.load_model(prepared)
        exclude = (float_only_nodes(graph, prepared_model)
                   + layer_nodes(graph, prepared_model, options.keep_float))
        # The histogram calibrators print progress: library code stays silent.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(prepared), str(target), _Images(images, batch),
                            quant_format=QuantFormat.QDQ, per_channel=options.per_channel,
                            activation_type=act, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(options.op_types),
                            nodes_to_exclude=list(exclude), calibrate_method=method)
        # (Not CalibMaxIntermediateOutputs: onnxruntime 1.32's MinMax calibrator drops
        # each full chunk of outputs unmerged, so it would calibrate on the remainder.)
        quantized = onnx.load_model(target)
    meta = {p.key: p.value for p in quantized.metadata_props}
    meta.update({"darkslim.int8.method": options.method,
                 "darkslim.int8.activations": options.activations,
                 "darkslim.int8.per_channel": str(options.per_channel).lower(),
                 "darkslim.int8.keep_float": ",".join(map(str, options.keep_float)),
                 "darkslim.int8.calibration_images": str(len(images))})
    del quantized.metadata_props[:]
    onnx.helper.set_model_props(quantized, meta)
    onnx.checker.check_model(quantized, full_check=True)
    return quantized


@dataclass(frozen=True, slots=True)
class HeadFidelity:
    """How close one INT8 head is to the float one, over a set of images.

    ``relative_l2`` = ||int8 − float|| / ||float||; ``snr_db`` =
    10·log10(Σ float² / Σ (int8 − float)²) (inf when they are equal).
    """

    name: str
    relative_l2: float
    snr_db: float
    max_abs_diff: float


def head_fidelity(float_heads: Sequence[np.ndarray], int8_heads: Sequence[np.ndarray],
                  names: Sequence[str] | None = None) -> tuple[HeadFidelity, ...]:
    """`HeadFidelity` of each head (arrays of any equal shapes, paired in order)."""
    out = []
    names = names or [f"head_{k}" for k in range(len(float_heads))]
    for name, f, q in zip(names, float_heads, int8_heads, strict=True):
        f = np.asarray(f, np.float64)
        q = np.asarray(q, np.float64)
        if f.shape != q.shape:
            raise Int8Error(f"{name}: float shape {f.shape} and INT8 shape {q.shape} differ")
        signal = float(np.sum(f * f))
        noise = float(np.sum((q - f) ** 2))
        snr = float("inf") if noise == 0 else (
            float("-inf") if signal == 0 else 10 * np.log10(signal / noise))
        rel = float(np.sqrt(noise / signal)) if signal > 0 else float(np.sqrt(noise))
        out.append(HeadFidelity(name, rel, float(snr),
                                float(np.abs(q - f).max()) if f.size else 0.0))
    return tuple(out)


def count_qdq(model: onnx.ModelProto) -> dict[str, int]:
    """How many ``QuantizeLinear``/``DequantizeLinear`` nodes ``model`` has, and how
    many float ``Conv`` nodes read a per-channel (1-D scale) dequantized weight."""
    import onnx.numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    produced = {o: n for n in model.graph.node for o in n.output}
    per_channel = 0
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        dq = produced.get(node.input[1])
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[1] in inits:
            if onnx.numpy_helper.to_array(inits[dq.input[1]]).ndim == 1:
                per_channel += 1
    ops = [n.op_type for n in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"),
            "DequantizeLinear": ops.count("DequantizeLinear"),
            "per_channel_convs": per_channel,
            "float_convs": sum(1 for n in model.graph.node if n.op_type == "Conv"
                               and not (n.input[1] in produced and
                                        produced[n.input[1]].op_type == "DequantizeLinear"))}
