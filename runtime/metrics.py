"""Detection metrics: NMS, per-class precision/recall/F1/AP, mAP@0.5, COCO mAP@0.5:0.95.

The protocol is the seed's (``test.py`` of the YOLOv3 pruning projects): keep boxes
with objectness >= ``conf_thres`` (0.01), score = objectness × best class score,
per-class NMS at IoU 0.5, then a detection is a true positive when it overlaps an
unmatched ground truth of its class with IoU >= 0.5 (detections taken by decreasing
score, each matched to the unmatched truth it overlaps most, as COCO does). AP is the
area under the precision envelope with all-point interpolation (VOC2010+/ultralytics,
``method="continuous"``) or at 101 recall points (COCO, ``method="interp101"``).

All boxes here are ``x1 y1 x2 y2`` in pixels; numpy in, numpy out.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from ir import Variables


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64)
    half = boxes[..., 2:4] / 2
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` IoU of ``x1 y1 x2 y2`` boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray | None = None,
        iou_thres: float = 0.5, max_det: int = 300) -> np.ndarray:
    """Greedy non-maximum suppression, per class when ``classes`` is given.

    Returns:
        Indices of the kept boxes, by decreasing score.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if classes is not None and len(boxes):
        # Shifting each class into its own far-away square makes cross-class IoU 0.
        offset = np.asarray(classes, np.float64)[:, None] * (np.abs(boxes).max() + 1) * 2
        boxes = boxes + offset
    order = np.argsort(-scores, kind="stable")
    iou = box_iou(boxes[order], boxes[order])
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        if len(keep) >= max_det:
            break
        suppressed |= iou[i] > iou_thres
    return np.asarray(keep, np.int64)


def postprocess(detections: np.ndarray, conf_thres: float = 0.01,
                nms_thres: float = 0.5, max_det: int = 300) -> list[np.ndarray]:
    """Decoded network output to per-image detections.

    Args:
        detections: ``(N, boxes, 5 + classes)`` as `runtime.ForwardOut.detections`:
            ``cx cy w h objectness class-scores...`` in input pixels.

    Returns:
        One ``(k, 6)`` array per image: ``x1 y1 x2 y2 score class``, by decreasing
        score, with score = objectness × best class score.
    """
    detections = np.asarray(detections, np.float64)
    out = []
    for image in detections:
        image = image[image[:, 4] >= conf_thres]
        if image.shape[1] > 5:
            cls = image[:, 5:].argmax(1)
            score = image[:, 4] * image[np.arange(len(image)), 5 + cls]
        else:
            cls = np.zeros(len(image), np.int64)
            score = image[:, 4]
        boxes = xywh_to_xyxy(image[:, :4])
        keep = nms(boxes, score, cls, nms_thres, max_det)
        out.append(np.concatenate([boxes[keep], score[keep, None],
                                   cls[keep, None].astype(np.float64)], 1).reshape(-1, 6))
    return out


def match_detections(detections: np.ndarray, truths: np.ndarray,
                     iou_thres: float | np.ndarray = 0.5) -> np.ndarray:
    """Which detections of one image are true positives.

    Args:
        detections: ``(k, 6)`` ``x1 y1 x2 y2 score class``.
        truths: ``(t, 5)`` ``class x1 y1 x2 y2``.
        iou_thres: one threshold or a vector of them.

    Returns:
        ``(k, len(thresholds))`` bool: at each threshold, detections in decreasing
        score order take the unmatched truth of their class they overlap most, if
        that IoU reaches the threshold (COCO's rule).
    """
    thresholds = np.atleast_1d(np.asarray(iou_thres, np.float64))
    detections = np.asarray(detections, np.float64).reshape(-1, 6)
    truths = np.asarray(truths, np.float64).reshape(-1, 5)
    tp = np.zeros((len(detections), len(thresholds)), bool)
    if not len(detections) or not len(truths):
        return tp
    iou = box_iou(detections[:, :4], truths[:, 1:5])
    same = detections[:, 5:6] == truths[None, :, 0]
    iou = np.where(same, iou, -1.0)
    order = np.argsort(-detections[:, 4], kind="stable")
    for t, thr in enumerate(thresholds):
        taken = np.zeros(len(truths), bool)
        for d in order:
            candidates = np.where(taken, -1.0, iou[d])
            best = int(candidates.argmax())
            if candidates[best] >= thr - 1e-12:
                taken[best] = True
                tp[d, t] = True
    return tp


