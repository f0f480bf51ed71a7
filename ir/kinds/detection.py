"""``[detection]``: the YOLOv1 detection head (t1.test.cfg).

Darknet: ``parse_detection``, ``forward_detection_layer``, ``get_detection_detections``.
It reads a flat input (a ``[connected]``) of ``side² · (classes + num · (coords + 1))``
values in Darknet's order: every cell's class probabilities, then every cell-box's
confidence, then every cell-box's x, y, w, h. At inference the output is the input, with
a softmax over each cell's classes when ``softmax=1``. Boxes: ``x = (col + tx) / side``,
``w = tw^(2 if sqrt else 1)``, relative to the input; here in input pixels, with the
confidence as objectness and the cell's class probabilities as class scores (Darknet's
score is their product).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ir.kinds.base import (
    KindSpec,
    Options,
    Shape,
    ShapeError,
    inert,
    no_cost,
    no_variables,
    previous_input,
    same_layer,
)
from ir.options import SectionReader

_TRAINING = ("class_scale", "coord_scale", "forced", "jitter", "max", "noobject_scale",
             "object_scale", "random", "rescore", "resize", "reorg")


@dataclass(frozen=True, slots=True, kw_only=True)
class Detection:
    """``[detection]``: YOLOv1's head over a ``side``×``side`` grid."""

    classes: int = 1
    coords: int = 1
    num: int = 1
    side: int = 7
    softmax: bool = False
    sqrt: bool = False
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "detection"


def _parse(r: SectionReader, index: int) -> Detection:
    values: dict[str, Any]
    values = {k: r.int(k, d) for k, d in (("classes", 1), ("coords", 1), ("num", 1),
                                            ("side", 7))}
    for key, value in values.items():
        if value < 1:
            raise r.error(f"{key}={value}: expected a positive integer", key)
    return Detection(**values, softmax=r.bool("softmax"), sqrt=r.bool("sqrt"),
                     extra=r.extra(), **r.loc)


def _write(layer: Detection, index: int) -> list[str]:
    return [f"classes={layer.classes}", f"coords={layer.coords}", f"num={layer.num}",
            f"side={layer.side}", f"softmax={int(layer.softmax)}", f"sqrt={int(layer.sqrt)}"]


def _refuse(layer: Detection) -> str | None:
    return f"coords={layer.coords} (supported: 4)" if layer.coords != 4 else None


def _size(layer: Detection) -> int:
    return layer.side * layer.side * (layer.classes + layer.num * (layer.coords + 1))


def _shape(layer: Detection, ins: tuple[Shape, ...]) -> Shape:
    x = ins[0]
    if x.c * x.h * x.w != _size(layer):
        raise ShapeError(f"reads {x.c * x.h * x.w} values, expected side² x (classes + num "
                         f"x (coords + 1)) = {_size(layer)}")
    return x


def _flat(x: Any) -> Any:
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # Darknet's NCHW buffer


def _classes(layer: Detection, xp: Any, flat: Any) -> Any:
    probs = flat[:, :layer.side * layer.side * layer.classes].reshape(
        flat.shape[0], layer.side * layer.side, layer.classes)
    if layer.softmax:
        e = xp.exp(probs - probs.max(axis=-1, keepdims=True))
        probs = e / e.sum(axis=-1, keepdims=True)
    return probs


def _forward(layer: Detection, tools: Any, inputs: Sequence[Any]) -> Any:
    x = inputs[0]
    if not layer.softmax:
        return x
    xp, flat = tools.xp, _flat(x)
    cells = layer.side * layer.side * layer.classes
    out = xp.concatenate([_classes(layer, xp, flat).reshape(flat.shape[0], cells),
                          flat[:, cells:]], axis=1)
    n, h, w, c = x.shape
    return out.reshape(n, c, h, w).transpose(0, 2, 3, 1)


def _decode(layer: Detection, xp: Any, head: Any, input_hw: tuple[int, int]) -> Any:
    flat = _flat(head)
    n, s, k = flat.shape[0], layer.side, layer.num
    cells = s * s
    probs = _classes(layer, xp, flat)                                   # (N, cells, C)
    start = cells * layer.classes
    scale = flat[:, start:start + cells * k].reshape(n, cells, k)
    boxes = flat[:, start + cells * k:].reshape(n, cells, k, 4)
    col = xp.asarray([i % s for i in range(cells)], dtype=flat.dtype)[None, :, None]
    row = xp.asarray([i // s for i in range(cells)], dtype=flat.dtype)[None, :, None]
    power = 2 if layer.sqrt else 1
    cx = (boxes[..., 0] + col) / s * input_hw[1]
    cy = (boxes[..., 1] + row) / s * input_hw[0]
    bw = boxes[..., 2] ** power * input_hw[1]
    bh = boxes[..., 3] ** power * input_hw[0]
    classes = xp.broadcast_to(probs[:, :, None, :], (n, cells, k, layer.classes))
    out = xp.concatenate([cx[..., None], cy[..., None], bw[..., None], bh[..., None],
                          scale[..., None], classes], axis=-1)
    return out.reshape(n, cells * k, 5 + layer.classes)


def _boxes(layer: Detection, shape: Shape) -> int:
    """YOLOv1 reads a flat input: ``num`` boxes in each of ``side²`` cells."""
    return layer.side * layer.side * layer.num


SPEC = KindSpec(
    layer=Detection, sections=("detection",), parse=_parse, write=_write,
    keys={k: inert("(training only)") for k in _TRAINING},
    inputs=previous_input, renumber=same_layer, shape=_shape, cost=no_cost,
    variables=no_variables, forward=_forward,
    describe=lambda layer: f"side {layer.side}, {layer.num} boxes, {layer.classes} classes",
    decode=_decode, boxes=_boxes, refuse=_refuse)
