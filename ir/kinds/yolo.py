"""``[yolo]``: the YOLOv3/v4 detection head, and its ``new_coords=1`` form (scaled
YOLOv4, YOLOv7).

Darknet: ``parse_yolo``, ``forward_yolo_layer`` and ``get_yolo_box`` (yolo_layer.c).
At inference the layer's output is its input with, per anchor, the logistic applied
to x, y, objectness and classes (``new_coords=0``; with ``new_coords=1`` the conv
before it already ends in a logistic and nothing is applied), then
``xy · scale_x_y - (scale_x_y - 1) / 2``. Boxes: ``x = (col + x') / W``,
``w = exp(tw) · anchor_w`` (``new_coords=0``) or ``(2 tw)² · anchor_w``
(``new_coords=1``), in input pixels here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ir.activations import Activation
from ir.kinds.base import (
    KindSpec,
    Options,
    Shape,
    ShapeError,
    fmt,
    inert,
    no_cost,
    no_variables,
    previous_input,
    same_layer,
)
from ir.options import SectionReader

#: parse_yolo's keys that only matter for training or post-processing.
TRAINING_KEYS = ("beta_nms", "cls_normalizer", "counters_per_class", "delta_normalizer",
                 "dets_for_show", "dets_for_track", "embedding_layer", "focal_loss",
                 "ignore_thresh", "iou_loss", "iou_normalizer", "iou_thresh",
                 "iou_thresh_kind", "jitter", "label_smooth_eps", "map", "max",
                 "max_delta", "nms_kind", "obj_normalizer", "objectness_smooth",
                 "random", "resize", "show_details", "sim_thresh", "track_ciou_norm",
                 "track_history_size", "truth_thresh", "uc_normalizer", "yolo_point")


class AnchorHead(Protocol):
    """What the rules shared by the anchor heads read (`Yolo`, `GaussianYolo`,
    `Region`)."""

    @property
    def mask(self) -> tuple[int, ...]: ...

    @property
    def anchors(self) -> tuple[tuple[float, float], ...]: ...

    @property
    def classes(self) -> int: ...

    @property
    def num(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Yolo:
    """``[yolo]`` detection head. ``anchors`` holds all (w, h) pairs of the cfg,
    ``mask`` the indices this head uses."""

    mask: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]
    classes: int
    num: int
    scale_x_y: float = 1.0
    new_coords: bool = False
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "yolo"

    @property
    def head_anchors(self) -> tuple[tuple[float, float], ...]:
        return tuple(self.anchors[m] for m in self.mask)

    def option(self, key: str, default: str) -> str:
        """A key kept verbatim (``ignore_thresh``, ``jitter``, ...)."""
        return dict(self.extra).get(key, default)


def parse_anchors(r: SectionReader, classes_default: int = 20) -> dict[str, Any]:
    classes = r.int("classes", classes_default)
    num = r.int("num", 1)
    anchors_flat = r.floats("anchors") if "anchors" in r.first else ()
    if len(anchors_flat) % 2:
        # parse_yolo reads at most num pairs into biases it calloc'd: an odd count (a
        # missing comma, as in cspx-p7-mish_hp.cfg) leaves the last height at 0.
        anchors_flat = (anchors_flat[:2 * num] if len(anchors_flat) > 2 * num
                        else (*anchors_flat, 0.0))
    anchors = tuple(zip(anchors_flat[::2], anchors_flat[1::2]))
    mask = r.ints("mask") if "mask" in r.first else tuple(range(num))
    bad = [m for m in mask if not 0 <= m < len(anchors)]
    if bad:
        raise r.error(f"mask={','.join(map(str, mask))}: index {bad[0]} has no anchor "
                      f"({len(anchors)} anchors given)", "mask")
    return dict(mask=mask, anchors=anchors, classes=classes, num=num)


def _parse(r: SectionReader, index: int) -> Yolo:
    return Yolo(**parse_anchors(r), scale_x_y=r.float("scale_x_y", 1.0),
                new_coords=r.bool("new_coords"), extra=r.extra(), **r.loc)


def write_anchors(layer: AnchorHead) -> list[str]:
    lines = [f"mask={','.join(map(str, layer.mask))}"]
    if layer.anchors:
        lines.append("anchors=" + ", ".join(f"{fmt(w)},{fmt(h)}" for w, h in layer.anchors))
    return lines + [f"classes={layer.classes}", f"num={layer.num}"]


def _write(layer: Yolo, index: int) -> list[str]:
    lines = write_anchors(layer)
    if layer.scale_x_y != 1.0:
        lines.append(f"scale_x_y={fmt(layer.scale_x_y)}")
    return lines + (["new_coords=1"] if layer.new_coords else [])


def head_shape(layer: AnchorHead, ins: tuple[Shape, ...], per_anchor: int,
               coords: int = 4) -> Shape:
    x = ins[0]
    expected = len(layer.mask) * per_anchor
    if x.c != expected:
        raise ShapeError(f"reads {x.c} channels, expected {len(layer.mask)} anchors x "
                         f"({layer.classes} classes + {per_anchor - layer.classes}) = "
                         f"{expected}: set filters={expected} in the conv before it")
    return x


def anchor_boxes(layer: AnchorHead, shape: Shape) -> int:
    """Boxes of a head with ``mask`` anchors in each cell of its map."""
    return len(layer.mask) * shape.h * shape.w


def _xy(xp: Any, t: Any, s: float) -> Any:
    return t * s - (s - 1) / 2


def _forward(layer: Yolo, tools: Any, inputs: Sequence[Any]) -> Any:
    xp = tools.xp
    x = inputs[0]
    n, h, w, c = x.shape
    p = x.reshape(n, h, w, len(layer.mask), c // len(layer.mask))
    if layer.new_coords:
        p = xp.concatenate([_xy(xp, p[..., :2], layer.scale_x_y), p[..., 2:]], axis=-1)
    else:
        def sig(v: Any) -> Any:
            return tools.activate(Activation.LOGISTIC, v)
        p = xp.concatenate([_xy(xp, sig(p[..., :2]), layer.scale_x_y), p[..., 2:4],
                            sig(p[..., 4:])], axis=-1)
    return p.reshape(n, h, w, c)


def grid_boxes(xp: Any, layer: AnchorHead, p: Any, xy: Any, wh: Any, rest: Any,
               input_hw: tuple[int, int]) -> Any:
    """``(N, anchors·H·W, 5 + classes)`` boxes in input pixels from per-anchor maps."""
    n, a, h, w = p.shape[:4]
    cx = (xy[..., 0] + xp.arange(w, dtype=p.dtype)) / w * input_hw[1]
    cy = (xy[..., 1] + xp.arange(h, dtype=p.dtype)[:, None]) / h * input_hw[0]
    boxes = xp.concatenate([cx[..., None], cy[..., None], wh, rest], axis=-1)
    return boxes.reshape(n, a * h * w, boxes.shape[-1])


def _decode(layer: Yolo, xp: Any, head: Any, input_hw: tuple[int, int]) -> Any:
    n, h, w, c = head.shape
    a = len(layer.mask)
    p = head.reshape(n, h, w, a, c // a).transpose(0, 3, 1, 2, 4)
    anchor_wh = xp.asarray(layer.head_anchors, dtype=p.dtype)[None, :, None, None, :]
    if layer.new_coords:
        xy = _xy(xp, p[..., :2], layer.scale_x_y)
        wh = (2.0 * p[..., 2:4]) ** 2 * anchor_wh
        rest = p[..., 4:]
    else:
        sig: Callable[[Any], Any]
        sig = lambda v: 0.5 * (1.0 + xp.tanh(0.5 * v))  # noqa: E731  (finite for any v)
        xy = _xy(xp, sig(p[..., :2]), layer.scale_x_y)
        wh = xp.exp(p[..., 2:4]) * anchor_wh
        rest = sig(p[..., 4:])
    return grid_boxes(xp, layer, p, xy, wh, rest, input_hw)


SPEC = KindSpec(
    layer=Yolo, sections=("yolo",), parse=_parse, write=_write,
    keys={key: inert("(training or post-processing only)") for key in TRAINING_KEYS},
    inputs=previous_input, renumber=same_layer,
    shape=lambda layer, ins: head_shape(layer, ins, layer.classes + 5), cost=no_cost,
    variables=no_variables, forward=_forward,
    describe=lambda layer: (f"mask {','.join(map(str, layer.mask))}, {layer.classes} "
                            "classes" + (", new_coords" if layer.new_coords else "")),
    decode=_decode, boxes=anchor_boxes)