def compute_ap(recall: np.ndarray, precision: np.ndarray,
               method: str = "continuous") -> float:
    """Area under a PR curve (points in decreasing-score order).

    ``continuous``: all-point interpolation, sum of recall steps × the precision
    envelope (the seed's and ultralytics' ``compute_ap``). ``interp101``: mean of the
    envelope at recall 0, 0.01, ..., 1 (COCO).
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    if method == "interp101":
        # COCO pads with nothing: past the last recall reached, precision is 0.
        env = np.flip(np.maximum.accumulate(np.flip(precision)))
        idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
        return float(np.where(idx < len(env), env[np.minimum(idx, len(env) - 1)], 0)
                     .mean()) if len(recall) else 0.0
    if method != "continuous":
        raise ValueError(f"method={method!r}: expected 'continuous' or 'interp101'")
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclass(frozen=True, slots=True)
class ClassMetrics:
    """Per-class metrics (one entry per class id in ``classes``).

    ``precision``/``recall``/``f1`` are read at ``conf``, the score threshold that
    maximises the mean F1 over classes (ultralytics' choice; at the seed's conf 0.01
    precision mostly measures how many low-score boxes are left).
    """

    classes: tuple[int, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    ap: tuple[float, ...]
    truths: tuple[int, ...]
    conf: float

    @property
    def map(self) -> float:
        """Mean AP over the classes that have ground truth (the seed's and COCO's
        convention); 0 when none has."""
        aps = [ap for ap, n in zip(self.ap, self.truths) if n > 0]
        return float(np.mean(aps)) if aps else 0.0


def ap_per_class(tp: np.ndarray, scores: np.ndarray, pred_cls: np.ndarray,
                 truth_cls: np.ndarray, num_classes: int | None = None,
                 method: str = "continuous") -> ClassMetrics:
    """Precision, recall, F1 and AP per class from matched detections.

    Args:
        tp: ``(k,)`` bool, true positive flags (from `match_detections`).
        scores, pred_cls: ``(k,)`` detection scores and classes.
        truth_cls: ``(t,)`` classes of all ground truths.
        num_classes: report classes ``0..num_classes-1`` (default: the classes
            that have ground truth or detections).
    """
    tp = np.asarray(tp, bool).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    pred_cls = np.asarray(pred_cls).astype(np.int64).reshape(-1)
    truth_cls = np.asarray(truth_cls).astype(np.int64).reshape(-1)
    classes = (tuple(range(num_classes)) if num_classes is not None else
               tuple(int(c) for c in np.unique(np.concatenate([truth_cls, pred_cls]))))
    order = np.argsort(-scores, kind="stable")
    tp, scores, pred_cls = tp[order], scores[order], pred_cls[order]
    grid = np.linspace(0, 1, 1001)
    ap, truths, p_curves, r_curves = [], [], [], []
    for c in classes:
        mine = pred_cls == c
        n_truth = int((truth_cls == c).sum())
        truths.append(n_truth)
        if not mine.any() or n_truth == 0:
            ap.append(0.0)
            p_curves.append(np.zeros_like(grid))
            r_curves.append(np.zeros_like(grid))
            continue
        tpc = np.cumsum(tp[mine])
        fpc = np.cumsum(~tp[mine])
        recall = tpc / n_truth
        precision = tpc / (tpc + fpc)
        ap.append(compute_ap(recall, precision, method))
        # Curves over the score threshold (scores decrease, so flip for interp).
        conf = scores[mine]
        r_curves.append(np.interp(-grid, -conf, recall, left=0))
        p_curves.append(np.interp(-grid, -conf, precision, left=1))
    p = np.asarray(p_curves).reshape(len(classes), -1)
    r = np.asarray(r_curves).reshape(len(classes), -1)
    f1 = 2 * p * r / np.maximum(p + r, 1e-16)
    best = int(f1.mean(0).argmax()) if len(classes) else 0
    return ClassMetrics(classes=classes,
                        precision=tuple(float(v) for v in p[:, best]),
                        recall=tuple(float(v) for v in r[:, best]),
                        f1=tuple(float(v) for v in f1[:, best]),
                        ap=tuple(ap), truths=tuple(truths), conf=float(grid[best]))


def evaluate_detections(detections: list[np.ndarray], truths: list[np.ndarray],
                        num_classes: int, iou_thres: float = 0.5,
                        method: str = "continuous") -> ClassMetrics:
    """Metrics over a dataset: ``detections[i]`` ``(k, 6)`` ``x1 y1 x2 y2 score class``
    and ``truths[i]`` ``(t, 5)`` ``class x1 y1 x2 y2`` of image ``i``."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists for {len(truths)} images")
    tps, scores, pcls, tcls = [], [], [], []
    for det, truth in zip(detections, truths):
        det = np.asarray(det, np.float64).reshape(-1, 6)
        truth = np.asarray(truth, np.float64).reshape(-1, 5)
        tps.append(match_detections(det, truth, iou_thres)[:, 0])
        scores.append(det[:, 4])
        pcls.append(det[:, 5])
        tcls.append(truth[:, 0])
    return ap_per_class(np.concatenate(tps), np.concatenate(scores),
                        np.concatenate(pcls), np.concatenate(tcls), num_classes, method)


