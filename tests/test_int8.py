"""`darkslim export --int8`: QDQ structure, the certificate's numbers, the refusal."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import frontends
import ir
from darkslim.cli import main
from darkslim.int8 import calibration_images, head_runner, parse_keep_float
from export import ExportOptions, export_onnx
from export.int8 import (
    Int8Error,
    Int8Options,
    count_qdq,
    first_conv,
    head_convs,
    head_fidelity,
    layer_nodes,
    quantize_int8,
)
from runtime import init_variables, load_dataset
from runtime.metrics import evaluate, evaluate_heads
from runtime.synth import write_synth
from tests.conftest import write_network

SNR_FLOOR_DB = 20.0
# The demo detector after 30 epochs on 256 synthetic 64-px images reached 0.138 mAP@0.5
# (`darkslim train`, seed 0); well above a random network's ~0.003.
MIN_TRAINED_MAP = 0.08


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A small synthetic dataset, its demo cfg (narrowed) and seeded weights."""
    from darkslim.demo import template_cfg

    root = tmp_path_factory.mktemp("int8")
    data = write_synth(root / "data", train=24, valid=12, size=64, seed=3,
                       cfg=ir.narrow(template_cfg(), 2, min_filters=4),
                       write=frontends.write_atomic)
    graph = ir.parse_cfg(data.cfg)
    variables = init_variables(graph, 0)
    cfg, weights = write_network(root, "net", graph, variables)
    return root, data.data, cfg, weights, graph, variables


def _export_int8(synth, out, *extra):
    root, data, cfg, weights, _, _ = synth
    return main(["export", str(cfg), str(weights), str(out), "--int8", "--calib", str(data),
                 "--calib-images", "8", "--latency-repeats", "3", *extra])


def test_certificate_numbers_are_reproduced(synth):
    root, data, cfg, weights, graph, variables = synth
    out = root / "certified" / "net-int8.onnx"
    out.parent.mkdir()
    assert _export_int8(synth, out, "--keep-float", "none") == 0
    report = json.loads((out.parent / "int8_report.json").read_text())
    assert report["accepted"] is True and report["format"] == "darkslim.int8_report/1"
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert report["file"]["bytes"] == out.stat().st_size

    # mAP float and INT8, recomputed from the files through the same evaluation.
    valid = load_dataset(data, "valid")
    float_model = export_onnx(graph, variables, ExportOptions())
    float_map = evaluate_heads(head_runner(float_model), graph, valid, coco=False).map50
    int8_map = evaluate_heads(head_runner(model), graph, valid, coco=False).map50
    assert report["map50"]["float"] == pytest.approx(float_map, abs=1e-9)
    assert report["map50"]["int8"] == pytest.approx(int8_map, abs=1e-9)
    assert report["map50"]["drop"] == pytest.approx(float_map - int8_map, abs=1e-9)
    assert report["map50"]["valid_images"] == len(valid) == 12

    # Each head's SNR on the calibration images, recomputed.
    images = calibration_images(load_dataset(data, "train"), graph, 8)
    heads = head_fidelity(head_runner(float_model)(images), head_runner(model)(images))
    assert [h["name"] for h in report["heads"]] == ["head_0", "head_1"]
    for mine, theirs in zip(heads, report["heads"], strict=True):
        assert theirs["snr_db"] == pytest.approx(mine.snr_db, abs=1e-6)
        assert theirs["relative_l2"] == pytest.approx(mine.relative_l2, rel=1e-6)
        assert mine.snr_db >= SNR_FLOOR_DB, mine

    latency = report["latency"]
    assert latency["batch"] == 1 and latency["float_ms"] > 0 and latency["int8_ms"] > 0
    assert latency["ratio"] == pytest.approx(latency["int8_ms"] / latency["float_ms"])
    settings = report["settings"]
    assert settings["calibration_images"] == 8 and settings["method"] == "minmax"
    assert settings["keep_float"] == [] and settings["keep_float_auto"] is None
    assert settings["onnxruntime"] == __import__("onnxruntime").__version__


