"""Darknet's ``detector test`` as library functions: resize, select, map back.

Darknet (AlexeyAB ``src/detector.c`` ``test_detector``) resizes the photo to the
network's size with its own bilinear `darknet_resize` (``src/image.c``
``resize_image``: align-corners sampling, rows last), or letterboxes it
(`darknet_letterbox`) when the cfg's ``[net]`` says ``letter_box=1``; decodes every
detection head; keeps a box when its objectness exceeds ``thresh`` (0.25) and, per
class, its score objectness × class probability exceeds ``thresh`` too; suppresses per
class (``src/box.c`` ``do_nms_sort``: by decreasing score, a kept box zeroes the score
of every later box overlapping it by IoU > ``nms`` 0.45; ``nms_kind=greedynms`` and
``diounms`` use DIoU instead); and reports a box once for **every** class whose score
survives, in the original image's pixels (``correct_yolo_boxes``).

Pure numpy; `detect_image` runs the network through `runtime.forward`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import ir

DARKNET_THRESH = 0.25
DARKNET_NMS = 0.45


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """Where the image sits in the network input: ``new_w`` × ``new_h`` pixels at the
    centre of ``net_w`` × ``net_h`` (the whole input without letterbox)."""

    image_w: int
    image_h: int
    net_w: int
    net_h: int
    new_w: int
    new_h: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Detected:
    """One reported (box, class): ``x1 y1 x2 y2`` in original image pixels (not
    clipped: Darknet reports boxes that cross the border as they are)."""

    class_id: int
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NmsRule:
    """Darknet's suppression: ``kind`` ``default`` (IoU), ``greedynms`` (DIoU with
    exponent 0.6, Darknet's ``box_diou``) or ``diounms`` (DIoU with ``beta``)."""

    kind: str = "default"
    beta: float = 0.6


def darknet_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Darknet's ``resize_image``: bilinear with the corners aligned, in float32.

    Columns first (``part``), then rows; the last column copies the image's last
    column and the last row takes only ``(1 - dy)`` of its source row, as Darknet's
    loops do.

    Args:
        image: (H, W, C) float32 in [0, 1].
    """
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image.copy()
    f32 = np.float32
    w_scale = f32(w - 1) / f32(width - 1) if width > 1 else f32(0)
    h_scale = f32(h - 1) / f32(height - 1) if height > 1 else f32(0)

    sx = np.arange(width, dtype=f32) * w_scale
    ix = np.minimum(sx.astype(np.int64), w - 1)
    dx = (sx - ix.astype(f32))[None, :, None]
    right = np.minimum(ix + 1, w - 1)
    part = (f32(1) - dx) * image[:, ix] + dx * image[:, right]
    part[:, width - 1] = image[:, w - 1]
    if w == 1:
        part[:] = image[:, :1]

    sy = np.arange(height, dtype=f32) * h_scale
    iy = np.minimum(sy.astype(np.int64), h - 1)
    dy = (sy - iy.astype(f32))[:, None, None]
    below = np.minimum(iy + 1, h - 1)
    resized = (f32(1) - dy) * part[iy]
    add = dy * part[below]
    if h > 1:
        add[height - 1] = 0  # Darknet skips the second term on the last row
        resized = resized + add
    return resized.astype(np.float32)


def darknet_letterbox(image: np.ndarray, height: int, width: int
                      ) -> tuple[np.ndarray, tuple[int, int]]:
    """Darknet's ``letterbox_image``: `darknet_resize` keeping the aspect ratio (integer
    arithmetic as Darknet's), centred on 0.5 gray. Returns the input and
    ``(new_w, new_h)``."""
    h, w = image.shape[:2]
    new_w, new_h = _letterbox_size(w, h, width, height)
    resized = darknet_resize(image, new_h, new_w)
    boxed = np.full((height, width, image.shape[2]), 0.5, np.float32)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    boxed[top:top + new_h, left:left + new_w] = resized
    return boxed, (new_w, new_h)


def _letterbox_size(w: int, h: int, net_w: int, net_h: int) -> tuple[int, int]:
    if net_w / w < net_h / h:
        return net_w, (h * net_w) // w
    return (w * net_h) // h, net_h


def prepare_image(image: np.ndarray, net_h: int, net_w: int, *, letterbox: bool
                  ) -> tuple[np.ndarray, Placement]:
    """The network input (HWC float32 in [0, 1]) of an RGB ``uint8`` image, resized as
    Darknet's ``detector test`` does, and where the image landed."""
    pixels = np.asarray(image, np.float32) / np.float32(255)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w = pixels.shape[:2]
    if letterbox:
        x, (new_w, new_h) = darknet_letterbox(pixels, net_h, net_w)
    else:
        x, (new_w, new_h) = darknet_resize(pixels, net_h, net_w), (net_w, net_h)
    return x, Placement(image_w=w, image_h=h, net_w=net_w, net_h=net_h,
                        new_w=new_w, new_h=new_h)


