"""``[region]``: the YOLOv2 detection head.

Darknet: ``parse_region``, ``forward_region_layer``, ``get_region_box``. Per cell and
anchor the ``coords + 1 + classes`` entries are x, y, w, h (raw), objectness (logistic)
and classes (softmax with ``softmax=1``, else raw). Boxes: ``x = (col + σ(tx)) / W``,
``w = exp(tw) · anchor_w / W`` with anchors in grid cells, here in input pixels.
Darknet's forward also reorders its own output buffer cell-major (``flatten``); the
NHWC map darkslim returns has that memory order. ``coords`` other than 4,
``tree=`` (softmax tree) and ``map=`` are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ir.kinds.base import (
    KeyRule,
    KindSpec,
    Options,
    inert,
    no_cost,
    no_variables,
    previous_input,
    same_layer,
)
from ir.kinds.yolo import anchor_boxes, grid_boxes, head_shape, write_anchors
from ir.options import SectionReader

_TRAINING = ("absolute", "bias_match", "class_scale", "classfix", "coord_scale",
             "focal_loss", "jitter", "log", "mask_scale", "max", "noobject_scale",
             "object_scale", "random", "rescore", "resize", "sqrt", "thresh")


@dataclass(frozen=True, slots=True, kw_only=True)
class Region:
    """``[region]``: YOLOv2 head; ``anchors`` in grid cells, all ``num`` used."""

    anchors: tuple[tuple[float, float], ...]
    classes: int = 20
    coords: int = 4
    num: int = 1
    softmax: bool = False
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "region"

    @property
    def mask(self) -> tuple[int, ...]:
        return tuple(range(self.num))


def _parse(r: SectionReader, index: int) -> Region:
    num = r.int("num", 1)
    flat = r.floats("anchors") if "anchors" in r.first else ()
    if len(flat) < 2 * num:
        raise r.error(f"anchors= has {len(flat) // 2} pairs: expected num={num}", "anchors")
    return Region(anchors=tuple(zip(flat[:2 * num:2], flat[1:2 * num:2])),
                  classes=r.int("classes", 20), coords=r.int("coords", 4), num=num,
                  softmax=r.bool("softmax"), extra=r.extra(), **r.loc)


def _write(layer: Region, index: int) -> list[str]:
    lines = [line for line in write_anchors(layer) if not line.startswith("mask=")]
    return lines + [f"coords={layer.coords}"] + (["softmax=1"] if layer.softmax else [])


def _refuse(layer: Region) -> str | None:
    return f"coords={layer.coords} (supported: 4)" if layer.coords != 4 else None


def _sig(xp: Any, v: Any) -> Any:
    return 0.5 * (1.0 + xp.tanh(0.5 * v))


def _softmax(xp: Any, v: Any) -> Any:
    e = xp.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _entries(layer: Region, tools_or_xp: Any, p: Any) -> Any:
    xp = getattr(tools_or_xp, "xp", tools_or_xp)
    classes = p[..., 5:5 + layer.classes]
    return xp.concatenate([p[..., :4], _sig(xp, p[..., 4:5]),
                           _softmax(xp, classes) if layer.softmax else classes], axis=-1)


def _forward(layer: Region, tools: Any, inputs: Sequence[Any]) -> Any:
    x = inputs[0]
    n, h, w, c = x.shape
    p = x.reshape(n, h, w, layer.num, c // layer.num)
    return _entries(layer, tools, p).reshape(n, h, w, c)


def _decode(layer: Region, xp: Any, head: Any, input_hw: tuple[int, int]) -> Any:
    n, h, w, c = head.shape
    p = head.reshape(n, h, w, layer.num, c // layer.num).transpose(0, 3, 1, 2, 4)
    p = _entries(layer, xp, p)
    anchors = xp.asarray(layer.anchors, dtype=p.dtype)[None, :, None, None, :]
    grid = xp.asarray([input_hw[1] / w, input_hw[0] / h], dtype=p.dtype)
    wh = xp.exp(p[..., 2:4]) * anchors * grid
    return grid_boxes(xp, layer, p, _sig(xp, p[..., :2]), wh, p[..., 4:], input_hw)


SPEC = KindSpec(
    layer=Region, sections=("region",), parse=_parse, write=_write,
    keys={**{k: inert("(training only)") for k in _TRAINING},
          "tree": KeyRule(lambda layer, value: False, "no softmax tree"),
          "map": KeyRule(lambda layer, value: False, "no class map")},
    inputs=previous_input, renumber=same_layer,
    shape=lambda layer, ins: head_shape(layer, ins, layer.coords + 1 + layer.classes),
    cost=no_cost, variables=no_variables, forward=_forward,
    describe=lambda layer: f"{layer.num} anchors, {layer.classes} classes"
    + (", softmax" if layer.softmax else ""), decode=_decode, boxes=anchor_boxes,
    refuse=_refuse)