def test_qdq_structure_per_channel_weights(synth):
    root, data, cfg, weights, graph, variables = synth
    model = export_onnx(graph, variables, ExportOptions())
    images = calibration_images(load_dataset(data, "train"), graph, 8)
    quantized = quantize_int8(graph, model, images)
    onnx.checker.check_model(quantized, full_check=True)
    counts = count_qdq(quantized)
    convs = sum(1 for layer in graph.layers if layer.kind == "convolutional")
    assert counts["QuantizeLinear"] > convs and counts["DequantizeLinear"] > convs
    assert counts["per_channel_convs"] == convs and counts["float_convs"] == 0
    # Each weight scale has one entry per output channel.
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer}
    produced = {o: n for n in quantized.graph.node for o in n.output}
    for node in (n for n in quantized.graph.node if n.op_type == "Conv"):
        dq = produced[node.input[1]]
        scale, weight = inits[dq.input[1]], inits[dq.input[0]]
        assert weight.dtype == np.int8 and scale.shape == (weight.shape[0],), node.name
    meta = {p.key: p.value for p in quantized.metadata_props}
    assert meta["darkslim.int8.method"] == "minmax" and "darkslim.cfg" in meta


def test_decode_and_nms_stay_float(synth):
    """With --nms the decode runs float on the INT8 heads: ``detections`` equals the
    runtime's decode of the model's own ``head_k`` outputs."""
    from export.runtimes import run_onnxruntime
    from runtime import decode_heads

    root, data, cfg, weights, graph, variables = synth
    model = export_onnx(graph, variables, ExportOptions(nms=True))
    images = calibration_images(load_dataset(data, "train"), graph, 8)
    quantized = quantize_int8(graph, model, images)
    decode_nodes = [n for n in quantized.graph.node
                    if n.name.startswith(tuple(f"layer_{y}_" for y in graph.head_indices()))]
    assert decode_nodes and not any(n.op_type in ("QuantizeLinear", "DequantizeLinear")
                                    for n in decode_nodes)
    out = run_onnxruntime(quantized, images[:1])
    heads = [out["head_0"].transpose(0, 2, 3, 1), out["head_1"].transpose(0, 2, 3, 1)]
    expected = decode_heads(graph, heads, (graph.height, graph.width), np)
    np.testing.assert_allclose(out["detections"], expected, rtol=1e-4, atol=1e-3)
    assert out["selected_indices"].shape[1] == 3


def test_keep_float_layers_stay_float(synth):
    root, data, cfg, weights, graph, variables = synth
    model = export_onnx(graph, variables, ExportOptions())
    images = calibration_images(load_dataset(data, "train"), graph, 8)
    keep = (first_conv(graph), *head_convs(graph))
    assert keep == (0, *[y - 1 for y in graph.head_indices()])
    quantized = quantize_int8(graph, model, images, Int8Options(keep_float=keep))
    produced = {o: n for n in quantized.graph.node for o in n.output}
    for node in (n for n in quantized.graph.node if n.op_type == "Conv"):
        index = int(node.name.split("_")[1])
        dequantized = produced.get(node.input[1]) is not None
        assert dequantized == (index not in keep), node.name
    assert parse_keep_float("first,last", graph) == keep
    assert parse_keep_float("none", graph) == () and parse_keep_float("auto", graph) is None
    with pytest.raises(ValueError, match="layer 99 does not exist"):
        parse_keep_float("99", graph)
    yolo = graph.head_indices()[0]  # without decode, a [yolo] layer emits no node
    with pytest.raises(Int8Error, match=rf"layer {yolo} \(yolo\): no node named "
                       rf"layer_{yolo}_yolo/"):
        layer_nodes(graph, model, [yolo])
    with pytest.raises(Int8Error, match="layer 99: expected an index in 0"):
        layer_nodes(graph, model, [99])