def to_image_boxes(boxes: np.ndarray, placement: Placement) -> np.ndarray:
    """``(k, 4)`` cx cy w h in network-input pixels to x1 y1 x2 y2 in image pixels
    (Darknet's ``correct_yolo_boxes``, then times the image size)."""
    p = placement
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    cx = (b[:, 0] / p.net_w - (p.net_w - p.new_w) / 2 / p.net_w) / (p.new_w / p.net_w)
    cy = (b[:, 1] / p.net_h - (p.net_h - p.new_h) / 2 / p.net_h) / (p.new_h / p.net_h)
    bw = b[:, 2] / p.new_w
    bh = b[:, 3] / p.new_h
    return np.stack([(cx - bw / 2) * p.image_w, (cy - bh / 2) * p.image_h,
                     (cx + bw / 2) * p.image_w, (cy + bh / 2) * p.image_h], axis=1)


def _overlap(a: np.ndarray, rest: np.ndarray, rule: NmsRule) -> np.ndarray:
    """Darknet's ``box_iou`` (or ``box_diou``) of one cx cy w h box with many."""
    ax1, ay1, ax2, ay2 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx1, by1 = rest[:, 0] - rest[:, 2] / 2, rest[:, 1] - rest[:, 3] / 2
    bx2, by2 = rest[:, 0] + rest[:, 2] / 2, rest[:, 1] + rest[:, 3] / 2
    iw = np.minimum(ax2, bx2) - np.maximum(ax1, bx1)
    ih = np.minimum(ay2, by2) - np.maximum(ay1, by1)
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = a[2] * a[3] + rest[:, 2] * rest[:, 3] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    if rule.kind == "default":
        return iou
    cw = np.maximum(ax2, bx2) - np.minimum(ax1, bx1)
    ch = np.maximum(ay2, by2) - np.minimum(ay1, by1)
    c = cw * cw + ch * ch
    d = (a[0] - rest[:, 0]) ** 2 + (a[1] - rest[:, 1]) ** 2
    beta = 0.6 if rule.kind == "greedynms" else rule.beta
    penalty = np.where(c > 0, (d / np.where(c > 0, c, 1)) ** beta, 0.0)
    return iou - penalty


