"""``[convolutional] share_index``: a conv that runs with another conv's weights
(Darknet's ``share_layer``; resnet152_trident.cfg's branches at three dilations)."""

from __future__ import annotations

import numpy as np
import pytest

import frontends
import ir
import passes
import runtime
from darkslim.testing import reference_forward

CFG = """[net]
width=16
height=16
channels=3
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
dilation=2
share_index=-1
activation=leaky
[shortcut]
from=-2
[convolutional]
filters=7
size=1
activation=linear
[yolo]
mask=0
anchors=4,4
classes=2
num=1
"""


@pytest.fixture
def shared():
    graph = ir.parse_cfg(CFG)
    return graph, ir.init_variables(graph, "sparse", seed=0)


def test_the_shared_conv_has_no_variables_of_its_own(shared):
    graph, variables = shared
    assert graph.layers[2].share == 1 and "share_index=1" in ir.write_cfg(graph)
    assert ir.parse_cfg(ir.write_cfg(graph)) == graph
    assert sorted(variables["params"]) == sorted(runtime.init_variables(graph)["params"]) \
        == ["layer_0", "layer_1", "layer_4"]
    costs = ir.layer_costs(graph)
    assert costs[2].params == 0 and costs[2].flops == costs[1].flops


def test_it_computes_the_owner_conv_at_its_own_dilation(shared):
    graph, variables = shared
    x = np.random.default_rng(0).random((1, 16, 16, 3), dtype=np.float32)
    got = runtime.forward(graph, variables, x)
    want = reference_forward(graph, variables, x)
    assert np.allclose(got.heads[0], want.heads[0], atol=1e-5)
    # the same network written out with its own copy of the weights: dilation 2, no share
    own = graph.replace_layers({2: ir.Conv(filters=4, size=3, pad=True, dilation=2,
                                           batch_normalize=True,
                                           activation=ir.Activation.LEAKY)})
    copied = {c: {**layers, "layer_2": layers["layer_1"]} for c, layers in variables.items()}
    assert np.allclose(runtime.forward(own, copied, x).heads[0], got.heads[0], atol=1e-5)


def test_weights_files_skip_it_and_round_trip(shared, tmp_path):
    graph, variables = shared
    frontends.save_variables(graph, variables, tmp_path / "s.weights")
    n_floats = (4 * 3 * 9 + 4 * 4) + (4 * 4 * 9 + 4 * 4) + (7 * 4 + 7)
    assert (tmp_path / "s.weights").stat().st_size == 20 + 4 * n_floats
    back = frontends.load_variables(graph, tmp_path / "s.weights").variables
    frontends.save_variables(graph, back, tmp_path / "t.weights")
    assert (tmp_path / "t.weights").read_bytes() == (tmp_path / "s.weights").read_bytes()


def test_pruning_keeps_both_convs_and_their_inputs_whole(shared):
    graph, _ = shared
    analysis = passes.analyze_prunability(graph, "shortcut")
    assert analysis.units == ()
    assert "shares its weights with layer 1" in analysis.reason(1)
    assert "shares its weights with layer 1" in analysis.reason(0)


def test_it_exports_to_onnx(shared):
    onnx = pytest.importorskip("onnx")
    from export import ExportOptions, export_onnx
    from export.runtimes import run_onnxruntime

    graph, variables = shared
    x = np.random.default_rng(1).random((1, 16, 16, 3), dtype=np.float32)
    model = export_onnx(graph, variables, ExportOptions())
    onnx.checker.check_model(model, full_check=True)
    got = run_onnxruntime(model, x.transpose(0, 3, 1, 2))["head_0"]
    want = np.asarray(runtime.forward(graph, variables, x).heads[0]).transpose(0, 3, 1, 2)
    assert np.allclose(got, want, atol=1e-4)
