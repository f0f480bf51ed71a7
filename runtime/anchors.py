"""Anchors for a dataset: k-means on the box shapes with 1 - IoU as the distance.

Darknet's ``darknet detector calc_anchors DATA -num_of_clusters K -width W -height H``
(``src/detector.c`` ``calc_anchors``, ``src/matrix.c`` ``do_kmeans``): every training
box becomes its shape ``(w·W, h·H)`` in network pixels (the label's normalised size
times the network size; boxes are compared as if they shared a centre), the centres
start at K boxes drawn at random, then assign-to-the-nearest-centre (the highest IoU)
and move-each-centre-to-its-mean alternate until no assignment changes (at most 1000
rounds; a centre left with no box stays where it was). Darknet seeds with the clock,
so each run differs; here the draw is seeded, and ``restarts`` draws are run and the
one with the highest mean IoU kept, so a run is reproducible and an unlucky start
does not decide the result. Pure numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

import ir

__all__ = ["AnchorResult", "box_shapes", "cfg_anchors", "iou_wh", "kmeans_anchors",
           "mean_best_iou", "with_anchors"]


@dataclass(frozen=True, slots=True)
class AnchorResult:
    """What `kmeans_anchors` found.

    Attributes:
        anchors: ``(w, h)`` in network pixels, whole numbers (as a cfg holds them),
            sorted by area, smallest first.
        mean_iou: the mean over the boxes of their best IoU with ``anchors``.
        boxes: how many box shapes were clustered.
        iterations: k-means rounds of the kept restart.
        seed, restarts: the draw.
    """

    anchors: tuple[tuple[int, int], ...]
    mean_iou: float
    boxes: int
    iterations: int
    seed: int
    restarts: int


def box_shapes(labels: Iterable[np.ndarray], width: int, height: int) -> np.ndarray:
    """``(n, 2)`` box shapes in network pixels from Darknet label arrays (rows
    ``class cx cy w h``, normalised), as ``calc_anchors`` scales them."""
    rows = [np.asarray(a, np.float64).reshape(-1, 5)[:, 3:5] for a in labels]
    wh = np.concatenate(rows) if rows else np.zeros((0, 2))
    return wh * np.array([width, height], np.float64)


def iou_wh(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``(n, k)`` IoU of box shapes and anchors placed on a common centre."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None], anchors[None]).prod(-1)
    return inter / (wh.prod(-1)[:, None] + anchors.prod(-1)[None] - inter)


def mean_best_iou(wh: np.ndarray, anchors) -> float:
    """The mean over the boxes of the IoU with their best anchor (``avg IoU`` of
    ``calc_anchors``)."""
    if len(wh) == 0:
        return float("nan")
    return float(iou_wh(wh, anchors).max(1).mean())


def _kmeans(wh: np.ndarray, centers: np.ndarray, max_iter: int) -> tuple[np.ndarray, int]:
    """Darknet's ``do_kmeans`` from ``centers``: (centres, rounds)."""
    assign = np.zeros(len(wh), np.int64)
    if len(centers) == 1:  # do_kmeans maximises once first when k == 1
        centers = _maximise(wh, assign, centers)
    for rounds in range(max_iter):
        new = iou_wh(wh, centers).argmax(1)  # argmax keeps the first of equal IoUs
        if np.array_equal(new, assign):
            return centers, rounds
        assign = new
        centers = _maximise(wh, assign, centers)
    return centers, max_iter


def _maximise(wh: np.ndarray, assign: np.ndarray, centers: np.ndarray) -> np.ndarray:
    counts = np.bincount(assign, minlength=len(centers))[:, None]
    sums = np.zeros_like(centers)
    np.add.at(sums, assign, wh)
    mean = np.divide(sums, counts, out=np.zeros_like(centers), where=counts > 0)
    return np.where(mean == 0, centers, mean)  # an empty cluster's centre stays


