"""Deployment check with a real consumer: OpenCV's Darknet importer.

Facts this file pins down (and the README repeats):
- `cv2.dnn.readNetFromDarknet` (opencv-python-headless < 5) builds BatchNorm with eps
  1e-6 where Darknet uses 1e-5; compare with the eps matched (`run --bn-eps 1e-6`).
- For yolov3-tiny's size-2 stride-1 `[maxpool]`, OpenCV follows Darknet: the extra
  right/bottom cell is out of bounds and never wins the max (Darknet skips it, i.e.
  −∞). The torch ports pad it with zeros instead (see the torch frontend's warning).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import ir
import passes
import runtime
from darkslim.testing import random_variables
from tests.conftest import cfg_path, write_network
from tests.test_prune import at_size

cv2 = pytest.importorskip("cv2")
OPENCV_BN_EPS = 1e-6


def small_variances(variables, seed: int) -> dict:
    """Running variances down to 1e-5 in some channels, where the eps choice shows."""
    rng = np.random.default_rng(seed)
    stats = {}
    for key, layer in variables["batch_stats"].items():
        var = np.array(layer["bn"]["var"])
        tiny = rng.random(var.shape) < 0.3
        var[tiny] = rng.uniform(1e-5, 1e-4, int(tiny.sum()))
        stats[key] = {"bn": {**layer["bn"], "var": var.astype(np.float32)}}
    return {**variables, "batch_stats": stats}


def opencv_heads(cfg: Path, weights: Path, graph: ir.Graph, x_nchw: np.ndarray):
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(x_nchw)
    # OpenCV names layer i's conv "conv_i"; the conv before a [yolo] has no BN and a
    # linear activation, so its output is the raw head map.
    return net.forward([f"conv_{y - 1}" for y in graph.yolo_indices()])


def darkslim_heads(graph, variables, x_nchw, bn_eps):
    out = runtime.forward(graph, variables, jnp.asarray(x_nchw.transpose(0, 2, 3, 1)),
                          bn_eps=bn_eps)
    return [np.asarray(h).transpose(0, 3, 1, 2) for h in out.heads]


def rel_diff(a_list, b_list) -> float:
    return max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(a_list, b_list))


def check_parity(tmp, name, graph, variables):
    cfg, weights = write_network(tmp, name, graph, variables)
    x = np.random.default_rng(1).random((1, graph.channels, graph.height, graph.width),
                                        dtype=np.float32)
    theirs = opencv_heads(cfg, weights, graph, x)
    ours = darkslim_heads(graph, variables, x, OPENCV_BN_EPS)
    assert [t.shape for t in theirs] == [o.shape for o in ours]
    assert rel_diff(theirs, ours) <= 1e-4
    return theirs, x


def pruned(graph, variables):
    result = passes.prune(graph, variables, passes.PruneConfig(percent=0.5))
    assert ir.count_params(result.compact[0]) < ir.count_params(graph)
    return result.compact


@pytest.fixture(scope="module")
def tiny():
    graph = at_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 160)
    return graph, small_variances(random_variables(graph, seed=11, sparsity=0.5), seed=1)


def test_yolov3_tiny_matches_opencv_before_and_after_pruning(tiny, tmp_path):
    graph, variables = tiny
    theirs, x = check_parity(tmp_path, "tiny", graph, variables)
    # With Darknet's own eps the small variances show: the 1e-6 is OpenCV's.
    darknet_eps = darkslim_heads(graph, variables, x, 1e-5)
    assert rel_diff(theirs, darknet_eps) > 10 * rel_diff(
        theirs, darkslim_heads(graph, variables, x, OPENCV_BN_EPS))
    check_parity(tmp_path, "tiny-pruned", *pruned(graph, variables))


def test_demo_network_matches_opencv_before_and_after_pruning(tmp_path):
    text = importlib.resources.files("darkslim.data").joinpath("synth-tiny.cfg").read_text()
    graph = ir.parse_cfg(text)
    variables = small_variances(random_variables(graph, seed=12, sparsity=0.5), seed=2)
    check_parity(tmp_path, "demo", graph, variables)
    check_parity(tmp_path, "demo-pruned", *pruned(graph, variables))


def test_size2_stride1_maxpool_follows_darknet(tmp_path):
    """Negative activations at the right/bottom edge: −∞ padding keeps them, zero
    padding would clamp them to 0. OpenCV and darkslim both keep them."""
    text = ("[net]\nwidth=8\nheight=8\nchannels=3\n"
            "[convolutional]\nfilters=4\nsize=1\nactivation=linear\n"
            "[maxpool]\nsize=2\nstride=1\n"
            "[convolutional]\nfilters=6\nsize=1\nactivation=linear\n"
            "[yolo]\nmask=0\nanchors=2,2\nclasses=1\nnum=1\n")
    graph = ir.parse_cfg(text)
    variables = random_variables(graph, seed=0)
    params = variables["params"]
    first = {"conv": {"kernel": params["layer_0"]["conv"]["kernel"],
                      "bias": np.full(4, -5.0, np.float32)}}  # every activation negative
    variables = {**variables, "params": {**params, "layer_0": first}}
    theirs, x = check_parity(tmp_path, "pool", graph, variables)
    torch = pytest.importorskip("torch")
    from tests.torch_reference import Darknet

    with torch.no_grad():
        (torch_head,), _ = Darknet.from_variables(graph, variables)(torch.from_numpy(x))
    diff = np.abs(torch_head.numpy() - theirs[0])
    assert diff[..., :-1, :-1].max() < 1e-4  # the torch ports agree inside...
    assert diff[..., -1, :].max() > 1e-2  # ...and differ on the zero-padded border
