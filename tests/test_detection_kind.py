"""``[detection]`` (YOLOv1): its output and its boxes, computed by hand from
get_detection_detections's index formulas."""

from __future__ import annotations

import numpy as np
import pytest

import ir
import runtime
from darkslim.testing import reference_forward

CFG = ("[net]\nwidth=28\nheight=14\nchannels=2\n[connected]\noutput={n}\nactivation=linear\n"
       "[detection]\nclasses=3\ncoords=4\nnum=2\nside=2\nsoftmax={softmax}\nsqrt=1\n")


@pytest.mark.parametrize("softmax", [0, 1])
def test_detection_output_and_boxes(softmax):
    side, classes, num = 2, 3, 2
    n = side * side * (classes + num * 5)
    graph = ir.parse_cfg(CFG.format(n=n, softmax=softmax))
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(2 * 28 * 14, n)).astype(np.float32) * 0.05
    variables = {"params": {"layer_0": {"dense": {"kernel": kernel,
                                                  "bias": np.zeros(n, np.float32)}}}}
    x = rng.random((1, 14, 28, 2), dtype=np.float32)
    out = runtime.forward(graph, variables, x)
    flat = x.transpose(0, 3, 1, 2).reshape(1, -1) @ kernel        # Darknet's NCHW flatten
    assert np.allclose(np.asarray(out.heads[0]).reshape(-1), flat[0], atol=1e-5)
    probs = flat[0, :side * side * classes].reshape(side * side, classes)
    if softmax:
        probs = np.exp(probs) / np.exp(probs).sum(-1, keepdims=True)
    assert np.allclose(np.asarray(out.output).reshape(-1)[:probs.size], probs.reshape(-1),
                       atol=1e-5)
    det = np.asarray(out.detections)[0]
    assert det.shape == (side * side * num, 5 + classes)
    for i in range(side * side):
        row, col = divmod(i, side)
        for b in range(num):
            scale = flat[0, side * side * classes + i * num + b]
            box = flat[0, side * side * (classes + num) + (i * num + b) * 4:][:4]
            want = [(box[0] + col) / side * 28, (box[1] + row) / side * 14,
                    box[2] ** 2 * 28, box[3] ** 2 * 14, scale, *probs[i]]
            assert np.allclose(det[i * num + b], want, atol=1e-4)
    ref = reference_forward(graph, variables, x)
    assert np.allclose(ref.detections, det, atol=1e-4)


@pytest.mark.parametrize("softmax", [0, 1])
def test_detection_exports_to_onnx(softmax):
    onnx = pytest.importorskip("onnx")
    from export import ExportOptions, export_onnx
    from export.runtimes import run_onnxruntime

    n = 2 * 2 * (3 + 2 * 5)
    graph = ir.parse_cfg(CFG.format(n=n, softmax=softmax))
    rng = np.random.default_rng(1)
    variables = {"params": {"layer_0": {"dense": {
        "kernel": rng.normal(size=(2 * 28 * 14, n)).astype(np.float32) * 0.05,
        "bias": np.zeros(n, np.float32)}}}}
    x = rng.random((2, 14, 28, 2), dtype=np.float32)
    model = export_onnx(graph, variables, ExportOptions(decode=True, dynamic_batch=True))
    onnx.checker.check_model(model, full_check=True)
    got = run_onnxruntime(model, x.transpose(0, 3, 1, 2))
    want = runtime.forward(graph, variables, x)
    assert np.allclose(got["head_0"], np.asarray(want.heads[0]).transpose(0, 3, 1, 2),
                       atol=1e-5)
    assert np.allclose(got["detections"], np.asarray(want.detections), atol=1e-4)


def test_the_exporter_knows_every_head_kind():
    from export.driver import HEAD_KINDS

    assert set(HEAD_KINDS) == {spec.layer for spec in ir.KINDS if spec.is_head}
