"""A seeded synthetic detection dataset in Darknet format.

Shapes of a few classes (circle, square, triangle) drawn on textured backgrounds,
with exact boxes. Every image depends only on ``(seed, split, index)``, so a dataset
regenerates bit-identically and any single image can be rebuilt on its own.

Layout written by `write_synth` (paths in the list files are relative to ``OUT``, so
the set can be moved, and Darknet run from ``OUT`` reads it too)::

    OUT/images/{train,valid}/000000.png   OUT/labels/{train,valid}/000000.txt
    OUT/train.txt  OUT/valid.txt  OUT/synth.data  OUT/synth.names  [OUT/model.cfg]
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

import ir

SHAPES = ("circle", "square", "triangle")
_SPLITS = {"train": 0, "valid": 1}


@dataclass(frozen=True, slots=True, kw_only=True)
class SynthSpec:
    """What `render_sample` draws. Object sizes are fractions of the image side."""

    size: int = 128
    classes: tuple[str, ...] = SHAPES
    min_objects: int = 1
    max_objects: int = 4
    min_frac: float = 0.12
    max_frac: float = 0.42
    max_iou: float = 0.1  # placements overlapping an earlier object more are redrawn


@dataclass(frozen=True, slots=True)
class SynthDataset:
    """Paths of a written synthetic dataset."""

    root: Path
    data: Path
    names: Path
    train: Path
    valid: Path
    cfg: Path | None
    anchors: tuple[tuple[int, int], ...]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour field, mid-frequency blotches, pixel noise and a few lines."""
    low = rng.uniform(30, 225, (3, 3, 3)).astype(np.float32)
    img = np.asarray(cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC), np.float32)
    cells = int(rng.integers(6, 14))
    mid = rng.normal(0, rng.uniform(8, 22), (cells, cells, 3)).astype(np.float32)
    img += cv2.resize(mid, (size, size), interpolation=cv2.INTER_LINEAR)
    img += rng.normal(0, rng.uniform(2, 8), (size, size, 3)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        p0 = tuple(int(v) for v in rng.integers(0, size, 2))
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(img, p0, p1, color, 1, cv2.LINE_AA)
    return img


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _outline(rng: np.random.Generator, cls: str, cx: float, cy: float,
             side: float) -> np.ndarray:
    """The polygon (float pixel vertices) of one shape; its bbox is the label."""
    if cls == "circle":
        aspect = rng.uniform(0.8, 1.25)
        rx, ry = side / 2 * min(1.0, aspect), side / 2 * min(1.0, 1 / aspect)
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
    if cls == "square":
        aspect = rng.uniform(0.8, 1.25)
        hw, hh = side / 2 * min(1.0, aspect), side / 2 * min(1.0, 1 / aspect)
        corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        angle = rng.uniform(-0.25, 0.25)  # mild rotation, so it stays a "square"
    else:
        r = side / 2
        corners = np.array([[r * np.cos(a), r * np.sin(a)]
                            for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)])
        angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return corners @ rot.T + np.array([cx, cy])


