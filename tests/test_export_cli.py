"""`darkslim export` and `darkslim prune --export onnx` end to end."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest

import frontends
import ir
from darkslim.cli import main
from darkslim.testing import random_variables
from export.runtimes import run_onnxruntime
from tests.conftest import write_network
from tests.test_export import demo_network, parse, rel_diff


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    graph, variables = demo_network()
    cfg, weights = write_network(root, "demo", graph, variables)
    return root, cfg, weights, graph


def test_export_equals_run(demo, capsys):
    root, cfg, weights, graph = demo
    x = np.random.default_rng(2).random((2, 3, graph.height, graph.width), dtype=np.float32)
    np.save(root / "x.npy", x)
    assert main(["run", str(cfg), str(weights), "--input", str(root / "x.npy"),
                 "--out", str(root / "run.npz")]) == 0
    out = root / "demo.onnx"
    assert main(["export", str(cfg), str(weights), str(out), "--decode",
                 "--dynamic-batch"]) == 0
    assert "outputs head_0 N×" in capsys.readouterr().out.replace("\n", "")  # rich wraps
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["darkslim.source_cfg"] == "demo.cfg"
    assert meta["darkslim.source_weights"] == "demo.weights"
    assert meta["darkslim.source_weights_sha256"] == hashlib.sha256(
        weights.read_bytes()).hexdigest()
    assert meta["darkslim.source_weights_format"] == "darknet"
    ran = np.load(root / "run.npz")
    ours = run_onnxruntime(model, x)
    # run always writes `output` (the last layer); the ONNX file has it only for a
    # network without detection layers, as its heads are what deployments read.
    assert set(ours) == set(ran.files) - {"output"}
    for name in ours:
        assert rel_diff(ours[name], ran[name]) <= 1e-4, name


def test_export_torch_checkpoint_with_nms(demo, tmp_path):
    root, cfg, weights, graph = demo
    loaded = frontends.load_variables(graph, weights)
    frontends.save_variables(graph, loaded.variables, tmp_path / "demo.pt")
    out = tmp_path / "demo.onnx"
    assert main(["export", str(cfg), str(tmp_path / "demo.pt"), str(out), "--nms",
                 "--no-fold-bn", "--opset", "13"]) == 0
    model = onnx.load(out)
    assert [o.name for o in model.graph.output][-2:] == ["detections", "selected_indices"]
    assert "BatchNormalization" in {n.op_type for n in model.graph.node}
    assert model.opset_import[0].version == 13


def test_export_refuses_what_the_runtime_refuses(tmp_path, capsys):
    graph = parse("[convolutional]\nfilters=4\nsize=3\npad=1\n[upsample]\nstride=-2\n")
    cfg, weights = write_network(tmp_path, "reverse", graph, random_variables(graph))
    assert main(["export", str(cfg), str(weights), str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.replace("\n", "")  # rich wraps long paths
    assert "reverse.cfg:" in err and "(layer 1) stride=-2" in err
    assert not (tmp_path / "x.onnx").exists()


def test_prune_export_onnx(demo, capsys):
    root, cfg, weights, graph = demo
    out = root / "pruned"
    assert main(["prune", str(cfg), str(weights), "--percent", "0.5", "--mode", "shortcut",
                 "--export", "onnx", "--latency-repeats", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.replace("\n", "")
    assert "onnxruntime ms" in printed and "pruned.onnx" in printed
    report = json.loads((out / "checks.json").read_text())["onnx"]
    assert report["onnxruntime_ms_before"] > 0 and report["onnxruntime_ms_after"] > 0
    model = onnx.load(out / "pruned.onnx")
    assert report["bytes"] == (out / "pruned.onnx").stat().st_size
    pruned = ir.parse_cfg(out / "pruned.cfg")
    meta = {p.key: p.value for p in model.metadata_props}
    assert ir.parse_cfg(meta["darkslim.cfg"]) == pruned
    x = np.random.default_rng(0).random((1, 3, pruned.height, pruned.width), np.float32)
    assert main(["export", str(out / "pruned.cfg"), str(out / "pruned.weights"),
                 str(root / "again.onnx")]) == 0
    again = run_onnxruntime(onnx.load(root / "again.onnx"), x)
    first = run_onnxruntime(model, x)
    assert all(np.array_equal(first[k], again[k]) for k in first)