def select_detections(detections: np.ndarray, *, thresh: float = DARKNET_THRESH,
                      nms: float = DARKNET_NMS, rule: NmsRule = NmsRule(),
                      gated: np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """Darknet's candidate filter and per-class NMS over one image's decoded boxes.

    Args:
        detections: ``(boxes, 5 + classes)`` as `runtime.ForwardOut.detections` (one
            image): cx cy w h, objectness, class columns whose product with the
            objectness is Darknet's score.
        thresh: a (box, class) is reported when its score > ``thresh`` and it
            survives NMS; a gated box (below) needs objectness > ``thresh`` as well.
        nms: the suppression threshold (0 or less: no NMS, as Darknet's ``if (nms)``).
        gated: per box, whether its head skips boxes of objectness <= ``thresh``
            before scoring (``[yolo]``, ``[Gaussian_yolo]``; ``[region]`` and
            ``[detection]`` do not); None: every box (`objectness_gate`).

    Returns:
        ``(box index, class, score)`` for every reported (box, class), by class and
        then decreasing score.
    """
    det = np.asarray(detections, np.float64)
    objectness = det[:, 4]
    classes = det[:, 5:] if det.shape[1] > 5 else np.ones((len(det), 1))
    gate = np.ones(len(det), bool) if gated is None else np.asarray(gated, bool)
    # Darknet's do_nms_sort drops boxes of objectness exactly 0 before anything else.
    candidates = np.flatnonzero(np.where(gate, objectness > thresh, objectness != 0))
    scores = objectness[candidates, None] * classes[candidates]
    scores = np.where(scores > thresh, scores, 0.0)
    boxes = det[candidates, :4]
    out = []
    for k in range(scores.shape[1]):
        score = scores[:, k].copy()
        order = np.argsort(-score, kind="stable")
        alive = order[score[order] > 0]
        for pos, i in enumerate(alive):
            if score[i] == 0:
                continue
            later = alive[pos + 1:]
            if nms > 0 and len(later):
                score[later[_overlap(boxes[i], boxes[later], rule) > nms]] = 0.0
        out += [(int(candidates[i]), k, float(score[i])) for i in alive if score[i] > 0]
    return out


def nms_rule(graph: ir.Graph) -> NmsRule:
    """The suppression Darknet applies for ``graph``: the ``nms_kind`` and
    ``beta_nms`` of its last detection layer (``test_detector`` uses that layer's)."""
    heads = graph.head_indices()
    if not heads:
        return NmsRule()
    layer = graph.layers[heads[-1]]
    keys = dict(getattr(layer, "extra", ()))
    kind = keys.get("nms_kind", "default").strip()
    if kind not in ("greedynms", "diounms"):
        kind = "default"  # Darknet's parser: anything else is DEFAULT_NMS
    beta = keys.get("beta_nms", "0.6")
    try:
        return NmsRule(kind=kind, beta=float(beta))
    except ValueError:
        raise ir.CfgError(f"beta_nms={beta!r}: expected a number", path=layer.path
                          or graph.path, line=layer.line, section=layer.kind) from None


def letter_box(graph: ir.Graph) -> bool:
    """Whether the cfg's ``[net]`` asks for ``letter_box=1``."""
    value = graph.net_option("letter_box", "0")
    return value is not None and value.strip() not in ("", "0")


def objectness_gate(graph: ir.Graph) -> np.ndarray:
    """Per decoded box (in `runtime.ForwardOut.detections` order), whether its head
    drops boxes of low objectness before scoring them (``get_yolo_detections`` and
    ``get_gaussian_yolo_detections`` do, ``get_region_detections`` and
    ``get_detection_detections`` do not)."""
    shapes = ir.verify(graph)
    parts = []
    for y in graph.head_indices():
        boxes = ir.spec_of(graph.layers[y]).boxes
        assert boxes is not None  # a head kind has decode and boxes (ir.kinds checks)
        parts.append(np.full(boxes(graph.layers[y], shapes[y]),
                             graph.layers[y].kind in ("yolo", "Gaussian_yolo")))
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def detected_boxes(detections: np.ndarray, placement: Placement, *,
                   thresh: float = DARKNET_THRESH, nms: float = DARKNET_NMS,
                   rule: NmsRule = NmsRule(), gated: np.ndarray | None = None
                   ) -> tuple[Detected, ...]:
    """`select_detections`, mapped back to the image's pixels."""
    chosen = select_detections(detections, thresh=thresh, nms=nms, rule=rule,
                               gated=gated)
    if not chosen:
        return ()
    det = np.asarray(detections)
    xyxy = to_image_boxes(det[[i for i, _, _ in chosen], :4], placement)
    return tuple(Detected(class_id=k, score=s, x1=float(b[0]), y1=float(b[1]),
                          x2=float(b[2]), y2=float(b[3]))
                 for (_, k, s), b in zip(chosen, xyxy, strict=True))


def detect_image(graph: ir.Graph, variables, image: np.ndarray, *,
                 letterbox: bool | None = None, thresh: float = DARKNET_THRESH,
                 nms: float = DARKNET_NMS, bn_eps: float = 1e-5
                 ) -> tuple[tuple[Detected, ...], np.ndarray, Placement]:
    """One RGB ``uint8`` image through ``graph`` as Darknet's ``detector test``.

    Args:
        letterbox: None: the cfg's ``letter_box``; True/False forces it.

    Returns:
        ``(detected, x, placement)``: the reported boxes, the network input (HWC
        float32) and where the image sits in it.
    """
    from runtime.model import forward

    boxed = letter_box(graph) if letterbox is None else letterbox
    x, placement = prepare_image(image, graph.height, graph.width, letterbox=boxed)
    out = forward(graph, variables, x[None], bn_eps=bn_eps)
    detections = np.asarray(out.detections)[0]
    return (detected_boxes(detections, placement, thresh=thresh, nms=nms,
                           rule=nms_rule(graph), gated=objectness_gate(graph)),
            x, placement)
