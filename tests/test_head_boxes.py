"""Each detection kind's ``boxes`` rule (`ir.kinds.base.KindSpec`) counts the rows its
``decode`` returns: the ONNX export declares its ``detections`` output with it."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import pytest

import ir
import runtime
from darkslim.testing import random_variables
from ir import kinds
from tests.conftest import cfg_path
from tests.test_detection_kind import CFG as DETECTION_CFG

NETWORKS = {
    "yolo": lambda: ir.with_input_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 96),
    "yolo new_coords": lambda: ir.parse_cfg(cfg_path("kinds-csp-newcoords.cfg")),
    "Gaussian_yolo": lambda: ir.parse_cfg(cfg_path("kinds-gaussian.cfg")),
    "region": lambda: ir.parse_cfg(cfg_path("kinds-yolov2.cfg")),
    "detection": lambda: ir.parse_cfg(DETECTION_CFG.format(n=4 * (3 + 2 * 5), softmax=0)),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_boxes_counts_what_decode_returns(name):
    graph = NETWORKS[name]()
    shapes = ir.verify(graph)
    heads = graph.head_indices()
    assert heads
    counted = sum(ir.spec_of(graph.layers[i]).boxes(graph.layers[i], shapes[i])
                  for i in heads)
    x = jnp.zeros((2, graph.height, graph.width, graph.channels))
    out = runtime.forward(graph, random_variables(graph, 0), x)
    assert out.detections.shape[:2] == (2, counted)


def test_a_detection_kind_without_boxes_is_refused_at_registration():
    broken = dataclasses.replace(kinds.yolo.SPEC, boxes=None)
    with pytest.raises(TypeError, match=r"\[yolo\]: a detection layer has both 'decode' "
                                        "and 'boxes'"):
        kinds._check((broken,))