def coco_map(detections: list[np.ndarray], truths: list[np.ndarray],
             num_classes: int) -> tuple[float, float]:
    """COCO ``(mAP@0.5:0.95, mAP@0.5)`` through pycocotools, same inputs as
    `evaluate_detections`. pycocotools' progress prints are swallowed.

    Note COCO keeps at most 100 detections per image (``maxDets``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images: list[dict] = []
    annotations: list[dict] = []
    results: list[dict] = []
    for image_id, (det, truth) in enumerate(zip(detections, truths), start=1):
        images.append({"id": image_id})
        for row in np.asarray(truth, np.float64).reshape(-1, 5):
            x1, y1, x2, y2 = (float(v) for v in row[1:5])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(row[0]) + 1, "iscrowd": 0,
                                "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1)})
        for row in np.asarray(det, np.float64).reshape(-1, 6):
            x1, y1, x2, y2 = (float(v) for v in row[:4])
            results.append({"image_id": image_id, "category_id": int(row[5]) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(row[4])})
    if not annotations or not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        truth_api = COCO()
        truth_api.dataset = {"images": images, "annotations": annotations,
                             "categories": [{"id": c + 1} for c in range(num_classes)]}
        truth_api.createIndex()
        result_api = truth_api.loadRes(results)
        evaluator = COCOeval(truth_api, result_api, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    # -1 marks "no ground truth at any threshold"; report it as 0 like the others.
    return float(max(stats[0], 0.0)), float(max(stats[1], 0.0))


# ------------------------------------------------------------------ model evaluation

@dataclass(frozen=True, slots=True)
class EvalResult:
    """What `evaluate` measured; ``map5095``/``coco_map50`` are None without ``coco``."""

    metrics: ClassMetrics
    map50: float
    map5095: float | None
    coco_map50: float | None
    images: int
    names: tuple[str, ...]

    def as_dict(self) -> dict:
        m = self.metrics
        return {"images": self.images, "map50": self.map50, "map50_95": self.map5095,
                "coco_map50": self.coco_map50, "conf": m.conf,
                "classes": [{"id": c, "name": self.names[c] if c < len(self.names)
                             else str(c), "truths": n, "precision": p, "recall": r,
                             "f1": f, "ap50": ap}
                            for c, n, p, r, f, ap in zip(m.classes, m.truths, m.precision,
                                                         m.recall, m.f1, m.ap)]}


def evaluate(graph, variables: Variables, dataset, *, batch_size: int = 32,
             conf_thres: float = 0.01, nms_thres: float = 0.5, iou_thres: float = 0.5,
             bn_eps: float = 1e-5, coco: bool = True) -> EvalResult:
    """mAP of ``variables`` on a `runtime.data.Dataset`, with the seed's protocol.

    Images are letterboxed to the network size (no augmentation); detections and
    truths are compared in input pixels (IoU is unchanged by the letterbox's uniform
    scale and shift). With ``coco``, also COCO mAP@0.5:0.95 through pycocotools.
    """
    import jax

    from runtime.model import forward

    def predict(images_nchw: np.ndarray) -> np.ndarray:
        count = len(images_nchw)
        images = np.transpose(images_nchw, (0, 2, 3, 1))
        if count < batch_size:  # pad the last batch: one compiled shape
            images = np.concatenate([images, np.zeros((batch_size - count, *images.shape[1:]),
                                                      images.dtype)])
        return np.asarray(jax.device_get(forward(graph, variables, images, bn_eps=bn_eps)
                                         .detections))[:count]

    return evaluate_predict(predict, (graph.height, graph.width), dataset,
                            batch_size=batch_size, conf_thres=conf_thres,
                            nms_thres=nms_thres, iou_thres=iou_thres, coco=coco)


def evaluate_heads(run_heads, graph, dataset, *, batch_size: int = 32,
                   conf_thres: float = 0.01, nms_thres: float = 0.5,
                   iou_thres: float = 0.5, coco: bool = True) -> EvalResult:
    """`evaluate` for a network run elsewhere (an ONNX session, an INT8 model):
    ``run_heads(images)`` maps a batch of NCHW float32 images in [0, 1] to the raw
    NCHW heads, one per detection layer in cfg order (the exported ``head_k``
    outputs); they are decoded by each layer kind's rule (`runtime.decode_heads`)."""
    from runtime.model import decode_heads

    input_hw = (graph.height, graph.width)

    def predict(images_nchw: np.ndarray) -> np.ndarray:
        heads = [np.transpose(np.asarray(h, np.float32), (0, 2, 3, 1))
                 for h in run_heads(images_nchw)]
        return decode_heads(graph, heads, input_hw, np)

    return evaluate_predict(predict, input_hw, dataset, batch_size=batch_size,
                            conf_thres=conf_thres, nms_thres=nms_thres,
                            iou_thres=iou_thres, coco=coco)


