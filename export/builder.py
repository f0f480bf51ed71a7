"""`OnnxBuilder`: the small object the per-kind emit rules write an ONNX graph through.

The rules (`export.rules`) never import ``onnx``: they call ``b.node``, ``b.const``,
``b.params``, ``b.shape`` and friends, and this class turns those calls into
``onnx.helper`` nodes and ``numpy_helper`` initializers. That keeps each rule a plain
function of numpy, in the exporter's own rule table.

Names: the driver opens a group per layer with `OnnxBuilder.begin` (``layer_7_convolutional``);
every node and constant made until the next ``begin`` is named ``layer_7_convolutional/<Op>``
(``/<Op>_2``, ... when an op repeats), and a node's output tensor carries its node's name,
so the graph reads like the cfg in Netron and in error messages.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, Sequence, overload

import numpy as np

from ir import Variables

# ONNX TensorProto data types of the numpy dtypes the rules use (onnx's own enum values,
# spelled out so this table needs no import of onnx).
_ONNX_DTYPES = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}


class OnnxBuilder:
    """Collects nodes and initializers for one ONNX graph.

    Attributes:
        opset: the default-domain opset the graph targets.
        bn_eps: epsilon of the ``BatchNormalization`` nodes (unfolded BN only).
        fold_bn: whether the exporter folds BatchNorm (convs arrive folded; a
            ``[connected]`` rule folds its own).
        decode: whether detection-layer rules add their decoded boxes
            (`add_detections`).
        input_hw: the network input's (height, width) in pixels.
        detections: names of the decoded ``(N, boxes, 5 + classes)`` tensors, one per
            detection-layer rule that added one, in cfg order.
    """

    def __init__(self, *, variables: Variables, opset: int = 17, bn_eps: float = 1e-5,
                 decode: bool = False, input_hw: tuple[int, int] = (416, 416),
                 fold_bn: bool = True) -> None:
        self.opset = opset
        self.fold_bn = fold_bn
        self.bn_eps = bn_eps
        self.decode = decode
        self.input_hw = input_hw
        self.detections: list[str] = []
        self._variables = variables
        self._nodes: list[Any] = []
        self._initializers: dict[str, np.ndarray] = {}
        self._shapes: dict[str, tuple[int, int, int]] = {}
        self._used: set[str] = set()
        self._prefix = "graph"

    # ---------------------------------------------------------------- for the driver

    def begin(self, index: int, kind: str) -> None:
        """Open the node group of layer ``index``: ``layer_{index}_{kind}``."""
        self._prefix = f"layer_{index}_{kind}"

    def set_shape(self, name: str, chw: Sequence[int]) -> None:
        """Record the (C, H, W) of tensor ``name`` (a layer's output, or the image)."""
        c, h, w = (int(v) for v in chw)
        self._shapes[name] = (c, h, w)

    def nodes(self) -> list[Any]:
        return list(self._nodes)

    def initializers(self) -> dict[str, np.ndarray]:
        return dict(self._initializers)

    # ---------------------------------------------------------------- for the rules

    def shape(self, name: str) -> tuple[int, int, int]:
        """(C, H, W) of a layer's output or of the image (what a rule's inputs are)."""
        return self._shapes[name]

    def params(self, index: int) -> dict[str, np.ndarray]:
        """Layer ``index``'s variables as float32 numpy arrays, flat:

        ``kernel`` (a conv's HWIO, or a dense ``(inputs, outputs)``), ``bias``
        (without BN), and with BN ``scale`` (γ), ``beta``, ``mean``, ``var``.
        """
        key = f"layer_{index}"
        params = self._variables["params"][key]
        core = params["conv"] if "conv" in params else params["dense"]
        out = {"kernel": np.asarray(core["kernel"], np.float32)}
        if "bias" in core:
            out["bias"] = np.asarray(core["bias"], np.float32)
        if "bn" in params:
            stats = self._variables["batch_stats"][key]["bn"]
            out.update(scale=np.asarray(params["bn"]["scale"], np.float32),
                       beta=np.asarray(params["bn"]["bias"], np.float32),
                       mean=np.asarray(stats["mean"], np.float32),
                       var=np.asarray(stats["var"], np.float32))
        return out

    def _name(self, base: str) -> str:
        name = f"{self._prefix}/{base}"
        k = 1
        while name in self._used:
            k += 1
            name = f"{self._prefix}/{base}_{k}"
        self._used.add(name)
        return name

    @overload
    def node(self, op: str, inputs: Iterable[str], *, outputs: Literal[1] = 1,
             **attrs: Any) -> str: ...

    @overload
    def node(self, op: str, inputs: Iterable[str], *, outputs: int,
             **attrs: Any) -> tuple[str, ...]: ...

    def node(self, op: str, inputs: Iterable[str], *, outputs: int = 1,
             **attrs: Any) -> str | tuple[str, ...]:
        """Add one node of operator ``op``; returns its output name (a tuple when
        ``outputs > 1``). ``""`` in ``inputs`` is an omitted optional input."""
        import onnx.helper

        name = self._name(op)
        outs = [name] if outputs == 1 else [f"{name}:{k}" for k in range(outputs)]
        self._nodes.append(onnx.helper.make_node(op, list(inputs), outs, name=name,
                                                 **attrs))
        return outs[0] if outputs == 1 else tuple(outs)

    def const(self, value: Any, dtype: Any = np.float32, name: str = "const") -> str:
        """A constant tensor (an initializer) of ``value``; returns its name."""
        array = np.asarray(value, dtype=dtype)
        if array.dtype not in _ONNX_DTYPES:
            raise TypeError(f"{self._prefix}: constant of dtype {array.dtype}: expected "
                            f"one of {sorted(str(d) for d in _ONNX_DTYPES)}")
        return self.initializer(self._name(name), array)

    def ints(self, values: Sequence[int], name: str = "ints") -> str:
        """A constant 1-D int64 tensor (shapes, axes, slice bounds, pads)."""
        return self.const(np.asarray(values, np.int64), np.int64, name)

    def initializer(self, name: str, array: np.ndarray) -> str:
        """Store ``array`` under the exact ``name``; returns it."""
        if name in self._initializers:
            raise ValueError(f"initializer {name!r} defined twice")
        self._used.add(name)
        self._initializers[name] = np.ascontiguousarray(array)
        return name

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        """``x[..., start:end, ...]`` along ``axis``."""
        return self.node("Slice", [x, self.ints([start], "starts"), self.ints([end], "ends"),
                                   self.ints([axis], "axes")])

    def add_detections(self, name: str) -> None:
        """Register a decoded ``(N, boxes, 5 + classes)`` tensor; the driver
        concatenates them, in order, into the ``detections`` output."""
        self.detections.append(name)


def live_nodes(nodes: list[Any], outputs: Sequence[str]) -> list[Any]:
    """The nodes the ``outputs`` depend on, in their original (topological) order.

    Rules emit what a layer computes even when nothing reads it (a detection layer's
    own activated map); this drops it, as ``onnx.compose`` would.
    """
    needed = set(outputs)
    keep = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    return keep[::-1]


def tensor_type(dtype: np.typing.DTypeLike) -> int:
    """The ONNX element type of a numpy dtype the builder supports."""
    return _ONNX_DTYPES[np.dtype(dtype)]