def render_sample(rng: np.random.Generator, spec: SynthSpec = SynthSpec()
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One image and its labels.

    Returns:
        ``(image, labels)``: a ``(size, size, 3)`` uint8 BGR image and a ``(k, 5)``
        float array of Darknet labels ``class cx cy w h`` (normalised to [0, 1]).
    """
    size = spec.size
    img = _background(rng, size)
    count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    boxes: list[np.ndarray] = []
    labels: list[list[float]] = []
    # Shapes are drawn at 4x resolution (cv2's sub-pixel `shift`) with anti-aliasing,
    # so edges sit where the float outline says and the bbox is exact to ~0.5 px.
    shift = 4
    for _ in range(count):
        for _attempt in range(20):
            cls = int(rng.integers(len(spec.classes)))
            side = rng.uniform(spec.min_frac, spec.max_frac) * size
            cx, cy = rng.uniform(side / 2 + 1, size - side / 2 - 1, 2)
            poly = _outline(rng, spec.classes[cls], cx, cy, side)
            box = np.array([*poly.min(0), *poly.max(0)])
            if box[0] < 0 or box[1] < 0 or box[2] > size or box[3] > size:
                continue
            if all(_iou(box, other) <= spec.max_iou for other in boxes):
                break
        else:
            continue
        x0, y0, x1, y1 = (int(v) for v in np.clip(box, 0, size - 1))
        local = img[y0:y1 + 1, x0:x1 + 1].reshape(-1, 3).mean(0)
        for _attempt in range(10):  # a colour that stands out from what lies beneath
            color = rng.integers(0, 256, 3)
            if np.abs(color - local).sum() > 150:
                break
        pts = np.round(poly * (1 << shift)).astype(np.int32)[None]
        # cv2's stubs want a sequence of polygons; the (1, n, 2) int32 array is one.
        cv2.fillPoly(img, pts, tuple(int(c) for c in color), cv2.LINE_AA,  # type: ignore[call-overload]
                     shift)
        boxes.append(box)
        labels.append([cls, (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size,
                       (box[2] - box[0]) / size, (box[3] - box[1]) / size])
    return img, np.asarray(labels, np.float64).reshape(-1, 5)


def sample(seed: int, split: str, index: int, spec: SynthSpec = SynthSpec()
           ) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of ``split`` ("train" or "valid") of the dataset seeded ``seed``."""
    rng = np.random.default_rng([seed, _SPLITS[split], index])
    return render_sample(rng, spec)


def kmeans_anchors(wh: np.ndarray, k: int, iters: int = 100
                   ) -> tuple[tuple[int, int], ...]:
    """``k`` anchors (w, h) by k-means with the 1 - IoU distance (YOLOv2's recipe),
    sorted by area and rounded to whole pixels."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if len(wh) < k:
        raise ValueError(f"k-means anchors: {len(wh)} boxes, expected at least {k}")
    # Start from the boxes at the area quantiles: deterministic and spread out.
    by_area = wh[np.argsort(wh.prod(-1), kind="stable")]
    centers = by_area[((np.arange(k) + 0.5) / k * len(wh)).astype(int)]
    for _ in range(iters):
        inter = np.minimum(wh[:, None], centers[None]).prod(-1)
        iou = inter / (wh.prod(-1)[:, None] + centers.prod(-1)[None] - inter)
        assign = iou.argmax(1)
        new = np.array([np.median(wh[assign == j], 0) if np.any(assign == j)
                        else centers[j] for j in range(k)])
        if np.allclose(new, centers):
            break
        centers = new
    centers = centers[np.argsort(centers.prod(-1))]
    return tuple((max(1, int(round(w))), max(1, int(round(h)))) for w, h in centers)


def adapt_cfg(graph: ir.Graph, *, classes: int, size: int,
              anchors: tuple[tuple[int, int], ...] | None = None) -> ir.Graph:
    """A detector cfg retargeted to ``classes``, a ``size`` x ``size`` input and
    ``anchors`` (as many as the cfg has): every ``[yolo]`` gets the new classes and
    anchors, the conv feeding it ``len(mask) * (classes + 5)`` filters."""
    net = tuple((k, str(size)) if k in ("width", "height") else (k, v) for k, v in graph.net)
    for key in ("width", "height"):
        if key not in dict(net):
            net += ((key, str(size)),)
    updates: dict[int, ir.Layer] = {}
    for index in graph.yolo_indices():
        head = graph.layers[index]
        assert isinstance(head, ir.Yolo)  # a yolo_indices() layer
        new_anchors = head.anchors
        if anchors is not None:
            if len(anchors) != len(head.anchors):
                raise ValueError(f"{graph.path}:{head.line}: [yolo] has "
                                 f"{len(head.anchors)} anchors, {len(anchors)} given")
            new_anchors = tuple((float(w), float(h)) for w, h in anchors)
        updates[index] = dataclasses.replace(head, classes=classes, anchors=new_anchors,
                                             num=len(new_anchors))
        feed = graph.layers[index - 1]
        if isinstance(feed, ir.Conv):
            updates[index - 1] = dataclasses.replace(
                feed, filters=len(head.mask) * (classes + 5))
    adapted = dataclasses.replace(graph.replace_layers(updates), net=net)
    ir.verify(adapted)
    return adapted


def _format_labels(labels: np.ndarray) -> str:
    return "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n"
                   for c, x, y, w, h in labels)


def _first_yolo(graph: ir.Graph) -> ir.Yolo:
    head = graph.layers[graph.yolo_indices()[0]]
    assert isinstance(head, ir.Yolo)  # a yolo_indices() layer
    return head


def write_synth(out_dir: str | os.PathLike, *, train: int = 512, valid: int = 128,
                size: int = 128, seed: int = 0, cfg: ir.Graph | None = None,
                spec: SynthSpec | None = None,
                write: Callable[[Path, bytes], None] | None = None) -> SynthDataset:
    """Write a synthetic Darknet dataset (and, given a template ``cfg``, a
    ``model.cfg`` adapted to it with k-means anchors from the training boxes).

    ``write(path, data)`` writes each file (the app passes `frontends.write_atomic`;
    the runtime imports no frontend), default `Path.write_bytes`.

    Returns:
        The `SynthDataset` paths. Existing files of the same names are replaced.
    """
    write_atomic = write if write is not None else Path.write_bytes
    spec = dataclasses.replace(spec or SynthSpec(), size=size)
    root = Path(out_dir)
    all_wh = []
    lists = {}
    for split, count in (("train", train), ("valid", valid)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        rel_paths = []
        for index in range(count):
            img, labels = sample(seed, split, index, spec)
            rel = f"images/{split}/{index:06d}.png"
            ok, png = cv2.imencode(".png", img)
            if not ok:  # pragma: no cover - cv2 always encodes uint8 BGR
                raise OSError(f"cannot encode {rel}")
            write_atomic(root / rel, png.tobytes())
            write_atomic(root / "labels" / split / f"{index:06d}.txt",
                          _format_labels(labels).encode())
            rel_paths.append(rel)
            if split == "train":
                all_wh.append(labels[:, 3:5] * size)
        lists[split] = root / f"{split}.txt"
        write_atomic(lists[split], "".join(p + "\n" for p in rel_paths).encode())
    names = root / "synth.names"
    write_atomic(names, "".join(c + "\n" for c in spec.classes).encode())
    data = root / "synth.data"
    write_atomic(data, (f"classes={len(spec.classes)}\ntrain=train.txt\n"
                         f"valid=valid.txt\nnames=synth.names\nbackup=backup/\n").encode())
    anchors: tuple[tuple[int, int], ...] = ()
    cfg_path = None
    if cfg is not None:
        heads = [cfg.layers[i] for i in cfg.yolo_indices()]
        assert all(isinstance(head, ir.Yolo) for head in heads)
        k = max(len(head.anchors) for head in heads if isinstance(head, ir.Yolo))
        wh = np.concatenate(all_wh) if all_wh else np.zeros((0, 2))
        anchors = (kmeans_anchors(wh, k) if len(wh) >= k else
                   tuple((int(w), int(h)) for w, h in _first_yolo(cfg).anchors))
        model = adapt_cfg(cfg, classes=len(spec.classes), size=size, anchors=anchors)
        cfg_path = root / "model.cfg"
        write_atomic(cfg_path, ir.write_cfg(model).encode())
    return SynthDataset(root=root, data=data, names=names, train=lists["train"],
                        valid=lists["valid"], cfg=cfg_path, anchors=anchors)

