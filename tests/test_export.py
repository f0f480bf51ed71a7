"""ONNX export: onnxruntime (and OpenVINO, when installed) compute what the runtime does.

The parity certificate: for random graphs of every block kind and for the real cfgs,
before and after pruning, the exported model passes ``onnx.checker`` (full check) and
onnxruntime's heads and decoded detections equal `runtime.forward`'s within 1e-4 of
their scale, at batch 1 and at batch 2 under a dynamic batch axis.
"""

from __future__ import annotations

import importlib.resources

import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ir
import passes
import runtime
from darkslim.testing import graph_features, graphs, programs, random_inputs, random_variables
from export import ExportError, ExportOptions, export_onnx
from export.runtimes import run_onnxruntime
from tests.conftest import cfg_path

TOL = 1e-4


def rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref|; non-finite values must sit at the same places
    (a pool window wholly in Darknet's padding is -inf in both)."""
    assert ours.shape == ref.shape
    finite = np.isfinite(ref)
    assert np.array_equal(finite, np.isfinite(ours))
    if not finite.any():
        return 0.0
    ours, ref = ours[finite], ref[finite]
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


def reference(graph, variables, x_nhwc, *, output: bool = False):
    out = runtime.forward(graph, variables, jnp.asarray(x_nhwc))
    heads = [np.asarray(h).transpose(0, 3, 1, 2) for h in out.heads]
    if output:
        return heads, np.asarray(out.detections), np.asarray(out.output).transpose(0, 3, 1, 2)
    return heads, np.asarray(out.detections)


def check_parity(graph, variables, *, batch: int = 1, seed: int = 0,
                 run=run_onnxruntime, **options) -> dict:
    """Export with ``options``, run it, compare with the runtime; returns the outputs."""
    options.setdefault("decode", True)
    model = export_onnx(graph, variables, ExportOptions(**options))
    onnx.checker.check_model(model, full_check=True)
    x = random_inputs(graph, seed, batch=batch)
    heads, detections, output = reference(graph, variables, x, output=True)
    out = run(model, x.transpose(0, 3, 1, 2))
    if not heads:
        assert out["output"].shape[0] == batch
        assert rel_diff(out["output"], output) <= TOL, "output"
    for k, head in enumerate(heads):
        assert rel_diff(out[f"head_{k}"], head) <= TOL, f"head_{k}"
    if options["decode"] and heads:
        # Boxes (pixels) and scores ([0, 1]) have different scales: compare each.
        det = out["detections"]
        assert rel_diff(det[..., :4], detections[..., :4]) <= TOL
        assert rel_diff(det[..., 4:], detections[..., 4:]) <= TOL
    return out


# ------------------------------------------------------------------ random graphs


@settings(max_examples=25)
@given(programs(max_blocks=5, sizes=(16, 32), widths=(2, 8), sparsity=0.0),
       st.booleans(), st.booleans())
def test_onnxruntime_equals_runtime_on_random_graphs(program, fold_bn, dynamic):
    graph, variables = program
    check_parity(graph, variables, batch=2 if dynamic else 1, fold_bn=fold_bn,
                 dynamic_batch=dynamic)


def test_random_graphs_cover_every_layer_kind():
    """The property above draws every kind the runtime executes (a guard against a
    strategy change silently narrowing it)."""
    seen: set[str] = set()

    @settings(max_examples=200, derandomize=True, database=None)
    @given(graphs(max_blocks=5, sizes=(16, 32), widths=(2, 8)))
    def collect(graph):
        seen.update(graph_features(graph))

    collect()
    assert {"Conv", "Shortcut", "Route", "Upsample", "MaxPool", "Yolo", "route:groups",
            "conv:grouped", "maxpool:2/1", "maxpool:5/1"} <= seen
    assert {f"act:{a.value}" for a in ir.Activation} <= seen


# ------------------------------------------------------- keys the strategies skip


def parse(text: str) -> ir.Graph:
    return ir.parse_cfg("[net]\nwidth=16\nheight=16\nchannels=3\n" + text)


HEAD = "[convolutional]\nfilters=14\nsize=1\nactivation=linear\n" \
       "[yolo]\nmask=0,1\nanchors=3,4, 10,12\nclasses=2\nnum=2\n"


@pytest.mark.parametrize("body", [
    # scale_x_y and a mish/swish trunk
    "[convolutional]\nfilters=6\nsize=3\npad=1\nbatch_normalize=1\nactivation=mish\n"
    "[convolutional]\nfilters=6\nsize=3\nstride=2\npad=1\nactivation=swish\n"
    + HEAD.replace("num=2", "num=2\nscale_x_y=1.2"),
    # shortcut between different channel counts, both ways, with an activation
    "[convolutional]\nfilters=6\nsize=1\nactivation=leaky\n"
    "[convolutional]\nfilters=4\nsize=1\nactivation=leaky\n"
    "[shortcut]\nfrom=-2\nactivation=leaky\n"
    "[convolutional]\nfilters=8\nsize=1\nactivation=relu\n"
    "[shortcut]\nfrom=-3\nactivation=logistic\n" + HEAD,
    # upsample with scale, maxpools of odd sizes and explicit padding
    "[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\nactivation=leaky\n"
    "[upsample]\nstride=2\nscale=0.5\n"
    "[maxpool]\nsize=3\nstride=2\n"
    "[maxpool]\nsize=2\nstride=1\npadding=3\n" + HEAD,
    # no detection layer: the last layer is `output`
    "[convolutional]\nfilters=5\nsize=3\npad=1\ngroups=1\nactivation=leaky\n"
    "[maxpool]\nsize=2\nstride=2\n",
], ids=["mish-swish-scale_x_y", "shortcut-channels", "upsample-scale-maxpool", "no-yolo"])
@pytest.mark.parametrize("fold_bn", [True, False], ids=["folded", "bn"])
def test_keys_the_strategies_do_not_draw(body, fold_bn):
    graph = parse(body)
    variables = random_variables(graph, seed=3)
    check_parity(graph, variables, fold_bn=fold_bn)
    check_parity(graph, variables, batch=2, dynamic_batch=True, fold_bn=fold_bn)


# ---------------------------------------------------------------------- real cfgs


def real(name: str, size: int, narrow: int) -> tuple[ir.Graph, dict]:
    graph = ir.narrow(ir.with_input_size(ir.parse_cfg(cfg_path(name)), size), narrow,
                      min_filters=2)
    return graph, random_variables(graph, seed=5, sparsity=0.5)


def demo_network():
    text = importlib.resources.files("darkslim.data").joinpath("synth-tiny.cfg").read_text()
    graph = ir.with_input_size(ir.parse_cfg(text), 64)
    return graph, random_variables(graph, seed=6, sparsity=0.5)


NETWORKS = {
    "demo": demo_network,
    "yolov3-tiny": lambda: real("yolov3-tiny.cfg", 96, 4),
    "yolov3-spp": lambda: real("yolov3-spp.cfg", 64, 16),
    "yolov3": lambda: real("yolov3.cfg", 64, 16),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_real_cfgs_before_and_after_pruning(name):
    graph, variables = NETWORKS[name]()
    result = passes.prune(graph, variables, passes.PruneConfig(percent=0.5, mode="shortcut"))
    compact = result.compact
    assert ir.count_params(compact[0]) < ir.count_params(graph)
    for g, v in ((graph, variables), compact):
        check_parity(g, v)
        check_parity(g, v, batch=2, dynamic_batch=True)


def test_unfolded_batchnorm_keeps_its_nodes():
    graph, variables = NETWORKS["demo"]()
    ops = lambda m: [n.op_type for n in m.graph.node]  # noqa: E731
    folded = export_onnx(graph, variables)
    kept = export_onnx(graph, variables, ExportOptions(fold_bn=False))
    assert "BatchNormalization" not in ops(folded)
    assert ops(kept).count("BatchNormalization") == sum(
        1 for layer in graph.layers if isinstance(layer, ir.Conv) and layer.batch_normalize)
    check_parity(graph, variables, fold_bn=False)


def test_graph_reads_like_the_cfg():
    graph, variables = NETWORKS["demo"]()
    model = export_onnx(graph, variables, ExportOptions(decode=True))
    groups = {n.name.split("/")[0] for n in model.graph.node}
    for index, layer in enumerate(graph.layers):
        assert f"layer_{index}_{layer.kind}" in groups
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["head_0", "head_1", "detections"]
    assert model.opset_import[0].version == 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert ir.parse_cfg(meta["darkslim.cfg"]) == graph
    assert meta["darkslim.bn_folded"] == "true"


# ----------------------------------------------------------------------------- NMS


def reference_nms(detections: np.ndarray, iou: float, conf: float, max_per_class: int):
    """Per image and class: greedy NMS over objectness × class score > conf."""
    from runtime.metrics import nms, xywh_to_xyxy

    rows = []
    for n, image in enumerate(detections):
        boxes = xywh_to_xyxy(image[:, :4])
        for c in range(image.shape[1] - 5):
            score = image[:, 4] * image[:, 5 + c]
            candidates = np.flatnonzero(score > conf)
            keep = nms(boxes[candidates], score[candidates], None, iou, max_per_class)
            rows += [(n, c, int(candidates[k])) for k in keep]
    return sorted(rows)


def test_nms_selects_what_greedy_nms_selects():
    graph, variables = NETWORKS["demo"]()
    out = check_parity(graph, variables, batch=2, dynamic_batch=True, nms=True)
    selected = sorted(map(tuple, out["selected_indices"].tolist()))
    expected = reference_nms(out["detections"], 0.45, 0.25, 100)
    assert selected == expected and len(selected) > 0


# -------------------------------------------------------------------------- errors


def test_a_layer_darkslim_does_not_run_names_its_cfg_line():
    graph = parse("[convolutional]\nfilters=4\nsize=1\n[rnn]\noutput=4\n")
    with pytest.raises(ExportError, match=r"<text>:8: \[rnn\] \(layer 1\).*cannot export"):
        export_onnx(graph, random_variables(parse("[convolutional]\nfilters=4\nsize=1\n")))


# ------------------------------------------------------------------------ OpenVINO


def test_openvino_agrees_before_and_after_pruning(monkeypatch):
    # Importing openvino starts its usage telemetry, which forks a sender process
    # (and JAX warns on fork) unless opted out; CI=true is its documented opt-out.
    monkeypatch.setenv("CI", "true")
    pytest.importorskip("openvino")
    from export.runtimes import run_openvino

    for name in ("demo", "yolov3-tiny"):
        graph, variables = NETWORKS[name]()
        result = passes.prune(graph, variables, passes.PruneConfig(percent=0.5))
        for g, v in ((graph, variables), result.compact):
            check_parity(g, v, run=run_openvino)
            check_parity(g, v, batch=2, dynamic_batch=True, run=run_openvino)


def test_network_without_yolo_outputs_its_last_layer():
    """``output`` equals the runtime's head for the same network closed by a [yolo]
    (whose head is the last layer's map)."""
    body = ("[convolutional]\nfilters=5\nsize=3\npad=1\nbatch_normalize=1\n"
            "activation=mish\n[maxpool]\nsize=2\nstride=2\n")
    graph = parse(body)
    closed = parse(body + "[yolo]\nmask=0\nanchors=2,3\nclasses=0\nnum=1\n")
    variables = random_variables(graph, seed=4)
    x = random_inputs(graph, 0, batch=2)
    model = export_onnx(graph, variables, ExportOptions(dynamic_batch=True, decode=True))
    assert [o.name for o in model.graph.output] == ["output"]
    (head,), _ = reference(closed, variables, x)
    assert rel_diff(run_onnxruntime(model, x.transpose(0, 3, 1, 2))["output"], head) <= TOL