def evaluate_predict(predict, input_hw: tuple[int, int], dataset, *, batch_size: int = 32,
                     conf_thres: float = 0.01, nms_thres: float = 0.5,
                     iou_thres: float = 0.5, coco: bool = True) -> EvalResult:
    """The evaluation loop of `evaluate` around any ``predict(images)``: a batch of
    letterboxed NCHW float32 images (at most ``batch_size``) to its ``(n, boxes, 5 +
    classes)`` decoded detections (`runtime.ForwardOut.detections`)."""
    from runtime.data import NO_AUGMENT, iterate_batches

    detections, truths = [], []
    boxes = max(8, dataset.max_boxes)
    for batch in iterate_batches(dataset, input_hw, batch_size, shuffle=False,
                                 drop_last=False, augment=NO_AUGMENT, max_boxes=boxes):
        raw = predict(np.ascontiguousarray(np.transpose(batch.images, (0, 3, 1, 2))))
        detections += postprocess(np.asarray(raw), conf_thres, nms_thres)
        for targets in batch.targets:
            t = targets[targets[:, 0] >= 0].astype(np.float64)
            xyxy = xywh_to_xyxy(t[:, 1:5] * ([input_hw[1], input_hw[0]] * 2))
            truths.append(np.concatenate([t[:, :1], xyxy], 1))
    metrics = evaluate_detections(detections, truths, dataset.classes, iou_thres)
    m5095 = c50 = None
    if coco:
        m5095, c50 = coco_map(detections, truths, dataset.classes)
    return EvalResult(metrics=metrics, map50=metrics.map, map5095=m5095, coco_map50=c50,
                      images=len(truths), names=tuple(dataset.names))
