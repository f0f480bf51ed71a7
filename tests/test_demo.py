"""`darkslim demo --quick`: the whole loop runs, and its table keeps its invariants."""

from __future__ import annotations

import json

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
    before, pruned, tuned = report["stages"]
    assert [s["name"] for s in report["stages"]] == ["before pruning", "after pruning",
                                                     "after fine-tuning"]
    for stage in report["stages"]:
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