def kmeans_anchors(wh: np.ndarray, k: int, *, seed: int = 0, restarts: int = 10,
                   max_iter: int = 1000) -> AnchorResult:
    """``k`` anchors for the box shapes ``wh`` (`box_shapes`), Darknet's k-means.

    Args:
        wh: ``(n, 2)`` box shapes in network pixels, n >= k.
        k: the number of anchors (``num=`` of the cfg's ``[yolo]`` sections).
        seed: seeds the random starting boxes (same seed, same anchors).
        restarts: independent starts; the anchors with the best mean IoU (after
            rounding to whole pixels) are kept.

    Raises:
        ValueError: fewer boxes than anchors, or k / restarts below 1.
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if k < 1 or restarts < 1:
        raise ValueError(f"k-means anchors: k={k}, restarts={restarts}: expected both >= 1")
    if len(wh) < k:
        raise ValueError(f"k-means anchors: {len(wh)} boxes, expected at least k={k}")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(restarts):
        start = wh[rng.permutation(len(wh))[:k]]  # random_centers: k shuffled boxes
        centers, rounds = _kmeans(wh, start, max_iter)
        rounded = np.maximum(1.0, np.round(centers))
        rounded = rounded[np.argsort(rounded.prod(-1), kind="stable")]
        score = mean_best_iou(wh, rounded)
        if best is None or score > best[0]:
            best = (score, rounded, rounds)
    assert best is not None  # restarts >= 1 (checked above)
    score, anchors, rounds = best
    return AnchorResult(anchors=tuple((int(w), int(h)) for w, h in anchors),
                        mean_iou=score, boxes=len(wh), iterations=rounds, seed=seed,
                        restarts=restarts)


def _yolo(graph: ir.Graph, index: int) -> ir.Yolo:
    """Layer ``index`` of ``graph``, one of `ir.Graph.yolo_indices`."""
    layer = graph.layers[index]
    assert isinstance(layer, ir.Yolo)
    return layer


def cfg_anchors(graph: ir.Graph) -> tuple[tuple[float, float], ...]:
    """The anchors the ``[yolo]`` heads of ``graph`` use, each once, in cfg order."""
    seen: dict[tuple[float, float], None] = {}
    for index in graph.yolo_indices():
        for w, h in _yolo(graph, index).head_anchors:
            seen.setdefault((w, h), None)
    return tuple(seen)


def with_anchors(graph: ir.Graph, anchors: tuple[tuple[int, int], ...], *,
                 width: int | None = None, height: int | None = None,
                 classes: int | None = None, iou_thresh: float | None = None) -> ir.Graph:
    """``graph`` with ``anchors`` (sorted by area) in every ``[yolo]`` section and a
    ``mask=`` per head by size: the largest anchors to the coarsest head (the smallest
    grid), as yolov3's 6,7,8 / 3,4,5 / 0,1,2. Each head keeps its number of anchors
    when they add up to ``len(anchors)``, else the anchors are shared evenly; the conv
    feeding a head gets ``len(mask) * (classes + 5)`` filters. With ``width`` and
    ``height`` the ``[net]`` size is set too (anchors are pixels of that size); with
    ``classes`` every ``[yolo]`` gets that class count (the dataset's), and the filters
    follow it. With ``iou_thresh`` every ``[yolo]`` gets that ``iou_thresh=`` key: each
    anchor whose shape IoU with a box exceeds it is a positive for that box (YOLOv4's
    cfgs use 0.213; Darknet's default 1 keeps the best anchor only).

    Raises:
        ValueError: no ``[yolo]`` head, or anchors that do not share evenly.
    """
    if width is not None and height is not None:
        graph = ir.with_input_size(graph, height, width)
    heads = graph.yolo_indices()
    if not heads:
        raise ValueError(f"{graph.path}: no [yolo] section to write anchors into")
    shapes = ir.verify(graph)
    # finest grid first: it takes the smallest anchors
    order = sorted(heads, key=lambda i: (-shapes[i].h * shapes[i].w, i))
    counts = [len(_yolo(graph, i).mask) for i in order]
    if sum(counts) != len(anchors):
        if len(anchors) % len(heads):
            raise ValueError(f"{graph.path}: {len(anchors)} anchors for {len(heads)} [yolo] "
                             f"heads: expected a multiple of {len(heads)} (or "
                             f"{sum(counts)}, as the cfg's masks have)")
        counts = [len(anchors) // len(heads)] * len(heads)
    by_area = tuple(sorted(((float(w), float(h)) for w, h in anchors),
                           key=lambda a: a[0] * a[1]))
    updates: dict[int, ir.Layer] = {}
    start = 0
    for index, count in zip(order, counts):
        head = _yolo(graph, index)
        mask = tuple(range(start, start + count))
        start += count
        if classes is not None:
            head = dataclasses.replace(head, classes=classes)
        if iou_thresh is not None:
            extra = tuple((k, v) for k, v in head.extra if k != "iou_thresh")
            head = dataclasses.replace(head, extra=(*extra, ("iou_thresh", f"{iou_thresh:g}")))
        updates[index] = dataclasses.replace(head, mask=mask, anchors=by_area,
                                             num=len(by_area))
        feed = graph.layers[index - 1]
        if isinstance(feed, ir.Conv):
            updates[index - 1] = dataclasses.replace(
                feed, filters=count * (head.classes + 5))
    out = graph.replace_layers(updates)
    ir.verify(out)
    return out