def test_refusal_leaves_no_file(synth, capsys):
    root = synth[0]
    folder = root / "refused"
    folder.mkdir()
    assert _export_int8(synth, folder / "net.onnx", "--keep-float", "none",
                        "--max-map-drop", "-1") == 2
    assert list(folder.iterdir()) == []
    err = capsys.readouterr().err
    assert "> max_map_drop -1; nothing written" in err
    certificate = json.loads(err[err.index("{"):err.rindex("}") + 1])
    assert certificate["accepted"] is False and certificate["map50"]["max_drop"] == -1


def test_cli_refuses_bad_int8_options(synth, capsys):
    root, data, cfg, weights, _, _ = synth
    out = root / "bad.onnx"
    assert main(["export", str(cfg), str(weights), str(out), "--int8"]) == 2
    assert "--int8 needs --calib" in capsys.readouterr().err
    assert main(["export", str(cfg), str(weights), str(out), "--calib", str(data)]) == 2
    assert "--calib is an --int8 option" in capsys.readouterr().err
    try:
        import openvino  # noqa: F401
    except ImportError:
        assert _export_int8(synth, out, "--engine", "openvino") == 2
        assert "pip install darkslim[openvino]" in capsys.readouterr().err
    assert not out.exists()


def test_head_fidelity_snr():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 3, 4, 4))
    (h,) = head_fidelity([f], [f * 1.1])  # noise = signal / 10: 20 dB
    assert h.snr_db == pytest.approx(20.0) and h.relative_l2 == pytest.approx(0.1)
    assert head_fidelity([f], [f])[0].snr_db == float("inf")
    with pytest.raises(Int8Error, match="shape"):
        head_fidelity([f], [f[:1]])


def test_evaluate_heads_matches_evaluate(synth):
    """The ONNX-backed evaluation (raw heads decoded by the runtime) gives the JAX
    runtime's mAP on the same network."""
    root, data, cfg, weights, graph, variables = synth
    valid = load_dataset(data, "valid")
    model = export_onnx(graph, variables, ExportOptions())
    ours = evaluate_heads(head_runner(model), graph, valid, coco=False)
    theirs = evaluate(graph, variables, valid, coco=False)
    assert ours.images == theirs.images == 12
    assert ours.map50 == pytest.approx(theirs.map50, abs=1e-3)


@pytest.mark.slow
def test_trained_demo_network_certificate(tmp_path):
    """On the demo detector trained to a real mAP, the INT8 model loses at most 0.02
    mAP@0.5 and each head keeps >= 20 dB SNR (several minutes on 2 cores)."""
    from darkslim.demo import template_cfg
    from runtime.train import TrainConfig, fit, init_head_biases

    data = write_synth(tmp_path / "data", train=256, valid=64, size=64, seed=0,
                       cfg=template_cfg(), write=frontends.write_atomic)
    graph = ir.parse_cfg(data.cfg)
    variables = init_head_biases(graph, init_variables(graph, 0))
    trained = fit(graph, variables, load_dataset(data.data, "train"),
                  TrainConfig(epochs=30)).variables
    cfg, weights = write_network(tmp_path, "trained", graph, trained)
    out = tmp_path / "trained-int8.onnx"
    assert main(["export", str(cfg), str(weights), str(out), "--int8", "--calib",
                 str(data.data), "--latency-repeats", "20"]) == 0
    report = json.loads((tmp_path / "int8_report.json").read_text())
    assert report["map50"]["float"] > MIN_TRAINED_MAP
    assert report["map50"]["drop"] <= 0.02
    assert all(h["snr_db"] >= SNR_FLOOR_DB for h in report["heads"]), report["heads"]


def test_histogram_methods_are_silent(synth, capfd):
    """onnxruntime's percentile/entropy calibrators print progress; the library must not."""
    root, data, cfg, weights, graph, variables = synth
    model = export_onnx(graph, variables, ExportOptions())
    images = calibration_images(load_dataset(data, "train"), graph, 4)
    quantized = quantize_int8(graph, model, images, Int8Options(method="entropy"))
    assert {p.key: p.value for p in quantized.metadata_props}[
        "darkslim.int8.method"] == "entropy"
    assert capfd.readouterr().out == ""
    with pytest.raises(Int8Error, match="method='kl'"):
        Int8Options(method="kl")
