"""NMS, AP/mAP and the pycocotools bridge (runtime.metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.metrics import (
    ap_per_class,
    box_iou,
    coco_map,
    compute_ap,
    evaluate_detections,
    match_detections,
    nms,
    postprocess,
)


def _random_case(seed: int, classes: int = 3, images: int = 20):
    """Ground truth and noisy detections (hits, misclassified hits, false alarms)."""
    rng = np.random.default_rng(seed)
    detections, truths = [], []
    for _ in range(images):
        t = int(rng.integers(0, 5))
        xy = rng.uniform(0, 100, (t, 2))
        truth = np.concatenate([rng.integers(0, classes, (t, 1)), xy,
                                xy + rng.uniform(5, 40, (t, 2))], 1)
        rows = []
        for _ in range(int(rng.integers(0, 8))):
            if t and rng.uniform() < 0.7:
                hit = truth[rng.integers(t)]
                box = hit[1:5] + rng.normal(0, 3, 4)
                cls = hit[0] if rng.uniform() < 0.9 else rng.integers(classes)
            else:
                x = rng.uniform(0, 100, 2)
                box = np.r_[x, x + rng.uniform(5, 40, 2)]
                cls = rng.integers(classes)
            box = np.r_[np.minimum(box[:2], box[2:]), np.maximum(box[:2], box[2:])]
            rows.append([*box, rng.uniform(), cls])
        detections.append(np.asarray(rows, np.float64).reshape(-1, 6))
        truths.append(truth)
    return detections, truths


@pytest.mark.parametrize("seed", range(8))
def test_ap50_agrees_with_pycocotools(seed):
    detections, truths = _random_case(seed)
    ours = evaluate_detections(detections, truths, 3, method="interp101").map
    _, coco50 = coco_map(detections, truths, 3)
    assert 0.05 < coco50 < 0.95  # a case with something to get right
    assert ours == pytest.approx(coco50, abs=1e-3)
    # The seed's all-point AP differs from COCO's 101-point sampling only slightly.
    continuous = evaluate_detections(detections, truths, 3).map
    assert continuous == pytest.approx(coco50, abs=0.01)


def test_coco_map_5095_is_below_ap50_and_perfect_is_one():
    detections, truths = _random_case(3)
    m5095, m50 = coco_map(detections, truths, 3)
    assert 0 < m5095 < m50
    perfect = [np.concatenate([t[:, 1:5], np.full((len(t), 1), 0.9), t[:, :1]], 1)
               for t in truths]
    assert coco_map(perfect, truths, 3) == pytest.approx((1.0, 1.0))


def test_perfect_detections_give_one():
    truths = [np.array([[0, 10, 10, 30, 30], [1, 50, 50, 90, 80]], float),
              np.array([[1, 0, 0, 20, 20]], float)]
    detections = [np.array([[10, 10, 30, 30, 0.9, 0], [50, 50, 90, 80, 0.8, 1]]),
                  np.array([[0, 0, 20, 20, 0.7, 1]])]
    m = evaluate_detections(detections, truths, 2)
    assert m.ap == (1.0, 1.0) and m.map == 1.0
    assert m.precision == (1.0, 1.0) and m.recall == (1.0, 1.0) and m.f1 == (1.0, 1.0)
    assert m.truths == (1, 2)


def test_no_detections_give_zero():
    truths = [np.array([[0, 10, 10, 30, 30]], float)]
    m = evaluate_detections([np.zeros((0, 6))], truths, 1)
    assert m.ap == (0.0,) and m.map == 0.0 and m.recall == (0.0,)
    assert coco_map([np.zeros((0, 6))], truths, 1) == (0.0, 0.0)


def test_known_pr_curve():
    # 4 truths; by decreasing score: hit, miss, hit, hit, duplicate of the first hit.
    # recall .25 .25 .5 .75 .75, precision 1 .5 .667 .75 .6; envelope 1, .75, .75
    # all-point AP = .25*1 + .25*.75 + .25*.75 = .625
    # 101-point AP = (26*1 + 50*.75) / 101
    truths = [np.array([[0, 0, 0, 10, 10], [0, 20, 0, 30, 10], [0, 40, 0, 50, 10],
                        [0, 60, 0, 70, 10]], float)]
    detections = [np.array([[0, 0, 10, 10, 0.9, 0], [80, 80, 90, 90, 0.8, 0],
                            [20, 0, 30, 10, 0.7, 0], [40, 0, 50, 10, 0.6, 0],
                            [0, 0, 10, 10, 0.5, 0]], float)]
    tp = match_detections(detections[0], truths[0])[:, 0]
    assert tp.tolist() == [True, False, True, True, False]
    assert evaluate_detections(detections, truths, 1).ap[0] == pytest.approx(0.625)
    assert (evaluate_detections(detections, truths, 1, method="interp101").ap[0]
            == pytest.approx((26 + 50 * 0.75) / 101))
    assert coco_map(detections, truths, 1)[1] == pytest.approx((26 + 50 * 0.75) / 101)


def test_compute_ap_by_hand():
    assert compute_ap([0.5, 1.0], [1.0, 1.0]) == 1.0
    assert compute_ap([0.5], [1.0]) == 0.5
    assert compute_ap([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    with pytest.raises(ValueError, match="method"):
        compute_ap([1.0], [1.0], method="voc07")


def test_matching_is_per_class_and_one_to_one():
    truth = np.array([[0, 0, 0, 10, 10]], float)
    wrong_class = np.array([[0, 0, 10, 10, 0.9, 1]], float)
    assert not match_detections(wrong_class, truth).any()
    twice = np.array([[0, 0, 10, 10, 0.8, 0], [0, 0, 10, 10, 0.9, 0]], float)
    # The higher score takes the truth, whatever the row order.
    assert match_detections(twice, truth)[:, 0].tolist() == [False, True]
    shifted = np.array([[5, 0, 15, 10, 0.9, 0]], float)  # IoU 1/3
    assert match_detections(shifted, truth, [0.3, 0.5]).tolist() == [[True, False]]


def test_ap_per_class_reports_the_classes_asked_for():
    m = ap_per_class([True, False], [0.9, 0.8], [0, 2], [0, 1], num_classes=3)
    assert m.classes == (0, 1, 2) and m.ap == (1.0, 0.0, 0.0)
    assert m.map == 0.5  # class 2 has no truth: left out of the mean


def test_box_iou():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], float)
    assert box_iou(a, b)[0] == pytest.approx([1.0, 1 / 3, 0.0, 0.0])


def test_nms_is_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11], [50, 50, 60, 60]],
                     float)
    scores = np.array([0.6, 0.9, 0.8, 0.1])
    assert nms(boxes, scores).tolist() == [1, 3]
    assert nms(boxes, scores, np.array([0, 0, 1, 0])).tolist() == [1, 2, 3]
    assert nms(boxes, scores, iou_thres=0.99).tolist() == [1, 2, 0, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_postprocess_thresholds_scores_and_converts_boxes():
    # (N=1, boxes=3, 5 + 2 classes): cx cy w h obj c0 c1
    raw = np.array([[[20, 20, 10, 10, 0.9, 0.2, 0.8],
                     [21, 20, 10, 10, 0.8, 0.1, 0.9],   # overlaps the first, same class
                     [60, 60, 20, 10, 0.005, 0.9, 0.1]]])  # objectness below 0.01
    out = postprocess(raw, conf_thres=0.01, nms_thres=0.5)
    assert len(out) == 1 and out[0].shape == (1, 6)
    assert out[0][0] == pytest.approx([15, 15, 25, 25, 0.72, 1])
