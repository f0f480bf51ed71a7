"""ONNX export of every layer kind and activation: onnxruntime computes what the runtime
computes, before and after pruning.

Hand-written tiny networks (16-32 px), one or more per kind (`NETS`), stand in until
the testing kit's graph strategies draw every kind. A hypothesis property draws a
network, its variables' seed, BN folded or kept, and batch 1 or batch 2 under a
dynamic batch axis; each export passes ``onnx.checker`` (full check) and its heads,
``detections`` (with ``--decode``) or ``output`` equal `runtime.forward`'s within 1e-4
of their scale (`tests.test_export.check_parity`).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ir
import passes
from darkslim.testing import random_variables
from export import ExportError, ExportOptions, export_onnx
from export.rules import ONNX_RULES
from tests.test_export import check_parity

NET = "[net]\nwidth={size}\nheight={size}\nchannels=3\n"


def conv(filters: int, size: int = 3, activation: str = "leaky", bn: bool = True,
         **keys) -> str:
    lines = [f"filters={filters}", f"size={size}", f"pad={int(size > 1)}",
             f"activation={activation}", *(f"{k}={v}" for k, v in keys.items())]
    head = "[convolutional]\n" + ("batch_normalize=1\n" if bn else "")
    return head + "\n".join(lines) + "\n"


def yolo(classes: int = 2, **keys) -> str:
    return conv(2 * (5 + classes), 1, "linear", bn=False) + (
        "[yolo]\nmask=0,1\nanchors=4,5, 9,7\n"
        f"classes={classes}\nnum=2\n" + "".join(f"{k}={v}\n" for k, v in keys.items()))


def section(name: str, **keys) -> str:
    return f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in keys.items())


#: Every activation after a conv, and the ones Darknet's [shortcut] computes (not
#: hard_mish nor the normalize_channels family: its shortcut outputs 0 for those).
ACTIVATION_NET = "".join(conv(6, 3 if i % 2 else 1, a.value, bn=i % 3 != 0)
                         for i, a in enumerate(ir.Activation) if a != ir.Activation.STAIR) \
    + section("shortcut", **{"from": -3, "activation": "mish"}) \
    + section("shortcut", **{"from": -2, "activation": "swish"}) \
    + conv(6, 1, "stair") + yolo()

NETS: dict[str, tuple[int, str]] = {
    # YOLOv2-tiny style: reorg passthrough and a region head with softmax.
    "yolov2-reorg-region": (32, conv(8) + section("maxpool", size=2, stride=2) + conv(8)
                            + section("maxpool", size=2, stride=2) + conv(16)
                            + section("route", layers=-3) + section("reorg", stride=2)
                            + section("route", layers="-1,-3") + conv(16)
                            + conv(3 * 7, 1, "linear", bn=False)
                            + section("region", anchors="1,1.5, 2,1, 3,3", classes=2,
                                      num=3, softmax=1)),
    "region-raw-classes": (16, conv(8) + conv(2 * 8, 1, "linear", bn=False)
                           + section("region", anchors="0.5,1, 2,2", classes=3, num=2)),
    # Classifier: crop, convs, global avgpool, connected (BN and not), dropout,
    # softmax with groups and temperature, cost.
    "classifier": (32, section("crop", crop_height=24, crop_width=20) + conv(8)
                   + section("maxpool", size=2, stride=2) + conv(12)
                   + section("connected", output=10, batch_normalize=1,
                             activation="leaky")
                   + section("dropout", probability=0.5)
                   + section("connected", output=6, activation="linear")
                   + section("softmax", groups=2, temperature=0.5)
                   + section("cost", type="sse")),
    "classifier-avgpool": (16, section("crop", crop_height=15, crop_width=15, noadjust=1)
                           + conv(8) + section("avgpool") + section("dropout")
                           + section("connected", output=5, activation="relu")
                           + section("softmax") + section("cost")),
    # CSP style: route groups, new_coords heads with scale_x_y.
    "csp-new-coords": (32, conv(8) + conv(8) + section("route", layers=-1, groups=2,
                                                       group_id=1)
                       + conv(4) + conv(4) + section("route", layers="-1,-2")
                       + section("route", layers="-6,-1")
                       + section("maxpool", size=2, stride=2)
                       + yolo(new_coords=1, scale_x_y=2.0)
                       + section("route", layers=-3) + conv(6, 3, "mish", stride=2)
                       + yolo(classes=3, new_coords=1, scale_x_y=1.05)),
    # SAM and reorg3d (forward and reverse).
    "sam-reorg3d": (32, conv(8) + conv(8, 1, "logistic", bn=False)
                    + section("sam", **{"from": -2})
                    + section("reorg3d", stride=2) + conv(16)
                    + section("reorg3d", stride=2, reverse=1)
                    + section("reorg", stride=2, reverse=1) + conv(8, stride=2)
                    + section("sam", **{"from": -1, "activation": "tanh"}) + yolo()),
    # Squeeze-and-excitation (scale_channels) and a per-pixel scale (scale_wh).
    "se-scale-channels": (16, conv(8) + section("avgpool") + conv(4, 1, "relu")
                          + conv(8, 1, "logistic") + section("scale_channels",
                                                             **{"from": -4})
                          + conv(1, 1, "logistic", bn=False)
                          + section("scale_channels", **{"from": -2, "scale_wh": 1,
                                                         "activation": "leaky"})
                          + yolo()),
    # Gaussian YOLO, beside a plain [yolo] with fewer classes (detections padded).
    "gaussian-yolo": (16, conv(8) + conv(2 * 11, 1, "linear", bn=False)
                      + section("Gaussian_yolo", mask="0,1", anchors="4,5, 9,7", classes=2,
                                num=2, scale_x_y=1.1)
                      + section("route", layers=-3) + yolo(classes=1)),
    "gaussian-yolo-left-top": (16, conv(8) + conv(2 * 10, 1, "linear", bn=False)
                               + section("Gaussian_yolo", mask="0,1", anchors="4,5, 9,7",
                                         classes=1, num=2, yolo_point="left_top")),
    "local-avgpool": (16, conv(8) + section("local_avgpool", size=3, stride=1)
                      + section("local_avgpool", size=2, stride=2)
                      + section("upsample", stride=2, scale=0.5)
                      + section("local_avgpool", size=3, stride=2, padding=4) + yolo()),
    "maxpool-depth": (16, conv(12) + section("maxpool", maxpool_depth=1, out_channels=5)
                      + conv(8) + section("maxpool", maxpool_depth=1, out_channels=4)
                      + yolo()),
    "dilated-conv": (32, conv(8, 3, dilation=2) + conv(8, 5, dilation=3, groups=8)
                     + conv(8, 3, dilation=2, stride=2) + yolo()),
    "activations": (16, ACTIVATION_NET),
}


def network(name: str) -> ir.Graph:
    size, body = NETS[name]
    return ir.parse_cfg(NET.format(size=size) + body)


def kind_variables(graph: ir.Graph, seed: int, sparsity: float = 0.0) -> dict:
    """`random_variables` for the convs, and random values of the same families for
    the other kinds' variables (``[connected]``): BN γ away from 1, a fraction
    ``sparsity`` of them near 0, β, running mean and variance."""
    out = random_variables(graph, seed, sparsity=sparsity)
    rng = np.random.default_rng(seed + 1)
    for path, shape in ir.variables.flat_shapes(graph).items():
        tree = out
        for key in path[:-1]:
            tree = tree.setdefault(key, {})
        if path[-1] in tree:
            continue
        leaf, n = path[-1], shape[-1]
        if leaf == "kernel":
            value = rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape)
        elif leaf == "scale":
            value = rng.uniform(0.2, 1.5, n) * np.where(rng.random(n) < 0.2, -1, 1)
            value = np.where(rng.random(n) < sparsity, rng.uniform(-1e-3, 1e-3, n), value)
        elif leaf == "var":
            value = rng.uniform(0.5, 2.0, n)
        else:
            value = rng.normal(0.0, 0.5, n)
        tree[leaf] = value.astype(np.float32)
    return out


def test_nets_cover_every_kind_and_activation():
    kinds = {type(layer) for name in NETS for layer in network(name).layers}
    # YOLOv1's [detection] is exported and checked in tests/test_detection_kind.py
    assert kinds | {ir.Detection} == {spec.layer for spec in ONNX_RULES.handled()}
    activations = {layer.activation for layer in network("activations").layers
                   if hasattr(layer, "activation")}
    assert activations == set(ir.Activation)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(NETS)), st.integers(0, 2**16), st.booleans(), st.booleans())
def test_onnxruntime_equals_runtime_on_every_kind(name, seed, fold_bn, dynamic):
    graph = network(name)
    check_parity(graph, kind_variables(graph, seed), batch=2 if dynamic else 1,
                 fold_bn=fold_bn, dynamic_batch=dynamic, seed=seed)


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_kind_before_and_after_pruning(name):
    graph = network(name)
    variables = kind_variables(graph, seed=7, sparsity=0.5)
    programs = [(graph, variables)]
    try:
        result = passes.prune(graph, variables,
                              passes.PruneConfig(percent=0.5, mode="shortcut"))
    except passes.PruneError:  # nothing prunable (e.g. maxpool_depth blocks it all)
        assert name not in PRUNED
    else:
        if ir.count_params(result.compact[0]) < ir.count_params(graph):
            programs.append(result.compact)
    for g, v in programs:
        check_parity(g, v, fold_bn=True)
        check_parity(g, v, batch=2, dynamic_batch=True, fold_bn=False)
        model = export_onnx(g, v, ExportOptions(decode=True))
        groups = {n.name.split("/")[0] for n in model.graph.node}
        assert {f"layer_{i}_{layer.kind}" for i, layer in enumerate(g.layers)} <= groups


@pytest.mark.parametrize("activation", [a.value for a in ir.Activation])
def test_each_activation_alone(activation):
    """Each activation as the network's ``output`` (after a conv whose outputs span
    several units, so stair, plse and lhtan see each of their pieces)."""
    # The activation after a conv: every one is computed there (a [shortcut] refuses
    # hard_mish and the normalize_channels family, as Darknet outputs 0 for them).
    graph = ir.parse_cfg(NET.format(size=16) + conv(6, 3, "linear", bn=False)
                         + conv(6, 1, activation, bn=False))
    variables = kind_variables(graph, 1)
    variables["params"]["layer_0"]["conv"]["kernel"] *= 8.0
    check_parity(graph, variables, batch=2, dynamic_batch=True)


@pytest.mark.parametrize("name", ["activations", "maxpool-depth", "classifier"])
def test_opset_13(name):
    """Reduce* take their axes as an attribute before opset 18 (ReduceSum: 13)."""
    graph = network(name)
    check_parity(graph, kind_variables(graph, 2), opset=13)


def test_openvino_agrees_on_every_kind(monkeypatch):
    monkeypatch.setenv("CI", "true")  # OpenVINO's telemetry opt-out (see test_export)
    pytest.importorskip("openvino")
    from export.runtimes import run_openvino

    for name in sorted(NETS):
        graph = network(name)
        check_parity(graph, kind_variables(graph, 3), batch=2, dynamic_batch=True,
                     run=run_openvino)


PRUNED = ["yolov2-reorg-region", "classifier", "csp-new-coords", "se-scale-channels",
          "dilated-conv"]


@pytest.mark.parametrize("name", PRUNED)
def test_pruning_shrinks_the_exported_nets(name):
    """The nets with prunable channels do lose some (so the test above checks a
    pruned graph for each)."""
    graph = network(name)
    result = passes.prune(graph, kind_variables(graph, 7, sparsity=0.5),
                          passes.PruneConfig(percent=0.5, mode="shortcut"))
    assert ir.count_params(result.compact[0]) < ir.count_params(graph)


# -------------------------------------------------------------------------- errors


def test_unsupported_layer_is_refused_by_the_exporter_naming_its_line():
    graph = ir.parse_cfg(NET.format(size=16) + conv(4) + "[rnn]\noutput=4\n")
    with pytest.raises(ExportError, match=r"<text>:\d+: \[rnn\] \(layer 1\).*cannot export"):
        export_onnx(graph, kind_variables(ir.parse_cfg(NET.format(size=16) + conv(4)), 0))


def test_a_kind_without_an_emit_rule_names_its_cfg_line(monkeypatch):
    graph = network("local-avgpool")
    refused = ir.check_table("onnx export", {
        **ONNX_RULES, ir.LocalAvgPool: ir.Refusal("no rule written yet")})
    monkeypatch.setattr("export.driver.ONNX_RULES", refused)
    with pytest.raises(ExportError, match=r"<text>:\d+: \[local_avgpool\] \(layer 1\): "
                                          r"no ONNX emit rule for this layer kind, no rule "
                                          r"written yet"):
        export_onnx(graph, kind_variables(graph, 0))
