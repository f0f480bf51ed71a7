"""`darkslim bench`: the JSON it writes and its errors (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from darkslim import bench
from darkslim.cli import main
from runtime.xla_options import YNN_FUSIONS

SYNTH_CFG = Path(__file__).resolve().parents[1] / "darkslim" / "data" / "synth-tiny.cfg"


def test_bench_writes_forward_and_train_figures_per_batch(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", str(SYNTH_CFG), "--size", "64", "--batch", "1", "2", "--train",
                 "--repeats", "2", "--warmup", "0", "--engine", "onnxruntime",
                 "--precision", "highest", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["forward_ms"]) == set(result["train_step_ms"]) == {"1", "2"}
    assert all(v > 0 for v in result["forward_ms"].values())
    assert set(result["gflops_per_s"]) == set(result["compile_s"]) == {"forward", "train_step"}
    assert result["size"] == [64, 64]
    assert result["device"] and result["jax_version"] and result["matmul_precision"]
    assert result["compiler_options"] == (
        "xla_cpu_experimental_ynn_fusion_type=" + YNN_FUSIONS)
    assert len(result["runs_ms"]["forward"]["2"]) == 2
    onnx = result["engines"]["onnxruntime"]
    assert set(onnx["forward_ms"]) == {"1", "2"} and all(
        v > 0 for v in onnx["forward_ms"].values())


def test_bench_rejects_an_unknown_engine(tmp_path, capsys):
    assert main(["bench", str(SYNTH_CFG), "--engine", "tvm"]) == 2
    assert "--engine tvm" in capsys.readouterr().err


def test_engines_table_is_the_hook(monkeypatch):
    """A registered engine's prepare/run pair is timed like the runtime."""
    import ir

    calls = []
    monkeypatch.setitem(bench.ENGINES, "fake", lambda g, v, x: lambda: calls.append(x.shape))
    graph = ir.with_input_size(ir.parse_cfg(SYNTH_CFG), 32)
    t = bench.engine_timing("fake", graph, None, 3, repeats=2, warmup=1)
    assert calls == [(3, 32, 32, 3)] * 3 and len(t.times_ms) == 2


def test_train_needs_a_yolo_head():
    import ir

    graph = ir.parse_cfg("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=4\n")
    with pytest.raises(ValueError, match="no \\[yolo\\]"):
        bench.random_targets(graph, 2)
