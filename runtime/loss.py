"""The YOLOv3 training loss on the raw heads of `runtime.ForwardOut`, pure ``jnp``; with
``[yolo] new_coords=1`` the scaled-YOLOv4 formulation Darknet implements (below).

Per ``[yolo]`` head (``(N, H, W, A * (5 + C))``, anchor-major channels as Darknet):

- **Anchor matching** as Darknet's ``forward_yolo_layer`` (and ultralytics' v3): each
  target takes the anchor, among *all* the cfg's anchors, whose shape (w, h) overlaps
  it most; the head whose ``mask`` holds that anchor predicts it, in the grid cell
  holding the target's centre. With the head's ``iou_thresh`` below 1 (YOLOv4's cfgs
  set 0.213), every other anchor of the head whose shape overlaps the target by more
  than it predicts the target too, in the same cell (AlexeyAB's extra anchors).
- **Box**: ``1 - GIoU`` of the decoded box and the target (default), or Darknet's
  classic loss: squared error on the cell offsets and on ``log(w / anchor)``, weighted
  by ``2 - w·h``.
- **Objectness**: binary cross-entropy; 1 at the assigned cells, 0 elsewhere except
  where the predicted box already overlaps some target by more than the head's
  ``ignore_thresh`` (those cells are left out, as Darknet does).
- **Class**: binary cross-entropy against the one-hot class, at the assigned cells.

Reductions are means (box and class over the assigned targets, objectness over the
cells, weighted per head by ``balance`` as in ultralytics), scaled by the gains, and
the total is multiplied by the batch size so the gradient of a batch is a sum over its
images, as in Darknet and ultralytics. Everything is static-shaped and jit-able; the
targets are ``(N, M, 5)`` rows ``class cx cy w h`` normalised to the input, padded
with class ``-1`` (`runtime.data.Batch.targets`).

In training the loss is the term `YoloLoss` (`runtime.terms`), reporting ``box``,
``obj`` and ``cls``; `yolo_terms` is the default loss of the train step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

import ir
from runtime.terms import LossTerm, StepOutputs


@dataclass(frozen=True, slots=True)
class LossConfig:
    """Loss options (hashable: a static argument of jit).

    Attributes:
        box: ``"giou"`` or ``"xywh"`` (Darknet's classic MSE loss).
        box_gain, obj_gain, cls_gain: weights of the three parts.
        balance: objectness weight per head by stride (``((8, 4.0), (16, 1.0),
            (32, 0.4))``: fine heads have more cells, so each cell counts less in
            their mean); strides not listed weigh 1.
        ignore_thresh: overrides the ``[yolo]`` ``ignore_thresh`` key when set.
        iou_thresh: overrides the ``[yolo]`` ``iou_thresh`` key (default 1: the best
            anchor only) when set.
    """

    box: str = "giou"
    box_gain: float = 0.05
    obj_gain: float = 1.0
    cls_gain: float = 0.5
    balance: tuple[tuple[int, float], ...] = ((8, 4.0), (16, 1.0), (32, 0.4))
    ignore_thresh: float | None = None
    iou_thresh: float | None = None

    def __post_init__(self) -> None:
        if self.box not in ("giou", "xywh"):
            raise ValueError(f"box={self.box!r}: expected 'giou' or 'xywh'")


class LossParts(NamedTuple):
    """The total and its parts (each already scaled by its gain and the batch size)."""

    total: jax.Array
    box: jax.Array
    obj: jax.Array
    cls: jax.Array


def _bce_prob(probs: jax.Array, targets: jax.Array) -> jax.Array:
    """Binary cross-entropy of probabilities (a ``new_coords=1`` head is post-logistic)."""
    p = jnp.clip(probs, 1e-7, 1 - 1e-7)
    return -(targets * jnp.log(p) + (1 - targets) * jnp.log1p(-p))


def _bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def _corners(xywh: jax.Array) -> tuple[jax.Array, ...]:
    half = xywh[..., 2:4] / 2
    return (xywh[..., 0] - half[..., 0], xywh[..., 1] - half[..., 1],
            xywh[..., 0] + half[..., 0], xywh[..., 1] + half[..., 1])


def box_iou_xywh(a: jax.Array, b: jax.Array, giou: bool = False) -> jax.Array:
    """IoU (or GIoU) of ``cx cy w h`` boxes, broadcasting over leading axes."""
    ax1, ay1, ax2, ay2 = _corners(a)
    bx1, by1, bx2, by2 = _corners(b)
    iw = jnp.clip(jnp.minimum(ax2, bx2) - jnp.maximum(ax1, bx1), 0)
    ih = jnp.clip(jnp.minimum(ay2, by2) - jnp.maximum(ay1, by1), 0)
    inter = iw * ih
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter + 1e-9
    iou = inter / union
    if not giou:
        return iou
    hull = ((jnp.maximum(ax2, bx2) - jnp.minimum(ax1, bx1))
            * (jnp.maximum(ay2, by2) - jnp.minimum(ay1, by1)) + 1e-9)
    return iou - (hull - union) / hull


def _wh_iou(wh: jax.Array, anchors: jax.Array) -> jax.Array:
    """IoU of boxes sharing a centre: ``(..., 2)`` x ``(K, 2)`` -> ``(..., K)``."""
    inter = jnp.minimum(wh[..., None, 0], anchors[:, 0]) * \
        jnp.minimum(wh[..., None, 1], anchors[:, 1])
    return inter / (wh[..., None, 0] * wh[..., None, 1] + anchors[:, 0] * anchors[:, 1]
                    - inter + 1e-9)


def _head_loss(head: jax.Array, layer: ir.Yolo, targets: jax.Array,
               input_hw: tuple[int, int], config: LossConfig
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    n, h, w, c = head.shape
    count = len(layer.mask)
    classes = c // count - 5
    p = head.reshape(n, h, w, count, classes + 5).astype(jnp.float32)
    all_anchors = jnp.asarray(layer.anchors, jnp.float32)            # (K, 2) pixels
    anchors = all_anchors[jnp.asarray(layer.mask)] / jnp.asarray(   # grid units
        [input_hw[1] / w, input_hw[0] / h], jnp.float32)
    s = layer.scale_x_y
    ignore = (config.ignore_thresh if config.ignore_thresh is not None
              else float(layer.option("ignore_thresh", "0.7")))
    iou_thresh = (config.iou_thresh if config.iou_thresh is not None
                  else float(layer.option("iou_thresh", "1")))

    # Decoded predictions in grid units (x, y, w, h). With new_coords=1 (scaled YOLOv4,
    # YOLOv7) the conv before the head ends in a logistic: x, y, w, h, objectness and
    # classes arrive as probabilities, w = (2·tw)²·anchor (get_yolo_box), and the
    # cross-entropies take probabilities.
    gx = jnp.arange(w, dtype=jnp.float32)[None, None, :, None]
    gy = jnp.arange(h, dtype=jnp.float32)[None, :, None, None]
    if layer.new_coords:
        xy = p[..., :2] * s - (s - 1) / 2
        pwh = (2 * p[..., 2:4]) ** 2 * anchors
        bce: Callable[[jax.Array, jax.Array], jax.Array] = _bce_prob
    else:
        xy = jax.nn.sigmoid(p[..., :2]) * s - (s - 1) / 2
        pwh = jnp.minimum(jnp.exp(p[..., 2:4]), 1e3) * anchors
        bce = _bce
    boxes = jnp.stack([xy[..., 0] + gx, xy[..., 1] + gy, pwh[..., 0], pwh[..., 1]], -1)

    valid = targets[..., 0] >= 0                                     # (N, M)
    tcls = jnp.maximum(targets[..., 0], 0).astype(jnp.int32)
    tbox = targets[..., 1:5] * jnp.asarray([w, h, w, h], jnp.float32)  # grid units
    twh_pixels = targets[..., 3:5] * jnp.asarray([input_hw[1], input_hw[0]], jnp.float32)

    # Anchor matching, per (image, target, anchor of this head): the best of all the
    # cfg's anchors if this head holds it, and any of its anchors whose shape overlaps
    # the target by more than iou_thresh.
    shape_iou = _wh_iou(twh_pixels, all_anchors)                     # (N, M, K)
    mask = jnp.asarray(layer.mask)
    best = jnp.argmax(shape_iou, -1)                                 # (N, M)
    positive = valid[..., None] & ((best[..., None] == mask)
                                   | (shape_iou[..., mask] > iou_thresh))  # (N, M, A)
    gi = jnp.clip(jnp.floor(tbox[..., 0]).astype(jnp.int32), 0, w - 1)
    gj = jnp.clip(jnp.floor(tbox[..., 1]).astype(jnp.int32), 0, h - 1)
    b, gj, gi, a = (jnp.broadcast_to(v, positive.shape) for v in (
        jnp.arange(n)[:, None, None], gj[..., None], gi[..., None], jnp.arange(count)))

    pos_f = positive.astype(jnp.float32)
    n_pos = jnp.maximum(pos_f.sum(), 1.0)
    picked = p[b, gj, gi, a]                                          # (N, M, A, 5 + C)
    tbox_a = tbox[..., None, :]                                       # (N, M, 1, 4)
    if config.box == "giou":
        pbox = boxes[b, gj, gi, a]
        box_loss = ((1 - box_iou_xywh(pbox, tbox_a, giou=True)) * pos_f).sum() / n_pos
    else:
        txy = tbox_a[..., :2] - jnp.stack([gi, gj], -1).astype(jnp.float32)
        if layer.new_coords:  # delta_yolo_box: tw = sqrt(w / (4 anchor))
            twh = jnp.sqrt(jnp.maximum(tbox_a[..., 2:4], 0.0) / (4 * anchors[a]))
        else:
            twh = jnp.log(jnp.maximum(tbox_a[..., 2:4], 1e-9) / anchors[a])
        scale = (2 - targets[..., 3] * targets[..., 4])[..., None]
        err = ((xy[b, gj, gi, a] - txy) ** 2).sum(-1) + ((picked[..., 2:4] - twh) ** 2).sum(-1)
        box_loss = (scale * err * pos_f).sum() / n_pos

    onehot = jax.nn.one_hot(tcls, classes, dtype=jnp.float32)[..., None, :]
    cls_loss = ((bce(picked[..., 5:], onehot).mean(-1)) * pos_f).sum() / n_pos

    # Objectness: positives at their cells; negatives that already overlap a target
    # by more than ignore_thresh are left out (Darknet's ignore_thresh).
    tobj = jnp.zeros((n, h, w, count), jnp.float32).at[b, gj, gi, a].max(pos_f)
    overlap = box_iou_xywh(jax.lax.stop_gradient(boxes)[:, :, :, :, None, :],
                           tbox[:, None, None, None, :, :])          # (N, H, W, A, M)
    overlap = jnp.where(valid[:, None, None, None, :], overlap, 0.0).max(-1)
    weight = jnp.where((tobj > 0) | (overlap <= ignore), 1.0, 0.0)
    obj_loss = (bce(p[..., 4], tobj) * weight).mean()
    return box_loss, obj_loss, cls_loss


def yolo_loss(graph: ir.Graph, heads: tuple[jax.Array, ...], targets: jax.Array,
              input_hw: tuple[int, int] | None = None,
              config: LossConfig = LossConfig()) -> LossParts:
    """The YOLOv3 loss of a batch.

    Args:
        graph: the network (static under jit).
        heads: `runtime.ForwardOut.heads`, one raw NHWC map per ``[yolo]``.
        targets: ``(N, M, 5)`` ``class cx cy w h`` normalised, class ``-1`` = padding.
        input_hw: the input's (height, width); default the graph's.
        config: gains and the box loss kind.

    Returns:
        `LossParts` (scalars), total = box + obj + cls.
    """
    for i in graph.head_indices():
        layer = graph.layers[i]
        if not isinstance(layer, ir.Yolo):
            raise ir.CfgError(f"(layer {i}) the training loss covers [yolo] heads "
                              f"(new_coords=0 or 1), not [{layer.kind}]", path=layer.path
                              or graph.path, line=layer.line, section=layer.kind)
    yolos = graph.yolo_indices()
    if len(heads) != len(yolos):
        raise ValueError(f"{graph.path}: {len(heads)} heads for {len(yolos)} [yolo] layers")
    input_hw = input_hw or (graph.height, graph.width)
    balance = dict(config.balance)
    targets = jnp.asarray(targets, jnp.float32)
    box = obj = cls = jnp.zeros((), jnp.float32)
    for head, index in zip(heads, yolos):
        layer = graph.layers[index]
        assert isinstance(layer, ir.Yolo)  # a yolo_indices() layer
        stride = input_hw[0] // head.shape[1]
        lb, lo, lc = _head_loss(head, layer, targets, input_hw, config)
        box, cls = box + lb, cls + lc
        obj = obj + balance.get(stride, 1.0) * lo
    batch = targets.shape[0]
    box = box * config.box_gain * batch
    obj = obj * config.obj_gain * batch
    cls = cls * config.cls_gain * batch
    return LossParts(box + obj + cls, box, obj, cls)


@dataclass(frozen=True, kw_only=True)
class YoloLoss(LossTerm):
    """`yolo_loss` as a loss term: its total, reporting ``box``, ``obj`` and ``cls``."""

    config: LossConfig = LossConfig()
    names: tuple[str, ...] = ("box", "obj", "cls")

    def __call__(self, outputs: StepOutputs, targets: jax.Array, extra=None
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
        parts = yolo_loss(outputs.graph, outputs.heads, targets, outputs.input_hw,
                          self.config)
        return parts.total, dict(zip(self.names, (parts.box, parts.obj, parts.cls)))


def yolo_terms(config: LossConfig = LossConfig()) -> tuple[LossTerm, ...]:
    """The YOLOv3 loss as terms: the default of `runtime.step.make_train_step` and
    `runtime.train.fit` (add others after it)."""
    return (YoloLoss(config=config),)
