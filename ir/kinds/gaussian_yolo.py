"""``[Gaussian_yolo]``: Gaussian YOLOv3, boxes with a predicted uncertainty.

Darknet: ``parse_gaussian_yolo``, ``forward_gaussian_yolo_layer``,
``get_gaussian_yolo_box``. Per anchor ``9 + classes`` entries: μx σx μy σy μw σw μh σh,
objectness, classes; the logistic on all but μw and μh, then μx, μy scaled by
``scale_x_y``. Boxes as ``[yolo]`` (``w = exp(μw) · anchor_w``); ``yolo_point``
``left_top`` / ``right_bottom`` shifts the centre by ±(w/2, h/2). Darknet's score is
``objectness · class · (1 - mean σ)``: the class columns of the decoded detections carry
``class · (1 - mean σ)``, so objectness times them is Darknet's score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ir.kinds.base import (
    KindSpec,
    Options,
    fmt,
    inert,
    no_cost,
    no_variables,
    previous_input,
    same_layer,
)
from ir.kinds.yolo import (
    TRAINING_KEYS,
    anchor_boxes,
    grid_boxes,
    head_shape,
    parse_anchors,
    write_anchors,
)
from ir.options import SectionReader

_POINTS = ("center", "left_top", "right_bottom")


@dataclass(frozen=True, slots=True, kw_only=True)
class GaussianYolo:
    """``[Gaussian_yolo]`` head (``9 + classes`` entries per anchor)."""

    mask: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]
    classes: int
    num: int
    scale_x_y: float = 1.0
    yolo_point: str = "center"
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "Gaussian_yolo"

    @property
    def head_anchors(self) -> tuple[tuple[float, float], ...]:
        return tuple(self.anchors[m] for m in self.mask)


def _parse(r: SectionReader, index: int) -> GaussianYolo:
    point = r.str("yolo_point", "center")
    if point not in _POINTS:
        raise r.error(f"yolo_point={point}: expected one of {', '.join(_POINTS)}",
                      "yolo_point")
    return GaussianYolo(**parse_anchors(r), scale_x_y=r.float("scale_x_y", 1.0),
                        yolo_point=point, extra=r.extra(), **r.loc)


def _write(layer: GaussianYolo, index: int) -> list[str]:
    lines = write_anchors(layer)
    if layer.scale_x_y != 1.0:
        lines.append(f"scale_x_y={fmt(layer.scale_x_y)}")
    return lines + ([f"yolo_point={layer.yolo_point}"] if layer.yolo_point != "center" else [])


def _sig(xp: Any, v: Any) -> Any:
    return 0.5 * (1.0 + xp.tanh(0.5 * v))


def _entries(layer: GaussianYolo, xp: Any, p: Any) -> Any:
    s = layer.scale_x_y
    sig = _sig(xp, p)
    mu_x = sig[..., 0:1] * s - (s - 1) / 2
    mu_y = sig[..., 2:3] * s - (s - 1) / 2
    return xp.concatenate([mu_x, sig[..., 1:2], mu_y, sig[..., 3:4], p[..., 4:5],
                           sig[..., 5:6], p[..., 6:7], sig[..., 7:]], axis=-1)


def _forward(layer: GaussianYolo, tools: Any, inputs: Sequence[Any]) -> Any:
    x = inputs[0]
    n, h, w, c = x.shape
    a = len(layer.mask)
    return _entries(layer, tools.xp, x.reshape(n, h, w, a, c // a)).reshape(n, h, w, c)


def _decode(layer: GaussianYolo, xp: Any, head: Any, input_hw: tuple[int, int]) -> Any:
    n, h, w, c = head.shape
    a = len(layer.mask)
    p = _entries(layer, xp, head.reshape(n, h, w, a, c // a).transpose(0, 3, 1, 2, 4))
    anchors = xp.asarray(layer.head_anchors, dtype=p.dtype)[None, :, None, None, :]
    wh = xp.exp(xp.stack([p[..., 4], p[..., 6]], axis=-1)) * anchors
    xy = xp.stack([p[..., 0], p[..., 2]], axis=-1)
    if layer.yolo_point != "center":
        shift = wh / xp.asarray([input_hw[1] / w, input_hw[0] / h], dtype=p.dtype) / 2
        xy = xy + shift if layer.yolo_point == "left_top" else xy - shift
    uncertainty = (p[..., 1] + p[..., 3] + p[..., 5] + p[..., 7]) / 4
    rest = xp.concatenate([p[..., 8:9], p[..., 9:] * (1 - uncertainty)[..., None]], axis=-1)
    return grid_boxes(xp, layer, p, xy, wh, rest, input_hw)


SPEC = KindSpec(
    layer=GaussianYolo, sections=("Gaussian_yolo",), parse=_parse, write=_write,
    keys={key: inert("(training or post-processing only)") for key in TRAINING_KEYS},
    inputs=previous_input, renumber=same_layer,
    shape=lambda layer, ins: head_shape(layer, ins, layer.classes + 9), cost=no_cost,
    variables=no_variables, forward=_forward,
    describe=lambda layer: f"mask {','.join(map(str, layer.mask))}, {layer.classes} classes",
    decode=_decode, boxes=anchor_boxes)
