"""`darkslim demo --quick`: the whole loop runs, and its table keeps its invariants."""

from __future__ import annotations

import json

import onnx
import pytest

import frontends
import ir
import passes
from darkslim.cli import main


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_demo_table_invariants(quick_demo):
    report = json.loads((quick_demo / "report.json").read_text())
    before, pruned, tuned, _ = report["stages"]
    assert [s["name"] for s in report["stages"]] == ["before pruning", "after pruning",
                                                     "after fine-tuning", "fine-tuned INT8"]
    for stage in report["stages"][:3]:
        assert 0.0 <= stage["map50"] <= 1.0
        assert stage["latency_ms"] > 0
    assert pruned["params"] < before["params"] and pruned["bflops"] < before["bflops"]
    assert tuned["params"] == pruned["params"]
    prune = passes.report_from_json(report["prune"])
    assert isinstance(prune, passes.SlimReport)
    assert report["checks"]["max_abs_diff_keepsize_vs_compact"] < 1e-4
    kept, total = prune.prunable_channels
    assert kept < total
    assert prune.threshold.percent < prune.threshold.safe_percent  # below the safe one
    assert prune.after.params == pruned["params"]


def test_quick_demo_writes_a_deployable_network(quick_demo):
    for name in ("pruned.cfg", "pruned.weights", "report.md", "gamma_before.png",
                 "gamma_after.png", "channels.png"):
        assert (quick_demo / name).stat().st_size > 0, name
    graph = ir.parse_cfg(quick_demo / "pruned.cfg")
    loaded = frontends.load_variables(graph, quick_demo / "pruned.weights")
    assert loaded.loaded_convs == loaded.total_convs
    report = json.loads((quick_demo / "report.json").read_text())
    assert ir.count_params(graph) == report["stages"][-1]["params"]
    assert "| before pruning |" in (quick_demo / "report.md").read_text()


def test_quick_demo_int8_row(quick_demo):
    """The fine-tuned network quantized as `export --int8` does: its row beside the float
    ones (same params and BFLOPs, no darkslim latency, an onnxruntime one), mAP within
    the certificate's 0.02 of the float row, and the certificate written, accepted."""
    report = json.loads((quick_demo / "report.json").read_text())
    tuned, int8 = report["stages"][2:]
    assert int8["name"] == "fine-tuned INT8"
    assert (int8["params"], int8["bflops"]) == (tuned["params"], tuned["bflops"])
    assert int8["latency_ms"] is None
    assert abs(int8["map50"] - tuned["map50"]) <= 0.02
    assert int8["onnx_latency_ms"] > 0 and tuned["onnx_latency_ms"] > 0
    certificate = json.loads((quick_demo / "int8_report.json").read_text())
    assert certificate["format"] == "darkslim.int8_report/1"
    assert certificate["accepted"] is True
    assert certificate["map50"]["int8"] == int8["map50"]
    assert certificate["map50"]["valid_images"] == report["config"]["valid"]
    assert certificate["settings"]["calibration_images"] == report["config"]["calib_images"]
    assert certificate["latency"]["int8_ms"] == int8["onnx_latency_ms"]
    assert certificate["latency"]["float_ms"] == tuned["onnx_latency_ms"]
    assert report["int8"]["accepted"] is True
    model = onnx.load(quick_demo / "pruned-int8.onnx")
    assert certificate["file"]["bytes"] == (quick_demo / "pruned-int8.onnx").stat().st_size
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 0
    graph = ir.parse_cfg(quick_demo / "pruned.cfg")
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:] == [
        ir.input_shape(graph).c, ir.input_shape(graph).h, ir.input_shape(graph).w]
    markdown = (quick_demo / "report.md").read_text()
    assert "| fine-tuned INT8 |" in markdown and "| - |" in markdown
    assert "int8_report.json" in markdown
